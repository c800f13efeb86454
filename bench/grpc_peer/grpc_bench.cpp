// grpc_bench: the load generator for grpc_peer, the counterpart of opsbench with the same
// modes, flags and JSON line, so scripts/bench compares like with like.
//   pingpong  1 channel, 1 async unary call in flight (--op describe|list)
//   pipeline  --connections N channels (each its own TCP connection) × --depth D async
//             unary calls in flight, over --threads T completion queues
//   upload    --parallel P client streams of --size bytes in --chunk byte messages
//   download  --parallel P server streams of a --size file in --chunk byte messages
//   idle      --count N connected channels held open; server RSS per connection
//   handshakes new connections per second (--threads T, --duration S): each opens a channel,
//             waits until it is connected (TCP, TLS when asked, HTTP/2 preface) and closes it
// Unary calls use the asynchronous completion-queue API; the streams use the synchronous
// API, one thread per stream (the idiomatic client form for bulk transfer).
// Plaintext by default; --tls-ca CA.pem connects with TLS (grpc::SslCredentials with that CA
// as the only root, gRPC's defaults otherwise) and checks the server's certificate against
// the target host (--host, default 127.0.0.1).
#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>

#include <atomic>
#include <barrier>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench.grpc.pb.h"
#include "bench_util.hpp"

namespace {

using ops::bench::Clock;
using ops::bench::CpuWindow;
using ops::bench::Flags;
using ops::bench::JsonLine;
using opsbench::Bench;

constexpr const char* kListDir = "bench-list10";

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "grpc_bench: %s\n", message.c_str());
  std::exit(1);
}

struct Common {
  std::string target;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  long server_pid = 0;
  bool json = false;
  std::string label;
};

// Each channel gets its own TCP connection: a distinct argument keeps gRPC from sharing
// one subchannel between channels to the same address.
std::shared_ptr<grpc::Channel> make_channel(const Common& c, int index) {
  grpc::ChannelArguments args;
  args.SetInt("opsbench.channel", index);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = grpc::CreateCustomChannel(c.target, c.credentials, args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    die("cannot connect to " + c.target);
  }
  return channel;
}

void emit(const Common& c, JsonLine& j, const std::string& human) {
  if (!c.label.empty()) j.add("label", c.label);
  std::printf("%s\n", c.json ? j.str().c_str() : human.c_str());
  std::fflush(stdout);
}

std::string sha256_hex(const std::string& buffer, std::uint64_t size) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (std::uint64_t left = size; left > 0;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer.size()));
    EVP_DigestUpdate(ctx, buffer.data(), n);
    left -= n;
  }
  unsigned char d[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, d, &len);
  EVP_MD_CTX_free(ctx);
  static const char* k = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += k[d[i] >> 4];
    out += k[d[i] & 15];
  }
  return out;
}

// --- uploads (also used to prepare list and download) ---

grpc::Status upload(Bench::Stub& stub, const std::string& path, const std::string& buffer,
                    std::uint64_t size, std::size_t chunk, const std::string& sha) {
  grpc::ClientContext ctx;
  opsbench::UploadReply reply;
  auto writer = stub.Upload(&ctx, &reply);
  opsbench::UploadChunk msg;
  msg.set_path(path);
  msg.set_overwrite(true);
  msg.set_sha256(sha);
  std::uint64_t left = size, offset = 0;
  bool first = true;
  while (left > 0 || first) {
    std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>({left, chunk, buffer.size() - offset}));
    msg.set_data(buffer.data() + offset, n);
    if (!writer->Write(msg)) break;
    if (first) {
      msg.clear_path();
      msg.clear_sha256();
      first = false;
    }
    left -= n;
    offset = (offset + n) % buffer.size();
  }
  writer->WritesDone();
  return writer->Finish();
}

void prepare_list(const Common& c) {
  auto stub = Bench::NewStub(make_channel(c, -1));
  std::string data(100, 'x');
  for (int i = 0; i < 10; ++i) {
    auto st = upload(*stub, std::string(kListDir) + "/file-" + std::to_string(i) + ".bin", data,
                     data.size(), data.size(), "");
    if (!st.ok()) die("preparing the list directory: " + st.error_message());
  }
}

// --- small operations: async unary calls ---

struct UnaryCall {
  grpc::ClientContext ctx;
  grpc::Status status;
  opsbench::DescribeReply describe;
  opsbench::ListReply list;
  std::unique_ptr<grpc::ClientAsyncResponseReader<opsbench::DescribeReply>> describe_rpc;
  std::unique_ptr<grpc::ClientAsyncResponseReader<opsbench::ListReply>> list_rpc;
  Clock::time_point sent;
  std::size_t channel = 0;
};

int run_small(const Flags& flags, const Common& c, bool pipelined) {
  const std::string op = flags.str("op", "describe");
  if (op != "describe" && op != "list") die("--op must be describe or list");
  if (op == "list") prepare_list(c);
  const double duration = flags.num("duration", 3);
  const std::size_t conns = pipelined ? flags.size("connections", 64) : 1;
  const std::size_t depth = pipelined ? flags.size("depth", 16) : 1;
  const std::size_t threads =
      std::min<std::size_t>(pipelined ? flags.size("threads", 1) : 1, conns);

  std::vector<std::vector<std::unique_ptr<Bench::Stub>>> stubs(threads);
  int index = 0;
  for (std::size_t t = 0; t < threads; ++t) {
    for (std::size_t i = 0; i < ops::bench::share(conns, threads, t); ++i) {
      stubs[t].push_back(Bench::NewStub(make_channel(c, index++)));
    }
  }
  std::atomic<int> phase{0};
  std::vector<std::vector<std::uint64_t>> latencies(threads);
  std::vector<std::uint64_t> counts(threads, 0);
  std::vector<std::thread> workers;
  opsbench::DescribeRequest describe_request;
  opsbench::ListRequest list_request;
  list_request.set_path(kListDir);
  for (std::size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      grpc::CompletionQueue cq;
      auto& lat = latencies[t];
      lat.reserve(1 << 20);
      auto start = [&](std::size_t ch) {
        auto* call = new UnaryCall;
        call->channel = ch;
        call->sent = Clock::now();
        if (op == "describe") {
          call->describe_rpc = stubs[t][ch]->AsyncDescribe(&call->ctx, describe_request, &cq);
          call->describe_rpc->Finish(&call->describe, &call->status, call);
        } else {
          call->list_rpc = stubs[t][ch]->AsyncList(&call->ctx, list_request, &cq);
          call->list_rpc->Finish(&call->list, &call->status, call);
        }
      };
      std::size_t in_flight = 0;
      for (std::size_t ch = 0; ch < stubs[t].size(); ++ch) {
        for (std::size_t d = 0; d < depth; ++d, ++in_flight) start(ch);
      }
      std::uint64_t count = 0;
      void* tag = nullptr;
      bool ok = false;
      while (in_flight > 0 && cq.Next(&tag, &ok)) {
        auto* call = static_cast<UnaryCall*>(tag);
        auto now = Clock::now();
        --in_flight;
        if (!ok || !call->status.ok()) die("call failed: " + call->status.error_message());
        int p = phase.load(std::memory_order_relaxed);
        if (p == 1) {
          lat.push_back(static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(now - call->sent).count()));
          ++count;
        }
        std::size_t ch = call->channel;
        delete call;
        if (p != 2) {
          start(ch);
          ++in_flight;
        }
      }
      counts[t] = count;
    });
  }
  CpuWindow window(c.server_pid);
  std::this_thread::sleep_for(std::chrono::duration<double>(flags.num("warmup", 0.3)));
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
  j.add("tool", "grpc_bench")
      .add("mode", pipelined ? "pipeline" : "pingpong")
      .add("op", op)
      .add("connections", static_cast<std::uint64_t>(conns))
      .add("depth", static_cast<std::uint64_t>(depth))
      .add("threads", static_cast<std::uint64_t>(threads))
      .add("ops", total)
      .add("rate", rate)
      .add("p50_us", p.p50_us)
      .add("p99_us", p.p99_us)
      .add("mean_us", p.mean_us);
  ops::bench::add_cpu(j, window, static_cast<double>(total), "op");
  char human[512];
  std::snprintf(human, sizeof human,
                "grpc %s %s %zux%zu: %.0f ops/s  p50 %.1f us  p99 %.1f us  client %.2f us/op  "
                "server %.2f us/op",
                pipelined ? "pipeline" : "pingpong", op.c_str(), conns, depth, rate, p.p50_us,
                p.p99_us, window.self() * 1e6 / std::max<double>(1, total),
                window.server() * 1e6 / std::max<double>(1, total));
  emit(c, j, human);
  return 0;
}

// --- bulk ---

int run_bulk(const Flags& flags, const Common& c, bool is_upload) {
  const std::uint64_t size = flags.size("size", 1ull << 30);
  const std::size_t parallel = flags.size("parallel", 1);
  const std::size_t chunk = flags.size("chunk", 64 * 1024);
  std::string buffer(static_cast<std::size_t>(std::min<std::uint64_t>(size, 64ull << 20)), '\0');
  ops::bench::fill_pattern(buffer.data(), buffer.size(), size);
  const std::string sha = is_upload ? sha256_hex(buffer, size) : "";
  const std::string down_path = "bench-bulk/down-" + std::to_string(size) + ".bin";

  std::vector<std::unique_ptr<Bench::Stub>> stubs;
  for (std::size_t i = 0; i < parallel; ++i) {
    stubs.push_back(Bench::NewStub(make_channel(c, static_cast<int>(i))));
  }
  if (!is_upload) {
    // Prepare the file once (idempotent: overwrite with the same bytes when missing).
    grpc::ClientContext ctx;
    opsbench::ListRequest req;
    req.set_path("bench-bulk");
    opsbench::ListReply reply;
    bool present = false;
    if (stubs[0]->List(&ctx, req, &reply).ok()) {
      for (const auto& e : reply.entries()) {
        if ("bench-bulk/" + e.name() == down_path && e.size() == size) present = true;
      }
    }
    if (!present) {
      auto st = upload(*stubs[0], down_path, buffer, size, 1 << 20, sha256_hex(buffer, size));
      if (!st.ok()) die("preparing the download file: " + st.error_message());
    }
  }

  std::barrier start(static_cast<std::ptrdiff_t>(parallel + 1));
  std::vector<std::string> errors(parallel);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < parallel; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      if (is_upload) {
        auto st = upload(*stubs[i], "bench-bulk/up-" + std::to_string(i) + ".bin", buffer, size,
                         chunk, sha);
        if (!st.ok()) errors[i] = st.error_message();
        return;
      }
      grpc::ClientContext ctx;
      opsbench::DownloadRequest req;
      req.set_path(down_path);
      req.set_chunk_size(static_cast<std::uint32_t>(chunk));
      auto reader = stubs[i]->Download(&ctx, req);
      opsbench::DownloadChunk msg;
      std::uint64_t got = 0;
      while (reader->Read(&msg)) got += msg.data().size();
      auto st = reader->Finish();
      if (!st.ok())
        errors[i] = st.error_message();
      else if (got != size)
        errors[i] = "short download";
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
    if (!e.empty()) die(std::string(is_upload ? "upload" : "download") + " failed: " + e);
  }
  if (is_upload && !flags.has("keep")) {
    for (std::size_t i = 0; i < parallel; ++i) {
      upload(*stubs[i], "bench-bulk/up-" + std::to_string(i) + ".bin", buffer, 0, chunk, "");
    }
  }
  const double bytes = static_cast<double>(size) * static_cast<double>(parallel);
  const double mib_s = bytes / (1 << 20) / window.wall();
  JsonLine j;
  j.add("tool", "grpc_bench")
      .add("mode", is_upload ? "upload" : "download")
      .add("size", size)
      .add("parallel", static_cast<std::uint64_t>(parallel))
      .add("chunk", static_cast<std::uint64_t>(chunk))
      .add("mib_s", mib_s);
  ops::bench::add_cpu(j, window, bytes / (1 << 30), "gib");
  if (c.server_pid > 0) {
    j.add("server_rss_growth_mib",
          static_cast<double>(rss.max_kib() - std::min(rss.max_kib(), rss.start_kib())) / 1024);
  }
  char human[256];
  std::snprintf(human, sizeof human, "grpc %s %zu x %.0f MiB (%zu KiB chunks): %.1f MiB/s",
                is_upload ? "upload" : "download", parallel, static_cast<double>(size) / (1 << 20),
                chunk / 1024, mib_s);
  emit(c, j, human);
  return 0;
}

int run_idle(const Flags& flags, const Common& c) {
  const std::size_t count = flags.size("count", 1000);
  if (c.server_pid <= 0) die("idle needs --server-pid");
  auto first = Bench::NewStub(make_channel(c, -2));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::uint64_t before = ops::bench::status_kib(c.server_pid).value_or(0);
  std::vector<std::shared_ptr<grpc::Channel>> held;
  CpuWindow window(c.server_pid);
  window.start();
  for (std::size_t i = 0; i < count; ++i) {
    auto ch = make_channel(c, static_cast<int>(i));
    // One call, so the server has set up everything a working connection has.
    auto stub = Bench::NewStub(ch);
    grpc::ClientContext ctx;
    opsbench::DescribeReply reply;
    if (!stub->Describe(&ctx, opsbench::DescribeRequest(), &reply).ok()) die("describe failed");
    held.push_back(ch);
  }
  window.stop();
  std::this_thread::sleep_for(std::chrono::duration<double>(flags.num("hold", 1.0)));
  const std::uint64_t after = ops::bench::status_kib(c.server_pid).value_or(0);
  const double per =
      static_cast<double>(after - std::min(after, before)) / static_cast<double>(count);
  JsonLine j;
  j.add("tool", "grpc_bench")
      .add("mode", "idle")
      .add("count", static_cast<std::uint64_t>(count))
      .add("server_rss_before_kib", before)
      .add("server_rss_after_kib", after)
      .add("kib_per_conn", per);
  char human[256];
  std::snprintf(human, sizeof human, "grpc idle %zu connections: %.2f KiB per connection", count,
                per);
  emit(c, j, human);
  return 0;
}

// New connections per second, with the server's CPU per connection: the counterpart of
// `opsbench handshakes` (which also logs in; gRPC has no login, so this side is lighter).
int run_handshakes(const Flags& flags, const Common& c) {
  const std::size_t threads = std::max<std::size_t>(1, flags.size("threads", 2));
  JsonLine j;
  j.add("tool", "grpc_bench");
  const auto r = ops::bench::measure_handshakes(
      threads, flags.num("warmup", 0.3), flags.num("duration", 3), c.server_pid, j,
      [&c](std::size_t t, std::uint64_t n) {
        // A channel of its own each time (channel args differ), so gRPC cannot reuse one.
        auto channel = make_channel(c, static_cast<int>((t << 24) + n));
        channel.reset();  // the last reference: the connection closes
      });
  char human[256];
  std::snprintf(human, sizeof human,
                "grpc handshakes (%zu threads): %.0f connections/s  p50 %.1f us  p99 %.1f us  "
                "server %.1f us/conn  client %.1f us/conn",
                threads, r.rate, r.p.p50_us, r.p.p99_us, r.server_us_per_conn,
                r.client_us_per_conn);
  emit(c, j, human);
  return 0;
}

std::shared_ptr<grpc::ChannelCredentials> credentials(const Flags& flags) {
  if (!flags.has("tls-ca")) return grpc::InsecureChannelCredentials();
  std::ifstream in(flags.str("tls-ca"));
  if (!in) die("cannot read " + flags.str("tls-ca"));
  std::stringstream ss;
  ss << in.rdbuf();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ss.str();
  return grpc::SslCredentials(options);
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.positional().size() != 1) {
    std::fprintf(stderr,
                 "usage: grpc_bench pingpong|pipeline|upload|download|idle|handshakes --port P "
                 "[--host H] [--tls-ca CA.pem] [--server-pid PID] [--json] [--label NAME] "
                 "[mode options as opsbench; --chunk BYTES for streams]\n");
    return 2;
  }
  Common c;
  c.target = flags.str("host", "127.0.0.1") + ":" + flags.str("port", "50051");
  c.credentials = credentials(flags);
  c.server_pid = static_cast<long>(flags.size("server-pid", 0));
  c.json = flags.has("json");
  c.label = flags.str("label");
  const std::string mode = flags.positional()[0];
  if (mode == "pingpong") return run_small(flags, c, false);
  if (mode == "pipeline") return run_small(flags, c, true);
  if (mode == "upload") return run_bulk(flags, c, true);
  if (mode == "download") return run_bulk(flags, c, false);
  if (mode == "idle") return run_idle(flags, c);
  if (mode == "handshakes") return run_handshakes(flags, c);
  die("unknown mode " + mode);
}
