// Overlay addressing (A9): every device has a stable overlay IPv4 address (default prefix
// 100.64.0.0/10, RFC 6598 shared space) and an IPv6 ULA (RFC 4193), both the deployment's prefix
// plus the device's overlay index from the Store. The ULA's 40-bit global ID is derived from the
// CA certificate's hash, so each deployment gets its own and restarts keep it.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "core/endpoint.hpp"

namespace torii::server {

struct OverlayPlan {
  uint32_t ipv4_base = 0x64400000;  // 100.64.0.0 (host order)
  int ipv4_prefix = 10;
  std::array<uint8_t, 16> ipv6_base{};  // fdXX:XXXX:XXXX:0000::
  int ipv6_prefix = 64;

  // Parses "A.B.C.D/N" (N 8..30) and "X::/N" (N 48..120, must be fc00::/7); empty keeps the
  // default / the derived ULA. Returns an error text, or "" on success.
  std::string set_ipv4(const std::string& cidr);
  std::string set_ipv6(const std::string& cidr);
  // fd + 40 bits of `seed` (e.g. SHA-256 of the CA certificate) + subnet 0, as a /64.
  void derive_ula(std::span<const uint8_t> seed);

  // Usable indexes are 1..capacity() (the network and broadcast addresses are never assigned).
  uint32_t capacity() const;
  std::optional<Endpoint> ipv4_of(uint32_t index) const;
  std::optional<Endpoint> ipv6_of(uint32_t index) const;
  // The index an overlay address (either family) stands for, if it is inside the plan.
  std::optional<uint32_t> index_of(const Endpoint& addr) const;
  std::string ipv4_cidr() const;
  std::string ipv6_cidr() const;
};

}  // namespace torii::server
