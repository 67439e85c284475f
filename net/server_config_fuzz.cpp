// libFuzzer target: toriid's TOML configuration parser and validation never crash on any text.
#include <cstdint>
#include <string_view>

#include "net/server_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  torii::net::ServerSettings s;
  try {
    torii::net::apply_toml(std::string_view(reinterpret_cast<const char*>(data), size), s);
    torii::net::validate(s);
  } catch (const torii::net::ConfigError&) {
  }
  return 0;
}
