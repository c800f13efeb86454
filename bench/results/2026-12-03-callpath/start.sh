#!/bin/bash
# start.sh BIN PLUGINS PORT DIR
bin=$1 plugins=$2 port=$3 d=$4
rm -rf $d; mkdir -p $d/storage/admin/ten
for i in $(seq 10); do echo x > $d/storage/admin/ten/f$i; done
printf '{"plugin_dir": "%s", "operations": {"list": {"allow": ["*"]}, "upload": {"allow": ["*"]}}}\n' "$plugins" > $d/ops.json
printf '{"listen": "127.0.0.1:%s", "storage_dir": "%s/storage", "state_dir": "%s/state", "ops_config": "%s/ops.json", "log_level": "warn"}\n' $port $d $d $d > $d/server.json
taskset -c 0 $bin --config $d/server.json > $d/log 2>&1 &
echo $! > $d/pid
for _ in $(seq 100); do grep -q listening $d/log 2>/dev/null && break; sleep 0.05; done
