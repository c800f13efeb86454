#include "remote_paths.hpp"

namespace ops::opclient {

std::string trim_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string directory_path(std::string path) {
  path = trim_trailing_slashes(std::move(path));
  if (path == "/") path.clear();
  return path;
}

}  // namespace ops::opclient
