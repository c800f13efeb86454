// Helpers for the standard-operation tests (upload, download, list, register): JSON
// building and reading, one-call wrappers that fail the test on transport errors, and
// looks at the storage directory from outside the server.
#pragma once

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "harness/server_process.hpp"
#include "opserver/client.hpp"

namespace ops::test {

// A JSON string literal for arbitrary bytes < 0x80 escaped as needed; bytes >= 0x80 go
// through as they are (the caller passes valid UTF-8).
inline std::string jstr(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// {"k": <raw json>, ...} from already-encoded values.
inline std::string jobj(std::initializer_list<std::pair<std::string, std::string>> members) {
  std::string out = "{";
  for (const auto& [k, v] : members) {
    if (out.size() > 1) out += ',';
    out += jstr(k) + ":" + v;
  }
  return out + "}";
}

inline rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str(), json.size());
  EXPECT_FALSE(d.HasParseError()) << json;
  return d;
}

// A completed request: `ok`, or `code` from the error; `transport` set when the
// connection itself failed.
struct Outcome {
  bool transport_failed = false;
  bool ok = false;
  std::string code;  // wire name, "" when ok
  std::string message;
  std::string details;  // the error's §9 details, "" when none
  std::string result_json;
  std::string payload;
  rapidjson::Document result() const { return parse(result_json); }
};

inline Outcome call_op(client::Client& c, std::string_view op, const std::string& args,
                       std::string_view payload = {}) {
  Outcome out;
  auto r = c.call_collect(op, args, out.payload, payload);
  if (!r) {
    out.transport_failed = true;
    out.code = std::string(wire_name(r.error().code));
    out.message = r.error().message;
    return out;
  }
  out.ok = r->ok;
  if (r->ok) {
    out.result_json = r->result_json;
  } else {
    out.code = std::string(wire_name(r->error.code));
    out.message = r->error.message;
    out.details = r->error.details;
  }
  return out;
}

inline Outcome upload(client::Client& c, const std::string& path, std::string_view body,
                      const std::string& extra_members = "") {
  std::string args = "{\"path\":" + jstr(path) + extra_members + "}";
  return call_op(c, "upload", args, body);
}

inline Outcome download(client::Client& c, const std::string& path,
                        const std::string& extra_members = "") {
  return call_op(c, "download", "{\"path\":" + jstr(path) + extra_members + "}");
}

// `n` bytes of a pattern that differs with `seed` and does not repeat at any short period,
// so a misplaced or repeated chunk changes the content's SHA-256.
inline std::string pattern_bytes(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed) ^ (i >> 11));
  return s;
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// Every path under `dir` (relative, sorted), symlinks not followed.
inline std::vector<std::string> tree(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::end(it); it.increment(ec)) {
    out.push_back(std::filesystem::relative(it->path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Names in the listing result of `list`.
inline std::vector<std::string> names_of(const Outcome& listed) {
  std::vector<std::string> out;
  rapidjson::Document d = listed.result();
  if (!d.IsObject() || !d.HasMember("entries")) return out;
  for (const auto& e : d["entries"].GetArray()) out.emplace_back(e["name"].GetString());
  return out;
}

}  // namespace ops::test

#define EXPECT_OP_OK(outcome) \
  EXPECT_TRUE((outcome).ok) << "expected ok, got " << (outcome).code << ": " << (outcome).message
#define EXPECT_OP_ERR(outcome, wire)                                                \
  do {                                                                              \
    const auto& o_ = (outcome);                                                     \
    EXPECT_FALSE(o_.ok) << "expected " << (wire) << ", got ok: " << o_.result_json; \
    EXPECT_FALSE(o_.transport_failed) << "transport failed: " << o_.message;        \
    EXPECT_EQ(o_.code, (wire)) << o_.message;                                       \
  } while (0)
