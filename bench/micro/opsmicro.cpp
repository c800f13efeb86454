// opsmicro: Google Benchmark micro benches for the server's hot paths, on the same code
// the server runs (opcore, opsdk): frame decode + header parse + request interpretation,
// strict JSON, the handshake proof and the whole auth verification, path open beneath a
// root, args schema validation with the real upload plugin's schema, response building.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "auth/file_user_store.hpp"
#include "auth/handshake.hpp"
#include "config/config.hpp"
#include "dispatch/registry.hpp"
#include "opserver/frame.hpp"
#include "opserver/paths.hpp"
#include "opserver/proof.hpp"
#include "plugin_host/plugin_loader.hpp"
#include "proto/header.hpp"
#include "proto/messages.hpp"
#include "proto/strict_json.hpp"

namespace {

namespace fs = std::filesystem;

const std::string kUploadHeader =
    R"({"id":12345,"operate":"upload","args":{"path":"photos/2024/img-0001.jpg","overwrite":true,)"
    R"("sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},)"
    R"("payload":1048576})";
const std::string kDescribeHeader = R"({"id":7,"operate":"describe"})";

// A directory that lives as long as the process (removed at exit).
struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "opsmicro-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

TempDir& temp() {
  static TempDir dir;
  return dir;
}

// --- framing and headers (§1, §3, §7) ---

void BM_FrameDecodeParseInterpret(benchmark::State& state) {
  const std::string& header = state.range(0) == 0 ? kDescribeHeader : kUploadHeader;
  const std::string frame = ops::frame::encode(header);
  for (auto _ : state) {
    auto* p = reinterpret_cast<const unsigned char*>(frame.data());
    std::uint32_t len = ops::frame::decode_length(p);
    auto parsed = ops::core::parse_header(std::string_view(frame.data() + 4, len));
    if (!parsed) state.SkipWithError("parse failed");
    auto request = ops::core::interpret_request(*parsed);
    benchmark::DoNotOptimize(request);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frame.size()));
  state.SetLabel(state.range(0) == 0 ? "describe request" : "upload request");
}
BENCHMARK(BM_FrameDecodeParseInterpret)->Arg(0)->Arg(1);

void BM_StrictJson(benchmark::State& state) {
  const std::string& text = kUploadHeader;
  for (auto _ : state) {
    rapidjson::Document doc;
    ops::core::JsonError error;
    bool ok = ops::core::parse_strict_json(text, doc, error);
    benchmark::DoNotOptimize(ok);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_StrictJson);

// Plain RapidJSON on the same bytes: what the strict layer costs on top.
void BM_RapidJsonPlain(benchmark::State& state) {
  const std::string& text = kUploadHeader;
  for (auto _ : state) {
    rapidjson::Document doc;
    doc.Parse(text.data(), text.size());
    benchmark::DoNotOptimize(doc.HasParseError());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_RapidJsonPlain);

// What the host checks of every plugin result before it goes on the wire: a `list` page
// of 10 entries, as the list plugin writes it.
const std::string kListResult = [] {
  std::string r = R"({"path":"","entries":[)";
  for (int i = 0; i < 10; ++i) {
    if (i > 0) r += ',';
    r += R"({"name":"ten/f)" + std::to_string(i) +
         R"(.txt","type":"file","size":2,"mtime":1764770000})";
  }
  return r + R"(],"truncated":false})";
}();

void BM_ValidateListResult(benchmark::State& state) {
  for (auto _ : state) {
    ops::core::JsonError error;
    benchmark::DoNotOptimize(ops::core::validate_strict_object(kListResult, error));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kListResult.size()));
}
BENCHMARK(BM_ValidateListResult);

void BM_Utf8Validate(benchmark::State& state) {
  std::string text(static_cast<std::size_t>(state.range(0)), 'a');
  for (auto _ : state) benchmark::DoNotOptimize(ops::core::is_valid_utf8(text));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_Utf8Validate)->Arg(64)->Arg(4096);

void BM_OkResponseFrame(benchmark::State& state) {
  const std::string result =
      R"({"path":"a/b.bin","size":1048576,"sha256":")" + std::string(64, 'a') + R"("})";
  for (auto _ : state) {
    auto frame = ops::core::ok_response_frame(42, result, 0);
    benchmark::DoNotOptimize(frame);
  }
}
BENCHMARK(BM_OkResponseFrame);

// --- handshake (§2) ---

void BM_Proof(benchmark::State& state) {
  const ops::proof::Nonce nonce = ops::proof::random_nonce();
  const ops::proof::Nonce cnonce = ops::proof::random_nonce();
  const std::string key(64, 'k');
  for (auto _ : state) {
    auto digest = ops::proof::client_proof(key, nonce, cnonce, "alice");
    benchmark::DoNotOptimize(digest);
  }
}
BENCHMARK(BM_Proof);

void BM_RandomNonce(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(ops::proof::random_nonce());
}
BENCHMARK(BM_RandomNonce);

// Everything the server does for one auth frame: parse, two HMACs, user lookup (which
// stats users.json for changes), welcome frame.
struct AuthFixture {
  std::unique_ptr<ops::core::FileUserStore> users;
  std::unique_ptr<ops::core::Authenticator> auth;
  std::string key;
  std::string error;
};

// Built once: Google Benchmark calls each bench several times.
AuthFixture& auth_fixture() {
  static AuthFixture f = [] {
    AuthFixture a;
    fs::path root = temp().path / "auth";
    fs::create_directories(root / "storage");
    a.users = std::make_unique<ops::core::FileUserStore>(root / "state", root / "storage");
    if (auto opened = a.users->open(false); !opened) {
      a.error = "cannot open the user store: " + opened.error().message;
      return a;
    }
    a.key = ops::proof::random_hex(32);
    if (auto added = a.users->add("alice", a.key); !added) {
      a.error = "cannot add a user: " + added.error().message;
      return a;
    }
    a.auth = std::make_unique<ops::core::Authenticator>(*a.users, "opserver/bench");
    return a;
  }();
  return f;
}

void BM_AuthVerify(benchmark::State& state) {
  AuthFixture& f = auth_fixture();
  if (!f.auth) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  const ops::proof::Nonce nonce = ops::proof::random_nonce();
  const ops::proof::Nonce cnonce = ops::proof::random_nonce();
  const auto proof = ops::proof::client_proof(f.key, nonce, cnonce, "alice");
  const std::string frame =
      R"({"type":"auth","mechanism":"hmac-sha256","user":"alice","cnonce":")" +
      ops::proof::to_hex(cnonce) + R"(","proof":")" + ops::proof::to_hex(proof) + R"("})";
  for (auto _ : state) {
    auto header = ops::core::parse_header(frame);
    auto ok = f.auth->verify(header->doc, nonce);
    if (!ok) state.SkipWithError("verify failed");
    benchmark::DoNotOptimize(ok);
  }
}
BENCHMARK(BM_AuthVerify);

// --- paths (§5, §7) ---

void BM_OpenBeneath(benchmark::State& state) {
  fs::path root = temp().path / "paths";
  std::string rel = "a/b/c/d/file.bin";
  fs::create_directories(root / "a/b/c/d");
  { std::ofstream(root / rel) << "x"; }
  int root_fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  for (auto _ : state) {
    auto fd = ops::sdk::open_beneath(root_fd, rel, O_RDONLY);
    if (!fd) state.SkipWithError("open failed");
    benchmark::DoNotOptimize(fd);
  }
  ::close(root_fd);
  state.SetLabel("5 components");
}
BENCHMARK(BM_OpenBeneath);

// The kernel alone, for scale: a plain openat of the same path (follows symlinks).
void BM_OpenatPlain(benchmark::State& state) {
  fs::path root = temp().path / "paths";
  std::string rel = "a/b/c/d/file.bin";
  fs::create_directories(root / "a/b/c/d");
  { std::ofstream(root / rel) << "x"; }
  int root_fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  for (auto _ : state) {
    int fd = ::openat(root_fd, rel.c_str(), O_RDONLY | O_CLOEXEC);
    benchmark::DoNotOptimize(fd);
    ::close(fd);
  }
  ::close(root_fd);
}
BENCHMARK(BM_OpenatPlain);

void BM_ValidatePath(benchmark::State& state) {
  const std::string path = "photos/2024/summer/img-0001.jpg";
  for (auto _ : state) benchmark::DoNotOptimize(ops::sdk::validate_path(path));
}
BENCHMARK(BM_ValidatePath);

// --- dispatch: the upload plugin's args schema, through the real Registry ---

const ops::core::Registry* registry() {
  static std::unique_ptr<ops::core::Registry> reg = [] {
    ops::core::Config config;
    config.plugin_dir = OPS_BENCH_PLUGIN_DIR;
    for (const char* op : {"upload", "download", "list"}) {
      ops::core::OperationPolicy policy;
      policy.allow = {"*"};
      config.operations.emplace(op, policy);
    }
    auto loaded = ops::core::load_plugins(config.plugin_dir);
    if (!loaded) return std::unique_ptr<ops::core::Registry>();
    auto built = ops::core::Registry::build(config, std::move(*loaded));
    if (!built) return std::unique_ptr<ops::core::Registry>();
    return std::move(*built);
  }();
  return reg.get();
}

void BM_ValidateArgsUpload(benchmark::State& state) {
  const auto* reg = registry();
  const ops::core::Operation* op = reg ? reg->find("upload") : nullptr;
  if (op == nullptr) {
    state.SkipWithError("plugins not found in " OPS_BENCH_PLUGIN_DIR);
    return;
  }
  rapidjson::Document args;
  args.Parse(R"({"path":"photos/2024/img-0001.jpg","overwrite":true,)"
             R"("sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"})");
  for (auto _ : state) {
    auto status = ops::core::validate_args(*op, args);
    if (!status) state.SkipWithError("validation failed");
    benchmark::DoNotOptimize(status);
  }
  state.SetLabel("path + overwrite + sha256 (pattern)");
}
BENCHMARK(BM_ValidateArgsUpload);

void BM_ValidateArgsUploadNoSha(benchmark::State& state) {
  const auto* reg = registry();
  const ops::core::Operation* op = reg ? reg->find("upload") : nullptr;
  if (op == nullptr) {
    state.SkipWithError("plugins not found");
    return;
  }
  rapidjson::Document args;
  args.Parse(R"({"path":"photos/2024/img-0001.jpg","overwrite":true})");
  for (auto _ : state) benchmark::DoNotOptimize(ops::core::validate_args(*op, args));
  state.SetLabel("path + overwrite");
}
BENCHMARK(BM_ValidateArgsUploadNoSha);

// The built-in describe answer, built for each call.
void BM_DescribeFor(benchmark::State& state) {
  const auto* reg = registry();
  if (reg == nullptr) {
    state.SkipWithError("plugins not found");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(reg->describe_for("alice"));
}
BENCHMARK(BM_DescribeFor);

}  // namespace

BENCHMARK_MAIN();
