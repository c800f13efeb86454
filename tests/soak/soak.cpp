// ops_soak: crash consistency under SIGKILL (reliability.md case 92; run by scripts/soak).
//
// Each round starts the server on the same storage, lets W writer threads upload and
// overwrite files through the client library, SIGKILLs the server at a random moment,
// and then checks, from outside the server and again after the next start:
//  - every acknowledged upload is present with its SHA-256, unless a later upload of the
//    same path (the one that was in flight at the kill) replaced it whole;
//  - no file is torn or partial: every file holds exactly one body that was sent for it;
//  - a path whose first upload was never acknowledged holds nothing, or that body whole;
//  - nothing else appears in the user's tree, and <storage>/.ops-tmp is empty once the
//    server has started again (orphans found at kill time are counted);
//  - the start-up time stays bounded.
// Each writer owns its paths (so the order of its uploads is known); all writers also
// overwrite a few shared paths, which must hold one whole body from some writer.
// Meanwhile an admin registers new users (case 72): after each restart every registration
// that was acknowledged logs in with the key it returned, and every user in the store has
// its storage directory.
// Exit status 0 only when nothing was lost, torn or left behind.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "opserver/client.hpp"
#include "tool_util.hpp"

namespace {

using namespace ops::tools;

struct Args {
  int rounds = 200;
  int writers = 8;
  int paths_per_writer = 4;
  int shared_paths = 2;
  int min_kill_ms = 10;
  int max_kill_ms = 400;
  std::size_t max_body = 1u << 20;
  unsigned seed = 0;
  fs::path server_bin;
  fs::path plugin_dir;
  bool keep = false;
};

// The body of version `v` of `path`: its size and bytes follow from the three numbers, so
// only the SHA-256 of each version needs remembering.
std::string body_for(const std::string& path, std::uint64_t v, std::size_t max_body) {
  std::seed_seq seq{static_cast<std::uint32_t>(std::hash<std::string>{}(path)),
                    static_cast<std::uint32_t>(v), static_cast<std::uint32_t>(v >> 32)};
  std::mt19937_64 rng(seq);
  // Mostly small, sometimes up to max_body, sometimes empty.
  std::size_t size = rng() % 8 == 0 ? static_cast<std::size_t>(rng() % (max_body + 1))
                                    : static_cast<std::size_t>(rng() % 65536);
  if (rng() % 32 == 0) size = 0;
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    std::uint64_t x = rng();
    std::memcpy(s.data() + i, &x, std::min<std::size_t>(8, size - i));
  }
  return s;
}

struct OwnedPath {
  std::string path;
  std::uint64_t next_version = 1;
  std::optional<std::uint64_t> durable;      // the version known to be on disk
  std::optional<std::uint64_t> in_flight;    // sent, not acknowledged this round
  std::map<std::uint64_t, std::string> sha;  // version -> SHA-256 (kept while relevant)
};

struct Totals {
  std::uint64_t attempted = 0;
  std::uint64_t acknowledged = 0;
  std::uint64_t refused = 0;  // an error answer other than a dropped connection
  std::uint64_t verified = 0;
  std::uint64_t lost = 0;
  std::uint64_t torn = 0;
  std::uint64_t stray = 0;
  std::uint64_t orphans_at_kill = 0;
  std::uint64_t orphans_after_start = 0;
  std::uint64_t in_flight_committed = 0;
  std::uint64_t in_flight_absent = 0;
  std::vector<double> startup_ms;
  std::uint64_t registered = 0;     // acknowledged registrations
  std::uint64_t users_lost = 0;     // acknowledged, but cannot log in after the restart
  std::uint64_t users_partial = 0;  // in the store without a storage directory
};

std::string sha_of_file(const fs::path& p) {
  return ops::proof::sha256_hex(slurp(p));
}

// Temporary files in the scratch area: everything but the node-<id>/ directories and
// their .owner lock files (docs/SCALING.md, "Scratch layout").
std::uint64_t count_temporaries(const fs::path& scratch) {
  std::uint64_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator(scratch, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    if (!it->path().filename().string().starts_with("node-")) {
      ++n;
      continue;
    }
    std::error_code inner;
    for (auto f = fs::directory_iterator(it->path(), inner);
         !inner && f != fs::directory_iterator(); f.increment(inner)) {
      if (f->path().filename() != ".owner") ++n;
    }
  }
  return n;
}

int usage() {
  std::fprintf(stderr,
               "usage: ops_soak --server BIN --plugins DIR [--rounds N] [--writers N] "
               "[--paths N] [--shared N] [--kill-ms MIN:MAX] [--max-body BYTES] [--seed N] "
               "[--keep]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--rounds")
      a.rounds = std::stoi(next());
    else if (k == "--writers")
      a.writers = std::stoi(next());
    else if (k == "--paths")
      a.paths_per_writer = std::stoi(next());
    else if (k == "--shared")
      a.shared_paths = std::stoi(next());
    else if (k == "--max-body")
      a.max_body = std::stoull(next());
    else if (k == "--seed")
      a.seed = static_cast<unsigned>(std::stoul(next()));
    else if (k == "--server")
      a.server_bin = next();
    else if (k == "--plugins")
      a.plugin_dir = next();
    else if (k == "--keep")
      a.keep = true;
    else if (k == "--kill-ms") {
      std::string v = next();
      a.min_kill_ms = std::stoi(v.substr(0, v.find(':')));
      a.max_kill_ms = std::stoi(v.substr(v.find(':') + 1));
    } else {
      return usage();
    }
  }
  if (a.server_bin.empty() || a.plugin_dir.empty()) return usage();
  if (a.seed == 0) a.seed = std::random_device{}();
  std::mt19937 rng(a.seed);

  ServerRun server;
  server.server_bin = a.server_bin;
  server.dir = make_work_dir("ops-soak");
  server.extra_settings = R"("io_threads": 2, "worker_threads": 16, "payload_timeout_ms": 5000)";
  server.write_config(a.plugin_dir);
  std::printf(
      "soak: %d rounds, %d writers x %d paths + %d shared paths, kill after %d-%d ms, "
      "seed %u, work dir %s\n",
      a.rounds, a.writers, a.paths_per_writer, a.shared_paths, a.min_kill_ms, a.max_kill_ms, a.seed,
      server.dir.c_str());
  std::fflush(stdout);

  server.start();
  std::string key;
  {
    ops::client::Options o;
    o.port = server.port;
    o.user = "admin";
    o.key = server.admin_key();
    auto admin = ops::client::Client::connect(o);
    if (!admin) {
      std::fprintf(stderr, "soak: cannot log in as admin: %s\n", admin.error().message.c_str());
      return 1;
    }
    auto r = (*admin)->call("register", R"({"user":"soak"})");
    if (!r || !r->ok) {
      std::fprintf(stderr, "soak: cannot register the soak user\n");
      return 1;
    }
    auto at = r->result_json.find("\"key\":\"");
    key = r->result_json.substr(at + 7, 64);
  }
  const fs::path home = server.storage() / "soak";
  const fs::path scratch = server.storage() / ".ops-tmp";

  std::vector<std::vector<OwnedPath>> owned(static_cast<std::size_t>(a.writers));
  for (int w = 0; w < a.writers; ++w) {
    for (int p = 0; p < a.paths_per_writer; ++p) {
      owned[static_cast<std::size_t>(w)].push_back(OwnedPath{
          "w" + std::to_string(w) + "/d" + std::to_string(p % 2) + "/f" + std::to_string(p),
          1,
          std::nullopt,
          std::nullopt,
          {}});
    }
  }
  std::vector<std::string> shared;
  for (int s = 0; s < a.shared_paths; ++s) shared.push_back("shared/s" + std::to_string(s));
  std::mutex shared_mutex;
  std::set<std::string> shared_shas;  // every body ever sent to a shared path
  std::uint64_t shared_counter = 0;
  Totals t;
  // Registrations acknowledged in the current round, checked after the next start.
  std::vector<std::pair<std::string, std::string>> new_users;
  std::mutex users_mutex;
  const std::string admin_key = server.admin_key();
  auto check_users = [&](const char* phase) {
    for (const auto& [name, ukey] : new_users) {
      ops::client::Options o;
      o.port = server.port;
      o.user = name;
      o.key = ukey;
      o.timeout = std::chrono::seconds(10);
      auto c = ops::client::Client::connect(o);
      if (!c) {
        ++t.users_lost;
        std::printf("soak: USER LOST %s (%s): %s\n", name.c_str(), phase,
                    c.error().message.c_str());
      }
    }
    new_users.clear();
    // Every user the store knows has its directory (the directory is made first).
    // users.json is {"users":{"<name>":{"key":...},...}}: names are the keys of objects.
    std::string users = slurp(server.dir / "state" / "users.json");
    static const std::regex kName(R"re("([a-z_][a-z0-9_.-]{0,31})"\s*:\s*\{)re");
    for (auto it = std::sregex_iterator(users.begin(), users.end(), kName);
         it != std::sregex_iterator(); ++it) {
      const std::string name = (*it)[1];
      std::error_code ec;
      if (name != "users" && !fs::is_directory(server.storage() / name, ec)) {
        ++t.users_partial;
        std::printf("soak: USER WITHOUT DIRECTORY %s (%s)\n", name.c_str(), phase);
      }
    }
  };

  // Checks the tree against what the writers know, then makes the observed state the
  // durable one. `phase` names when it runs (after the kill, or after the restart).
  auto verify = [&](const char* phase) {
    std::set<std::string> expected;
    for (auto& list : owned) {
      for (OwnedPath& op : list) {
        expected.insert(op.path);
        const fs::path file = home / op.path;
        std::error_code ec;
        const bool exists = fs::is_regular_file(file, ec);
        std::optional<std::uint64_t> found;
        if (exists) {
          std::string sha = sha_of_file(file);
          for (const auto& [v, s] : op.sha) {
            if (s == sha) found = v;
          }
          if (!found) {
            ++t.torn;
            std::printf("soak: TORN %s (%s): sha256 %s matches no body sent\n", op.path.c_str(),
                        phase, sha.c_str());
          }
        }
        // Allowed: the durable version, or the one in flight at the kill.
        bool ok = false;
        if (found && (found == op.durable || found == op.in_flight)) ok = true;
        if (!exists && !op.durable) ok = true;  // never acknowledged, never published
        if (!ok && (found || !exists)) {
          ++t.lost;
          std::printf("soak: LOST %s (%s): acknowledged v%llu, found %s\n", op.path.c_str(), phase,
                      static_cast<unsigned long long>(op.durable.value_or(0)),
                      exists ? ("v" + std::to_string(found.value_or(0))).c_str() : "nothing");
        }
        if (op.in_flight) {
          if (found == op.in_flight)
            ++t.in_flight_committed;
          else
            ++t.in_flight_absent;
        }
        if (found) {
          op.durable = found;
          ++t.verified;
        }
        op.in_flight.reset();
        // Only the durable version can matter from now on.
        for (auto it = op.sha.begin(); it != op.sha.end();) {
          it = (op.durable && it->first == *op.durable) ? std::next(it) : op.sha.erase(it);
        }
      }
    }
    for (const std::string& s : shared) {
      expected.insert(s);
      const fs::path file = home / s;
      std::error_code ec;
      if (!fs::is_regular_file(file, ec)) continue;
      if (!shared_shas.count(sha_of_file(file))) {
        ++t.torn;
        std::printf("soak: TORN %s (%s)\n", s.c_str(), phase);
      } else {
        ++t.verified;
      }
    }
    // Nothing but the expected files (and their directories) in the user's tree.
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(home, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory()) continue;
      std::string rel = fs::relative(it->path(), home).string();
      if (!expected.count(rel)) {
        ++t.stray;
        std::printf("soak: STRAY %s (%s)\n", rel.c_str(), phase);
      }
    }
  };

  const auto soak_start = Clock::now();
  for (int round = 1; round <= a.rounds; ++round) {
    if (round > 1) {
      server.start();
      t.startup_ms.push_back(static_cast<double>(server.last_startup.count()) / 1000.0);
      if (count_temporaries(scratch) > 0) {
        ++t.orphans_after_start;
        std::printf("soak: round %d: temporary files left after start-up\n", round);
      }
      verify("after restart");
      check_users("after restart");
    }

    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> attempted{0}, acknowledged{0}, refused{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < a.writers; ++w) {
      threads.emplace_back([&, w] {
        std::mt19937 wr(a.seed ^ static_cast<unsigned>(round * 7919 + w));
        ops::client::Options o;
        o.port = server.port;
        o.user = "soak";
        o.key = key;
        o.timeout = std::chrono::seconds(10);
        auto c = ops::client::Client::connect(o);
        if (!c) return;  // killed before we got in
        auto& mine = owned[static_cast<std::size_t>(w)];
        while (!stop.load()) {
          const bool to_shared = !shared.empty() && wr() % 5 == 0;
          std::string path, body;
          OwnedPath* op = nullptr;
          if (to_shared) {
            path = shared[wr() % shared.size()];
            std::lock_guard lock(shared_mutex);
            body = body_for(path, ++shared_counter + (std::uint64_t{1} << 40), a.max_body);
            shared_shas.insert(ops::proof::sha256_hex(body));
          } else {
            op = &mine[wr() % mine.size()];
            const std::uint64_t v = op->next_version++;
            path = op->path;
            body = body_for(path, v, a.max_body);
            op->sha[v] = ops::proof::sha256_hex(body);
            op->in_flight = v;
          }
          attempted.fetch_add(1);
          std::string args = "{\"path\":\"" + path + "\",\"overwrite\":true}";
          auto r = (*c)->call("upload", args, body);
          if (!r) return;  // the connection died with the server: in flight stays unknown
          if (!r->ok) {
            refused.fetch_add(1);
            std::printf("soak: upload of %s refused: %s\n", path.c_str(), r->error.message.c_str());
            return;
          }
          acknowledged.fetch_add(1);
          if (op) {
            op->durable = op->in_flight;
            op->in_flight.reset();
            for (auto it = op->sha.begin(); it != op->sha.end();) {
              it = it->first == *op->durable ? std::next(it) : op->sha.erase(it);
            }
          }
        }
      });
    }
    // The registrar: admin registers r<round>_<n> until the kill.
    threads.emplace_back([&] {
      ops::client::Options o;
      o.port = server.port;
      o.user = "admin";
      o.key = admin_key;
      o.timeout = std::chrono::seconds(10);
      auto c = ops::client::Client::connect(o);
      if (!c) return;
      for (int n = 0; !stop.load(); ++n) {
        std::string name = "r" + std::to_string(round) + "_" + std::to_string(n);
        auto r = (*c)->call("register", "{\"user\":\"" + name + "\"}");
        if (!r || !r->ok) return;
        auto at = r->result_json.find("\"key\":\"");
        if (at == std::string::npos) return;
        std::lock_guard lock(users_mutex);
        new_users.emplace_back(name, r->result_json.substr(at + 7, 64));
        ++t.registered;
      }
    });
    std::uniform_int_distribution<int> delay(a.min_kill_ms, a.max_kill_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay(rng)));
    server.kill_now();
    stop = true;
    for (auto& th : threads) th.join();
    t.attempted += attempted;
    t.acknowledged += acknowledged;
    t.refused += refused;
    // Orphans right after the kill: uploads cut short.
    t.orphans_at_kill += count_temporaries(scratch);
    verify("after kill");
    if (round % 20 == 0 || round == a.rounds) {
      std::printf("soak: round %d/%d: %llu uploads acknowledged so far, lost %llu, torn %llu\n",
                  round, a.rounds, static_cast<unsigned long long>(t.acknowledged),
                  static_cast<unsigned long long>(t.lost), static_cast<unsigned long long>(t.torn));
      std::fflush(stdout);
    }
  }
  // A last start: orphans removed, everything verified once more.
  server.start();
  t.startup_ms.push_back(static_cast<double>(server.last_startup.count()) / 1000.0);
  if (count_temporaries(scratch) > 0) ++t.orphans_after_start;
  verify("final start");
  check_users("final start");
  server.stop();

  const double secs = std::chrono::duration<double>(Clock::now() - soak_start).count();
  std::printf(
      "soak summary: rounds %d (SIGKILL each), %.0f s; uploads attempted %llu, acknowledged "
      "%llu, refused %llu; files verified %llu; acknowledged uploads lost %llu; torn or "
      "partial files %llu; stray files %llu; in-flight uploads at kill: %llu committed whole, "
      "%llu absent; orphan temp files at kill %llu, after restart %llu; start-up ms median "
      "%.1f p99 %.1f max %.1f; registrations acknowledged %llu, lost %llu, users without a "
      "directory %llu\n",
      a.rounds, secs, static_cast<unsigned long long>(t.attempted),
      static_cast<unsigned long long>(t.acknowledged), static_cast<unsigned long long>(t.refused),
      static_cast<unsigned long long>(t.verified), static_cast<unsigned long long>(t.lost),
      static_cast<unsigned long long>(t.torn), static_cast<unsigned long long>(t.stray),
      static_cast<unsigned long long>(t.in_flight_committed),
      static_cast<unsigned long long>(t.in_flight_absent),
      static_cast<unsigned long long>(t.orphans_at_kill),
      static_cast<unsigned long long>(t.orphans_after_start), quantile(t.startup_ms, 0.5),
      quantile(t.startup_ms, 0.99),
      t.startup_ms.empty() ? 0.0 : *std::max_element(t.startup_ms.begin(), t.startup_ms.end()),
      static_cast<unsigned long long>(t.registered), static_cast<unsigned long long>(t.users_lost),
      static_cast<unsigned long long>(t.users_partial));
  const bool bounded =
      t.startup_ms.empty() || *std::max_element(t.startup_ms.begin(), t.startup_ms.end()) < 5000.0;
  const bool pass = t.lost == 0 && t.torn == 0 && t.stray == 0 && t.orphans_after_start == 0 &&
                    t.refused == 0 && bounded && t.acknowledged > 0 && t.users_lost == 0 &&
                    t.users_partial == 0;
  std::printf("soak: %s\n", pass ? "PASS" : "FAIL");
  if (!a.keep && pass) {
    std::error_code ec;
    fs::remove_all(server.dir, ec);
  }
  return pass ? 0 : 1;
}
