// What opclient writes for people and scripts: results as JSON (indented on a terminal,
// one line otherwise), errors as "opclient: <code>: <message>" on stderr, notes, and a
// progress bar on stderr. Single-threaded, like the rest of opclient.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "opserver/client.hpp"
#include "opserver/error.hpp"

namespace ops::opclient {

struct OutputFlags {
  bool quiet = false;  // no progress bar, no notes; results and errors still print
};

bool is_tty(int fd) noexcept;

// Writes `json` (one JSON value) to `out`, indented when `out` is a terminal.
void print_json(std::string_view json, std::FILE* out);
// Re-indents `json` as print_json would; returns it unchanged if it does not parse.
std::string format_json(std::string_view json, bool pretty);

// "opclient: <code>: <message>" on stderr.
void print_error(std::string_view code, std::string_view message);
// A reply that breaks the protocol, as "opclient: protocol_error: <message>". Returns the
// exit status for it (a connection failure).
int protocol_error(std::string_view message);
// An error from a client call: the failure class, else the server's OPS/1 code. Returns
// the exit status for it.
int report(const Error& error, client::Failure failure);
// A note for people on stderr ("opclient: <message>"), unless quiet.
void note(const OutputFlags& flags, std::string_view message);

// "1.5 MiB", "312 B".
std::string human_bytes(std::uint64_t bytes);

// A one-line progress bar on stderr: bytes, percent, rate, ETA. Does nothing unless
// enabled (stderr is a terminal, not quiet, and the total is over 1 MiB).
class ProgressBar {
 public:
  ProgressBar(std::string label, std::uint64_t total, const OutputFlags& flags,
              std::uint64_t start = 0);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const noexcept { return enabled_; }
  // `done` counts from `start` given to the constructor.
  void update(std::uint64_t done);
  void finish();
  // Ends the bar's line without completing it (before an error message).
  void stop();
  // A callback for the client library.
  client::Progress callback();

 private:
  void draw(bool final);

  std::string label_;
  std::uint64_t total_;
  std::uint64_t start_;
  std::uint64_t done_ = 0;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point began_;
  std::chrono::steady_clock::time_point last_draw_;
};

// A size for people, as ls -h: bytes below 1 KiB as they are, else K, M, G, T (powers of
// 1024) with one decimal ("1.5K", "20.0M").
std::string human_size(std::uint64_t bytes);

}  // namespace ops::opclient
