#!/usr/bin/env bash
# The upload-at-the-hash-limit measurement (docs/BENCHMARKS.md, "Upload at the hash limit"),
# all in one run, rounds alternating so that every figure of a round was taken at nearly
# the same moment on a shared machine:
#   bench/upload_limit.sh [ROUNDS] [DISK_DIR]
# Per round: `openssl speed -evp sha256` on CPU 0; build-bench/bin/upload_paths on /dev/shm
# and on DISK_DIR (default build-bench/, on disk) with the server loop on CPU 0 and the
# sender on CPU 1; then plain and resumable 1 GiB uploads (opsbench on CPU 1) against two
# opservers pinned to CPU 0, one storing on /dev/shm and one on DISK_DIR.
#   BIN=build/bin PLUGINS=build/plugins  the server under test (default)
#   UPLOAD_PATHS_VARIANTS="copy splice"  the upload_paths variants (default: all)
set -u
rounds=${1:-2}
disk=${2:-$(dirname "$0")/../build-bench}
bin=${BIN:-$(dirname "$0")/../build/bin}
plugins=${PLUGINS:-$(dirname "$0")/../build/plugins}
bench_bin=$(dirname "$0")/../build-bench/bin
work=$(mktemp -d)
shm=$(mktemp -d -p /dev/shm)
dsk=$(mktemp -d -p "$disk")
trap 'kill $(cat "$work"/*/pid 2>/dev/null) 2>/dev/null; rm -rf "$work" "$shm" "$dsk"' EXIT

start() { # name storage port
  local d=$work/$1
  mkdir -p "$d" "$2/storage/admin"
  printf '{"plugin_dir": "%s", "operations": {"upload": {"allow": ["*"]}, "upload_open": {"allow": ["*"]}, "upload_append": {"allow": ["*"]}, "upload_commit": {"allow": ["*"]}}}\n' \
    "$(realpath "$plugins")" >"$d/ops.json"
  printf '{"listen": "127.0.0.1:%s", "storage_dir": "%s/storage", "state_dir": "%s/state", "ops_config": "%s/ops.json", "log_level": "warn"}\n' \
    "$3" "$2" "$d" "$d" >"$d/server.json"
  taskset -c 0 "$bin/opserver" --config "$d/server.json" >"$d/log" 2>&1 &
  echo $! >"$d/pid"
  for _ in $(seq 100); do grep -q listening "$d/log" 2>/dev/null && break; sleep 0.05; done
}
start shm "$shm" 9311
start disk "$dsk" 9312
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  echo "== round $round"
  taskset -c 0 openssl speed -evp sha256 -bytes 1048576 -seconds 3 2>/dev/null |
    awk '/^sha256/ {v=$NF; sub(/k$/, "", v); printf "openssl sha256 (CPU 0): %.0f MiB/s\n", v*1000/1048576}'
  for where in "$shm" "$dsk"; do
    echo "-- upload_paths on $(df -T "$where" | awk 'NR==2 {print $2}')"
    # shellcheck disable=SC2086 # the variants are words
    "$bench_bin/upload_paths" "$where" 1024 ${UPLOAD_PATHS_VARIANTS:-}
  done
  for side in "shm 9311" "disk 9312"; do
    # shellcheck disable=SC2086 # "name port"
    set -- $side
    d=$work/$1
    common=(--port "$2" --user admin --key-file "$d/state/admin.key" --server-pid "$(cat "$d/pid")")
    echo "-- opserver on $1"
    taskset -c 1 "$bench_bin/opsbench" upload --size 1G --parallel 1 "${common[@]}" | tail -1
    taskset -c 1 "$bench_bin/opsbench" resumable --size 1G --chunk 64M "${common[@]}" | tail -1
  done
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
