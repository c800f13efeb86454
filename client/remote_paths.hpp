// Remote paths as people type them: `ls` prints directories with a trailing '/', so
// "docs/" must mean "docs" everywhere (OPS/1 paths have no trailing slash).
#pragma once

#include <string>

namespace ops::opclient {

// Drops trailing '/' but never down to nothing: "docs//" -> "docs", "/" stays "/".
std::string trim_trailing_slashes(std::string path);

// A path naming a directory to look in (ls, stat): "/" alone means the root, which the
// request says by leaving the path out ("").
std::string directory_path(std::string path);

}  // namespace ops::opclient
