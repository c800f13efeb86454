// The defender (SFTPGo's model): failed handshakes are scored per source address;
// `threshold` failures within `observation` ban the address for `ban_time`, and each
// further ban of the same address doubles that, up to `max_ban_time`. A banned address is
// closed at accept, before a session exists; behind a PROXY header the address is only
// known after the transport handshake, so the session checks it there too. Addresses in
// the allow list are never scored. At most `max_tracked` addresses are remembered (least
// recently seen forgotten first), so a spray of sources cannot grow memory without bound.
// Thread-safe.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/operating_config.hpp"

namespace ops::core {

class Metrics;

class Defender {
 public:
  using Clock = std::chrono::steady_clock;
  using Address = std::array<std::uint8_t, 16>;  // IPv4 as its IPv4-mapped IPv6 form

  Defender(DefenderSettings settings, Metrics* metrics);

  bool enabled() const { return settings_.enabled; }
  // True if `address` is banned at `now`.
  bool banned(const Address& address, Clock::time_point now = Clock::now());
  // A failed handshake from `address`: scored, and may start a ban.
  void on_failure(const Address& address, Clock::time_point now = Clock::now());
  // Called after each ban this defender starts (not one applied from elsewhere), outside
  // its lock, on the thread that scored the failure (an I/O thread: it must not block).
  // Set before the server serves. `length`: the ban's duration; `bans`: how many bans of
  // the address so far (the next one doubles).
  using BanHandler =
      std::function<void(const Address& address, std::chrono::seconds length, unsigned bans)>;
  void on_ban(BanHandler handler);
  // A ban started by another node (net/pg_ban_sync.hpp): `address` is banned for
  // `remaining` from `now` unless banned longer already; its ban count rises to `bans`.
  // Addresses in the allow list are left alone.
  void ban_from_elsewhere(const Address& address, std::chrono::milliseconds remaining,
                          unsigned bans, Clock::time_point now = Clock::now());
  // Addresses banned at `now`.
  std::size_t banned_count(Clock::time_point now = Clock::now());
  std::size_t tracked() const;

  // The address part of a peer text as sessions log it ("1.2.3.4:5678", "::1:5678",
  // "[::1]:5678"); nullopt when there is none ("?").
  static std::optional<Address> address_of_peer(std::string_view peer);

 private:
  struct Entry {
    Address address{};
    unsigned failures = 0;
    Clock::time_point window_start{};
    Clock::time_point banned_until{};
    unsigned bans = 0;  // earlier bans of this address: each doubles the next
    Clock::time_point last_seen{};
  };
  using Lru = std::list<Entry>;
  struct AddressHash {
    std::size_t operator()(const Address& a) const noexcept;
  };

  bool allowed(const Address& address) const;
  // Scores one failure (caller holds mutex_); true when it started a ban, with its length
  // and the address's ban count.
  bool score(const Address& address, Clock::time_point now, std::chrono::seconds& banned_for,
             unsigned& bans);
  // Finds or makes the entry for `address`, most recently seen first; forgets the least
  // recently seen beyond max_tracked.
  Entry& touch(const Address& address, Clock::time_point now);

  const DefenderSettings settings_;
  std::vector<Cidr> allow_;
  Metrics* metrics_;
  mutable std::mutex mutex_;
  Lru lru_;
  std::unordered_map<Address, Lru::iterator, AddressHash> index_;
  BanHandler ban_handler_;  // set before serving; read without the lock
};

}  // namespace ops::core
