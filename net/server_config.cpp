// toriid settings from TOML (toml++) and validation (see server_config.hpp).
#include "net/server_config.hpp"

#include "core/server/overlay.hpp"

#include <toml++/toml.h>

#include <sstream>

namespace torii::net {

namespace {

template <typename T>
T get(const toml::node& n, const std::string& key) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (auto v = n.value<std::string>()) return *v;
    throw ConfigError("config: '" + key + "' must be a string");
  } else {
    auto v = n.value<int64_t>();
    if (!v || *v < 0 || *v > int64_t(UINT32_MAX))
      throw ConfigError("config: '" + key + "' must be a non-negative integer");
    return T(*v);
  }
}

}  // namespace

void apply_toml(std::string_view text, ServerSettings& s) {
  toml::table tbl;
  try {
    tbl = toml::parse(text);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << "config: " << e.description() << " at line " << e.source().begin.line << ", column "
       << e.source().begin.column;
    throw ConfigError(os.str());
  }
  for (auto&& [k, v] : tbl) {
    const std::string key(k.str());
    if (key == "data_dir")
      s.data_dir = get<std::string>(v, key);
    else if (key == "listen")
      s.listen = get<std::string>(v, key);
    else if (key == "stun")
      s.stun = get<std::string>(v, key);
    else if (key == "stun_alt")
      s.stun_alt = get<std::string>(v, key);
    else if (key == "relay")
      s.relay = get<std::string>(v, key);
    else if (key == "overlay_ipv4")
      s.overlay_ipv4 = get<std::string>(v, key);
    else if (key == "overlay_ipv6")
      s.overlay_ipv6 = get<std::string>(v, key);
    else if (key == "api")
      s.api = get<std::string>(v, key);
    else if (key == "advertise")
      s.advertise = get<std::string>(v, key);
    else if (key == "log_level")
      s.log_level = get<std::string>(v, key);
    else if (key == "threads")
      s.threads = int(get<uint32_t>(v, key));
    else if (key == "limits") {
      const auto* lt = v.as_table();
      if (!lt) throw ConfigError("config: 'limits' must be a table");
      for (auto&& [lk, lv] : *lt) {
        const std::string lkey = "limits." + std::string(lk.str());
        if (lk == "auth_failures_per_source")
          s.auth_failures_per_source = get<uint32_t>(lv, lkey);
        else if (lk == "auth_failures_per_device")
          s.auth_failures_per_device = get<uint32_t>(lv, lkey);
        else if (lk == "auth_lockout_seconds")
          s.auth_lockout_seconds = get<uint32_t>(lv, lkey);
        else if (lk == "token_ttl_seconds")
          s.token_ttl_seconds = get<uint32_t>(lv, lkey);
        else
          throw ConfigError("config: unknown key '" + lkey + "'");
      }
    } else {
      throw ConfigError("config: unknown key '" + key + "'");
    }
  }
}

Endpoint parse_listen(const std::string& what, const std::string& text) {
  std::string t = text;
  if (t.rfind("localhost:", 0) == 0) t = "127.0.0.1:" + t.substr(10);
  auto ep = Endpoint::parse(t);
  if (!ep)
    throw ConfigError(what + ": '" + text + "' is not ADDR:PORT (e.g. 0.0.0.0:7443 or [::]:7443)");
  return *ep;
}

void validate(const ServerSettings& s) {
  parse_listen("--listen", s.listen);
  parse_listen("--stun", s.stun);
  if (!s.stun_alt.empty()) {
    auto a = parse_listen("--stun-alt", s.stun_alt);
    auto p = parse_listen("--stun", s.stun);
    if (a == p) throw ConfigError("--stun-alt must differ from --stun");
  }
  if (s.relay != "off") parse_listen("--relay", s.relay);
  {
    server::OverlayPlan plan;
    if (auto e = plan.set_ipv4(s.overlay_ipv4); !e.empty())
      throw ConfigError("--overlay-ipv4: " + e);
    if (auto e = plan.set_ipv6(s.overlay_ipv6); !e.empty())
      throw ConfigError("--overlay-ipv6: " + e);
  }
  if (s.api.rfind("unix:", 0) != 0) {
    auto api = parse_listen("--api", s.api);
    (void)api;
  } else if (s.api.size() <= 5) {
    throw ConfigError("--api: unix: needs a path (unix:/run/torii/admin.sock)");
  }
  static const char* levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  bool ok = false;
  for (auto* l : levels) ok |= s.log_level == l;
  if (!ok) throw ConfigError("--log-level: one of trace, debug, info, warn, error, critical, off");
  if (s.auth_failures_per_source == 0 || s.auth_failures_per_device == 0)
    throw ConfigError("limits: failure thresholds must be at least 1");
  if (s.token_ttl_seconds < 60) throw ConfigError("limits.token_ttl_seconds: at least 60");
  if (s.threads < 0 || s.threads > 256) throw ConfigError("threads: 0 (one per core) to 256");
}

}  // namespace torii::net
