// Claims an ABI version this server does not speak.
#include "opserver/plugin_abi.h"

extern "C" OPS_EXPORT const ops_plugin_stamp_v1 ops_plugin_stamp = {
    999u, sizeof(ops_plugin_stamp_v1), OPS_BUILD_SIGNATURE};
extern "C" OPS_EXPORT const ops_plugin_v1* ops_plugin_entry(void) {
  return nullptr;
}
