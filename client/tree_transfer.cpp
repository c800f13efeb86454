// upload -r and download -r: a directory tree over one connection, with several requests
// in flight (OPS/1 answers in order, §3) so that many small files do not each cost a
// round trip. One progress bar over the whole tree's bytes.
#include "tree_transfer.hpp"

#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <system_error>
#include <vector>

#include "exit_codes.hpp"
#include "json_args.hpp"
#include "local_files.hpp"
#include "remote_paths.hpp"

namespace ops::opclient {

namespace {

namespace fs = std::filesystem;

// Requests sent ahead of the answers read: enough to hide the round trip of small files,
// few enough that a failure wastes little.
constexpr std::size_t kWindow = 8;

struct LocalFile {
  std::string relative;  // '/'-separated, below the tree's root
  std::uint64_t size = 0;
  std::string sha256;
};

std::string join(const std::string& base, const std::string& relative) {
  if (base.empty() || base == "/") return relative;
  return base + "/" + relative;
}

int local_failure(const std::string& message) {
  print_error(label_for(client::Failure::local), message);
  return exit_code::kLocal;
}

// Args of one request, as JSON; false when a path is not valid UTF-8.
template <class Fill>
bool make_args(std::string& out, Fill fill) {
  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  if (!fill(w)) return false;
  w.EndObject();
  out.assign(buffer.GetString(), buffer.GetSize());
  return true;
}

// What a tree transfer prints on success, as the one-file commands print the result.
void print_summary(const std::string& path, std::size_t files, std::size_t dirs,
                   std::uint64_t bytes) {
  std::string text;
  make_args(text, [&](StrictWriter& w) {
    w.Key("path");
    write_string(w, path);
    w.Key("files");
    w.Uint64(files);
    w.Key("directories");
    w.Uint64(dirs);
    w.Key("bytes");
    w.Uint64(bytes);
    return true;
  });
  print_json(text, stdout);
}

// The first failure decides the exit status; later ones are printed too.
void keep_first(int& status, int code) {
  if (status == exit_code::kOk) status = code;
}

// --- upload -r ---

// Files (regular only) and directories without any entry, below `root`. Symbolic links
// and other special files are skipped with a note: following them could leave the tree.
bool walk_local(const fs::path& root, std::vector<LocalFile>& files,
                std::vector<std::string>& empty_dirs, const OutputFlags& output) {
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec), end;
  if (ec) {
    local_failure("cannot read " + root.string() + ": " + ec.message());
    return false;
  }
  for (; it != end; it.increment(ec)) {
    if (ec) {
      local_failure("cannot read " + it->path().string() + ": " + ec.message());
      return false;
    }
    const fs::path relative = it->path().lexically_relative(root);
    const auto status = it->symlink_status(ec);
    if (fs::is_symlink(status)) {
      note(output, "skipping the symbolic link " + it->path().string());
      it.disable_recursion_pending();
    } else if (fs::is_directory(status)) {
      if (fs::is_empty(it->path(), ec)) empty_dirs.push_back(relative.generic_string());
    } else if (fs::is_regular_file(status)) {
      files.push_back({relative.generic_string(), fs::file_size(it->path(), ec), {}});
    } else {
      note(output, "skipping " + it->path().string() + " (not a regular file)");
    }
  }
  return true;
}

}  // namespace

int run_upload_tree(const ConnectionFlags& conn, const UploadFlags& flags) {
  const fs::path root = flags.local;
  if (!is_directory(flags.local)) {
    print_error("usage", "upload -r needs a local directory: " + flags.local);
    return exit_code::kUsage;
  }
  std::string base = trim_trailing_slashes(flags.remote);
  if (base.empty()) base = base_name(trim_trailing_slashes(flags.local));
  if (base.empty() || base == "." || base == "..") {
    print_error("usage", "give the remote directory: opclient upload -r DIR REMOTE");
    return exit_code::kUsage;
  }

  std::vector<LocalFile> files;
  std::vector<std::string> empty_dirs;
  if (!walk_local(root, files, empty_dirs, conn.output)) return exit_code::kLocal;
  std::uint64_t total = 0;
  for (const auto& f : files) total += f.size;

  // Every digest first (the server checks each one, §5), so the connection never idles.
  {
    ProgressBar hashing("sha256  ", total, conn.output);
    std::uint64_t done = 0;
    for (auto& f : files) {
      const std::string path = (root / f.relative).string();
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return local_failure("cannot read " + path + ": " + std::strerror(errno));
      auto digest = client::sha256_fd(fd, f.size, [&](std::uint64_t d, std::uint64_t) {
        if (hashing.enabled()) hashing.update(done + d);
      });
      ::close(fd);
      if (!digest) return local_failure("cannot read " + path + ": " + digest.error().message);
      f.sha256 = std::move(*digest);
      done += f.size;
    }
    hashing.finish();
  }

  int status = 0;
  auto client = open_client(conn, status);
  if (!client) return status;

  // Empty directories first: mkdir, pipelined like the files.
  std::deque<std::string> in_flight;  // remote paths, in the order sent
  int result = exit_code::kOk;
  auto read_one = [&]() -> bool {
    auto response = client->read_response();
    const std::string path = in_flight.front();
    in_flight.pop_front();
    if (!response) {
      keep_first(result, report(response.error(), client->last_failure()));
      return false;  // the connection is gone
    }
    if (!response->ok) {
      print_error(wire_name(response->error.code), path + ": " + response->error.message);
      keep_first(result, exit_for(response->error.code));
    }
    return true;
  };
  std::size_t dirs_created = 0;
  for (const auto& dir : empty_dirs) {
    std::string args;
    const std::string path = join(base, dir);
    if (!make_args(args, [&](StrictWriter& w) {
          w.Key("path");
          return write_string(w, path);
        })) {
      print_error("usage", "a path is not valid UTF-8: " + path);
      return exit_code::kUsage;
    }
    if (in_flight.size() >= kWindow && !read_one()) return result;
    auto sent = client->send_request("mkdir", args);
    if (!sent) return report(sent.error(), client->last_failure());
    in_flight.push_back(path);
    ++dirs_created;
  }
  if (files.empty() && empty_dirs.empty()) {  // an empty tree: its root at least
    std::string args;
    make_args(args, [&](StrictWriter& w) {
      w.Key("path");
      return write_string(w, base);
    });
    auto sent = client->send_request("mkdir", args);
    if (!sent) return report(sent.error(), client->last_failure());
    in_flight.push_back(base);
    ++dirs_created;
  }

  ProgressBar bar("upload  ", total, conn.output);
  std::uint64_t done = 0;
  for (const auto& f : files) {
    const std::string path = join(base, f.relative);
    std::string args;
    if (!make_args(args, [&](StrictWriter& w) {
          w.Key("path");
          if (!write_string(w, path)) return false;
          if (flags.overwrite) {
            w.Key("overwrite");
            w.Bool(true);
          }
          w.Key("sha256");
          return write_string(w, f.sha256);
        })) {
      bar.stop();
      print_error("usage", "a path is not valid UTF-8: " + path);
      return exit_code::kUsage;
    }
    if (in_flight.size() >= kWindow && !read_one()) {
      bar.stop();
      return result;
    }
    const std::string local_path = (root / f.relative).string();
    int fd = ::open(local_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      bar.stop();
      return local_failure("cannot read " + local_path + ": " + std::strerror(errno));
    }
    auto sent = client->send_request("upload", args, f.size);
    Status s = sent ? client->send_payload_from_fd(fd, f.size,
                                                   [&](std::uint64_t d, std::uint64_t) {
                                                     if (bar.enabled()) bar.update(done + d);
                                                   })
                    : Status(sent.error());
    ::close(fd);
    if (!s) {
      bar.stop();
      return report(s.error(), client->last_failure());
    }
    in_flight.push_back(path);
    done += f.size;
  }
  while (!in_flight.empty()) {
    if (!read_one()) break;
  }
  if (result == exit_code::kOk) {
    bar.finish();
  } else {
    bar.stop();
  }
  if (result == exit_code::kOk) {
    print_summary(base, files.size(), dirs_created, total);
  }
  return result;
}

// --- download -r ---

namespace {

struct RemoteFile {
  std::string relative;
  std::uint64_t size = 0;
};

// A relative path from the server that stays below the local directory: no absolute
// path, no "." or ".." component, no empty one.
bool safe_relative(const std::string& relative) {
  if (relative.empty() || relative.front() == '/') return false;
  std::size_t start = 0;
  while (start <= relative.size()) {
    std::size_t end = relative.find('/', start);
    if (end == std::string::npos) end = relative.size();
    const std::string part = relative.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

int run_download_tree(const ConnectionFlags& conn, const DownloadFlags& flags) {
  const std::string base = directory_path(flags.remote);
  std::string local_root = flags.local;
  if (local_root.empty()) local_root = base.empty() ? std::string(".") : base_name(base);
  if (local_root == "-") {
    print_error("usage", "download -r needs a local directory, not stdout");
    return exit_code::kUsage;
  }

  int status = 0;
  auto client = open_client(conn, status);
  if (!client) return status;

  // The whole listing, page after page (§10).
  std::vector<RemoteFile> files;
  std::vector<std::string> dirs;
  std::string after;
  for (;;) {
    std::string args;
    if (!make_args(args, [&](StrictWriter& w) {
          if (!base.empty()) {
            w.Key("path");
            if (!write_string(w, base)) return false;
          }
          w.Key("recursive");
          w.Bool(true);
          if (!after.empty()) {
            w.Key("after");
            if (!write_string(w, after)) return false;
          }
          return true;
        })) {
      print_error("usage", "the remote path is not valid UTF-8");
      return exit_code::kUsage;
    }
    auto response = client->call("list", args);
    if (!response) return report(response.error(), client->last_failure());
    if (!response->ok) return report(response->error, client::Failure::none);
    rapidjson::Document page;
    page.Parse(response->result_json.c_str());
    if (!page.IsObject() || !page.HasMember("entries") || !page["entries"].IsArray()) {
      print_error(label_for(client::Failure::protocol), "list returned no entries");
      return exit_code::kConnection;
    }
    for (const auto& e : page["entries"].GetArray()) {
      if (!e.IsObject() || !e.HasMember("name") || !e["name"].IsString()) continue;
      const std::string name = e["name"].GetString();
      if (!safe_relative(name)) {
        print_error(label_for(client::Failure::protocol),
                    "the server listed an unsafe path: " + name);
        return exit_code::kConnection;
      }
      const bool dir = e.HasMember("type") && e["type"].IsString() &&
                       std::string_view(e["type"].GetString()) == "dir";
      if (dir) {
        dirs.push_back(name);
      } else {
        std::uint64_t size = 0;
        if (e.HasMember("size") && e["size"].IsUint64()) size = e["size"].GetUint64();
        files.push_back({name, size});
      }
    }
    const bool truncated =
        page.HasMember("truncated") && page["truncated"].IsBool() && page["truncated"].GetBool();
    if (!truncated) break;
    if (!page.HasMember("next") || !page["next"].IsString() || after == page["next"].GetString()) {
      note(conn.output, "the server cut the listing and cannot page: the rest is not fetched");
      break;
    }
    after = page["next"].GetString();
  }

  // Refuse before writing anything, as download does for one file.
  if (!flags.force) {
    for (const auto& f : files) {
      const std::string path = local_root + "/" + f.relative;
      struct stat st {};
      if (::lstat(path.c_str(), &st) == 0) {
        print_error(wire_name(ErrorCode::already_exists),
                    "the local file " + path + " exists; use --force to replace it");
        return exit_for(ErrorCode::already_exists);
      }
    }
  }
  std::error_code ec;
  fs::create_directories(local_root, ec);
  if (ec) return local_failure("cannot create " + local_root + ": " + ec.message());
  for (const auto& d : dirs) {
    fs::create_directories(fs::path(local_root) / d, ec);
    if (ec) return local_failure("cannot create " + local_root + "/" + d + ": " + ec.message());
  }

  std::uint64_t total = 0;
  for (const auto& f : files) total += f.size;
  ProgressBar bar("download", total, conn.output);
  std::uint64_t done = 0;
  int result = exit_code::kOk;
  std::size_t next_to_send = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    // Keep the window full: requests ahead of the answer read next.
    while (next_to_send < files.size() && next_to_send < i + kWindow) {
      std::string args;
      make_args(args, [&](StrictWriter& w) {
        w.Key("path");
        return write_string(w, join(base, files[next_to_send].relative));
      });
      auto sent = client->send_request("download", args);
      if (!sent) {
        bar.stop();
        return report(sent.error(), client->last_failure());
      }
      ++next_to_send;
    }
    const auto& f = files[i];
    auto response = client->read_response();
    if (!response) {
      bar.stop();
      return report(response.error(), client->last_failure());
    }
    if (!response->ok) {
      print_error(wire_name(response->error.code), f.relative + ": " + response->error.message);
      keep_first(result, exit_for(response->error.code));
      continue;
    }
    Output output;
    std::uint64_t offset = 0;
    if (!output.open(local_root + "/" + f.relative, false, offset, status)) {
      bar.stop();
      return status;
    }
    Status s = client->read_payload_to_fd(output.fd(), response->payload_size,
                                          [&](std::uint64_t d, std::uint64_t) {
                                            if (bar.enabled()) bar.update(done + d);
                                          });
    if (!s) {
      bar.stop();
      return report(s.error(), client->last_failure());
    }
    if (!output.commit(status)) {
      bar.stop();
      return status;
    }
    done += response->payload_size;
  }
  if (result == exit_code::kOk) {
    bar.finish();
    print_summary(local_root, files.size(), dirs.size(), done);
  } else {
    bar.stop();
  }
  return result;
}

}  // namespace ops::opclient
