// Picks the user store server.json asks for ("user_store": "file" or {"postgresql": ...}).
// The server, `opserver user ...` and `opserver db migrate` all come through here.
#pragma once

#include <memory>
#include <string>

#include "auth/user_store.hpp"
#include "config/config.hpp"

namespace ops::core {

// The store, not yet open()ed. For PostgreSQL the key file is read (and its mode checked)
// here, so a bad one stops the server before it listens.
Result<std::unique_ptr<UserStore>> make_user_store(const Config& config);

// `opserver db migrate`: brings the PostgreSQL store's schema to this server's version.
// Returns a line for people ("schema migrated from version 0 to 1", "... already at 1").
Result<std::string> migrate_user_store(const Config& config);

}  // namespace ops::core
