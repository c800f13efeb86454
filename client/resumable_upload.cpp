// The resumable path of opclient upload: upload_open (or, with --resume, upload_status by
// path), then upload_append in chunks, pipelined two deep so that the next chunk is on the
// wire while the server fsyncs the previous one, then upload_commit. Whatever stops it
// (Ctrl-C, a lost connection) leaves the upload open on the server, and opclient says how to
// continue.
#include "resumable_upload.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <deque>

#include "exit_codes.hpp"
#include "output.hpp"

namespace ops::opclient {

namespace {

using StrictWriter =
    rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                      rapidjson::CrtAllocator, rapidjson::kWriteValidateEncodingFlag>;

// Appends in flight at once: one being answered, one on the wire behind it.
constexpr std::size_t kPipelineDepth = 2;

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string resume_hint(const UploadFlags& flags, const std::string& remote) {
  return "the upload stays open on the server; continue it with: opclient upload --resume " +
         shell_quote(flags.local) + " " + shell_quote(remote);
}

struct Args {
  rapidjson::StringBuffer buffer;
  StrictWriter w{buffer};
  Args() { w.StartObject(); }
  std::string done() {
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
  }
  void str(const char* key, const std::string& value) {
    w.Key(key);
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  }
  void num(const char* key, std::uint64_t value) {
    w.Key(key);
    w.Uint64(value);
  }
};

bool member_string(const rapidjson::Document& d, const char* name, std::string& out) {
  if (!d.IsObject()) return false;
  auto it = d.FindMember(name);
  if (it == d.MemberEnd() || !it->value.IsString()) return false;
  out.assign(it->value.GetString(), it->value.GetStringLength());
  return true;
}

bool member_uint(const rapidjson::Document& d, const char* name, std::uint64_t& out) {
  if (!d.IsObject()) return false;
  auto it = d.FindMember(name);
  if (it == d.MemberEnd() || !it->value.IsUint64()) return false;
  out = it->value.GetUint64();
  return true;
}

}  // namespace

std::optional<int> run_resumable_upload(const ConnectionFlags& conn, const UploadFlags& flags,
                                        Input& input, const std::string& remote,
                                        const std::string& sha256) {
  if (flags.resume && flags.local == "-") {
    print_error("usage", "--resume needs the same local file, not stdin");
    return exit_code::kUsage;
  }
  if (flags.chunk == 0) {
    print_error("usage", "--chunk must be at least 1 byte");
    return exit_code::kUsage;
  }
  const std::uint64_t total = input.size();
  int status = 0;
  auto client = open_client(conn, status);
  if (!client) return status;

  std::string id;
  std::uint64_t offset = 0;
  if (flags.resume) {
    // The server remembers the upload by path (§11): no local state to lose.
    Args args;
    args.str("path", remote);
    auto r = client->call("upload_status", args.done());
    if (!r) return report(r.error(), client->last_failure());
    if (!r->ok) {
      int code = report(r->error, client::Failure::none);
      if (r->error.code == ErrorCode::not_found) {
        note(conn.output, "no open upload to " + remote + "; run without --resume to start one");
      }
      return code;
    }
    rapidjson::Document d;
    d.Parse(r->result_json.c_str());
    std::uint64_t size = 0;
    if (!member_string(d, "upload", id) || !member_uint(d, "offset", offset)) {
      return protocol_error("upload_status answered without upload and offset");
    }
    if (member_uint(d, "size", size) && size != total) {
      print_error("usage", "the open upload to " + remote + " is of " + std::to_string(size) +
                               " bytes, but " + input.name() + " has " + std::to_string(total));
      return exit_code::kUsage;
    }
    if (offset > total) {
      print_error("usage", "the server holds " + std::to_string(offset) + " bytes of " + remote +
                               ", more than " + input.name() + " has");
      return exit_code::kUsage;
    }
    note(conn.output, "resuming upload " + id + " at " + human_bytes(offset));
  } else {
    Args args;
    args.str("path", remote);
    args.num("size", total);
    if (flags.overwrite) {
      args.w.Key("overwrite");
      args.w.Bool(true);
    }
    args.str("sha256", sha256);
    auto r = client->call("upload_open", args.done());
    if (!r) return report(r.error(), client->last_failure());
    if (!r->ok &&
        (r->error.code == ErrorCode::unknown_operation || r->error.code == ErrorCode::forbidden)) {
      note(conn.output,
           "the server does not offer resumable uploads; sending " + remote + " in one request");
      return std::nullopt;
    }
    if (!r->ok) return report(r->error, client::Failure::none);
    rapidjson::Document d;
    d.Parse(r->result_json.c_str());
    if (!member_string(d, "upload", id)) return protocol_error("upload_open answered no id");
  }
  const std::string hint = resume_hint(flags, remote);
  arm_interrupt_note("opclient: interrupted; " + hint);
  auto interrupted_here = [&](int code) {
    disarm_interrupt_note();
    note(conn.output, hint);
    return code;
  };

  if (!input.seek(offset, status)) return interrupted_here(status);
  ProgressBar bar("upload  ", total, conn.output, offset);
  const std::uint64_t start = offset;
  std::uint64_t sent = offset;          // bytes handed to the connection
  std::deque<std::uint64_t> in_flight;  // the end offset each pending append should answer
  while (sent < total || !in_flight.empty()) {
    // Keep the pipe full: send the next append before reading the previous answer.
    while (sent < total && in_flight.size() < kPipelineDepth) {
      const std::uint64_t n = std::min(flags.chunk, total - sent);
      Args args;
      args.str("upload", id);
      args.num("offset", sent);
      auto req = client->send_request("upload_append", args.done(), n);
      if (!req) {
        bar.stop();
        return interrupted_here(report(req.error(), client->last_failure()));
      }
      const std::uint64_t base = sent - start;
      client::Progress progress;
      if (bar.enabled()) {
        progress = [&bar, base](std::uint64_t done, std::uint64_t) { bar.update(base + done); };
      }
      if (Status s = client->send_payload_from_fd(input.fd(), n, progress); !s) {
        bar.stop();
        // An early answer (e.g. conflict) explains more than the broken pipe.
        return interrupted_here(report(s.error(), client->last_failure()));
      }
      sent += n;
      in_flight.push_back(sent);
    }
    auto r = client->read_response();
    if (!r) {
      bar.stop();
      return interrupted_here(report(r.error(), client->last_failure()));
    }
    const std::uint64_t expected = in_flight.front();
    in_flight.pop_front();
    if (!r->ok) {
      bar.stop();
      return interrupted_here(report(r->error, client::Failure::none));
    }
    rapidjson::Document d;
    d.Parse(r->result_json.c_str());
    std::uint64_t answered = 0;
    if (!member_uint(d, "offset", answered) || answered != expected) {
      bar.stop();
      return interrupted_here(protocol_error("the server acknowledged offset " +
                                             std::to_string(answered) + ", expected " +
                                             std::to_string(expected)));
    }
  }
  bar.finish();

  Args args;
  args.str("upload", id);
  args.str("sha256", sha256);  // must equal the one given at open: a changed local file fails
  auto r = client->call("upload_commit", args.done());
  if (!r) return interrupted_here(report(r.error(), client->last_failure()));
  disarm_interrupt_note();
  if (!r->ok) {
    int code = report(r->error, client::Failure::none);
    if (r->error.code == ErrorCode::already_exists && !flags.overwrite) {
      note(conn.output, remote +
                            " exists; the upload stays open: abort it with opclient call "
                            "upload_abort -a upload=" +
                            id);
    } else if (r->error.code == ErrorCode::invalid_args && flags.resume) {
      note(conn.output, input.name() + " is not the file this upload was opened with");
    } else {
      note(conn.output, hint);
    }
    return code;
  }
  rapidjson::Document result;
  result.Parse(r->result_json.c_str());
  std::uint64_t size = 0;
  if (member_uint(result, "size", size) && size != total) {
    return protocol_error("the server stored " + std::to_string(size) + " bytes, we sent " +
                          std::to_string(total));
  }
  print_json(r->result_json, stdout);
  return exit_code::kOk;
}

}  // namespace ops::opclient
