#include "auth/user_store_factory.hpp"

#include "auth/file_user_store.hpp"
#include "auth/pg_connection.hpp"
#include "auth/pg_schema.hpp"
#include "auth/pg_user_store.hpp"

namespace ops::core {

Result<std::unique_ptr<UserStore>> make_user_store(const Config& config) {
  if (config.user_store.kind == UserStoreSettings::Kind::file) {
    return std::unique_ptr<UserStore>(
        std::make_unique<FileUserStore>(config.state_dir, config.storage_dir));
  }
  auto sealer = KeySealer::from_file(config.user_store.key_file);
  if (!sealer) return std::move(sealer).error();
  return std::unique_ptr<UserStore>(std::make_unique<PgUserStore>(
      config.user_store.conninfo, std::move(*sealer), config.state_dir, config.storage_dir));
}

Result<std::string> migrate_user_store(const Config& config) {
  if (config.user_store.kind != UserStoreSettings::Kind::postgresql) {
    return fail(ErrorCode::invalid_args,
                config.server_config_path.string() +
                    ": \"user_store\" is the file store, which needs no migration; "
                    "`opserver db migrate` is for {\"postgresql\": ...}");
  }
  auto conn = pg_connect(config.user_store.conninfo);
  if (!conn) return std::move(conn).error();
  auto from = pg_migrate(conn->get());
  if (!from) return std::move(from).error();
  if (*from == kPgSchemaVersion) {
    return "schema already at version " + std::to_string(kPgSchemaVersion);
  }
  return "schema migrated from version " + std::to_string(*from) + " to " +
         std::to_string(kPgSchemaVersion);
}

}  // namespace ops::core
