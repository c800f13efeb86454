#include "output.hpp"

#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <cinttypes>
#include <cmath>

#include "exit_codes.hpp"

namespace ops::opclient {

namespace {
constexpr std::uint64_t kProgressThreshold = std::uint64_t{1} << 20;  // issue 5: over 1 MiB
constexpr auto kRedrawEvery = std::chrono::milliseconds(100);
constexpr int kBarWidth = 24;
}  // namespace

bool is_tty(int fd) noexcept {
  return ::isatty(fd) == 1;
}

std::string format_json(std::string_view json, bool pretty) {
  rapidjson::Document doc;
  // Full precision: a number must come out as the server wrote it.
  doc.Parse<rapidjson::kParseFullPrecisionFlag>(json.data(), json.size());
  if (doc.HasParseError()) return std::string(json);
  rapidjson::StringBuffer buffer;
  if (pretty) {
    rapidjson::PrettyWriter<rapidjson::StringBuffer> writer(buffer);
    writer.SetIndent(' ', 2);
    doc.Accept(writer);
  } else {
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    doc.Accept(writer);
  }
  return std::string(buffer.GetString(), buffer.GetSize());
}

void print_json(std::string_view json, std::FILE* out) {
  std::string text = format_json(json, is_tty(::fileno(out)));
  text.push_back('\n');
  std::fwrite(text.data(), 1, text.size(), out);
  std::fflush(out);
}

void print_error(std::string_view code, std::string_view message) {
  std::fprintf(stderr, "opclient: %.*s: %.*s\n", static_cast<int>(code.size()), code.data(),
               static_cast<int>(message.size()), message.data());
}

int protocol_error(std::string_view message) {
  print_error(label_for(client::Failure::protocol), message);
  return exit_code::kConnection;
}

int report(const Error& error, client::Failure failure) {
  if (failure == client::Failure::none) {
    print_error(wire_name(error.code), error.message);
    // §9: the error's machine-readable facts, for scripts that parse stderr.
    if (!error.details.empty()) print_error("details", error.details);
  } else {
    print_error(label_for(failure), error.message);
  }
  return exit_for(failure, error.code);
}

void note(const OutputFlags& flags, std::string_view message) {
  if (flags.quiet) return;
  std::fprintf(stderr, "opclient: %.*s\n", static_cast<int>(message.size()), message.data());
}

std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 5) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", value, kUnits[unit]);
  return text;
}

ProgressBar::ProgressBar(std::string label, std::uint64_t total, const OutputFlags& flags,
                         std::uint64_t start)
    : label_(std::move(label)),
      total_(total),
      start_(start),
      enabled_(!flags.quiet && total - std::min(start, total) > kProgressThreshold &&
               is_tty(STDERR_FILENO)),
      began_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() {
  stop();
}

void ProgressBar::update(std::uint64_t done) {
  done_ = done;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_draw_ < kRedrawEvery && start_ + done_ < total_) return;
  last_draw_ = now;
  draw(false);
}

void ProgressBar::finish() {
  if (!enabled_ || !drawn_) return;
  draw(true);
  std::fputc('\n', stderr);
  std::fflush(stderr);
  drawn_ = false;
}

void ProgressBar::stop() {
  if (!drawn_) return;
  std::fputc('\n', stderr);
  std::fflush(stderr);
  drawn_ = false;
}

client::Progress ProgressBar::callback() {
  return [this](std::uint64_t done, std::uint64_t) { update(done); };
}

void ProgressBar::draw(bool final) {
  const std::uint64_t position = start_ + done_;
  const double fraction =
      total_ == 0 ? 1.0
                  : std::min(1.0, static_cast<double>(position) / static_cast<double>(total_));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count();
  const double rate = seconds > 0.05 ? static_cast<double>(done_) / seconds : 0.0;

  std::string bar(kBarWidth, ' ');
  const int filled = static_cast<int>(fraction * kBarWidth);
  for (int i = 0; i < filled; ++i) bar[i] = '=';
  if (filled < kBarWidth) bar[filled] = '>';

  char eta[32] = "--:--";
  if (final && seconds < 60) {
    std::snprintf(eta, sizeof eta, "%.1fs", seconds);
  } else if (final) {
    std::snprintf(eta, sizeof eta, "%d:%02d", static_cast<int>(seconds) / 60,
                  static_cast<int>(seconds) % 60);
  } else if (rate > 0) {
    const auto left = static_cast<std::uint64_t>(static_cast<double>(total_ - position) / rate);
    std::snprintf(eta, sizeof eta, "%" PRIu64 ":%02" PRIu64, left / 60, left % 60);
  }
  std::fprintf(stderr, "\r%s %3d%% [%s] %s / %s  %s/s  %s %s\x1b[K", label_.c_str(),
               static_cast<int>(fraction * 100), bar.c_str(), human_bytes(position).c_str(),
               human_bytes(total_).c_str(), human_bytes(static_cast<std::uint64_t>(rate)).c_str(),
               final ? "in" : "ETA", eta);
  std::fflush(stderr);
  drawn_ = true;
}

std::string human_size(std::uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes);
  static constexpr const char* kUnits = "KMGTPE";
  double value = static_cast<double>(bytes) / 1024.0;
  std::size_t unit = 0;
  // Round first, so that 1048575 bytes reads "1.0M" rather than "1024.0K".
  while (unit + 1 < 6 && std::round(value * 10.0) / 10.0 >= 1024.0) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f%c", value, kUnits[unit]);
  return text;
}

}  // namespace ops::opclient
