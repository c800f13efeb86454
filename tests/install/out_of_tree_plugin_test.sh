#!/usr/bin/env bash
# The installed SDK builds a plugin without the source tree, and the installed server loads
# it. Installs the build into a temporary prefix (cmake --install), checks the layout,
# builds examples/hello_plugin (copied out of the tree) with find_package(opserver) and
# with pkg-config, drops libhello.so into the installed plugin directory, starts the
# installed server on it, and calls "hello" through the installed opclient.
#   out_of_tree_plugin_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "${1:?build directory}" && pwd)
source_dir=$(cd "${2:?source directory}" && pwd)
work=$(mktemp -d /tmp/ops-install-test.XXXXXX)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$work/server.log" ] && sed 's/^/  server: /' "$work/server.log" >&2; exit 1; }

prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }

# The layout (docs/OPERATING.md "Install layout").
libdir=$(cd "$prefix" && dirname "$(find . -name libopsdk.a -printf '%P\n' | head -1)")
[ "$libdir" != "." ] || fail "no libopsdk.a installed"
for f in bin/opserver bin/opclient lib/opserver/plugins/libupload.so lib/opserver/plugins/libdownload.so \
         lib/opserver/plugins/liblist.so lib/opserver/plugins/libregister.so \
         etc/opserver/server.json etc/opserver/ops.json share/doc/opserver/README.md \
         share/doc/opserver/OPERATING.md include/opserver/plugin_abi.h include/opserver/plugin.hpp \
         "$libdir/cmake/opserver/opserverConfig.cmake" "$libdir/cmake/opserver/opserverPlugin.cmake" \
         "$libdir/pkgconfig/opserver-sdk.pc" lib/systemd/system/opserver.service; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
# Nothing installed may refer back to the source or build tree.
if grep -rlF -e "$source_dir" -e "$build" "$prefix/include" "$prefix/$libdir/cmake" "$prefix/$libdir/pkgconfig" "$prefix/etc"; then
  fail "installed files above name the source or build tree"
fi

# The example plugin, copied out of the tree, built with find_package(opserver).
cp -r "$source_dir/examples/hello_plugin" "$work/hello_src"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$work/hello_src" -B "$work/hello_build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >"$work/hello_configure.log" 2>&1 ||
  { cat "$work/hello_configure.log"; fail "configuring the example plugin"; }
cmake --build "$work/hello_build" >"$work/hello_build.log" 2>&1 ||
  { cat "$work/hello_build.log"; fail "building the example plugin"; }
[ -f "$work/hello_build/libhello.so" ] || fail "no libhello.so"
# Built like the standard plugins: its own exports are the entry and the stamp only.
exports=$(nm -D --defined-only "$work/hello_build/libhello.so" | awk '$2 ~ /^[TDB]$/ && $3 ~ /^ops_/ {print $3}' | sort | tr '\n' ' ')
[ "$exports" = "ops_plugin_entry ops_plugin_stamp " ] || fail "libhello.so exports: $exports"

# The pkg-config route gives a usable compile and link line too.
pc="$prefix/$libdir/pkgconfig"
flags=$(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs opserver-sdk) || fail "pkg-config opserver-sdk"
include_flag=$(tr ' ' '\n' <<<"$flags" | sed -n 's/^-I//p' | head -1)
[ -n "$include_flag" ] && [ "$(realpath "$include_flag")" = "$(realpath "$prefix/include")" ] ||
  fail "pkg-config's include directory is not the installed one: $flags"
grep -q -- "-lopsdk" <<<"$flags" || fail "pkg-config does not link the SDK: $flags"
# shellcheck disable=SC2086  # the flags are words
g++ -O1 -shared -fPIC -fvisibility=hidden -fvisibility-inlines-hidden "$work/hello_src/hello.cpp" \
  $flags -Wl,--no-undefined -Wl,--exclude-libs,ALL -o "$work/libhello_pc.so" ||
  fail "building with pkg-config's flags"

# Drop it in, enable it, start the installed server on temporary storage.
cp "$work/hello_build/libhello.so" "$prefix/lib/opserver/plugins/"
python3 - "$prefix" "$work" <<'PY'
import json, sys
prefix, work = sys.argv[1], sys.argv[2]
ops = json.load(open(f"{prefix}/etc/opserver/ops.json"))
ops["plugin_dir"] = f"{prefix}/lib/opserver/plugins"
ops["operations"]["hello"] = {"allow": ["*"]}
json.dump(ops, open(f"{work}/ops.json", "w"), indent=2)
server = json.load(open(f"{prefix}/etc/opserver/server.json"))
server.update(listen="127.0.0.1:0", storage_dir=f"{work}/var/storage",
              state_dir=f"{work}/var/state", ops_config=f"{work}/ops.json")
json.dump(server, open(f"{work}/server.json", "w"), indent=2)
PY
"$prefix/bin/opserver" --config "$work/server.json" --check-config >/dev/null || fail "--check-config"
"$prefix/bin/opserver" --config "$work/server.json" 2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*opserver listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.log")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited"
  sleep 0.1
done
[ -n "$port" ] || fail "the server did not start listening"

client=("$prefix/bin/opclient" --server "127.0.0.1:$port" --user admin --key-file "$work/var/state/admin.key")
described=$("${client[@]}" describe) || fail "describe"
grep -Eq '^hello +none +hello 1\.0\.0' <<<"$described" || fail "describe does not list hello: $described"
greeting=$("${client[@]}" call hello -a name=world) || fail "call hello"
[ "$greeting" = '{"greeting":"hello, world"}' ] || fail "hello answered: $greeting"
greeting=$("${client[@]}" call hello) || fail "call hello without args"
[ "$greeting" = '{"greeting":"hello, admin"}' ] || fail "hello answered: $greeting"

kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
[ "$status" -eq 0 ] || fail "the server exited with status $status after SIGTERM"
echo "out-of-tree plugin: built against $prefix, loaded and called"
