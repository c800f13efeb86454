#!/bin/bash
# Side-by-side TLS transfers of two opserver builds (issue 12, the strand hand-off):
#   bench/tls_handoff_ab.sh OLD_DIR NEW_DIR [ROUNDS] [SIZE]
# OLD_DIR and NEW_DIR each hold bin/opserver and plugins/ (a build directory). Each build
# gets one server with a plain and a TLS listener (throwaway P-256 certificate), pinned to
# CPU 0; opsbench (OPSBENCH, default build-bench/bin/opsbench from scripts/bench) runs on
# CPU 1. Per round: old, new, new, old, each a TLS download then a TLS upload of SIZE
# (default 1G); then one plain download and upload per build (the fd path, untouched).
# Prints one JSON line per run: MiB/s, server CPU s/GiB (opsbench --server-pid) and
# context switches per GiB, summed over the server's threads (/proc/PID/task/*/status,
# voluntary + nonvoluntary).
set -euo pipefail
OLD=$(realpath "$1") NEW=$(realpath "$2") ROUNDS=${3:-3} SIZE=${4:-1G}
OPSBENCH=${OPSBENCH:-$(dirname "$0")/../build-bench/bin/opsbench}
W=$(mktemp -d); S=$(mktemp -d ${AB_TMP:+-p "$AB_TMP"})
trap 'for p in ${PIDS:-}; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; rm -rf "$S" "$W"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout $W/server.key -out $W/server.crt 2>/dev/null
chmod 600 $W/server.key
python3 -c 'import secrets; print(secrets.token_hex(32))' >$W/bench.key
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=""
start() {  # name builddir -> sets P_<name> PORT_<name> TPORT_<name>
  local n=$1 b=$2 d=$W/$1; mkdir -p $d $S/$1
  local p=$(port) t=$(port)
  cat >$d/ops.json <<J
{"plugin_dir": "$b/plugins",
 "operations": {"upload": {"allow": ["*"], "max_payload": 68719476736},
                "download": {"allow": ["*"]}, "list": {"allow": ["*"]}, "register": {"allow": ["admin"]}}}
J
  cat >$d/server.json <<J
{"listen": "127.0.0.1:$p", "storage_dir": "$S/$n", "state_dir": "$d/state", "ops_config": "$d/ops.json",
 "tls": {"listen": "127.0.0.1:$t", "cert": "$W/server.crt", "key": "$W/server.key"}, "log_level": "warn"}
J
  $b/bin/opserver --config $d/server.json user add bench --key-file $W/bench.key >/dev/null
  taskset -c 0 $b/bin/opserver --config $d/server.json >$d/log 2>&1 &
  local pid=$!; PIDS="$PIDS $pid"
  for i in $(seq 100); do python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$t)))" && break; sleep 0.1; done
  eval "P_$n=$pid PORT_$n=$p TPORT_$n=$t"
}
csw() { cat /proc/$1/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}'; }
one() {  # name mode tls(1/0)
  local n=$1 mode=$2 tls=$3 pid port args=()
  eval "pid=\$P_$n"; if [ $tls = 1 ]; then eval "port=\$TPORT_$n"; args=(--tls --ca $W/server.crt); else eval "port=\$PORT_$n"; fi
  local c0=$(csw $pid)
  local out=$(taskset -c 1 $OPSBENCH $mode --port $port "${args[@]}" --user bench --key-file $W/bench.key \
      --server-pid $pid --size $SIZE --json --label x)
  local c1=$(csw $pid)
  python3 - "$n" "$mode" "$tls" "$c0" "$c1" "$out" "$SIZE" <<'P'
import json,sys
n,mode,tls,c0,c1,out,size=sys.argv[1:]
r=json.loads(out.splitlines()[-1])
gib=float(r["size"])*float(r.get("parallel",1))/(1<<30)
print(json.dumps({"build":n,"mode":mode,"tls":int(tls),"mib_s":round(r["mib_s"],1),
  "server_s_per_gib":round(r["server_cpu_us_per_gib"]/1e6,3),
  "ctxsw_per_gib":round((int(c1)-int(c0))/gib), "raw":r}))
P
}
start old $OLD; start new $NEW
# prepare the download files (not measured)
for n in old new; do one $n download 1 >/dev/null; done
for r in $(seq $ROUNDS); do echo "# round $r" >&2
  for n in old new; do
    one $n download 1; one $n upload 1
  done
  for n in new old; do
    one $n download 1; one $n upload 1
  done
done
for n in old new; do one $n download 0; one $n upload 0; done
