#!/usr/bin/env bash
# Side-by-side A/B of two opserver builds on the same workloads, alternating, in one run:
#   bench/ab.sh OLD_BIN OLD_PLUGINS NEW_BIN NEW_PLUGINS [ROUNDS]
# e.g. after `git worktree add /tmp/old HEAD~1` and building both:
#   bench/ab.sh /tmp/old/build/bin/opserver /tmp/old/build/plugins build/bin/opserver build/plugins
# Servers on CPU 0, opsbench (build-bench/bin/opsbench, from scripts/bench) on CPU 1.
# Compare the "server ... us/op" figures: CPU per operation is steadier than rates on a
# shared machine.
#   AB_WORKLOADS="small upload"  which to run (default small: ping-pong, 64x16 list,
#                                handshakes; upload: 1 GiB with sha256 and fsync;
#                                download: 1 GiB, the file prepared once;
#                                resumable: the same 1 GiB as 64 MiB appends, 2 deep)
#   AB_TMP=/dev/shm              where the servers store (default: mktemp's directory)
set -u
old_bin=$1 old_plugins=$2 new_bin=$3 new_plugins=$4 rounds=${5:-2}
bench=${OPSBENCH:-$(dirname "$0")/../build-bench/bin/opsbench}
workloads=${AB_WORKLOADS:-small}
work=$(mktemp -d ${AB_TMP:+-p "$AB_TMP"})
trap 'kill $(cat "$work"/*/pid 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT

start() { # name bin plugins port
  local d=$work/$1
  mkdir -p "$d/storage/admin/ten"
  for i in $(seq 10); do echo x > "$d/storage/admin/ten/f$i"; done
  # Resumable uploads only where the build has them, so older builds can be compared too.
  local resumable=""
  if [ -e "$3/libupload_resumable.so" ]; then
    resumable=', "upload_open": {"allow": ["*"]}, "upload_append": {"allow": ["*"]}, "upload_commit": {"allow": ["*"]}'
  fi
  printf '{"plugin_dir": "%s", "operations": {"list": {"allow": ["*"]}, "upload": {"allow": ["*"]}, "download": {"allow": ["*"]}%s}}\n' "$(realpath "$3")" "$resumable" > "$d/ops.json"
  printf '{"listen": "127.0.0.1:%s", "storage_dir": "%s/storage", "state_dir": "%s/state", "ops_config": "%s/ops.json", "log_level": "warn"}\n' \
    "$4" "$d" "$d" "$d" > "$d/server.json"
  taskset -c 0 "$2" --config "$d/server.json" > "$d/log" 2>&1 &
  echo $! > "$d/pid"
  for _ in $(seq 100); do grep -q listening "$d/log" 2>/dev/null && break; sleep 0.05; done
}
start old "$old_bin" "$old_plugins" 9301
start new "$new_bin" "$new_plugins" 9302
for round in $(seq "$rounds"); do
  for side in "old 9301" "new 9302"; do
    set -- $side
    d=$work/$1
    common=(--port "$2" --user admin --key-file "$d/state/admin.key" --server-pid "$(cat "$d/pid")")
    echo "== $1 round $round"
    if [[ " $workloads " == *" small "* ]]; then
      taskset -c 1 "$bench" pingpong --op describe --duration 3 "${common[@]}" | tail -1
      taskset -c 1 "$bench" pingpong --op list --duration 3 "${common[@]}" | tail -1
      taskset -c 1 "$bench" pipeline --op list --connections 64 --depth 16 --threads 1 --duration 3 --lean "${common[@]}" | tail -1
      taskset -c 1 "$bench" handshakes --threads 2 --duration 3 "${common[@]}" | tail -1
    fi
    if [[ " $workloads " == *" upload "* ]]; then
      taskset -c 1 "$bench" upload --size 1G --parallel 1 "${common[@]}" | tail -1
    fi
    if [[ " $workloads " == *" download "* ]]; then
      taskset -c 1 "$bench" download --size 1G --parallel 1 "${common[@]}" | tail -1
    fi
    if [[ " $workloads " == *" resumable "* ]]; then
      taskset -c 1 "$bench" resumable --size 1G --chunk 64M "${common[@]}" | tail -1
    fi
  done
done
