// opsbench: the OPS/1 load generator, on the SDK's client library (opserver/client.hpp).
//
//   opsbench MODE --port P --user U --key-file F [--server-pid PID] [--json] [options]
//
// Modes (each prints one human line, or one JSON line with --json):
//   pingpong   1 connection, 1 request in flight: --op describe|list, --duration S
//   pipeline   --connections N × --depth D in flight, over --threads T: --op, --duration
//   upload     --parallel P uploads of --size BYTES each (sha256 given, overwrite), from memory
//   download   --parallel P downloads of a --size BYTES file (prepared once), into memory
//   idle       --count N authenticated connections held open (--threads T to open them);
//              server RSS per connection from /proc/<pid>/status
//   handshakes new authenticated connections per second, --threads T, --duration S
//   describe   prints the describe result (for the gRPC peer's Describe)
// With --server-pid, every mode reports the server's CPU seconds (/proc/<pid>/stat) beside
// its own (getrusage), per operation or per GiB. Pinning is the caller's (taskset).
// With --tls (and --ca FILE, the CA of the server's certificate) every mode runs over the
// server's TLS listener (--port is then that listener's port), with the -plus login.
#include <rapidjson/document.h>

#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <atomic>
#include <barrier>

#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "opserver/client.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace {

using ops::bench::Clock;
using ops::bench::CpuWindow;
using ops::bench::Flags;
using ops::bench::JsonLine;
using ops::client::Client;

constexpr const char* kListDir = "bench-list10";
constexpr std::size_t kChunk = std::size_t{1} << 20;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "opsbench: %s\n", message.c_str());
  std::exit(1);
}

struct Common {
  ops::client::Options options;
  long server_pid = 0;
  bool json = false;
  std::string label;
};

Common parse_common(const Flags& flags) {
  Common c;
  c.options.host = flags.str("host", "127.0.0.1");
  c.options.port = static_cast<std::uint16_t>(flags.size("port", 9000));
  c.options.user = flags.str("user", "bench");
  c.options.key = flags.str("key");
  if (flags.has("key-file")) {
    std::ifstream in(flags.str("key-file"));
    if (!in || !std::getline(in, c.options.key)) die("cannot read " + flags.str("key-file"));
  }
  if (c.options.key.empty()) die("no key: --key-file FILE or --key KEY");
  c.options.timeout = std::chrono::milliseconds(static_cast<long>(flags.num("timeout-ms", 60000)));
  // TLS: the SDK client does the handshake and the channel-bound login (§8).
  c.options.tls = flags.has("tls") || flags.has("ca");
  c.options.ca_file = flags.str("ca");
  if (c.options.tls && flags.has("lean")) {
    die("--lean reads the socket directly: it cannot be combined with --tls");
  }
  c.server_pid = static_cast<long>(flags.size("server-pid", 0));
  c.json = flags.has("json");
  c.label = flags.str("label");
  return c;
}

std::unique_ptr<Client> connect_or_die(const Common& c) {
  auto client = Client::connect(c.options);
  if (!client) die("connect: " + client.error().message);
  return std::move(*client);
}

void emit(const Common& c, JsonLine& j, const std::string& human) {
  if (!c.label.empty()) j.add("label", c.label);
  if (c.json) {
    std::printf("%s\n", j.str().c_str());
  } else {
    std::printf("%s\n", human.c_str());
  }
  std::fflush(stdout);
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// --- small operations ---

struct SmallOp {
  std::string operate;
  std::string args;  // "" for none
};

SmallOp small_op(const Flags& flags) {
  std::string op = flags.str("op", "describe");
  if (op == "describe") return {"describe", ""};
  if (op == "list") return {"list", std::string("{\"path\":\"") + kListDir + "\"}"};
  // Any other operation, called with --args (JSON, default none): e.g. an isolated one.
  return {op, flags.str("args", "")};
}

// Makes sure bench-list10/ holds exactly 10 small files (list of 10 entries).
void prepare_list(const Common& c) {
  auto client = connect_or_die(c);
  std::string payload(100, 'x');
  for (int i = 0; i < 10; ++i) {
    std::string args = std::string("{\"path\":\"") + kListDir + "/file-" + std::to_string(i) +
                       ".bin\",\"overwrite\":true}";
    auto r = client->call("upload", args, payload);
    if (!r || !r->ok) die("preparing the list directory failed");
  }
  auto r = client->call("list", std::string("{\"path\":\"") + kListDir + "\"}");
  if (!r || !r->ok) die("list failed: " + (r ? r->error.message : r.error().message));
  rapidjson::Document doc;
  doc.Parse(r->result_json.c_str());
  if (!doc.IsObject() || !doc["entries"].IsArray() || doc["entries"].Size() != 10) {
    die(std::string(kListDir) + " does not hold exactly 10 entries");
  }
}

void check_response(const ops::Result<ops::client::Response>& r) {
  if (!r) die("request failed: " + r.error().message);
  if (!r->ok)
    die("server answered " + std::string(ops::wire_name(r->error.code)) + ": " + r->error.message);
}

// The lean reader: the library connects, authenticates and sends (send_raw, one write for
// a batch of requests), but responses are only framed and checked for "ok":true, not
// parsed into a DOM and re-serialised as read_response() does. It shows what the server
// can do when the client's JSON work is out of the way.
std::uint64_t lean_worker(std::vector<std::unique_ptr<Client>>& clients, const SmallOp& op,
                          std::size_t depth, std::atomic<int>& phase,
                          std::vector<std::uint64_t>& lat) {
  std::string request = "{\"id\":1,\"operate\":\"" + op.operate + "\"";
  if (!op.args.empty()) request += ",\"args\":" + op.args;
  request += "}";
  const std::string frame = ops::frame::encode(request);
  struct Conn {
    std::vector<char> buf = std::vector<char>(256 * 1024);
    std::size_t begin = 0, end = 0;
    std::deque<Clock::time_point> sent;
  };
  std::vector<Conn> conns(clients.size());
  std::string batch;
  auto send = [&](std::size_t i, std::size_t n) {
    batch.clear();
    for (std::size_t k = 0; k < n; ++k) batch += frame;
    if (auto s = clients[i]->send_raw(batch); !s) die("send failed: " + s.error().message);
    auto now = Clock::now();
    for (std::size_t k = 0; k < n; ++k) conns[i].sent.push_back(now);
  };
  for (std::size_t i = 0; i < clients.size(); ++i) send(i, depth);
  lat.reserve(1 << 20);
  std::uint64_t count = 0;
  bool stopping = false;
  std::size_t in_flight = clients.size() * depth;
  while (in_flight > 0) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      Conn& c = conns[i];
      if (c.sent.empty()) continue;
      const int fd = clients[i]->native_handle();
      if (c.begin > 0 && c.buf.size() - c.end < 65536) {
        std::memmove(c.buf.data(), c.buf.data() + c.begin, c.end - c.begin);
        c.end -= c.begin;
        c.begin = 0;
      }
      ssize_t n = ::recv(fd, c.buf.data() + c.end, c.buf.size() - c.end, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, 60000);
        continue;
      }
      if (n <= 0) die("connection closed in the lean reader");
      c.end += static_cast<std::size_t>(n);
      std::size_t answered = 0;
      const auto now = Clock::now();
      const int p = phase.load(std::memory_order_relaxed);
      while (c.end - c.begin >= 4) {
        const auto* h = reinterpret_cast<const unsigned char*>(c.buf.data() + c.begin);
        std::uint32_t len = ops::frame::decode_length(h);
        if (len > c.buf.size() - 4) die("response larger than the lean reader's buffer");
        if (c.end - c.begin < 4 + std::size_t{len}) break;
        std::string_view header(c.buf.data() + c.begin + 4, len);
        if (header.substr(0, 64).find("\"ok\":true") == std::string_view::npos) {
          die("error answer: " + std::string(header.substr(0, 200)));
        }
        c.begin += 4 + len;
        if (p == 1) {
          lat.push_back(static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(now - c.sent.front()).count()));
          ++count;
        }
        c.sent.pop_front();
        --in_flight;
        ++answered;
      }
      if (c.begin == c.end) c.begin = c.end = 0;
      if (p == 2) stopping = true;
      if (!stopping && answered > 0) {
        send(i, answered);
        in_flight += answered;
      }
    }
  }
  return count;
}

// Warm-up, then `duration` of requests, each sent by `send` and answered by `receive`.
// Shared by pingpong (1 connection, depth 1) and pipeline (N × D over T threads).
int run_small(const Flags& flags, const Common& c, bool pipelined) {
  const SmallOp op = small_op(flags);
  if (op.operate == "list") prepare_list(c);
  const double duration = flags.num("duration", 3);
  const std::size_t conns = pipelined ? flags.size("connections", 64) : 1;
  const std::size_t depth = pipelined ? flags.size("depth", 16) : 1;
  const std::size_t threads =
      std::min<std::size_t>(pipelined ? flags.size("threads", 1) : 1, conns);
  const double warmup = flags.num("warmup", 0.3);

  std::vector<std::vector<std::unique_ptr<Client>>> per_thread(threads);
  for (std::size_t t = 0; t < threads; ++t) {
    for (std::size_t i = 0; i < ops::bench::share(conns, threads, t); ++i) {
      per_thread[t].push_back(connect_or_die(c));
    }
  }

  std::atomic<int> phase{0};  // 0 warm-up, 1 measuring, 2 stop
  std::vector<std::vector<std::uint64_t>> latencies(threads);
  std::vector<std::uint64_t> counts(threads, 0);
  std::vector<std::thread> workers;
  const bool lean = flags.has("lean");
  for (std::size_t t = 0; t < threads && lean; ++t) {
    workers.emplace_back(
        [&, t] { counts[t] = lean_worker(per_thread[t], op, depth, phase, latencies[t]); });
  }
  for (std::size_t t = 0; t < threads && !lean; ++t) {
    workers.emplace_back([&, t] {
      auto& clients = per_thread[t];
      auto& lat = latencies[t];
      lat.reserve(1 << 20);
      std::vector<std::deque<Clock::time_point>> sent(clients.size());
      auto send = [&](std::size_t i) {
        auto id = clients[i]->send_request(op.operate, op.args);
        if (!id) die("send failed: " + id.error().message);
        sent[i].push_back(Clock::now());
      };
      for (std::size_t i = 0; i < clients.size(); ++i) {
        for (std::size_t d = 0; d < depth; ++d) send(i);
      }
      std::uint64_t count = 0;
      bool running = true;
      while (running) {
        for (std::size_t i = 0; i < clients.size(); ++i) {
          auto r = clients[i]->read_response();
          auto now = Clock::now();
          check_response(r);
          if (r->payload_size > 0) {
            if (auto s = clients[i]->skip_payload(r->payload_size); !s) die(s.error().message);
          }
          int p = phase.load(std::memory_order_relaxed);
          if (p == 1) {
            lat.push_back(static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent[i].front())
                    .count()));
            ++count;
          }
          sent[i].pop_front();
          if (p == 2) {
            running = false;
            continue;  // drain: no new request
          }
          send(i);
        }
      }
      // Drain what is still in flight so the server is idle for the next run.
      for (std::size_t i = 0; i < clients.size(); ++i) {
        while (!sent[i].empty()) {
          auto r = clients[i]->read_response();
          check_response(r);
          sent[i].pop_front();
        }
      }
      counts[t] = count;
    });
  }

  CpuWindow window(c.server_pid);
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  window.start();
  phase = 1;
  std::this_thread::sleep_for(std::chrono::duration<double>(duration));
  phase = 2;
  window.stop();
  for (auto& w : workers) w.join();

  std::vector<std::uint64_t> all;
  std::uint64_t total = 0;
  for (std::size_t t = 0; t < threads; ++t) {
    total += counts[t];
    all.insert(all.end(), latencies[t].begin(), latencies[t].end());
  }
  auto p = ops::bench::percentiles(all);
  const double rate = static_cast<double>(total) / window.wall();
  JsonLine j;
  j.add("tool", "opsbench")
      .add("mode", pipelined ? "pipeline" : "pingpong")
      .add("op", flags.str("op", "describe"))
      .add("reader", lean ? "lean" : "library")
      .add("connections", static_cast<std::uint64_t>(conns))
      .add("depth", static_cast<std::uint64_t>(depth))
      .add("threads", static_cast<std::uint64_t>(threads))
      .add("ops", total)
      .add("rate", rate)
      .add("p50_us", p.p50_us)
      .add("p99_us", p.p99_us)
      .add("mean_us", p.mean_us);
  ops::bench::add_cpu(j, window, static_cast<double>(total), "op");
  emit(c, j,
       fmt("%s%s %s %zux%zu (%zu threads): %.0f ops/s  p50 %.1f us  p99 %.1f us  client %.2f "
           "us/op  server %.2f us/op",
           pipelined ? "pipeline" : "pingpong", lean ? " (lean)" : "", op.operate.c_str(), conns,
           depth, threads, rate, p.p50_us, p.p99_us,
           window.self() * 1e6 / std::max<double>(1, total),
           window.server() * 1e6 / std::max<double>(1, total)));
  return 0;
}

// --- bulk ---

std::string path_for(const Flags& flags, const char* kind, std::size_t i) {
  return flags.str("path-prefix", "bench-bulk/") + kind + "-" + std::to_string(i) + ".bin";
}

// Sends `size` bytes as one upload of `path`, the payload taken from `buffer` over and
// over (it holds the whole pattern when `size` <= its size).
ops::Result<ops::client::Response> upload_one(Client& client, const std::string& path,
                                              const std::string& sha, const std::string& buffer,
                                              std::uint64_t size) {
  std::string args = "{\"path\":\"" + path + "\",\"overwrite\":true";
  if (!sha.empty()) args += ",\"sha256\":\"" + sha + "\"";
  args += "}";
  auto id = client.send_request("upload", args, size);
  if (!id) return std::move(id).error();
  std::uint64_t left = size;
  std::uint64_t offset = 0;
  while (left > 0) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer.size() - offset));
    if (auto s = client.send_payload(buffer.data() + offset, n); !s) {
      // The server may have answered before closing (e.g. payload_too_large).
      auto r = client.read_response();
      if (r) return r;
      return std::move(s).error();
    }
    left -= n;
    offset = (offset + n) % buffer.size();
  }
  return client.read_response();
}

// The payload: `size` bytes of a pattern if that fits in memory comfortably, else a
// 64 MiB pattern repeated (its sha256 is computed over the whole stream).
struct Payload {
  std::string buffer;
  std::string sha;
};

Payload make_payload(std::uint64_t size) {
  Payload p;
  const std::uint64_t kMaxBuffer = 64ull << 20;
  p.buffer.resize(static_cast<std::size_t>(std::max<std::uint64_t>(1, std::min(size, kMaxBuffer))));
  ops::bench::fill_pattern(p.buffer.data(), p.buffer.size(), size);
  // SHA-256 of the repeated stream.
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (std::uint64_t left = size; left > 0;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, p.buffer.size()));
    EVP_DigestUpdate(ctx, p.buffer.data(), n);
    left -= n;
  }
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  p.sha = ops::proof::to_hex(digest, len);
  return p;
}

int run_upload(const Flags& flags, const Common& c) {
  const std::uint64_t size = flags.size("size", 1ull << 30);
  const std::size_t parallel = flags.size("parallel", 1);
  const bool with_sha = !flags.has("no-sha");
  Payload payload = make_payload(size);

  std::vector<std::unique_ptr<Client>> clients;
  for (std::size_t i = 0; i < parallel; ++i) clients.push_back(connect_or_die(c));
  std::barrier start(static_cast<std::ptrdiff_t>(parallel + 1));
  std::vector<std::string> errors(parallel);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < parallel; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      auto r = upload_one(*clients[i], path_for(flags, "up", i), with_sha ? payload.sha : "",
                          payload.buffer, size);
      if (!r)
        errors[i] = r.error().message;
      else if (!r->ok)
        errors[i] = std::string(ops::wire_name(r->error.code)) + ": " + r->error.message;
    });
  }
  ops::bench::RssSampler rss(c.server_pid);
  CpuWindow window(c.server_pid);
  window.start();
  start.arrive_and_wait();
  for (auto& t : threads) t.join();
  window.stop();
  rss.stop();
  for (auto& e : errors) {
    if (!e.empty()) die("upload failed: " + e);
  }
  // Remove the files so the next run (and the disk) start clean.
  if (!flags.has("keep")) {
    // There is no delete operation; overwriting with an empty file frees the space.
    for (std::size_t i = 0; i < parallel; ++i) {
      auto r = clients[i]->call(
          "upload", "{\"path\":\"" + path_for(flags, "up", i) + "\",\"overwrite\":true}", "");
      (void)r;
    }
  }
  const double bytes = static_cast<double>(size) * static_cast<double>(parallel);
  const double mib_s = bytes / (1 << 20) / window.wall();
  JsonLine j;
  j.add("tool", "opsbench")
      .add("mode", "upload")
      .add("size", size)
      .add("parallel", static_cast<std::uint64_t>(parallel))
      .add("mib_s", mib_s);
  ops::bench::add_cpu(j, window, bytes / (1 << 30), "gib");
  if (c.server_pid > 0) {
    j.add("server_rss_start_kib", rss.start_kib()).add("server_rss_max_kib", rss.max_kib());
    j.add("server_rss_growth_mib",
          static_cast<double>(rss.max_kib() - std::min(rss.max_kib(), rss.start_kib())) / 1024);
  }
  emit(c, j,
       fmt("upload %zu x %.0f MiB: %.1f MiB/s  server %.2f s/GiB  client %.2f s/GiB  server "
           "RSS growth %.1f MiB",
           parallel, static_cast<double>(size) / (1 << 20), mib_s,
           window.server() / (bytes / (1 << 30)), window.self() / (bytes / (1 << 30)),
           static_cast<double>(rss.max_kib() - std::min(rss.max_kib(), rss.start_kib())) / 1024));
  return 0;
}

// One resumable upload of `size` bytes the way opclient sends a large file (client/
// resumable_upload.cpp): upload_open with size and sha256, upload_append of --chunk bytes
// (64 MiB) pipelined two deep, upload_commit. The server hashes and fsyncs every append.
int run_resumable(const Flags& flags, const Common& c) {
  const std::uint64_t size = flags.size("size", 1ull << 30);
  const std::uint64_t chunk = std::max<std::uint64_t>(1, flags.size("chunk", 64ull << 20));
  constexpr std::size_t kDepth = 2;
  Payload payload = make_payload(size);
  auto client = connect_or_die(c);
  const std::string path = path_for(flags, "resumable", 0);
  CpuWindow window(c.server_pid);
  window.start();
  auto opened =
      client->call("upload_open", "{\"path\":\"" + path + "\",\"size\":" + std::to_string(size) +
                                      ",\"sha256\":\"" + payload.sha + "\",\"overwrite\":true}");
  if (!opened || !opened->ok) die("upload_open failed");
  rapidjson::Document doc;
  doc.Parse(opened->result_json.c_str());
  if (!doc.IsObject() || !doc.HasMember("upload") || !doc["upload"].IsString()) {
    die("upload_open answered no id");
  }
  const std::string id = doc["upload"].GetString();
  std::uint64_t sent = 0;
  std::size_t in_flight = 0;
  std::uint64_t offset_in_buffer = 0;
  while (sent < size || in_flight > 0) {
    while (sent < size && in_flight < kDepth) {
      const std::uint64_t n = std::min(chunk, size - sent);
      auto req = client->send_request(
          "upload_append", "{\"upload\":\"" + id + "\",\"offset\":" + std::to_string(sent) + "}",
          n);
      if (!req) die("upload_append: " + req.error().message);
      for (std::uint64_t left = n; left > 0;) {
        const std::size_t k = static_cast<std::size_t>(
            std::min<std::uint64_t>(left, payload.buffer.size() - offset_in_buffer));
        if (auto s = client->send_payload(payload.buffer.data() + offset_in_buffer, k); !s) {
          die("upload_append payload: " + s.error().message);
        }
        left -= k;
        offset_in_buffer = (offset_in_buffer + k) % payload.buffer.size();
      }
      sent += n;
      ++in_flight;
    }
    auto r = client->read_response();
    if (!r || !r->ok) die("upload_append failed");
    --in_flight;
  }
  auto committed = client->call("upload_commit",
                                "{\"upload\":\"" + id + "\",\"sha256\":\"" + payload.sha + "\"}");
  if (!committed || !committed->ok) {
    die("upload_commit failed" + (committed ? ": " + committed->error.message : std::string()));
  }
  window.stop();
  if (!flags.has("keep")) {
    (void)client->call("upload", "{\"path\":\"" + path + "\",\"overwrite\":true}", "");
  }
  const double gib = static_cast<double>(size) / (1 << 30);
  const double mib_s = static_cast<double>(size) / (1 << 20) / window.wall();
  JsonLine j;
  j.add("tool", "opsbench")
      .add("mode", "resumable")
      .add("size", size)
      .add("chunk", chunk)
      .add("mib_s", mib_s);
  ops::bench::add_cpu(j, window, gib, "gib");
  emit(c, j,
       fmt("resumable %.0f MiB in %.0f MiB appends: %.1f MiB/s  server %.2f s/GiB  client %.2f "
           "s/GiB",
           static_cast<double>(size) / (1 << 20), static_cast<double>(chunk) / (1 << 20), mib_s,
           window.server() / gib, window.self() / gib));
  return 0;
}

std::uint64_t remote_size(Client& client, const std::string& path) {
  auto r = client.call("download", "{\"path\":\"" + path + "\",\"length\":0}");
  if (!r || !r->ok) return UINT64_MAX;
  rapidjson::Document doc;
  doc.Parse(r->result_json.c_str());
  if (!doc.IsObject() || !doc.HasMember("size") || !doc["size"].IsUint64()) return UINT64_MAX;
  return doc["size"].GetUint64();
}

int run_download(const Flags& flags, const Common& c) {
  const std::uint64_t size = flags.size("size", 1ull << 30);
  const std::size_t parallel = flags.size("parallel", 1);
  const std::string path =
      flags.str("path-prefix", "bench-bulk/") + "down-" + std::to_string(size) + ".bin";
  {
    auto client = connect_or_die(c);
    if (remote_size(*client, path) != size) {
      Payload payload = make_payload(size);
      auto r = upload_one(*client, path, payload.sha, payload.buffer, size);
      check_response(r);
    }
  }
  std::vector<std::unique_ptr<Client>> clients;
  for (std::size_t i = 0; i < parallel; ++i) clients.push_back(connect_or_die(c));
  std::barrier start(static_cast<std::ptrdiff_t>(parallel + 1));
  std::vector<std::string> errors(parallel);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < parallel; ++i) {
    threads.emplace_back([&, i] {
      std::unique_ptr<char[]> buf(new char[kChunk]);
      start.arrive_and_wait();
      auto r = clients[i]->call("download", "{\"path\":\"" + path + "\"}");
      if (!r || !r->ok) {
        errors[i] = r ? r->error.message : r.error().message;
        return;
      }
      std::uint64_t left = r->payload_size;
      if (left != size) {
        errors[i] = "short payload";
        return;
      }
      while (left > 0) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk));
        if (auto s = clients[i]->read_payload(buf.get(), n); !s) {
          errors[i] = s.error().message;
          return;
        }
        left -= n;
      }
    });
  }
  ops::bench::RssSampler rss(c.server_pid);
  CpuWindow window(c.server_pid);
  window.start();
  start.arrive_and_wait();
  for (auto& t : threads) t.join();
  window.stop();
  rss.stop();
  for (auto& e : errors) {
    if (!e.empty()) die("download failed: " + e);
  }
  const double bytes = static_cast<double>(size) * static_cast<double>(parallel);
  const double mib_s = bytes / (1 << 20) / window.wall();
  JsonLine j;
  j.add("tool", "opsbench")
      .add("mode", "download")
      .add("size", size)
      .add("parallel", static_cast<std::uint64_t>(parallel))
      .add("mib_s", mib_s);
  ops::bench::add_cpu(j, window, bytes / (1 << 30), "gib");
  if (c.server_pid > 0) {
    j.add("server_rss_growth_mib",
          static_cast<double>(rss.max_kib() - std::min(rss.max_kib(), rss.start_kib())) / 1024);
  }
  emit(c, j,
       fmt("download %zu x %.0f MiB: %.1f MiB/s  server %.2f s/GiB  client %.2f s/GiB", parallel,
           static_cast<double>(size) / (1 << 20), mib_s, window.server() / (bytes / (1 << 30)),
           window.self() / (bytes / (1 << 30))));
  return 0;
}

// --- connections ---

int run_idle(const Flags& flags, const Common& c) {
  const std::size_t count = flags.size("count", 10000);
  const std::size_t threads = std::max<std::size_t>(1, flags.size("threads", 2));
  const double hold = flags.num("hold", 1.0);
  if (c.server_pid <= 0) die("idle needs --server-pid");

  // One connection first, so one-time allocations (first session, thread caches) are in
  // the baseline rather than spread over the connections.
  auto first = connect_or_die(c);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::uint64_t before = ops::bench::status_kib(c.server_pid).value_or(0);

  std::vector<std::vector<std::unique_ptr<Client>>> held(threads);
  CpuWindow window(c.server_pid);
  window.start();
  std::vector<std::thread> openers;
  for (std::size_t t = 0; t < threads; ++t) {
    openers.emplace_back([&, t] {
      for (std::size_t i = 0; i < ops::bench::share(count, threads, t); ++i) {
        held[t].push_back(connect_or_die(c));
      }
    });
  }
  for (auto& t : openers) t.join();
  window.stop();
  // Let every session reach its idle wait (buffers released) before measuring.
  std::this_thread::sleep_for(std::chrono::duration<double>(hold));
  const std::uint64_t after = ops::bench::status_kib(c.server_pid).value_or(0);
  // The held connections still work: one describe on a sample of them.
  for (std::size_t t = 0; t < threads; ++t) {
    if (!held[t].empty()) check_response(held[t].back()->call("describe"));
  }
  const double per_conn_kib =
      static_cast<double>(after - std::min(after, before)) / static_cast<double>(count);
  JsonLine j;
  j.add("tool", "opsbench")
      .add("mode", "idle")
      .add("count", static_cast<std::uint64_t>(count))
      .add("server_rss_before_kib", before)
      .add("server_rss_after_kib", after)
      .add("kib_per_conn", per_conn_kib)
      .add("open_rate", static_cast<double>(count) / window.wall());
  ops::bench::add_cpu(j, window, static_cast<double>(count), "conn");
  emit(c, j,
       fmt("idle %zu connections: server RSS %.1f -> %.1f MiB, %.2f KiB per connection "
           "(opened at %.0f/s)",
           count, static_cast<double>(before) / 1024, static_cast<double>(after) / 1024,
           per_conn_kib, static_cast<double>(count) / window.wall()));
  return 0;
}

int run_handshakes(const Flags& flags, const Common& c) {
  const std::size_t threads = std::max<std::size_t>(1, flags.size("threads", 2));
  JsonLine j;
  j.add("tool", "opsbench");
  const auto r =
      ops::bench::measure_handshakes(threads, flags.num("warmup", 0.3), flags.num("duration", 3),
                                     c.server_pid, j, [&c](std::size_t, std::uint64_t) {
                                       auto client = connect_or_die(c);
                                       client.reset();  // close
                                     });
  emit(c, j,
       fmt("handshakes (%zu threads): %.0f connections/s  p50 %.1f us  p99 %.1f us  server "
           "%.1f us/conn  client %.1f us/conn",
           threads, r.rate, r.p.p50_us, r.p.p99_us, r.server_us_per_conn, r.client_us_per_conn));
  return 0;
}

int run_describe(const Common& c) {
  auto client = connect_or_die(c);
  auto r = client->call("describe");
  check_response(r);
  std::printf("%s\n", r->result_json.c_str());
  return 0;
}

void usage() {
  std::fprintf(
      stderr,
      "usage: opsbench pingpong|pipeline|upload|resumable|download|idle|handshakes|describe\n"
      "  --port P --user U --key-file F [--host H] [--server-pid PID] [--json]\n"
      "  [--label NAME] [--tls --ca CA_FILE]\n"
      "  pingpong:   --op describe|list|OPERATION [--args JSON] --duration S\n"
      "  pipeline:   --op describe|list --connections N --depth D --threads T "
      "--duration S [--lean]\n"
      "  upload:     --size BYTES[K|M|G] --parallel P [--no-sha] [--keep]\n"
      "  resumable:  --size BYTES --chunk BYTES (64M; appends pipelined 2 deep) [--keep]\n"
      "  download:   --size BYTES --parallel P\n"
      "  idle:       --count N --threads T --hold S (needs --server-pid)\n"
      "  handshakes: --threads T --duration S\n");
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.positional().size() != 1 || flags.has("help")) {
    usage();
    return 2;
  }
  const std::string mode = flags.positional()[0];
  Common c = parse_common(flags);
  try {
    if (mode == "pingpong") return run_small(flags, c, false);
    if (mode == "pipeline") return run_small(flags, c, true);
    if (mode == "upload") return run_upload(flags, c);
    if (mode == "resumable") return run_resumable(flags, c);
    if (mode == "download") return run_download(flags, c);
    if (mode == "idle") return run_idle(flags, c);
    if (mode == "handshakes") return run_handshakes(flags, c);
    if (mode == "describe") return run_describe(c);
  } catch (const std::exception& e) {
    die(e.what());
  }
  usage();
  return 2;
}
