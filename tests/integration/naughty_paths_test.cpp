// Every line of the Big List of Naughty Strings (../shared/corpora/blns) as a path to stat,
// mkdir, move, upload and remove over a real server (OPS/1 §5, §7, §10). Each answer is ok
// or a documented refusal; a string the SDK's validator refuses is refused by every
// operation with invalid_args; a string it accepts can be made as a directory; and nothing
// is ever created or changed outside the user's directory (the storage root and the
// server's own directory are compared before and after). Skipped where the corpus is not
// beside the checkout (a clean clone in CI).
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "fault_util.hpp"
#include "file_ops_util.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/paths.hpp"

namespace ops::test {
namespace {

using namespace fileops;

// Every entry under `dir` except those of `skip` (a top-level name) and below it.
std::string fingerprint_except(const fs::path& dir, const std::string& skip) {
  std::string out;
  for (const std::string& rel : tree(dir)) {
    if (rel == skip || rel.rfind(skip + "/", 0) == 0) continue;
    struct stat st {};
    if (::lstat((dir / rel).c_str(), &st) != 0) continue;
    out += rel + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_size) + "\n";
  }
  return out;
}

// The refusals a path can earn from the §10 operations; anything else (internal,
// unavailable, ...) would be a bug in the path handling.
bool is_path_refusal(const Outcome& o) {
  static const std::set<std::string> codes = {"invalid_args", "not_found", "already_exists",
                                              "conflict", "forbidden"};
  return !o.transport_failed && codes.count(o.code) != 0;
}

TEST(NaughtyPaths, EveryNaughtyStringIsOkOrRefusedAndStaysInside) {
  const fs::path corpus = fs::path(OPS_CORPORA_DIR) / "blns" / "blns.txt";
  if (!fs::exists(corpus)) {
    GTEST_SKIP() << "the naughty strings corpus is not here: " << corpus
                 << " (it lives beside the checkout, in ../shared/corpora)";
  }
  std::vector<std::string> strings;
  {
    std::ifstream in(corpus, std::ios::binary);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line[0] != '#') strings.push_back(line);
    }
  }
  ASSERT_GT(strings.size(), 400u);

  ServerOptions options;
  options.ops_json = file_ops_json(OPS_PLUGIN_DIR);
  ServerProcess server(options);
  const std::string key = server.add_user("nora");
  auto c = server.connect("nora", key);
  ASSERT_TRUE(c);
  const fs::path home = server.storage_dir() / "nora";
  ASSERT_TRUE(upload(*c, "keep", "kept").ok);
  // Outside the user's directory: the rest of the storage root (compared in full) and the
  // server's own directory (by names: its log grows).
  auto server_files = [&] {
    std::string out;
    for (const std::string& rel : tree(server.root())) {
      if (rel.rfind("storage", 0) != 0) out += rel + "\n";
    }
    return out;
  };
  const std::string storage_before = fingerprint_except(server.storage_dir(), "nora");
  const std::string server_before = server_files();

  int valid = 0, refused = 0;
  for (const std::string& s : strings) {
    SCOPED_TRACE(jstr(s));
    const bool ok_path = sdk::validate_path(s).ok();
    std::vector<Outcome> answers;
    answers.push_back(stat_op(*c, s));
    Outcome made = mkdir_op(*c, s);
    answers.push_back(made);
    answers.push_back(stat_op(*c, s));
    answers.push_back(move_op(*c, s, s + ".m"));
    answers.push_back(move_op(*c, s + ".m", "n/" + s));
    answers.push_back(upload(*c, s + "/u", "u"));
    answers.push_back(move_op(*c, "keep", s + "/k"));
    answers.push_back(move_op(*c, s + "/k", "keep"));
    answers.push_back(remove_op(*c, s, true));
    answers.push_back(remove_op(*c, s + ".m", true));
    answers.push_back(remove_op(*c, "n", true));
    for (std::size_t i = 0; i < answers.size(); ++i) {
      const Outcome& a = answers[i];
      ASSERT_FALSE(a.transport_failed) << "step " << i << ": " << a.message;
      EXPECT_TRUE(a.ok || is_path_refusal(a))
          << "step " << i << ": " << a.code << ": " << a.message;
      EXPECT_EQ(a.message.find(server.storage_dir().string()), std::string::npos)
          << "a host path in: " << a.message;
    }
    if (ok_path) {
      ++valid;
      EXPECT_TRUE(made.ok) << "a valid path could not be made: " << made.code << ": "
                           << made.message;
    } else {
      ++refused;
      // stat, mkdir, stat and the first move name `s` itself.
      for (std::size_t i : {0u, 1u, 2u, 3u}) {
        EXPECT_EQ(answers[i].code, "invalid_args") << "step " << i << ": " << answers[i].message;
      }
    }
    // The one file always finds its way back, whatever `s` is.
    ASSERT_EQ(read_file(home / "keep"), "kept");
    ASSERT_EQ(fingerprint_except(server.storage_dir(), "nora"), storage_before)
        << "something changed outside the user's directory";
  }
  EXPECT_EQ(fingerprint_except(server.storage_dir(), "nora"), storage_before);
  EXPECT_EQ(server_files(), server_before);
  EXPECT_TRUE(scratch_empty(server));
  EXPECT_EQ(usage_reported(*c), usage_on_disk(home));
  std::printf("[ figures  ] %zu naughty strings: %d valid paths, %d refused\n", strings.size(),
              valid, refused);
  EXPECT_GT(valid, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace ops::test
