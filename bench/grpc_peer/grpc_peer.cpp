// grpc_peer: the gRPC C++ peer opserver is measured against (issue 6). The same work as
// opserver's operations, on gRPC's asynchronous completion-queue API (its fastest
// idiomatic server form):
//   Describe  unary: the operation list with the same strings opserver's describe sends
//             (loaded from --describe FILE, the JSON `opsbench describe` prints)
//   List      unary: readdir + fstatat of a directory under the storage root, sorted
//   Upload    client streaming: bytes into a temporary file with SHA-256 on the way, fsync,
//             rename into place (overwrite or not), fsync of the directory, checksum check
//   Download  server streaming: pread() chunks of chunk_size bytes (default 64 KiB)
// One completion queue and one polling thread per --threads, like opserver's I/O threads.
// The work of each call runs on its queue's thread (gRPC's async model has no worker pool).
// Plaintext by default; with --tls-cert and --tls-key it listens with TLS instead
// (grpc::SslServerCredentials, gRPC's defaults: TLS 1.2-1.3, no client certificate), so it
// can be measured beside opserver's TLS listener with the same certificate.
//
//   grpc_peer --port P --storage DIR [--threads N] [--describe FILE]
//             [--tls-cert CERT.pem --tls-key KEY.pem]
#include <dirent.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench.grpc.pb.h"

namespace {

using grpc::ServerCompletionQueue;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
using opsbench::Bench;

struct Shared {
  Bench::AsyncService service;
  int storage_fd = -1;
  int scratch_fd = -1;
  opsbench::DescribeReply describe_template;  // the operations, as loaded
};

std::string hex(const unsigned char* d, std::size_t n) {
  static const char* k = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = k[d[i] >> 4];
    out[2 * i + 1] = k[d[i] & 15];
  }
  return out;
}

// Creates the missing parent directories of `path` under the root.
bool make_parents(int root, const std::string& path) {
  for (std::size_t pos = path.find('/'); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    std::string dir = path.substr(0, pos);
    if (::mkdirat(root, dir.c_str(), 0750) != 0 && errno != EEXIST) return false;
  }
  return true;
}

class Call {
 public:
  virtual ~Call() = default;
  virtual void proceed(bool ok) = 0;
};

class DescribeCall final : public Call {
 public:
  DescribeCall(Shared& s, ServerCompletionQueue* cq) : s_(s), cq_(cq), responder_(&ctx_) {
    s_.service.RequestDescribe(&ctx_, &request_, &responder_, cq_, cq_, this);
  }
  void proceed(bool ok) override {
    if (done_ || !ok) {  // finished, or the server is shutting down
      delete this;
      return;
    }
    new DescribeCall(s_, cq_);
    // Built per call, as opserver builds its describe answer per call.
    opsbench::DescribeReply reply;
    for (const auto& op : s_.describe_template.operations()) *reply.add_operations() = op;
    done_ = true;
    responder_.Finish(reply, Status::OK, this);
  }

 private:
  Shared& s_;
  ServerCompletionQueue* cq_;
  ServerContext ctx_;
  opsbench::DescribeRequest request_;
  grpc::ServerAsyncResponseWriter<opsbench::DescribeReply> responder_;
  bool done_ = false;
};

class ListCall final : public Call {
 public:
  ListCall(Shared& s, ServerCompletionQueue* cq) : s_(s), cq_(cq), responder_(&ctx_) {
    s_.service.RequestList(&ctx_, &request_, &responder_, cq_, cq_, this);
  }
  void proceed(bool ok) override {
    if (done_ || !ok) {  // finished, or the server is shutting down
      delete this;
      return;
    }
    new ListCall(s_, cq_);
    done_ = true;
    opsbench::ListReply reply;
    Status status = list(reply);
    if (status.ok()) {
      responder_.Finish(reply, Status::OK, this);
    } else {
      responder_.FinishWithError(status, this);
    }
  }

 private:
  Status list(opsbench::ListReply& reply) {
    const std::string& path = request_.path();
    int fd = ::openat(s_.storage_fd, path.empty() ? "." : path.c_str(),
                      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return Status(StatusCode::NOT_FOUND, "no such directory");
    DIR* dir = ::fdopendir(fd);
    if (dir == nullptr) {
      ::close(fd);
      return Status(StatusCode::INTERNAL, "readdir");
    }
    std::vector<opsbench::Entry> entries;
    while (dirent* de = ::readdir(dir)) {
      if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
      struct stat st {};
      if (::fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) continue;
      opsbench::Entry e;
      e.set_name(de->d_name);
      e.set_type(S_ISDIR(st.st_mode) ? "dir" : "file");
      e.set_size(S_ISDIR(st.st_mode) ? 0 : static_cast<std::uint64_t>(st.st_size));
      e.set_mtime(st.st_mtime);
      entries.push_back(std::move(e));
    }
    ::closedir(dir);
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.name() < b.name(); });
    reply.set_path(path);
    for (auto& e : entries) *reply.add_entries() = std::move(e);
    return Status::OK;
  }

  Shared& s_;
  ServerCompletionQueue* cq_;
  ServerContext ctx_;
  opsbench::ListRequest request_;
  grpc::ServerAsyncResponseWriter<opsbench::ListReply> responder_;
  bool done_ = false;
};

class UploadCall final : public Call {
 public:
  UploadCall(Shared& s, ServerCompletionQueue* cq) : s_(s), cq_(cq), reader_(&ctx_) {
    s_.service.RequestUpload(&ctx_, &reader_, cq_, cq_, this);
  }
  ~UploadCall() override {
    if (fd_ >= 0) ::close(fd_);
    if (!tmp_.empty()) ::unlinkat(s_.scratch_fd, tmp_.c_str(), 0);
    if (md_) EVP_MD_CTX_free(md_);
  }
  void proceed(bool ok) override {
    switch (state_) {
      case State::requested:
        if (!ok) {
          delete this;  // shutting down
          return;
        }
        new UploadCall(s_, cq_);
        state_ = State::reading;
        reader_.Read(&chunk_, this);
        return;
      case State::reading:
        if (ok) {
          if (Status st = take(chunk_); !st.ok()) {
            state_ = State::finishing;
            reader_.FinishWithError(st, this);
            return;
          }
          reader_.Read(&chunk_, this);
          return;
        }
        // The client has sent everything (WritesDone) or gone away.
        state_ = State::finishing;
        finish();
        return;
      case State::finishing:
        delete this;
        return;
    }
  }

 private:
  enum class State { requested, reading, finishing };

  Status take(const opsbench::UploadChunk& chunk) {
    if (fd_ < 0) {
      if (chunk.path().empty()) return Status(StatusCode::INVALID_ARGUMENT, "no path");
      path_ = chunk.path();
      overwrite_ = chunk.overwrite();
      expected_ = chunk.sha256();
      char name[64];
      std::snprintf(name, sizeof name, "upload-%p-%ld", static_cast<void*>(this),
                    static_cast<long>(++counter_));
      tmp_ = name;
      fd_ = ::openat(s_.scratch_fd, tmp_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640);
      if (fd_ < 0) {
        tmp_.clear();
        return Status(StatusCode::INTERNAL, "cannot create a temporary file");
      }
      md_ = EVP_MD_CTX_new();
      EVP_DigestInit_ex(md_, EVP_sha256(), nullptr);
    }
    const std::string& data = chunk.data();
    EVP_DigestUpdate(md_, data.data(), data.size());
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status(StatusCode::UNAVAILABLE, "write failed");
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    size_ += data.size();
    return Status::OK;
  }

  void finish() {
    if (fd_ < 0) {
      reader_.FinishWithError(Status(StatusCode::INVALID_ARGUMENT, "no data"), this);
      return;
    }
    unsigned char digest[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(md_, digest, &len);
    std::string actual = hex(digest, len);
    if (!expected_.empty() && expected_ != actual) {
      reader_.FinishWithError(Status(StatusCode::DATA_LOSS, "sha256 mismatch"), this);
      return;
    }
    if (::fsync(fd_) != 0) {
      reader_.FinishWithError(Status(StatusCode::UNAVAILABLE, "fsync failed"), this);
      return;
    }
    ::close(fd_);
    fd_ = -1;
    if (!make_parents(s_.storage_fd, path_)) {
      reader_.FinishWithError(Status(StatusCode::INTERNAL, "mkdir failed"), this);
      return;
    }
    int rc = overwrite_ ? ::renameat(s_.scratch_fd, tmp_.c_str(), s_.storage_fd, path_.c_str())
                        : ::renameat2(s_.scratch_fd, tmp_.c_str(), s_.storage_fd, path_.c_str(),
                                      RENAME_NOREPLACE);
    if (rc != 0) {
      reader_.FinishWithError(
          Status(errno == EEXIST ? StatusCode::ALREADY_EXISTS : StatusCode::INTERNAL, "rename"),
          this);
      return;
    }
    tmp_.clear();
    std::string parent = path_.rfind('/') == std::string::npos ? std::string(".")
                                                               : path_.substr(0, path_.rfind('/'));
    int dir = ::openat(s_.storage_fd, parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
    opsbench::UploadReply reply;
    reply.set_path(path_);
    reply.set_size(size_);
    reply.set_sha256(actual);
    reader_.Finish(reply, Status::OK, this);
  }

  static inline std::atomic<long> counter_{0};
  Shared& s_;
  ServerCompletionQueue* cq_;
  ServerContext ctx_;
  grpc::ServerAsyncReader<opsbench::UploadReply, opsbench::UploadChunk> reader_;
  opsbench::UploadChunk chunk_;
  State state_ = State::requested;
  std::string path_, expected_, tmp_;
  bool overwrite_ = false;
  int fd_ = -1;
  EVP_MD_CTX* md_ = nullptr;
  std::uint64_t size_ = 0;
};

class DownloadCall final : public Call {
 public:
  DownloadCall(Shared& s, ServerCompletionQueue* cq) : s_(s), cq_(cq), writer_(&ctx_) {
    s_.service.RequestDownload(&ctx_, &request_, &writer_, cq_, cq_, this);
  }
  ~DownloadCall() override {
    if (fd_ >= 0) ::close(fd_);
  }
  void proceed(bool ok) override {
    switch (state_) {
      case State::requested:
        if (!ok) {
          delete this;
          return;
        }
        new DownloadCall(s_, cq_);
        fd_ = ::openat(s_.storage_fd, request_.path().c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd_ < 0) {
          state_ = State::finishing;
          writer_.Finish(Status(StatusCode::NOT_FOUND, "no such file"), this);
          return;
        }
        {
          struct stat st {};
          ::fstat(fd_, &st);
          size_ = static_cast<std::uint64_t>(st.st_size);
        }
        chunk_size_ = request_.chunk_size() ? request_.chunk_size() : 64 * 1024;
        state_ = State::writing;
        write_next();
        return;
      case State::writing:
        if (!ok) {  // the client went away
          state_ = State::finishing;
          writer_.Finish(Status(StatusCode::CANCELLED, "cancelled"), this);
          return;
        }
        write_next();
        return;
      case State::finishing:
        delete this;
        return;
    }
  }

 private:
  enum class State { requested, writing, finishing };

  void write_next() {
    if (offset_ >= size_) {
      state_ = State::finishing;
      writer_.Finish(Status::OK, this);
      return;
    }
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_size_, size_ - offset_));
    std::string* data = chunk_.mutable_data();
    data->resize(n);
    ssize_t got = ::pread(fd_, data->data(), n, static_cast<off_t>(offset_));
    if (got <= 0) {
      state_ = State::finishing;
      writer_.Finish(Status(StatusCode::INTERNAL, "read failed"), this);
      return;
    }
    data->resize(static_cast<std::size_t>(got));
    offset_ += static_cast<std::uint64_t>(got);
    writer_.Write(chunk_, this);
  }

  Shared& s_;
  ServerCompletionQueue* cq_;
  ServerContext ctx_;
  opsbench::DownloadRequest request_;
  grpc::ServerAsyncWriter<opsbench::DownloadChunk> writer_;
  opsbench::DownloadChunk chunk_;
  State state_ = State::requested;
  int fd_ = -1;
  std::uint64_t size_ = 0, offset_ = 0;
  std::uint32_t chunk_size_ = 0;
};

// Reads the `opsbench describe` JSON: {"operations":[{"name":...,"args":{...}}]}.
bool load_describe(const std::string& file, opsbench::DescribeReply& out) {
  std::ifstream in(file);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  rapidjson::Document doc;
  doc.Parse(ss.str().c_str());
  if (!doc.IsObject() || !doc.HasMember("operations") || !doc["operations"].IsArray()) return false;
  for (const auto& op : doc["operations"].GetArray()) {
    auto* o = out.add_operations();
    auto str = [&](const char* name) -> std::string {
      auto it = op.FindMember(name);
      return it != op.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
    };
    o->set_name(str("name"));
    o->set_summary(str("summary"));
    o->set_plugin(str("plugin"));
    o->set_version(str("version"));
    o->set_payload(str("payload"));
    if (auto it = op.FindMember("args"); it != op.MemberEnd()) {
      rapidjson::StringBuffer sb;
      rapidjson::Writer<rapidjson::StringBuffer> w(sb);
      it->value.Accept(w);
      o->set_args_schema(sb.GetString(), sb.GetSize());
    }
  }
  return true;
}

bool read_file(const std::string& file, std::string& out) {
  std::ifstream in(file);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string port = arg(argc, argv, "port", "50051");
  const std::string storage = arg(argc, argv, "storage", "");
  const int threads = std::stoi(arg(argc, argv, "threads", "2"));
  const std::string describe = arg(argc, argv, "describe", "");
  const std::string tls_cert = arg(argc, argv, "tls-cert", "");
  const std::string tls_key = arg(argc, argv, "tls-key", "");
  if (storage.empty() || tls_cert.empty() != tls_key.empty()) {
    std::cerr << "usage: grpc_peer --port P --storage DIR [--threads N] [--describe FILE] "
                 "[--tls-cert CERT.pem --tls-key KEY.pem]\n";
    return 2;
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!tls_cert.empty()) {
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!read_file(tls_key, pair.private_key) || !read_file(tls_cert, pair.cert_chain)) {
      std::cerr << "grpc_peer: cannot read " << tls_cert << " or " << tls_key << "\n";
      return 1;
    }
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back(std::move(pair));
    credentials = grpc::SslServerCredentials(options);
  }
  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Shared shared;
  ::mkdir(storage.c_str(), 0750);
  shared.storage_fd = ::open(storage.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ::mkdirat(shared.storage_fd, ".tmp", 0700);
  shared.scratch_fd = ::openat(shared.storage_fd, ".tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (shared.storage_fd < 0 || shared.scratch_fd < 0) {
    std::cerr << "grpc_peer: cannot use storage " << storage << "\n";
    return 1;
  }
  if (!describe.empty() && !load_describe(describe, shared.describe_template)) {
    std::cerr << "grpc_peer: cannot read " << describe << "\n";
    return 1;
  }

  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort("127.0.0.1:" + port, credentials, &bound);
  builder.RegisterService(&shared.service);
  std::vector<std::unique_ptr<ServerCompletionQueue>> cqs;
  for (int i = 0; i < threads; ++i) cqs.push_back(builder.AddCompletionQueue());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound == 0) {
    std::cerr << "grpc_peer: cannot listen on port " << port << "\n";
    return 1;
  }
  std::printf("grpc_peer listening on 127.0.0.1:%d (%s) with %d threads\n", bound,
              tls_cert.empty() ? "plaintext" : "TLS", threads);
  std::fflush(stdout);

  std::vector<std::thread> pollers;
  for (auto& cq : cqs) {
    ServerCompletionQueue* q = cq.get();
    // Several calls of each kind waiting per queue, so bursts are matched at once.
    for (int i = 0; i < 16; ++i) {
      new DescribeCall(shared, q);
      new ListCall(shared, q);
      new UploadCall(shared, q);
      new DownloadCall(shared, q);
    }
    pollers.emplace_back([q] {
      void* tag = nullptr;
      bool ok = false;
      while (q->Next(&tag, &ok)) static_cast<Call*>(tag)->proceed(ok);
    });
  }

  int sig = 0;
  sigwait(&stop_signals, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  for (auto& cq : cqs) cq->Shutdown();
  for (auto& t : pollers) t.join();
  return 0;
}
