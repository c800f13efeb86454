/* A plugin built against the previous plugin ABI header (1.0: tests/plugins/abi_v1_0, a
 * byte-for-byte copy of plugin_abi.h before the lifecycle hooks), in plain C and without
 * the SDK: what an existing third-party plugin looks like. A newer server must load it and
 * call it (docs/PLUGINS.md, ABI versioning). */
#include <string.h>

#include "opserver/plugin_abi.h"

static int old_echo(const ops_host_v1* host, ops_call* call, const char* args, size_t len) {
  static const char kPrefix[] = "{\"old_abi\":true,\"args\":";
  char result[4096];
  if (len + sizeof kPrefix + 1 > sizeof result) {
    host->fail(call, OPS_INVALID_ARGS, "args too long");
    return OPS_INVALID_ARGS;
  }
  memcpy(result, kPrefix, sizeof kPrefix - 1);
  memcpy(result + sizeof kPrefix - 1, args, len);
  result[sizeof kPrefix - 1 + len] = '}';
  if (host->send_result(call, result, sizeof kPrefix + len, 0) != 0) return OPS_UNAVAILABLE;
  return OPS_OK;
}

static int old_second(const ops_host_v1* host, ops_call* call, const char* args, size_t len) {
  (void)args;
  (void)len;
  static const char kResult[] = "{\"second\":true}";
  if (host->send_result(call, kResult, sizeof kResult - 1, 0) != 0) return OPS_UNAVAILABLE;
  return OPS_OK;
}

/* Two operations: the array's elements have ABI 1.0's size, shorter than a newer server's
 * ops_op_v1, so a server that indexed it with its own struct would misread the second. */
static const ops_op_v1 kOps[] = {
    {sizeof(ops_op_v1), "old_echo", "Echoes its args (ABI 1.0)", "1.0.0", OPS_PAYLOAD_NONE,
     "{\"type\":\"object\",\"properties\":{\"say\":{\"type\":\"string\"}}}", old_echo},
    {sizeof(ops_op_v1), "old_second", "The second operation of an ABI 1.0 plugin", "1.0.0",
     OPS_PAYLOAD_NONE, "{\"type\":\"object\"}", old_second}};
static const ops_plugin_v1 kPlugin = {
    OPS_PLUGIN_ABI_VERSION, sizeof(ops_plugin_v1), "old_abi", "1.0.0", 2, kOps};

OPS_EXPORT const ops_plugin_stamp_v1 ops_plugin_stamp = {
    OPS_PLUGIN_ABI_VERSION, sizeof(ops_plugin_stamp_v1), OPS_BUILD_SIGNATURE};
OPS_EXPORT const ops_plugin_v1* ops_plugin_entry(void) {
  return &kPlugin;
}
