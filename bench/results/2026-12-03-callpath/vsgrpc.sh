#!/bin/bash
# vsgrpc.sh ROUNDS : old opserver (p0, 9402), new (p1, 9401), gRPC peer (9403), interleaved
B=/work/main/build-bench/bin
rounds=${1:-3}
rm -rf /dev/shm/g; mkdir -p /dev/shm/g
$B/opsbench describe --port 9401 --user admin --key-file /dev/shm/p1/state/admin.key > /dev/shm/g/describe.json
taskset -c 0 $B/grpc_peer --port 9403 --storage /dev/shm/g --threads 2 --describe /dev/shm/g/describe.json > /dev/shm/g/log 2>&1 &
gp=$!; sleep 1
for r in $(seq $rounds); do
  for p in 0 1; do port=$((9402-p)); common="--port $port --user admin --key-file /dev/shm/p$p/state/admin.key --server-pid $(cat /dev/shm/p$p/pid)"
    taskset -c 1 $B/opsbench pingpong --op list --duration 3 $common | tail -1 | sed "s/^/p$p /"
    taskset -c 1 $B/opsbench pipeline --op list --connections 64 --depth 16 --threads 1 --duration 3 --lean $common | tail -1 | sed "s/^/p$p /"
  done
  taskset -c 1 $B/grpc_bench pingpong --op list --duration 3 --port 9403 --server-pid $gp | tail -1 | sed "s/^/grpc /"
  taskset -c 1 $B/grpc_bench pipeline --op list --connections 64 --depth 16 --duration 3 --port 9403 --server-pid $gp | tail -1 | sed "s/^/grpc /"
done
kill $gp
