// The scratch area of a storage root as tests see it (docs/SCALING.md, "Scratch layout"):
// the shared <storage>/.ops-tmp, and in it one node-<id>/ per server that has run on this
// storage, holding that server's temporaries and its .owner lock file.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace ops::test {

// Every file or directory in the scratch area other than the node-<id>/ directories
// themselves and their .owner files; with `uploads_too` false, the resumable uploads' tree
// is left out too. Paths relative to .ops-tmp.
inline std::vector<std::string> scratch_temporaries(const std::filesystem::path& storage,
                                                    bool uploads_too = true) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(storage / ".ops-tmp", ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("node-") && e.is_directory()) {
      std::error_code inner;
      for (const auto& f : fs::directory_iterator(e.path(), inner)) {
        const std::string leaf = f.path().filename().string();
        if (leaf != ".owner") out.push_back(name + "/" + leaf);
      }
    } else if (name != "uploads" || uploads_too) {
      out.push_back(name);
    }
  }
  return out;
}

// No temporaries at all.
inline bool scratch_clean(const std::filesystem::path& storage) {
  return scratch_temporaries(storage, true).empty();
}

// The node-<id>/ directories in the scratch area.
inline std::vector<std::filesystem::path> node_scratch_dirs(const std::filesystem::path& storage) {
  namespace fs = std::filesystem;
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(storage / ".ops-tmp", ec)) {
    if (e.path().filename().string().starts_with("node-") && e.is_directory()) {
      out.push_back(e.path());
    }
  }
  return out;
}

}  // namespace ops::test
