#!/bin/bash
# All side-by-side figures of this stop, in one go. Output under /tmp/prof/final/
cd /work/main
out=/tmp/prof/final; mkdir -p $out
echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" > $out/meta.txt
git log --oneline -1 >> $out/meta.txt
OPSBENCH=build-bench/bin/opsbench AB_TMP=/dev/shm AB_WORKLOADS="small upload download" timeout 1200 \
  bench/ab.sh /work/baseline/build/bin/opserver /work/baseline/build/plugins build-bench/bin/opserver build-bench/plugins 5 > $out/ab.txt 2>&1
echo "ab done $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/meta.txt
ISO_WORKLOADS="small transfer" ISO_TMP=/dev/shm OPSERVER=$PWD/build-bench/bin/opserver OPS_PLUGINS=$PWD/build-bench/plugins timeout 1200 bench/isolation.sh 5 > $out/iso.txt 2>&1
echo "iso done $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/meta.txt
cd /tmp/prof
pkill -f 'shm/p[01]/server.json'; pkill -f 'shm/t[AB1]/server.json'; sleep 0.5
./start.sh /tmp/ab-old/opserver /tmp/ab-old/plugins 9402 /dev/shm/p0
./start.sh /work/main/build-bench/bin/opserver /work/main/build-bench/plugins 9401 /dev/shm/p1
./vsgrpc.sh 5 > $out/vsgrpc.txt 2>&1
echo "vsgrpc done $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/meta.txt
./start_tls.sh /tmp/ab-old/opserver 9431 9432 /dev/shm/tA
./start_tls.sh /work/main/build-bench/bin/opserver 9441 9442 /dev/shm/tB
B=/work/main/build-bench/bin
rm -rf /dev/shm/gt; mkdir -p /dev/shm/gt
$B/opsbench describe --port 9441 --user admin --key-file /dev/shm/tB/state/admin.key > /dev/shm/gt/describe.json
taskset -c 0 $B/grpc_peer --port 9423 --storage /dev/shm/gt --threads 2 --describe /dev/shm/gt/describe.json --tls-cert tls/server.crt --tls-key tls/server.key > /dev/shm/gt/log 2>&1 & gp=$!; sleep 1
for r in 1 2 3 4 5; do
  for s in A:9431:9432 B:9441:9442; do IFS=: read n p tp <<< "$s"; d=/dev/shm/t$n; k="--user admin --key-file $d/state/admin.key --server-pid $(cat $d/pid)"
    echo "$n plain $(taskset -c 1 $B/opsbench pingpong --op describe --duration 3 --port $p $k | tail -1)"
    echo "$n tls $(taskset -c 1 $B/opsbench pingpong --op describe --duration 3 --port $tp --tls --ca tls/server.crt $k | tail -1)"
  done
  echo "grpc-tls $(taskset -c 1 $B/grpc_bench pingpong --op describe --duration 3 --port 9423 --tls-ca tls/server.crt --server-pid $gp | tail -1)"
done > $out/tls.txt 2>&1
kill $gp
echo "tls done $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/meta.txt
