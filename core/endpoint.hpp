// A transport address (IPv4 or IPv6 + port) in a form the I/O-free core can compare, hash and
// print without sockets.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace torii {

struct Endpoint {
  enum class Family : uint8_t { v4, v6 };
  Family family = Family::v4;
  std::array<uint8_t, 16> addr{};  // v4 uses the first 4 bytes, network order
  uint16_t port = 0;

  static Endpoint v4(uint32_t host_order_addr, uint16_t port);
  static Endpoint v4(std::array<uint8_t, 4> bytes, uint16_t port);
  static Endpoint v6(const std::array<uint8_t, 16>& bytes, uint16_t port);
  // Parses "1.2.3.4:5", "[::1]:5". Returns nullopt on anything else.
  static std::optional<Endpoint> parse(std::string_view text);
  // Parses an address without port ("1.2.3.4", "::1").
  static std::optional<Endpoint> parse_address(std::string_view text, uint16_t port = 0);

  bool is_v4() const { return family == Family::v4; }
  uint32_t v4_host_order() const;
  std::string address_string() const;  // "1.2.3.4" / "::1"
  std::string to_string() const;       // "1.2.3.4:5" / "[::1]:5"
  bool same_address(const Endpoint& o) const;

  friend bool operator==(const Endpoint& a, const Endpoint& b) = default;
};

struct EndpointHash {
  size_t operator()(const Endpoint& e) const noexcept;
};

}  // namespace torii
