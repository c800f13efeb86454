#include "new_key.hpp"

#include <fcntl.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "exit_codes.hpp"
#include "json_args.hpp"
#include "output.hpp"

namespace ops::opclient {

int call_for_new_key(const ConnectionFlags& conn, const char* operate, const std::string& args_json,
                     const std::string& key_file_out, NewKey& out) {
  int key_fd = -1;
  if (!key_file_out.empty()) {
    key_fd = ::open(key_file_out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (key_fd < 0) {
      print_error(label_for(client::Failure::local),
                  "cannot create " + key_file_out + ": " + std::strerror(errno));
      return exit_code::kLocal;
    }
  }
  auto drop_key_file = [&] {
    if (key_fd < 0) return;
    ::close(key_fd);
    ::unlink(key_file_out.c_str());
    key_fd = -1;
  };
  int status = 0;
  if (!simple_call(conn, operate, args_json, out.result_json, status)) {
    drop_key_file();
    return status;
  }
  rapidjson::Document doc;
  doc.Parse(out.result_json.c_str());
  out.key = str_member(doc, "key");
  out.user = str_member(doc, "user");
  if (out.key.empty()) {
    drop_key_file();
    print_error(label_for(client::Failure::protocol), std::string(operate) + " returned no key");
    return exit_code::kConnection;
  }
  if (key_fd < 0) return exit_code::kOk;
  const std::string line = out.key + "\n";
  const bool written =
      ::write(key_fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
      ::fsync(key_fd) == 0;
  ::close(key_fd);
  if (written) {
    out.in_file = true;
    return exit_code::kOk;
  }
  ::unlink(key_file_out.c_str());
  print_error(label_for(client::Failure::local),
              "cannot write " + key_file_out + "; the key follows on stdout");
  std::printf("%s\n", out.key.c_str());
  return exit_code::kLocal;
}

}  // namespace ops::opclient
