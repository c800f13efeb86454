// upload -r DIR REMOTE and download -r REMOTE DIR: whole directory trees on one
// connection, pipelined.
#pragma once

#include "commands.hpp"

namespace ops::opclient {

int run_upload_tree(const ConnectionFlags& conn, const UploadFlags& flags);
int run_download_tree(const ConnectionFlags& conn, const DownloadFlags& flags);

}  // namespace ops::opclient
