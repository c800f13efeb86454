// A stamp but no entry point.
#include "opserver/plugin_abi.h"

extern "C" OPS_EXPORT const ops_plugin_stamp_v1 ops_plugin_stamp = {
    OPS_PLUGIN_ABI_VERSION, sizeof(ops_plugin_stamp_v1), OPS_BUILD_SIGNATURE};
