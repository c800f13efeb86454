#include "net/defender.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/address.hpp>

#include "metrics/metrics.hpp"

namespace ops::core {

Defender::Defender(DefenderSettings settings, Metrics* metrics)
    : settings_(std::move(settings)), metrics_(metrics) {
  for (const std::string& text : settings_.allow) {
    if (auto cidr = parse_cidr(text)) allow_.push_back(*cidr);  // validated by the config
  }
}

std::size_t Defender::AddressHash::operator()(const Address& a) const noexcept {
  std::uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 8; ++i) hi = hi << 8 | a[i];
  for (int i = 8; i < 16; ++i) lo = lo << 8 | a[i];
  return std::hash<std::uint64_t>{}(hi * 0x9E3779B97F4A7C15ull ^ lo);
}

std::optional<Defender::Address> Defender::address_of_peer(std::string_view peer) {
  const std::size_t colon = peer.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string_view host = peer.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return address_bytes(host);
}

bool Defender::allowed(const Address& address) const {
  for (const Cidr& cidr : allow_) {
    if (cidr.contains(address)) return true;
  }
  return false;
}

Defender::Entry& Defender::touch(const Address& address, Clock::time_point now) {
  if (auto it = index_.find(address); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    it->second->last_seen = now;
    return *it->second;
  }
  while (lru_.size() >= settings_.max_tracked && !lru_.empty()) {
    index_.erase(lru_.back().address);
    lru_.pop_back();
  }
  lru_.push_front(Entry{address, 0, now, {}, 0, now});
  index_.emplace(address, lru_.begin());
  return lru_.front();
}

bool Defender::banned(const Address& address, Clock::time_point now) {
  if (!settings_.enabled) return false;
  std::lock_guard lock(mutex_);
  auto it = index_.find(address);
  return it != index_.end() && it->second->banned_until > now;
}

namespace {
std::string address_text(const Defender::Address& address) {
  boost::asio::ip::address_v6 v6(address);
  return v6.is_v4_mapped()
             ? boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_string()
             : v6.to_string();
}
}  // namespace

void Defender::on_ban(BanHandler handler) {
  ban_handler_ = std::move(handler);
}

void Defender::ban_from_elsewhere(const Address& address, std::chrono::milliseconds remaining,
                                  unsigned bans, Clock::time_point now) {
  if (!settings_.enabled || allowed(address) || remaining.count() <= 0) return;
  {
    std::lock_guard lock(mutex_);
    Entry& entry = touch(address, now);
    entry.banned_until = std::max(entry.banned_until, now + remaining);
    entry.bans = std::max(entry.bans, bans);
    entry.failures = 0;
    entry.window_start = now;
  }
  spdlog::info("defender: {} banned for {} s by another node (ban {})", address_text(address),
               std::chrono::duration_cast<std::chrono::seconds>(remaining).count(), bans);
}

void Defender::on_failure(const Address& address, Clock::time_point now) {
  if (!settings_.enabled || allowed(address)) return;
  std::chrono::seconds banned_for{0};
  unsigned bans = 0;
  {
    std::lock_guard lock(mutex_);
    if (!score(address, now, banned_for, bans)) return;
  }
  if (ban_handler_) ban_handler_(address, banned_for, bans);
}

bool Defender::score(const Address& address, Clock::time_point now,
                     std::chrono::seconds& banned_for, unsigned& bans) {
  Entry& entry = touch(address, now);
  if (entry.banned_until > now) return false;  // already banned (a connection from before it)
  if (now - entry.window_start > settings_.observation) {
    entry.window_start = now;
    entry.failures = 0;
  }
  if (++entry.failures < settings_.threshold) return false;
  // Banned: ban_time, doubled for each earlier ban of this address, up to max_ban_time.
  auto length = settings_.ban_time;
  for (unsigned i = 0; i < entry.bans && length < settings_.max_ban_time; ++i) length *= 2;
  length = std::min(length, settings_.max_ban_time);
  entry.banned_until = now + length;
  ++entry.bans;
  entry.failures = 0;
  entry.window_start = now;
  if (metrics_) metrics_->on_defender_ban();
  spdlog::warn("defender: {} banned for {} s after {} failed handshakes (ban {})",
               address_text(address), length.count(), settings_.threshold, entry.bans);
  banned_for = length;
  bans = entry.bans;
  return true;
}

std::size_t Defender::banned_count(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const Entry& entry : lru_) n += entry.banned_until > now ? 1 : 0;
  return n;
}

std::size_t Defender::tracked() const {
  std::lock_guard lock(mutex_);
  return lru_.size();
}

}  // namespace ops::core
