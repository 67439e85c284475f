// Overlay address plan (see overlay.hpp). A9.
#include "core/server/overlay.hpp"

#include <charconv>

namespace torii::server {

namespace {

bool parse_cidr(const std::string& cidr, Endpoint& addr, int& len) {
  auto slash = cidr.find('/');
  if (slash == std::string::npos) return false;
  auto a = Endpoint::parse_address(cidr.substr(0, slash));
  if (!a) return false;
  const char* b = cidr.data() + slash + 1;
  const char* e = cidr.data() + cidr.size();
  auto [p, ec] = std::from_chars(b, e, len);
  if (ec != std::errc() || p != e) return false;
  addr = *a;
  return true;
}

}  // namespace

std::string OverlayPlan::set_ipv4(const std::string& cidr) {
  if (cidr.empty()) return "";
  Endpoint a;
  int n = 0;
  if (!parse_cidr(cidr, a, n) || !a.is_v4())
    return "overlay IPv4 prefix '" + cidr + "' is not of the form A.B.C.D/N";
  if (n < 8 || n > 30) return "overlay IPv4 prefix length must be 8..30, not " + std::to_string(n);
  const uint32_t mask = n == 0 ? 0 : ~uint32_t(0) << (32 - n);
  if ((a.v4_host_order() & ~mask) != 0)
    return "overlay IPv4 prefix '" + cidr + "' has host bits set";
  ipv4_base = a.v4_host_order();
  ipv4_prefix = n;
  return "";
}

std::string OverlayPlan::set_ipv6(const std::string& cidr) {
  if (cidr.empty()) return "";
  Endpoint a;
  int n = 0;
  if (!parse_cidr(cidr, a, n) || a.is_v4())
    return "overlay IPv6 prefix '" + cidr + "' is not of the form X::/N";
  if (n < 48 || n > 120) return "overlay IPv6 prefix length must be 48..120";
  if ((a.addr[0] & 0xfe) != 0xfc) return "overlay IPv6 prefix must be a ULA (fc00::/7)";
  for (int bit = n; bit < 128; ++bit)
    if (a.addr[bit / 8] & (0x80 >> (bit % 8)))
      return "overlay IPv6 prefix '" + cidr + "' has host bits set";
  ipv6_base = a.addr;
  ipv6_prefix = n;
  return "";
}

void OverlayPlan::derive_ula(std::span<const uint8_t> seed) {
  ipv6_base = {};
  ipv6_base[0] = 0xfd;
  for (size_t i = 0; i < 5 && i < seed.size(); ++i) ipv6_base[1 + i] = seed[i];
  ipv6_prefix = 64;
}

uint32_t OverlayPlan::capacity() const {
  const uint64_t v4 = (uint64_t(1) << (32 - ipv4_prefix)) - 2;
  const int v6_bits = 128 - ipv6_prefix;
  const uint64_t v6 = v6_bits >= 32 ? uint64_t(UINT32_MAX) : (uint64_t(1) << v6_bits) - 2;
  return uint32_t(std::min(v4, v6));
}

std::optional<Endpoint> OverlayPlan::ipv4_of(uint32_t index) const {
  if (index == 0 || index > capacity()) return std::nullopt;
  return Endpoint::v4(ipv4_base + index, 0);
}

std::optional<Endpoint> OverlayPlan::ipv6_of(uint32_t index) const {
  if (index == 0 || index > capacity()) return std::nullopt;
  auto a = ipv6_base;
  for (int i = 0; i < 4; ++i) a[15 - i] |= uint8_t(index >> (8 * i));
  return Endpoint::v6(a, 0);
}

std::optional<uint32_t> OverlayPlan::index_of(const Endpoint& addr) const {
  if (addr.is_v4()) {
    const uint32_t mask = ~uint32_t(0) << (32 - ipv4_prefix);
    const uint32_t a = addr.v4_host_order();
    if ((a & mask) != ipv4_base) return std::nullopt;
    const uint32_t idx = a - ipv4_base;
    if (idx == 0 || idx > capacity()) return std::nullopt;
    return idx;
  }
  for (int i = 0; i < 12; ++i)
    if (addr.addr[i] != ipv6_base[i] && i < ipv6_prefix / 8) return std::nullopt;
  uint32_t idx = 0;
  for (int i = 12; i < 16; ++i) idx = (idx << 8) | uint32_t(addr.addr[i] & ~ipv6_base[i]);
  auto back = ipv6_of(idx);
  if (!back || back->addr != addr.addr) return std::nullopt;
  return idx;
}

std::string OverlayPlan::ipv4_cidr() const {
  return Endpoint::v4(ipv4_base, 0).address_string() + "/" + std::to_string(ipv4_prefix);
}

std::string OverlayPlan::ipv6_cidr() const {
  return Endpoint::v6(ipv6_base, 0).address_string() + "/" + std::to_string(ipv6_prefix);
}

}  // namespace torii::server
