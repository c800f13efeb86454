// opclient upload and download: files with a SHA-256 sent ahead, atomic local writes,
// resume with --continue.
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "commands.hpp"
#include "exit_codes.hpp"
#include "json_args.hpp"
#include "local_files.hpp"
#include "output.hpp"
#include "resumable_upload.hpp"
#include "tree_transfer.hpp"

namespace ops::opclient {

namespace {

// Reads an unsigned member of a result object; false when absent or not one.
bool result_uint(const rapidjson::Document& doc, const char* name, std::uint64_t& value) {
  if (!doc.IsObject()) return false;
  auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || !it->value.IsUint64()) return false;
  value = it->value.GetUint64();
  return true;
}

// --sha256 and --continue: the complete local file (resumed or not) against the server's
// SHA-256 of the whole remote file. A file that differs is left where it is, as
// LOCAL.part: nothing is removed, the status says it (kVerify).
int check_whole_file(const rapidjson::Document& result, Output& output, const OutputFlags& flags) {
  std::string expected;
  if (result.IsObject()) {
    auto it = result.FindMember("sha256");
    if (it != result.MemberEnd() && it->value.IsString()) expected = it->value.GetString();
  }
  if (expected.empty()) {
    output.close_partial();
    return protocol_error("the server sent no sha256 (does it support it?)");
  }
  int fd = ::open(output.partial_path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    print_error(label_for(client::Failure::local),
                "cannot read " + output.partial_path() + ": " + std::strerror(errno));
    return exit_code::kLocal;
  }
  auto actual = client::sha256_fd(fd, 0, client::Progress{});
  ::close(fd);
  if (!actual) {
    print_error(label_for(client::Failure::local),
                "cannot read " + output.partial_path() + ": " + actual.error().message);
    return exit_code::kLocal;
  }
  if (*actual != expected) {
    output.close_partial();
    print_error(wire_name(ErrorCode::checksum_mismatch),
                "the downloaded file's sha256 is " + *actual + ", the server's is " + expected +
                    "; nothing was removed: the file stays " + output.partial_path());
    return exit_code::kVerify;
  }
  note(flags, "verified sha256 " + *actual);
  return exit_code::kOk;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

int run_upload(const ConnectionFlags& conn, const UploadFlags& flags) {
  if (flags.recursive) return run_upload_tree(conn, flags);
  std::string remote = flags.remote;
  if (remote.empty() || remote.back() == '/') {
    if (flags.local == "-") {
      print_error("usage", "uploading stdin needs a REMOTE name: opclient upload - NAME");
      return exit_code::kUsage;
    }
    remote += base_name(flags.local);  // like scp: into the directory, same name
  }

  int status = 0;
  Input input;
  if (!input.open(flags.local, status)) return status;

  // The digest first (§5: the server checks it), so that corruption in transit fails the
  // upload instead of storing a damaged file. Hashing before connecting keeps the
  // connection from idling.
  std::string sha256;
  {
    ProgressBar hashing("sha256  ", input.size(), conn.output);
    auto digest = client::sha256_fd(input.fd(), input.size(),
                                    hashing.enabled() ? hashing.callback() : client::Progress{});
    if (!digest) {
      print_error(label_for(client::Failure::local),
                  "cannot read " + input.name() + ": " + digest.error().message);
      return exit_code::kLocal;
    }
    hashing.finish();
    sha256 = std::move(*digest);
  }
  if (!input.rewind(status)) return status;
  // Large files go through the resumable operations (§11), so a broken link costs only the
  // chunk in flight.
  if (flags.resume || input.size() > flags.resumable_threshold) {
    if (auto status = run_resumable_upload(conn, flags, input, remote, sha256)) return *status;
  }

  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  w.Key("path");
  if (!write_string(w, remote)) {
    print_error("usage", "the remote path is not valid UTF-8");
    return exit_code::kUsage;
  }
  if (flags.overwrite) {
    w.Key("overwrite");
    w.Bool(true);
  }
  w.Key("sha256");
  write_string(w, sha256);
  w.EndObject();

  auto client = open_client(conn, status);
  if (!client) return status;
  ProgressBar bar("upload  ", input.size(), conn.output);
  auto response =
      client->call_fd("upload", {buffer.GetString(), buffer.GetSize()}, input.fd(), input.size(),
                      bar.enabled() ? bar.callback() : client::Progress{});
  if (!response) {
    bar.stop();
    return report(response.error(), client->last_failure());
  }
  bar.finish();
  if (!response->ok) {
    int code = report(response->error, client::Failure::none);
    if (response->error.code == ErrorCode::already_exists && !flags.overwrite) {
      note(conn.output, "use --overwrite to replace " + remote);
    }
    return code;
  }

  rapidjson::Document result;
  result.Parse(response->result_json.c_str());
  std::uint64_t size = 0;
  if (result_uint(result, "size", size) && size != input.size()) {
    return protocol_error("the server stored " + std::to_string(size) + " bytes, we sent " +
                          std::to_string(input.size()));
  }
  if (result.IsObject()) {
    auto it = result.FindMember("sha256");
    if (it != result.MemberEnd() && it->value.IsString() && sha256 != it->value.GetString()) {
      return protocol_error("the server reports another sha256 than the one we sent");
    }
  }
  print_json(response->result_json, stdout);
  return exit_code::kOk;
}

int run_download(const ConnectionFlags& conn, const DownloadFlags& flags) {
  if (flags.recursive) {
    if (flags.resume || flags.sha256) {
      print_error("usage", "download -r takes neither --continue nor --sha256");
      return exit_code::kUsage;
    }
    return run_download_tree(conn, flags);
  }
  std::string local = flags.local;
  const std::string remote_name = base_name(flags.remote);
  if (local.empty()) {
    if (remote_name.empty()) {
      print_error("usage", "cannot derive a local name from \"" + flags.remote + "\"; give LOCAL");
      return exit_code::kUsage;
    }
    local = remote_name;
  } else if (local != "-" && (local.back() == '/' || is_directory(local))) {
    if (local.back() != '/') local += '/';
    local += remote_name;
  }
  if (flags.resume && local == "-") {
    print_error("usage", "--continue needs a local file, not stdout");
    return exit_code::kUsage;
  }
  if (flags.sha256 && local == "-") {
    print_error("usage", "--sha256 needs a local file to check, not stdout");
    return exit_code::kUsage;
  }

  // Like upload, which the server refuses over an existing file without --overwrite.
  if (local != "-" && !flags.resume && !flags.force && path_exists(local)) {
    print_error(wire_name(ErrorCode::already_exists),
                "the local file " + local + " exists; use --force to replace it");
    return exit_for(ErrorCode::already_exists);
  }
  // A resumed file is checked whole at the end: its first part came from another run.
  const bool verify = flags.sha256 || flags.resume;

  int status = 0;
  Output output;
  std::uint64_t offset = 0;
  if (!output.open(local, flags.resume, offset, status)) return status;

  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  w.Key("path");
  if (!write_string(w, flags.remote)) {
    print_error("usage", "the remote path is not valid UTF-8");
    return exit_code::kUsage;
  }
  if (offset > 0) {
    w.Key("offset");
    w.Uint64(offset);
  }
  if (verify) {
    w.Key("sha256");  // asked on the request that fetches the last range
    w.Bool(true);
  }
  w.EndObject();

  auto client = open_client(conn, status);
  if (!client) return status;
  auto response = client->call("download", {buffer.GetString(), buffer.GetSize()});
  if (!response) return report(response.error(), client->last_failure());
  if (!response->ok) {
    int code = report(response->error, client::Failure::none);
    if (response->error.code == ErrorCode::invalid_args && offset > 0) {
      note(conn.output, "the local partial file " + output.partial_path() + " has " +
                            std::to_string(offset) +
                            " bytes; is it longer than the remote file? Remove it or drop "
                            "--continue");
    }
    return code;
  }

  rapidjson::Document result;
  result.Parse(response->result_json.c_str());
  std::uint64_t length = 0;
  // §7: result.length always equals the payload that follows.
  if (result_uint(result, "length", length) && length != response->payload_size) {
    return protocol_error("the server announced " + std::to_string(length) + " bytes but sends " +
                          std::to_string(response->payload_size));
  }
  std::string resume_hint;
  if (!output.is_stdout()) {
    // Bytes are coming: from here on they are kept, whatever stops us.
    output.keep_partial();
    resume_hint = "partial download kept in " + output.partial_path() +
                  "; resume it with: opclient download --continue " + flags.remote + " " + local;
    arm_interrupt_note("opclient: interrupted; " + resume_hint);
  }
  ProgressBar bar("download", offset + response->payload_size, conn.output, offset);
  Status s = client->read_payload_to_fd(output.fd(), response->payload_size,
                                        bar.enabled() ? bar.callback() : client::Progress{});
  if (!s) {
    bar.stop();
    int code = report(s.error(), client->last_failure());
    if (!output.is_stdout()) note(conn.output, resume_hint);
    disarm_interrupt_note();
    return code;
  }
  bar.finish();
  disarm_interrupt_note();
  if (verify) {
    if (int code = check_whole_file(result, output, conn.output); code != exit_code::kOk) {
      return code;
    }
  }
  if (!output.commit(status)) return status;
  if (!output.is_stdout()) print_json(response->result_json, stdout);
  return exit_code::kOk;
}

}  // namespace ops::opclient
