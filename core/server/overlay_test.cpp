// Overlay address plan (A9): defaults, configured prefixes, bad prefixes, index round trips.
#include "core/server/overlay.hpp"

#include <gtest/gtest.h>

namespace torii::server {
namespace {

TEST(OverlayPlan, DefaultsAndRoundTrip) {
  OverlayPlan p;
  const uint8_t seed[] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xff};
  p.derive_ula(seed);
  EXPECT_EQ(p.ipv4_cidr(), "100.64.0.0/10");
  EXPECT_EQ(p.ipv6_cidr(), "fd12:3456:789a::/64");
  EXPECT_EQ(p.ipv4_of(1)->address_string(), "100.64.0.1");
  EXPECT_EQ(p.ipv4_of(300)->address_string(), "100.64.1.44");
  EXPECT_EQ(p.ipv6_of(300)->address_string(), "fd12:3456:789a::12c");
  EXPECT_FALSE(p.ipv4_of(0));
  EXPECT_EQ(p.capacity(), (1u << 22) - 2);
  EXPECT_FALSE(p.ipv4_of(p.capacity() + 1));
  for (uint32_t i : {1u, 2u, 255u, 256u, 70000u, p.capacity()}) {
    EXPECT_EQ(p.index_of(*p.ipv4_of(i)), i);
    EXPECT_EQ(p.index_of(*p.ipv6_of(i)), i);
  }
  EXPECT_FALSE(p.index_of(*Endpoint::parse_address("100.63.255.255")));
  EXPECT_FALSE(p.index_of(*Endpoint::parse_address("100.64.0.0")));
  EXPECT_FALSE(p.index_of(*Endpoint::parse_address("fd12:3456:789b::1")));
  EXPECT_FALSE(p.index_of(*Endpoint::parse_address("10.0.0.1")));
}

TEST(OverlayPlan, ConfiguredPrefixes) {
  OverlayPlan p;
  EXPECT_EQ(p.set_ipv4("10.77.0.0/24"), "");
  EXPECT_EQ(p.set_ipv6("fd00:aaaa:bbbb:cccc::/64"), "");
  EXPECT_EQ(p.capacity(), 254u);
  EXPECT_EQ(p.ipv4_of(254)->address_string(), "10.77.0.254");
  EXPECT_FALSE(p.ipv4_of(255));  // broadcast
  EXPECT_EQ(p.ipv6_of(7)->address_string(), "fd00:aaaa:bbbb:cccc::7");
}

TEST(OverlayPlan, BadPrefixesRefusedAndChangeNothing) {
  OverlayPlan p;
  for (const char* bad : {"100.64.0.0", "100.64.0.1/10", "100.64.0.0/31", "100.64.0.0/7", "x/10",
                          "100.64.0.0/1x", "fd00::/64"}) {
    EXPECT_NE(p.set_ipv4(bad), "") << bad;
  }
  for (const char* bad : {"2001:db8::/64", "fd00::1/64", "fd00::/40", "10.0.0.0/8"}) {
    EXPECT_NE(p.set_ipv6(bad), "") << bad;
  }
  EXPECT_EQ(p.ipv4_cidr(), "100.64.0.0/10");
}

}  // namespace
}  // namespace torii::server
