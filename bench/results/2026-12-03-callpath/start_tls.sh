#!/bin/bash
# start_tls.sh BIN PORT TLSPORT DIR
bin=$1 port=$2 tport=$3 d=$4
rm -rf $d; mkdir -p $d/storage/admin
printf '{"plugin_dir": "/work/main/build-bench/plugins", "operations": {"list": {"allow": ["*"]}, "upload": {"allow": ["*"]}}}\n' > $d/ops.json
printf '{"listen": "127.0.0.1:%s", "tls": {"listen": "127.0.0.1:%s", "cert": "/tmp/prof/tls/server.crt", "key": "/tmp/prof/tls/server.key"}, "storage_dir": "%s/storage", "state_dir": "%s/state", "ops_config": "%s/ops.json", "log_level": "warn"}\n' $port $tport $d $d $d > $d/server.json
taskset -c 0 $bin --config $d/server.json > $d/log 2>&1 &
echo $! > $d/pid
for _ in $(seq 100); do (: > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
