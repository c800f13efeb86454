#include "config/operating_config.hpp"

#include <boost/asio/ip/address.hpp>
#include <charconv>

#include "config/config.hpp"

namespace ops::core {

std::optional<std::array<std::uint8_t, 16>> address_bytes(std::string_view text) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  if (address.is_v4()) {
    return boost::asio::ip::make_address_v6(boost::asio::ip::v4_mapped, address.to_v4()).to_bytes();
  }
  auto v6 = address.to_v6();
  v6.scope_id(0);
  return v6.to_bytes();
}

bool Cidr::contains(const std::array<std::uint8_t, 16>& address) const {
  unsigned bits = prefix;
  for (std::size_t i = 0; i < 16 && bits > 0; ++i) {
    const unsigned take = bits >= 8 ? 8 : bits;
    const auto mask = static_cast<std::uint8_t>(0xFF << (8 - take));
    if ((address[i] & mask) != (bytes[i] & mask)) return false;
    bits -= take;
  }
  return true;
}

std::optional<Cidr> parse_cidr(std::string_view text) {
  const std::size_t slash = text.find('/');
  const std::string_view host = text.substr(0, slash);
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(std::string(host), ec);
  if (ec) return std::nullopt;
  const unsigned width = address.is_v4() ? 32 : 128;
  unsigned prefix = width;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    auto [end, perr] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || perr != std::errc() || end != p.data() + p.size() || prefix > width) {
      return std::nullopt;
    }
  }
  Cidr cidr;
  cidr.bytes = *address_bytes(host);
  cidr.prefix = address.is_v4() ? prefix + 96 : prefix;
  return cidr;
}

Result<AdminListen> parse_admin_listen(std::string_view text) {
  AdminListen out;
  if (text.find(':') == std::string_view::npos) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > 65535) {
      return Error{ErrorCode::invalid_args,
                   "expected HOST:PORT or PORT, got \"" + std::string(text) + "\""};
    }
    out.port = static_cast<std::uint16_t>(value);
    return out;
  }
  if (Status st = parse_listen(text, out.host, out.port); !st) return st.error();
  return out;
}

Result<DefenderSettings> parse_defender_settings(const rapidjson::Value& value,
                                                 const ConfigErrorAt& error_at) {
  const std::string base = "/defender";
  if (!value.IsObject()) return error_at(base, "\"defender\" must be an object");
  DefenderSettings out;
  for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
    const std::string name(it->name.GetString(), it->name.GetStringLength());
    const std::string pointer = base + "/" + name;
    const rapidjson::Value& v = it->value;
    auto seconds = [&](std::chrono::seconds& into) -> Status {
      if (!v.IsUint64() || v.GetUint64() < 1 || v.GetUint64() > 365ull * 86400) {
        return error_at(pointer, "\"" + name + "\" must be an integer from 1 to 31536000");
      }
      into = std::chrono::seconds(v.GetUint64());
      return ok_status();
    };
    Status st = ok_status();
    if (name == "enabled") {
      if (!v.IsBool()) return error_at(pointer, "\"enabled\" must be true or false");
      out.enabled = v.GetBool();
    } else if (name == "threshold") {
      if (!v.IsUint64() || v.GetUint64() < 1 || v.GetUint64() > 1000000) {
        return error_at(pointer, "\"threshold\" must be an integer from 1 to 1000000");
      }
      out.threshold = static_cast<unsigned>(v.GetUint64());
    } else if (name == "observation_s") {
      st = seconds(out.observation);
    } else if (name == "ban_time_s") {
      st = seconds(out.ban_time);
    } else if (name == "max_ban_time_s") {
      st = seconds(out.max_ban_time);
    } else if (name == "max_tracked") {
      if (!v.IsUint64() || v.GetUint64() < 1 || v.GetUint64() > 10000000) {
        return error_at(pointer, "\"max_tracked\" must be an integer from 1 to 10000000");
      }
      out.max_tracked = static_cast<std::size_t>(v.GetUint64());
    } else if (name == "allow") {
      if (!v.IsArray()) return error_at(pointer, "\"allow\" must be an array of CIDRs");
      for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
        const std::string at = pointer + "/" + std::to_string(i);
        if (!v[i].IsString() || !parse_cidr(v[i].GetString())) {
          return error_at(at,
                          "each \"allow\" entry must be an address or a CIDR such as "
                          "\"10.0.0.0/8\"");
        }
        out.allow.emplace_back(v[i].GetString(), v[i].GetStringLength());
      }
    } else {
      return error_at(pointer, "unknown setting \"" + name + "\"");
    }
    if (!st) return st.error();
  }
  if (out.max_ban_time < out.ban_time) {
    return error_at(base + "/max_ban_time_s", "\"max_ban_time_s\" must be at least ban_time_s");
  }
  return out;
}

}  // namespace ops::core
