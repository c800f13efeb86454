#include "opserver/strict_json.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <unordered_set>
#include <vector>

namespace ops::json {
namespace {

// Where validation alone is wanted: every event accepted, nothing built.
struct NullSink {
  bool Null() { return true; }
  bool Bool(bool) { return true; }
  bool Uint64(std::uint64_t) { return true; }
  bool Int64(std::int64_t) { return true; }
  bool Double(double) { return true; }
  bool String(const char*, rapidjson::SizeType, bool) { return true; }
  bool StartObject() { return true; }
  bool Key(const char*, rapidjson::SizeType, bool) { return true; }
  bool EndObject(rapidjson::SizeType) { return true; }
  bool StartArray() { return true; }
  bool EndArray(rapidjson::SizeType) { return true; }
};

// Forwards SAX events to `Sink` (a Document, or NullSink to validate only) while enforcing
// what RapidJSON does not.
template <class Sink>
class StrictHandler {
 public:
  StrictHandler(Sink& doc, const StrictJsonOptions& options, const rapidjson::MemoryStream& stream)
      : doc_(doc),
        options_(options),
        stream_(stream),
        has_escapes_(std::string_view(stream.begin_, stream.size_).find("\\u") !=
                     std::string_view::npos) {
    names_.reserve(stream.size_);
  }

  bool Null() { return value() && doc_.Null(); }
  bool Bool(bool b) { return value() && doc_.Bool(b); }
  bool Int(int) { return false; }  // never called: numbers arrive as RawNumber
  bool Uint(unsigned) { return false; }
  bool Int64(int64_t) { return false; }
  bool Uint64(uint64_t) { return false; }
  bool Double(double) { return false; }

  bool RawNumber(const char* s, rapidjson::SizeType len, bool) {
    if (!value()) return false;
    if constexpr (std::is_same_v<Sink, NullSink>) return true;  // RapidJSON checked the syntax
    std::string_view text(s, len);
    bool negative = !text.empty() && text.front() == '-';
    std::string_view digits = negative ? text.substr(1) : text;
    bool integral = !digits.empty() && std::all_of(digits.begin(), digits.end(),
                                                   [](char c) { return c >= '0' && c <= '9'; });
    if (integral && !negative) {
      std::uint64_t v = 0;
      auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (ec == std::errc() && p == digits.data() + digits.size()) return doc_.Uint64(v);
    } else if (integral && negative) {
      std::int64_t v = 0;
      auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      // "-0" stays a double so it is never taken for the unsigned integer 0.
      if (ec == std::errc() && p == text.data() + text.size() && v != 0) return doc_.Int64(v);
    }
    std::string copy(text);
    return doc_.Double(std::strtod(copy.c_str(), nullptr));
  }

  bool String(const char* s, rapidjson::SizeType len, bool copy) {
    if (!value()) return false;
    if (!escapes_valid({s, len})) return fail("string is not valid UTF-8 (lone surrogate?)");
    return doc_.String(s, len, copy);
  }

  bool StartObject() {
    if (!value()) return false;
    if (++depth_ > options_.max_depth) return fail("nesting deeper than the limit");
    frames_.push_back(Frame{true, 0, keys_.size(), {}, nullptr});
    return doc_.StartObject();
  }
  bool Key(const char* s, rapidjson::SizeType len, bool copy) {
    std::string_view key(s, len);
    if (!escapes_valid(key)) return fail("member name is not valid UTF-8 (lone surrogate?)");
    if (!add_key(frames_.back(), key)) {
      if (reason_.empty()) reason_ = "duplicate member name \"" + std::string(key) + "\"";
      return false;
    }
    return doc_.Key(s, len, copy);
  }
  bool EndObject(rapidjson::SizeType count) {
    pop();
    return doc_.EndObject(count);
  }
  bool StartArray() {
    if (!value()) return false;
    if (++depth_ > options_.max_depth) return fail("nesting deeper than the limit");
    frames_.push_back(Frame{false, 0, keys_.size(), {}, nullptr});
    return doc_.StartArray();
  }
  bool EndArray(rapidjson::SizeType count) {
    pop();
    return doc_.EndArray(count);
  }

  const std::string& reason() const { return reason_; }

 private:
  // An open object or array. The member names of every open object live in one arena
  // (`names_`, reserved to the input's size up front, so views into it stay valid: a
  // decoded name is never longer than its JSON text) and one stack of views (`keys_`):
  // no allocation per object or per member, which is what a result of many small objects
  // (a `list` page) is made of.
  struct Frame {
    bool object;
    std::size_t index;      // arrays: elements seen so far
    std::size_t first_key;  // objects: where this object's names start in keys_
    std::string_view last_key;
    // Past kLinearKeys members, a hash set: a 1 MiB header of 100,000 members must not
    // cost 10^10 comparisons on an I/O thread (reliability.md case 33).
    std::unique_ptr<std::unordered_set<std::string_view>> many;
  };
  static constexpr std::size_t kLinearKeys = 16;

  // The raw bytes are checked once (utf8_error_offset) and RapidJSON decodes escaped
  // surrogate pairs, but it passes a lone escaped surrogate (\uD800) on as the three
  // bytes ED A0..BF xx. Only a decoded string holding an 0xED byte, in a text with a \u
  // escape at all, needs the full check.
  bool escapes_valid(std::string_view text) const noexcept {
    return !has_escapes_ || std::memchr(text.data(), 0xED, text.size()) == nullptr ||
           is_valid_utf8(text);
  }

  // False if `key` is already a member of the innermost object.
  bool add_key(Frame& frame, std::string_view key) {
    // names_ holds every name read so far and was reserved to the input's size, which
    // no set of decoded names can outgrow: views into it stay valid.
    const std::size_t at = names_.size();
    if (names_.capacity() - at < key.size()) return fail("member names longer than the input");
    names_.append(key);
    std::string_view stored(names_.data() + at, key.size());
    frame.last_key = stored;
    const std::size_t members = keys_.size() - frame.first_key;
    if (!frame.many && members < kLinearKeys) {
      for (std::size_t i = frame.first_key; i < keys_.size(); ++i) {
        if (keys_[i] == stored) return false;
      }
      keys_.push_back(stored);
      return true;
    }
    if (!frame.many) {
      frame.many = std::make_unique<std::unordered_set<std::string_view>>(
          keys_.begin() + static_cast<std::ptrdiff_t>(frame.first_key), keys_.end());
      keys_.resize(frame.first_key);
    }
    return frame.many->insert(stored).second;
  }

  // Called at the start of every value: records its offset under its JSON pointer.
  bool value() {
    if (options_.offsets != nullptr) {
      std::string pointer = path_prefix();
      if (!frames_.empty()) {
        Frame& frame = frames_.back();
        pointer += '/';
        pointer += frame.object ? escape(frame.last_key) : std::to_string(frame.index);
      }
      // The stream has consumed the value's first character already.
      std::size_t at = stream_.Tell();
      (*options_.offsets)[pointer] = at > 0 ? at - 1 : 0;
    }
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
    return true;
  }
  std::string path_prefix() const {
    if (options_.offsets == nullptr) return {};
    // Rebuild from the stack of open containers (configs are small).
    std::string path;
    for (std::size_t i = 0; i + 1 < frames_.size(); ++i) {
      const Frame& f = frames_[i];
      path += '/';
      path += f.object ? escape(f.last_key) : std::to_string(f.index - 1);
    }
    return path;
  }
  static std::string escape(std::string_view key) {
    std::string out;
    for (char c : key) {
      if (c == '~') {
        out += "~0";
      } else if (c == '/') {
        out += "~1";
      } else {
        out += c;
      }
    }
    return out;
  }
  void pop() {
    --depth_;
    if (frames_.back().object) keys_.resize(frames_.back().first_key);
    frames_.pop_back();
  }
  bool fail(std::string reason) {
    reason_ = std::move(reason);
    return false;
  }

  Sink& doc_;
  const StrictJsonOptions& options_;
  const rapidjson::MemoryStream& stream_;
  const bool has_escapes_;  // the text holds a \u escape somewhere
  unsigned depth_ = 0;
  std::vector<Frame> frames_;
  std::vector<std::string_view> keys_;  // names of the open objects' members, in order
  std::string names_;                   // the bytes keys_ views
  std::string reason_;
};

// UTF-8 is checked once over the whole text (utf8_error_offset) rather than character by
// character inside RapidJSON (kParseValidateEncodingFlag), which cost more than the parse
// itself. The recursive parser is safe: StrictHandler refuses past max_depth before
// RapidJSON recurses any deeper.
constexpr unsigned kParseFlags =
    rapidjson::kParseNumbersAsStringsFlag | rapidjson::kParseStopWhenDoneFlag;
// Where value offsets are recorded (config files, for file:line:col messages) the
// iterative parser is kept: its events come at the positions those messages have always
// named.
constexpr unsigned kParseFlagsWithOffsets = kParseFlags | rapidjson::kParseIterativeFlag;

// The first error in `text`: a byte that is not UTF-8 before RapidJSON's error (or
// anywhere, if RapidJSON found none) is the one reported, as RapidJSON's own encoding
// check would have reported it.
bool encoding_error(std::string_view text, bool parsed, std::size_t parse_error_offset,
                    JsonError& error) {
  const std::size_t bad = utf8_error_offset(text);
  if (bad == text.size() || (!parsed && bad >= parse_error_offset)) return false;
  error = {bad, "Invalid encoding in string."};
  return true;
}

}  // namespace

bool parse_strict_json(std::string_view text, rapidjson::Document& out, JsonError& error,
                       const StrictJsonOptions& options) {
  if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF &&
      static_cast<unsigned char>(text[1]) == 0xBB && static_cast<unsigned char>(text[2]) == 0xBF) {
    error = {0, "a byte-order mark is not allowed"};
    return false;
  }
  rapidjson::MemoryStream stream(text.data(), text.size());
  StrictHandler<rapidjson::Document> handler(out, options, stream);
  rapidjson::Reader reader;
  bool parsed = false;
  std::size_t end = 0;
  auto generate = [&](rapidjson::Document&) {
    parsed = options.offsets != nullptr
                 ? !reader.Parse<kParseFlagsWithOffsets>(stream, handler).IsError()
                 : !reader.Parse<kParseFlags>(stream, handler).IsError();
    end = stream.Tell();
    return parsed;
  };
  out.Populate(generate);
  if (encoding_error(text, parsed, reader.GetErrorOffset(), error)) {
    out.SetNull();
    return false;
  }
  if (!parsed) {
    error.offset = reader.GetErrorOffset();
    error.reason = !handler.reason().empty()
                       ? handler.reason()
                       : std::string(rapidjson::GetParseError_En(reader.GetParseErrorCode()));
    out.SetNull();
    return false;
  }
  // §7: nothing may follow the value inside the frame, not even whitespace.
  if (end != text.size()) {
    error = {end, "unexpected bytes after the JSON value"};
    out.SetNull();
    return false;
  }
  return true;
}

bool validate_strict_object(std::string_view text, JsonError& error,
                            const StrictJsonOptions& options) {
  if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF &&
      static_cast<unsigned char>(text[1]) == 0xBB && static_cast<unsigned char>(text[2]) == 0xBF) {
    error = {0, "a byte-order mark is not allowed"};
    return false;
  }
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || text[first] != '{') {
    error = {first == std::string_view::npos ? text.size() : first, "not a JSON object"};
    return false;
  }
  rapidjson::MemoryStream stream(text.data(), text.size());
  NullSink sink;
  StrictHandler<NullSink> handler(sink, options, stream);
  rapidjson::Reader reader;
  const bool parsed = !reader.Parse<kParseFlags>(stream, handler).IsError();
  if (encoding_error(text, parsed, reader.GetErrorOffset(), error)) return false;
  if (!parsed) {
    error.offset = reader.GetErrorOffset();
    error.reason = !handler.reason().empty()
                       ? handler.reason()
                       : std::string(rapidjson::GetParseError_En(reader.GetParseErrorCode()));
    return false;
  }
  if (stream.Tell() != text.size()) {
    error = {stream.Tell(), "unexpected bytes after the JSON value"};
    return false;
  }
  return true;
}

bool is_valid_utf8(std::string_view text) noexcept {
  return utf8_error_offset(text) == text.size();
}

std::size_t utf8_error_offset(std::string_view text) noexcept {
  const auto* begin = reinterpret_cast<const unsigned char*>(text.data());
  const auto* p = begin;
  const auto* end = p + text.size();
  while (p < end) {
    // JSON is mostly ASCII: eight bytes at a time while no high bit is set.
    while (end - p >= 8) {
      std::uint64_t word;
      std::memcpy(&word, p, sizeof word);
      if ((word & 0x8080808080808080ull) != 0) break;
      p += 8;
    }
    if (p == end) break;
    unsigned c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t n;
    unsigned cp;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return static_cast<std::size_t>(p - begin);
    }
    if (static_cast<std::size_t>(end - p) <= n) return static_cast<std::size_t>(p - begin);
    for (std::size_t i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return static_cast<std::size_t>(p - begin);
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    static constexpr unsigned kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return static_cast<std::size_t>(p - begin);
    p += n + 1;
  }
  return text.size();
}

LineCol line_col(std::string_view text, std::size_t offset) noexcept {
  LineCol lc;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++lc.line;
      lc.col = 1;
    } else {
      ++lc.col;
    }
  }
  return lc;
}

std::string to_string(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

}  // namespace ops::json
