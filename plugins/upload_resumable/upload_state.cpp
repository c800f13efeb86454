#include "upload_state.hpp"

#include <chrono>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "opserver/proof.hpp"

namespace ops::resumable {

namespace {

std::mutex g_mutex;
std::unordered_map<std::string, std::shared_ptr<UploadState>>& states() {
  static auto* map = new std::unordered_map<std::string, std::shared_ptr<UploadState>>();
  return *map;  // never destroyed: handler threads may outlive static destruction order
}

}  // namespace

std::shared_ptr<UploadState> state_of(const std::string& id) {
  std::lock_guard lock(g_mutex);
  auto& slot = states()[id];
  if (!slot) {
    slot = std::make_shared<UploadState>();
    slot->created_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  }
  return slot;
}

std::shared_ptr<UploadState> find_state(const std::string& id) {
  std::lock_guard lock(g_mutex);
  auto it = states().find(id);
  return it == states().end() ? nullptr : it->second;
}

void drop_state(const std::string& id) {
  std::lock_guard lock(g_mutex);
  states().erase(id);
}

void keep_only(const std::vector<std::string>& live, std::int64_t now_ms, std::int64_t min_age_ms) {
  const std::unordered_set<std::string> present(live.begin(), live.end());
  std::lock_guard lock(g_mutex);
  for (auto it = states().begin(); it != states().end();) {
    if (!present.contains(it->first) && now_ms - it->second->created_ms >= min_age_ms) {
      it = states().erase(it);  // a call still holding it keeps its own shared_ptr
    } else {
      ++it;
    }
  }
}

EvpCtx new_sha256() {
  EvpCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return nullptr;
  return ctx;
}

Result<std::string> peek_digest(const EVP_MD_CTX* ctx) {
  EvpCtx copy(EVP_MD_CTX_new());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!copy || EVP_MD_CTX_copy_ex(copy.get(), ctx) != 1 ||
      EVP_DigestFinal_ex(copy.get(), digest, &len) != 1 || len != 32) {
    return fail(ErrorCode::internal, "cannot compute sha256");
  }
  return proof::to_hex(digest, len);
}

}  // namespace ops::resumable
