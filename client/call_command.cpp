// opclient call OP: any operation, with args from --args and -a, payloads from and to
// files or stdin/stdout.
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include "commands.hpp"
#include "exit_codes.hpp"
#include "local_files.hpp"

namespace ops::opclient {

bool build_call_args(const std::string& args_json, const std::vector<std::string>& assigns,
                     std::string& out, std::string& error) {
  out.clear();
  if (!args_json.empty()) {
    if (Status s = client::validate_object(args_json); !s) {
      error = "--args: " + s.error().message;
      return false;
    }
  }
  if (assigns.empty()) {
    out = args_json;  // spliced as written: numbers keep their exact spelling
    return true;
  }
  rapidjson::Document doc;
  if (args_json.empty()) {
    doc.SetObject();
  } else {
    doc.Parse<rapidjson::kParseFullPrecisionFlag>(args_json.data(), args_json.size());
  }
  auto& alloc = doc.GetAllocator();
  for (const std::string& assign : assigns) {
    auto eq = assign.find('=');
    if (eq == std::string::npos || eq == 0) {
      error = "-a expects key=value, got \"" + assign + "\"";
      return false;
    }
    std::string key = assign.substr(0, eq);
    std::string text = assign.substr(eq + 1);
    rapidjson::Document parsed(&alloc);
    parsed.Parse<rapidjson::kParseFullPrecisionFlag | rapidjson::kParseValidateEncodingFlag>(
        text.data(), text.size());
    rapidjson::Value value;
    if (!text.empty() && !parsed.HasParseError()) {
      value.CopyFrom(parsed, alloc);  // 42, true, null, "quoted", [1,2], {"a":1}
    } else {
      value.SetString(text.data(), static_cast<rapidjson::SizeType>(text.size()), alloc);
    }
    doc.RemoveMember(key.c_str());
    doc.AddMember(rapidjson::Value(key.data(), static_cast<rapidjson::SizeType>(key.size()), alloc),
                  value, alloc);
  }
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                    rapidjson::CrtAllocator, rapidjson::kWriteValidateEncodingFlag>
      writer(buffer);
  if (!doc.Accept(writer)) {
    error = "-a: a key or value is not valid UTF-8";
    return false;
  }
  out.assign(buffer.GetString(), buffer.GetSize());
  return true;
}

int run_call(const ConnectionFlags& conn, const CallFlags& flags) {
  std::string args;
  std::string error;
  if (!build_call_args(flags.args_json, flags.assigns, args, error)) {
    print_error("usage", error);
    return exit_code::kUsage;
  }

  int status = 0;
  Input input;
  if (!flags.in.empty() && !input.open(flags.in, status)) return status;
  // Fail on a bad --out before anything is sent.
  Output output;
  std::uint64_t unused_offset = 0;
  if (!flags.out.empty() && !output.open(flags.out, false, unused_offset, status)) return status;

  auto client = open_client(conn, status);
  if (!client) return status;

  const std::uint64_t in_size = flags.in.empty() ? 0 : input.size();
  ProgressBar up("send    ", in_size, conn.output);
  auto response = client->call_fd(flags.operation, args, input.fd(), in_size,
                                  up.enabled() ? up.callback() : client::Progress{});
  if (!response) {
    up.stop();
    return report(response.error(), client->last_failure());
  }
  up.finish();
  if (!response->ok) return report(response->error, client::Failure::none);

  if (response->payload_size > 0) {
    if (flags.out.empty()) {
      note(conn.output, "the response carried " + std::to_string(response->payload_size) +
                            " payload bytes; discarded (keep them with --out FILE or --out -)");
      if (Status s = client->skip_payload(response->payload_size); !s) {
        return report(s.error(), client->last_failure());
      }
    } else {
      ProgressBar down("receive ", response->payload_size, conn.output);
      Status s = client->read_payload_to_fd(output.fd(), response->payload_size,
                                            down.enabled() ? down.callback() : client::Progress{});
      if (!s) {
        down.stop();
        return report(s.error(), client->last_failure());
      }
      down.finish();
    }
  }
  if (!flags.out.empty() && !output.commit(status)) return status;
  // With --out -, stdout carries the payload; the result goes to stderr to keep it clean.
  if (flags.out == "-") {
    if (!conn.output.quiet) print_json(response->result_json, stderr);
  } else {
    print_json(response->result_json, stdout);
  }
  return exit_code::kOk;
}

}  // namespace ops::opclient
