#!/usr/bin/env bash
# The cost of isolation, side by side in one run (docs/BENCHMARKS.md, "Isolated plugins"):
# one server with the standard plugins in-process and one with the same .so files isolated
# ("isolation": "process"), same binary, alternating rounds; then the exec adapter, warm
# (a worker kept between calls) and cold ("max_calls": 1, a fresh process per call).
#   bench/isolation.sh [ROUNDS]            (default 2)
# Servers (build/bin/opserver, build/plugins) on CPU 0, opsbench (build-bench/bin/opsbench,
# built by scripts/bench) on CPU 1.
# "server ... us/op" is the CPU of the server process and of its workers together.
#   ISO_WORKLOADS="small transfer exec"   which to run (default all three)
#   ISO_TMP=/dev/shm                      where the servers store (default: mktemp's)
#   ISO_BASE=/path/to/old/build           also run that build's server (bin/opserver, plugins/)
#                                         in-process and isolated, alternating with this one's:
#                                         a before/after of a change in one run
set -u
rounds=${1:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${OPSBENCH:-$root/build-bench/bin/opsbench}
bin=${OPSERVER:-$root/build/bin/opserver}
plugins=${OPS_PLUGINS:-$root/build/plugins}
workloads=${ISO_WORKLOADS:-small transfer exec}
for f in "$bench" "$bin" "$plugins/liblist.so"; do
  [ -e "$f" ] || { echo "missing $f: build the server (scripts/build) and opsbench (scripts/bench --quick builds build-bench/)" >&2; exit 2; }
done
work=$(mktemp -d ${ISO_TMP:+-p "$ISO_TMP"})
trap 'kill $(cat "$work"/*/pid 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT

isolated() { # op -> an ops.json entry running the op's .so isolated
  printf '"%s": {"allow": ["*"], "isolation": "process", "plugin": "lib%s.so"}' "$1" "$1"
}
in_process() { printf '"%s": {"allow": ["*"]}' "$1"; }

start() { # name port ops-json-body [server-binary plugin-dir]
  local d=$work/$1 bin=${4:-$bin} plugins=${5:-$plugins}
  mkdir -p "$d/storage/admin"
  printf '{"plugin_dir": "%s", "operations": {%s}}\n' "$plugins" "$3" > "$d/ops.json"
  printf '{"listen": "127.0.0.1:%s", "storage_dir": "%s/storage", "state_dir": "%s/state", "ops_config": "%s/ops.json", "log_level": "warn"}\n' \
    "$2" "$d" "$d" "$d" > "$d/server.json"
  taskset -c 0 "$bin" --config "$d/server.json" > "$d/log" 2>&1 &
  echo $! > "$d/pid"
  for _ in $(seq 200); do (: > "/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.05; done
  echo "server $1 did not start:" >&2
  cat "$d/log" >&2
  exit 1
}

run() { # name port opsbench-args...
  local d=$work/$1 port=$2
  shift 2
  taskset -c 1 "$bench" "$@" --port "$port" --user admin --key-file "$d/state/admin.key" \
    --server-pid "$(cat "$d/pid")" | tail -1
}

ops=(usage stat list upload download)
body_in="" body_iso=""
for op in "${ops[@]}"; do
  body_in+="${body_in:+, }$(in_process "$op")"
  body_iso+="${body_iso:+, }$(isolated "$op")"
done
start in_process 9311 "$body_in"
start isolated 9312 "$body_iso"
sides=("in_process 9311" "isolated 9312")
if [ -n "${ISO_BASE:-}" ]; then
  base_bin=$ISO_BASE/bin/opserver base_plugins=$ISO_BASE/plugins
  [ -e "$base_bin" ] || { echo "missing $base_bin" >&2; exit 2; }
  # The ops.json bodies name plugin_dir per server, so each side loads its own build's .so.
  start base_in_process 9314 "$body_in" "$base_bin" "$base_plugins"
  start base_isolated 9315 "$body_iso" "$base_bin" "$base_plugins"
  sides=("base_in_process 9314" "in_process 9311" "base_isolated 9315" "isolated 9312")
fi
if [[ " $workloads " == *" exec "* ]]; then
  examples=$root/examples/exec
  exec_ops="\"hello_warm\": {\"allow\": [\"*\"], \"exec\": [\"/bin/sh\", \"$examples/hello.sh\"]},"
  exec_ops+="\"hello_cold\": {\"allow\": [\"*\"], \"exec\": [\"/bin/sh\", \"$examples/hello.sh\"], \"limits\": {\"max_calls\": 1}},"
  exec_ops+="\"py_warm\": {\"allow\": [\"*\"], \"exec\": [\"/usr/bin/python3\", \"$examples/wordcount.py\"]},"
  exec_ops+="\"py_cold\": {\"allow\": [\"*\"], \"exec\": [\"/usr/bin/python3\", \"$examples/wordcount.py\"], \"limits\": {\"max_calls\": 1}}"
  start exec 9313 "$exec_ops"
fi

for round in $(seq "$rounds"); do
  for side in "${sides[@]}"; do
    set -- $side
    echo "== $1 round $round"
    if [[ " $workloads " == *" small "* ]]; then
      run "$1" "$2" pingpong --op usage --args '{}' --duration 3
      run "$1" "$2" pingpong --op list --duration 3
      # describe-like: one small answer from one system call (bench-list10/ exists now)
      run "$1" "$2" pingpong --op stat --args '{"path":"bench-list10"}' --duration 3
      run "$1" "$2" pipeline --op list --connections 16 --depth 8 --threads 1 --duration 3
    fi
    if [[ " $workloads " == *" transfer "* ]]; then
      run "$1" "$2" upload --size 1G --parallel 1 --keep
      run "$1" "$2" download --size 1G --parallel 1
    fi
  done
  if [[ " $workloads " == *" exec "* ]]; then
    echo "== exec round $round"
    for op in hello_warm hello_cold py_warm py_cold; do
      run exec 9313 pingpong --op "$op" --args '{}' --duration 3
    done
  fi
done
