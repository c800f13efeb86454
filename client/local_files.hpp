// Local ends of a payload: an input of known size (a file, or stdin spooled to an unnamed
// temporary file when it is a pipe, since §1 needs the size up front) and an output that
// appears under its name only when complete (LOCAL.part, then rename), with resume.
#pragma once

#include <cstdint>
#include <string>

#include "output.hpp"

namespace ops::opclient {

// Removes a pending LOCAL.part on SIGINT/SIGTERM/SIGHUP (unless it is kept for
// --continue), prints the armed interrupt note if any, then dies of the signal as usual.
// Call once from main.
void install_signal_cleanup();

// A line printed to stderr if a signal ends opclient (e.g. how to resume an upload left
// open on the server); disarm once it no longer applies. At most 8 KiB.
void arm_interrupt_note(const std::string& line);
void disarm_interrupt_note();

class Input {
 public:
  Input() = default;
  ~Input();
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;

  // Opens `path` ("-" is stdin). On failure prints the error and returns false with
  // `exit_status` set.
  bool open(const std::string& path, int& exit_status);
  int fd() const noexcept { return fd_; }
  std::uint64_t size() const noexcept { return size_; }
  // Back to where the payload starts (after hashing it).
  bool rewind(int& exit_status);
  // To `offset` bytes past where the payload starts (resuming an upload).
  bool seek(std::uint64_t offset, int& exit_status);
  const std::string& name() const noexcept { return name_; }

 private:
  int fd_ = -1;
  bool owned_ = false;
  std::uint64_t size_ = 0;
  std::int64_t start_ = 0;
  std::string name_;
};

class Output {
 public:
  Output() = default;
  ~Output();
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  // Opens `path` ("-" is stdout). With `resume`, appends to LOCAL.part or else to LOCAL
  // itself and reports how many bytes are already there in `offset`; a partial file is
  // then kept on failure. Prints and returns false on failure.
  bool open(const std::string& path, bool resume, std::uint64_t& offset, int& exit_status);
  int fd() const noexcept { return fd_; }
  bool is_stdout() const noexcept { return stdout_; }
  // The file as it will be named on success.
  const std::string& path() const noexcept { return path_; }
  // Where the bytes go until then.
  const std::string& partial_path() const noexcept { return partial_; }
  bool keeps_partial() const noexcept { return keep_partial_; }
  // From now on a failure or a signal leaves the partial file for --continue (called once
  // the server has started sending, so that a refused request leaves nothing behind).
  void keep_partial();
  // Closes the partial file without giving it its final name (a download that failed
  // its SHA-256 check stays LOCAL.part, to be looked at).
  void close_partial();
  // Flushes to disk and gives the file its name.
  bool commit(int& exit_status);
  // Drops the partial file unless it is kept for --continue.
  void abandon();

 private:
  int fd_ = -1;
  bool stdout_ = false;
  bool keep_partial_ = false;
  bool rename_ = false;
  bool done_ = false;
  std::string path_;
  std::string partial_;
};

// Size of an existing regular file, or -1.
std::int64_t file_size(const std::string& path);
// The last component of a '/'-separated path ("a/b.txt" -> "b.txt").
std::string base_name(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace ops::opclient
