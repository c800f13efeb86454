// opclient upload through the resumable operations (OPS/1 §11): for files over a size
// threshold, or to continue one left open (--resume). Used by run_upload only.
#pragma once

#include <optional>
#include <string>

#include "commands.hpp"
#include "local_files.hpp"

namespace ops::opclient {

// `input` is open and rewound; `sha256` is its digest (lowercase hex). Returns the exit
// status, having printed the result or the error (and, when the upload stays open on the
// server, how to resume it); or nothing, with `input` untouched, when the server does not
// offer upload_open to this user (an older server or configuration) and the caller should
// send the file in one upload instead.
std::optional<int> run_resumable_upload(const ConnectionFlags& conn, const UploadFlags& flags,
                                        Input& input, const std::string& remote,
                                        const std::string& sha256);

}  // namespace ops::opclient
