#include "config/tls_config.hpp"

#include <string_view>

#include "config/config.hpp"

namespace ops::core {
namespace {

constexpr std::string_view kKnown[] = {"listen",
                                       "cert",
                                       "key",
                                       "client_ca",
                                       "min_version",
                                       "channel_binding",
                                       "proxy_protocol",
                                       "handshake_threads"};

// A non-empty string member, or nullopt when absent; an error for anything else.
Result<std::optional<std::string>> string_member(const rapidjson::Value& obj, const char* name,
                                                 const ConfigErrorAt& error_at) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd()) return std::optional<std::string>{};
  if (!it->value.IsString() || it->value.GetStringLength() == 0) {
    const std::string quoted = std::string("\"").append(name).append("\"");
    return error_at(std::string("/tls/").append(name), quoted + " must be a non-empty string");
  }
  return std::optional<std::string>(
      std::string(it->value.GetString(), it->value.GetStringLength()));
}

}  // namespace

Result<bool> parse_proxy_protocol(const rapidjson::Value& value, const std::string& pointer,
                                  const ConfigErrorAt& error_at) {
  if (!value.IsBool()) return error_at(pointer, "\"proxy_protocol\" must be true or false");
  return value.GetBool();
}

Result<TlsSettings> parse_tls_settings(const rapidjson::Value& value,
                                       const ConfigErrorAt& error_at) {
  if (!value.IsObject()) {
    return error_at("/tls", "\"tls\" must be an object with \"listen\", \"cert\" and \"key\"");
  }
  for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
    std::string_view name(it->name.GetString(), it->name.GetStringLength());
    bool known = false;
    for (std::string_view k : kKnown) known = known || k == name;
    if (!known) {
      return error_at("/tls/" + std::string(name),
                      "unknown setting \"" + std::string(name) + "\" in \"tls\"");
    }
  }
  TlsSettings tls;
  auto listen = string_member(value, "listen", error_at);
  if (!listen) return std::move(listen).error();
  if (!*listen) return error_at("/tls", "\"tls\" needs \"listen\": \"HOST:PORT\"");
  if (Status st = parse_listen(**listen, tls.listen_host, tls.listen_port); !st) {
    return error_at("/tls/listen", "\"listen\" " + st.error().message);
  }
  auto cert = string_member(value, "cert", error_at);
  if (!cert) return std::move(cert).error();
  if (!*cert) return error_at("/tls", "\"tls\" needs \"cert\": the certificate chain file (PEM)");
  tls.cert = **cert;
  auto key = string_member(value, "key", error_at);
  if (!key) return std::move(key).error();
  if (!*key) return error_at("/tls", "\"tls\" needs \"key\": the private key file (PEM)");
  tls.key = **key;
  auto client_ca = string_member(value, "client_ca", error_at);
  if (!client_ca) return std::move(client_ca).error();
  if (*client_ca) tls.client_ca = std::filesystem::path(**client_ca);

  auto min_version = string_member(value, "min_version", error_at);
  if (!min_version) return std::move(min_version).error();
  if (*min_version) {
    if (**min_version == "1.3") {
      tls.min_version = TlsMinVersion::tls1_3;
    } else if (**min_version == "1.2") {
      tls.min_version = TlsMinVersion::tls1_2;
    } else {
      return error_at("/tls/min_version", "\"min_version\" must be \"1.3\" or \"1.2\"");
    }
  }
  auto binding = string_member(value, "channel_binding", error_at);
  if (!binding) return std::move(binding).error();
  if (*binding) {
    if (**binding == "required") {
      tls.channel_binding = true;
    } else if (**binding == "off") {
      tls.channel_binding = false;
    } else {
      return error_at("/tls/channel_binding",
                      "\"channel_binding\" must be \"required\" or \"off\"");
    }
  }
  if (auto it = value.FindMember("proxy_protocol"); it != value.MemberEnd()) {
    auto flag = parse_proxy_protocol(it->value, "/tls/proxy_protocol", error_at);
    if (!flag) return std::move(flag).error();
    tls.proxy_protocol = *flag;
  }
  if (auto it = value.FindMember("handshake_threads"); it != value.MemberEnd()) {
    if (!it->value.IsUint() || it->value.GetUint() > 256) {
      return error_at("/tls/handshake_threads",
                      "\"handshake_threads\" must be an integer from 0 (automatic) to 256");
    }
    tls.handshake_threads = it->value.GetUint();
  }
  return tls;
}

Status apply_tls_overrides(std::optional<TlsSettings>& tls, const TlsOverrides& overrides) {
  if (!overrides.any()) return ok_status();
  if (!tls) {
    if (!overrides.listen || !overrides.cert || !overrides.key) {
      return fail(ErrorCode::invalid_args,
                  "TLS needs --tls-listen, --tls-cert and --tls-key together (or a \"tls\" "
                  "block in the server configuration)");
    }
    tls.emplace();
  }
  if (overrides.listen) {
    if (Status st = parse_listen(*overrides.listen, tls->listen_host, tls->listen_port); !st) {
      return fail(ErrorCode::invalid_args, "--tls-listen: " + st.error().message);
    }
  }
  if (overrides.cert) tls->cert = *overrides.cert;
  if (overrides.key) tls->key = *overrides.key;
  if (overrides.client_ca) tls->client_ca = *overrides.client_ca;
  return ok_status();
}

}  // namespace ops::core
