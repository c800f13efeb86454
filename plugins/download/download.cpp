// download (OPS/1 §5, §7): sends a file, or a byte range of it, as the response payload.
//
// Decisions: `offset` equal to the size gives an empty payload, past it is
// `invalid_args`; a `length` past the end is clipped, so `result.length` is always the
// number of payload bytes that follow. A directory is `conflict`; any other non-regular
// file (fifo, socket, device planted on disk) is `forbidden`; a symlink anywhere on the
// path is `forbidden` and never followed. The bytes go out through the host's send_file
// (sendfile(2) where the transport allows); if the file shrinks while it is being sent
// the host closes the connection rather than send filler (§3).
// With "sha256": true (§10) the result also carries the SHA-256 of the whole file, not of
// the range, read from the same open file before the answer (so a resumed download can be
// checked end to end).
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <string>

#include "opserver/files.hpp"
#include "opserver/json_result.hpp"
#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "path": {"type": "string", "minLength": 1, "maxLength": 4096,
             "description": "the file to send, relative to your directory"},
    "offset": {"type": "integer", "minimum": 0, "maximum": 9007199254740991, "default": 0,
               "description": "first byte to send"},
    "length": {"type": "integer", "minimum": 0, "maximum": 9007199254740991,
               "description": "bytes to send (default: to the end; clipped at the end)"},
    "sha256": {"type": "boolean", "default": false,
               "description": "add the SHA-256 of the whole file (not just the range)"}
  },
  "required": ["path"],
  "additionalProperties": false
})json";

constexpr std::uint64_t kMaxSafeInteger = (std::uint64_t{1} << 53) - 1;

// The host has checked the schema; still refuse anything that is not a plain
// non-negative integer rather than guess (a validator may let 5.0 pass as "integer").
ops::Result<std::uint64_t> get_u64(const rapidjson::Value& args, const char* name,
                                   std::uint64_t fallback) {
  auto it = args.FindMember(name);
  if (it == args.MemberEnd()) return fallback;
  const rapidjson::Value& v = it->value;
  if (v.IsUint64() && v.GetUint64() <= kMaxSafeInteger) return v.GetUint64();
  if (v.IsDouble()) {
    double d = v.GetDouble();
    if (d >= 0 && d <= static_cast<double>(kMaxSafeInteger) && std::floor(d) == d) {
      return static_cast<std::uint64_t>(d);
    }
  }
  return ops::fail(ErrorCode::invalid_args,
                   std::string(name) + " must be an integer from 0 to 2^53-1");
}

Status handle_download(Call& call, const rapidjson::Value& args) {
  const rapidjson::Value& path_value = args["path"];
  const std::string path(path_value.GetString(), path_value.GetStringLength());
  auto offset = get_u64(args, "offset", 0);
  if (!offset) return std::move(offset).error();
  const bool has_length = args.HasMember("length");
  auto length = get_u64(args, "length", 0);
  if (!length) return std::move(length).error();

  // O_NONBLOCK: opening a fifo planted on disk must not hang the worker.
  auto file = ops::sdk::open_beneath(call.user_dir(), path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  if (!file) return std::move(file).error();
  struct stat st {};
  if (::fstat(file->get(), &st) != 0) return ops::sdk::error_from_errno(errno, path);
  if (S_ISDIR(st.st_mode)) return ops::fail(ErrorCode::conflict, "is a directory: " + path);
  if (!S_ISREG(st.st_mode)) {
    return ops::fail(ErrorCode::forbidden, "not a regular file: " + path);
  }
  // Back to blocking reads for the host's fallback path (no effect on regular files
  // today, but sendfile's callers should not have to care).
  int fl = ::fcntl(file->get(), F_GETFL);
  if (fl >= 0) ::fcntl(file->get(), F_SETFL, fl & ~O_NONBLOCK);

  const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  if (*offset > size) {
    return ops::fail(ErrorCode::invalid_args, "offset " + std::to_string(*offset) +
                                                  " is past the end of the file (size " +
                                                  std::to_string(size) + ")");
  }
  const std::uint64_t available = size - *offset;
  const std::uint64_t count = has_length ? std::min(*length, available) : available;

  ops::sdk::JsonResult out;
  out.str("path", path).u64("size", size).u64("offset", *offset).u64("length", count);
  if (ops::sdk::arg_bool(args, "sha256", false)) {
    auto digest = ops::sdk::sha256_of_fd(file->get(), path);
    if (!digest) return std::move(digest).error();
    out.str("sha256", *digest);
  }
  const std::string result = out.done();
  if (Status sent = call.send_result(result, count); !sent) {
    return sent;
  }
  if (count == 0) return ops::ok_status();
  // On failure the host has already closed the connection (§3); the error is for the log.
  return call.send_file(file->get(), *offset, count);
}

}  // namespace

OPS_EXPORT_PLUGIN("download", "1.0.0",
                  OPS_OPERATION("download", "Send a file, or a byte range of it", "1.0.0",
                                OPS_PAYLOAD_OUT, kSchema, handle_download))
