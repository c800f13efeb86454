// The right ABI version, but built against another C++ standard library.
#include "opserver/plugin_abi.h"

extern "C" OPS_EXPORT const ops_plugin_stamp_v1 ops_plugin_stamp = {
    OPS_PLUGIN_ABI_VERSION, sizeof(ops_plugin_stamp_v1), "x86_64-linux/libc++-1"};
extern "C" OPS_EXPORT const ops_plugin_v1* ops_plugin_entry(void) {
  return nullptr;
}
