// toriid's settings: defaults, the optional TOML file, then command-line flags on top. The TOML
// parser takes text, not a file handle, so it can be fuzzed (style.md 5).
#pragma once
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "core/endpoint.hpp"
#include "core/session/limits.hpp"

namespace torii::net {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ServerSettings {
  std::filesystem::path data_dir = "/var/lib/torii";
  std::string listen = "0.0.0.0:7443";
  std::string stun = "0.0.0.0:3478";
  std::string stun_alt;                // "" = no RFC 5780 alternate address
  std::string relay = "0.0.0.0:3480";  // UDP tunnel relay (A6); "off" = relay only inside TLS
  std::string overlay_ipv4 = "100.64.0.0/10";  // A9 overlay prefixes
  std::string overlay_ipv6;                    // "" = a ULA /64 derived from the CA
  std::string api = "127.0.0.1:7444";          // ADDR:PORT or unix:PATH; localhost only by default
  std::string advertise;                       // HOST:PORT put in enroll commands; "" = derived
  std::string log_level = "info";
  int threads = 0;  // 0 = one per core
  uint32_t auth_failures_per_source = limits::kAuthFailuresPerSource;
  uint32_t auth_failures_per_device = limits::kAuthFailuresPerDevice;
  uint32_t auth_lockout_seconds = uint32_t(limits::kAuthLockout.count() / 1000);
  uint32_t token_ttl_seconds = uint32_t(limits::kDefaultTokenTtl.count() / 1000);
};

// Applies a TOML document (keys: data_dir, listen, stun, stun_alt, relay, overlay_ipv4,
// overlay_ipv6, api, advertise, log_level,
// threads, [limits] auth_failures_per_source, auth_failures_per_device, auth_lockout_seconds,
// token_ttl_seconds) onto `s`. Throws ConfigError naming the key or the line on bad input;
// unknown keys are errors too (a typo must not silently fall back to a default).
void apply_toml(std::string_view text, ServerSettings& s);

// Checks addresses parse and values are in range; throws ConfigError with what to fix.
void validate(const ServerSettings& s);

// "HOST:PORT" -> Endpoint, accepting "0.0.0.0:7443", "[::]:7443", "localhost:7443".
Endpoint parse_listen(const std::string& what, const std::string& text);

}  // namespace torii::net
