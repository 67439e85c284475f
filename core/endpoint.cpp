// Endpoint parsing and printing via inet_pton/inet_ntop (pure functions, no sockets).
#include "core/endpoint.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace torii {

Endpoint Endpoint::v4(uint32_t host_order_addr, uint16_t port) {
  Endpoint e;
  e.family = Family::v4;
  e.addr[0] = uint8_t(host_order_addr >> 24);
  e.addr[1] = uint8_t(host_order_addr >> 16);
  e.addr[2] = uint8_t(host_order_addr >> 8);
  e.addr[3] = uint8_t(host_order_addr);
  e.port = port;
  return e;
}

Endpoint Endpoint::v4(std::array<uint8_t, 4> b, uint16_t port) {
  Endpoint e;
  e.family = Family::v4;
  std::memcpy(e.addr.data(), b.data(), 4);
  e.port = port;
  return e;
}

Endpoint Endpoint::v6(const std::array<uint8_t, 16>& bytes, uint16_t port) {
  Endpoint e;
  e.family = Family::v6;
  e.addr = bytes;
  e.port = port;
  return e;
}

uint32_t Endpoint::v4_host_order() const {
  return (uint32_t(addr[0]) << 24) | (uint32_t(addr[1]) << 16) | (uint32_t(addr[2]) << 8) |
         uint32_t(addr[3]);
}

std::optional<Endpoint> Endpoint::parse_address(std::string_view text, uint16_t port) {
  std::string s(text);
  Endpoint e;
  e.port = port;
  if (inet_pton(AF_INET, s.c_str(), e.addr.data()) == 1) {
    e.family = Family::v4;
    return e;
  }
  if (inet_pton(AF_INET6, s.c_str(), e.addr.data()) == 1) {
    e.family = Family::v6;
    return e;
  }
  return std::nullopt;
}

std::optional<Endpoint> Endpoint::parse(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return std::nullopt;
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) return std::nullopt;
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port > 65535 ||
      port_text.empty())
    return std::nullopt;
  return parse_address(host, uint16_t(port));
}

std::string Endpoint::address_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(is_v4() ? AF_INET : AF_INET6, addr.data(), buf, sizeof buf);
  return buf;
}

std::string Endpoint::to_string() const {
  if (is_v4()) return address_string() + ":" + std::to_string(port);
  return "[" + address_string() + "]:" + std::to_string(port);
}

bool Endpoint::same_address(const Endpoint& o) const {
  return family == o.family && addr == o.addr;
}

size_t EndpointHash::operator()(const Endpoint& e) const noexcept {
  size_t h = std::hash<uint16_t>()(e.port) ^ (size_t(e.family) << 17);
  for (auto b : e.addr) h = h * 131 + b;
  return h;
}

}  // namespace torii
