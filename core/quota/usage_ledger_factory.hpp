// Picks the usage ledger (quota/usage_ledger.hpp) that goes with server.json's "user_store":
// the file store keeps usage in this process's memory, the PostgreSQL store in the database
// every node shares. Also the defender's ban sharing, which follows the same rule.
#pragma once

#include <memory>

#include "config/config.hpp"
#include "net/pg_ban_sync.hpp"
#include "quota/usage_ledger.hpp"

namespace ops::core {

class Defender;

// The ledger, started (the PostgreSQL one registers its node: `unavailable` if it cannot).
Result<std::unique_ptr<UsageLedger>> make_usage_ledger(const Config& config, int storage_fd);

// With the PostgreSQL store and the defender on: the started ban sharing; else null.
Result<std::unique_ptr<PgBanSync>> make_ban_sync(const Config& config, Defender& defender);

}  // namespace ops::core
