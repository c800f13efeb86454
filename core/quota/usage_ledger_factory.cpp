#include "quota/usage_ledger_factory.hpp"

#include "net/defender.hpp"
#include "quota/memory_usage_ledger.hpp"
#include "quota/pg_usage_ledger.hpp"

namespace ops::core {

Result<std::unique_ptr<UsageLedger>> make_usage_ledger(const Config& config, int storage_fd) {
  if (config.user_store.kind != UserStoreSettings::Kind::postgresql) {
    return std::unique_ptr<UsageLedger>(std::make_unique<MemoryUsageLedger>(storage_fd));
  }
  auto ledger = std::make_unique<PgUsageLedger>(config.user_store.conninfo, storage_fd);
  if (Status st = ledger->start(); !st) return st.error();
  return std::unique_ptr<UsageLedger>(std::move(ledger));
}

Result<std::unique_ptr<PgBanSync>> make_ban_sync(const Config& config, Defender& defender) {
  if (config.user_store.kind != UserStoreSettings::Kind::postgresql || !defender.enabled()) {
    return std::unique_ptr<PgBanSync>();
  }
  auto sync = std::make_unique<PgBanSync>(config.user_store.conninfo, defender);
  if (Status st = sync->start(); !st) return st.error();
  return sync;
}

}  // namespace ops::core
