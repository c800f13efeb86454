// Reading the parts of an ABI struct that a plugin's struct_size covers. A plugin built for
// an older minor ABI (docs/PLUGINS.md, ABI versioning) wrote a shorter struct: a member
// beyond its struct_size is not there (the bytes belong to whatever follows), so it reads as
// NULL here and nowhere else. Pure; any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "opserver/plugin_abi.h"

namespace ops::core {

// The size of ops_op_v1 in ABI 1.0: everything up to and including `call`.
inline constexpr std::size_t kOpSizeV1_0 = offsetof(ops_op_v1, call) + sizeof(ops_handler_fn);
// The size of ops_plugin_stamp_v1 in ABI 1.0: up to and including `build_signature`.
inline constexpr std::size_t kStampSizeV1_0 =
    offsetof(ops_plugin_stamp_v1, build_signature) + sizeof(const char*);

// True when a struct of `struct_size` bytes holds the member at `offset` of `size` bytes.
constexpr bool covers(std::uint32_t struct_size, std::size_t offset, std::size_t size) noexcept {
  return struct_size >= offset + size;
}

// The minor ABI version a stamp declares (0 for a stamp of ABI 1.0, which has no abi_minor).
inline std::uint32_t stamp_minor(const ops_plugin_stamp_v1& stamp) noexcept {
  return covers(stamp.struct_size, offsetof(ops_plugin_stamp_v1, abi_minor),
                sizeof(stamp.abi_minor))
             ? stamp.abi_minor
             : 0;
}

// The lifecycle hooks of one operation (ABI minor 1); each NULL when absent.
struct OpHooks {
  const char* settings_schema = nullptr;
  int (*init)(const char* settings_json, std::size_t len, char* error,
              std::size_t error_cap) = nullptr;
  void (*shutdown)(std::uint32_t deadline_ms) = nullptr;
  int (*health)(char* reason, std::size_t cap) = nullptr;
};

inline OpHooks hooks_of(const ops_op_v1* op) noexcept {
  OpHooks hooks;
  if (op == nullptr) return hooks;
  const std::uint32_t size = op->struct_size;
  if (covers(size, offsetof(ops_op_v1, settings_schema), sizeof(op->settings_schema))) {
    hooks.settings_schema = op->settings_schema;
  }
  if (covers(size, offsetof(ops_op_v1, init), sizeof(op->init))) hooks.init = op->init;
  if (covers(size, offsetof(ops_op_v1, shutdown), sizeof(op->shutdown))) {
    hooks.shutdown = op->shutdown;
  }
  if (covers(size, offsetof(ops_op_v1, health), sizeof(op->health))) hooks.health = op->health;
  return hooks;
}

}  // namespace ops::core
