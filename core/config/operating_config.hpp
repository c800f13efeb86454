// Settings for running in production (issue 15): the admin listener (metrics, health), the
// defender (bans per source address after failed handshakes) and the audit log. Parsed from
// server.json by load_config (config.cpp) through parse_defender_settings below.
#pragma once

#include <rapidjson/document.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config/tls_config.hpp"
#include "opserver/error.hpp"

namespace ops::core {

// `admin_listen`: "HOST:PORT", or "PORT" alone for 127.0.0.1:PORT. Absent: no admin listener.
struct AdminListen {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
};

// `defender`: failed handshakes are scored per source address; `threshold` of them within
// `observation` ban the address for `ban_time`, doubled at each further ban of the same
// address up to `max_ban_time`. Addresses in `allow` (CIDRs) are never banned.
struct DefenderSettings {
  bool enabled = false;
  unsigned threshold = 10;
  std::chrono::seconds observation{60};
  std::chrono::seconds ban_time{300};
  std::chrono::seconds max_ban_time{86400};
  std::vector<std::string> allow;    // "10.0.0.0/8", "::1", "192.0.2.7/32"
  std::size_t max_tracked = 100000;  // addresses remembered at most (memory bound)
};

// An address range; IPv4 is kept as its IPv4-mapped IPv6 form (::ffff:a.b.c.d), so one
// comparison serves both families.
struct Cidr {
  std::array<std::uint8_t, 16> bytes{};
  unsigned prefix = 128;
  bool contains(const std::array<std::uint8_t, 16>& address) const;
};
// "192.0.2.0/24", "2001:db8::/32", or a single address ("::1", "127.0.0.1").
std::optional<Cidr> parse_cidr(std::string_view text);
// Any textual address, IPv4 in its mapped form; nullopt if it is not one.
std::optional<std::array<std::uint8_t, 16>> address_bytes(std::string_view text);

Result<AdminListen> parse_admin_listen(std::string_view text);
Result<DefenderSettings> parse_defender_settings(const rapidjson::Value& value,
                                                 const ConfigErrorAt& error_at);

}  // namespace ops::core
