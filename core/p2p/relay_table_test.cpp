// RelayTable (A6 relay, A11 silence): binds are authenticated and fresh, acknowledged only once
// both sides are bound; relay_data is forwarded only between the two bound endpoints of an open
// tunnel; everything else is dropped and counted.
#include "core/p2p/relay_table.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "core/tunnel/packet.hpp"

namespace torii::p2p {
namespace {

using namespace std::chrono_literals;

const Endpoint kA = *Endpoint::parse("198.18.0.1:40000");
const Endpoint kB = *Endpoint::parse("198.18.0.2:40000");
const Endpoint kX = *Endpoint::parse("203.0.113.66:1234");
constexpr UnixMs kWall = 1'700'000'000'000;
const std::array<uint8_t, 32> kKey = [] {
  std::array<uint8_t, 32> k{};
  for (size_t i = 0; i < k.size(); ++i) k[i] = uint8_t(i * 7);
  return k;
}();

std::vector<uint8_t> bind(uint64_t tunnel, uint8_t side, UnixMs wall = kWall,
                          const std::array<uint8_t, 32>& key = kKey) {
  auto b = tunnel::make_relay_bind(key, tunnel, side, uint64_t(wall));
  return {b.begin(), b.end()};
}
std::vector<uint8_t> data(uint64_t tunnel, uint8_t side) {
  std::vector<uint8_t> p(16 + 40, 0x5a);
  tunnel::write_header({tunnel::PacketType::relay_data, 0, side, 0, tunnel}, p.data());
  return p;
}

struct RelayTableTest : ::testing::Test {
  RelayTable t;
  std::array<uint8_t, 32> ack{}, other{};
  Instant now = instant_from_ms(1000);
  std::optional<RelayTable::Forward> in(const Endpoint& from, const std::vector<uint8_t>& d,
                                        UnixMs wall = kWall) {
    return t.on_datagram(now, wall, from, d, ack, other);
  }
};

TEST_F(RelayTableTest, BindsThenForwardsBothWays) {
  t.open(7, kKey);
  EXPECT_FALSE(in(kA, bind(7, 0))) << "no ack until the peer is bound";
  auto f = in(kB, bind(7, 1));
  ASSERT_TRUE(f && f->is_ack);
  EXPECT_EQ(f->to, kB);
  ASSERT_TRUE(f->other);
  EXPECT_EQ(*f->other, kA);
  EXPECT_TRUE(tunnel::verify_relay_bind_ack(kKey, ack));
  EXPECT_TRUE(tunnel::verify_relay_bind_ack(kKey, other));
  EXPECT_EQ(tunnel::parse_relay_bind_ack(other)->side, 0);
  auto ab = in(kA, data(7, 0));
  ASSERT_TRUE(ab && !ab->is_ack);
  EXPECT_EQ(ab->to, kB);
  auto ba = in(kB, data(7, 1));
  ASSERT_TRUE(ba);
  EXPECT_EQ(ba->to, kA);
  EXPECT_EQ(t.stats().forwarded, 2u);
}

TEST_F(RelayTableTest, RefusesWhatIsNotAuthorised) {
  t.open(7, kKey);
  auto other_key = kKey;
  other_key[0] ^= 1;
  struct Case {
    const char* what;
    Endpoint from;
    std::vector<uint8_t> d;
    UnixMs wall;
  } cases[] = {
      {"unknown tunnel", kA, bind(8, 0), kWall},
      {"wrong key", kA, bind(7, 0, kWall, other_key), kWall},
      {"stale timestamp", kA, bind(7, 0, kWall - 121'000), kWall},
      {"future timestamp", kA, bind(7, 0, kWall + 121'000), kWall},
      {"data before binding", kA, data(7, 0), kWall},
      {"garbage", kA, {1, 2, 3}, kWall},
  };
  for (const auto& c : cases) EXPECT_FALSE(in(c.from, c.d, c.wall)) << c.what;
  ASSERT_FALSE(in(kA, bind(7, 0)));
  ASSERT_TRUE(in(kB, bind(7, 1)));
  EXPECT_FALSE(in(kX, data(7, 0))) << "a stranger claiming side 0";
  EXPECT_FALSE(in(kA, data(7, 1))) << "side 0 claiming side 1";
  EXPECT_FALSE(in(kA, data(8, 0)));
  EXPECT_GE(t.stats().dropped_unbound, 3u);
  EXPECT_EQ(t.stats().dropped_unauth, 1u);
  EXPECT_EQ(t.stats().dropped_stale, 2u);
  // Closing withdraws the authorisation at once (revocation).
  t.close(7);
  EXPECT_FALSE(in(kA, data(7, 0)));
  EXPECT_EQ(t.size(), 0u);
}

TEST_F(RelayTableTest, BindingsExpireWithoutRefresh) {
  t.open(7, kKey);
  in(kA, bind(7, 0));
  in(kB, bind(7, 1));
  now += RelayTable::kBindLifetime + 1ms;
  EXPECT_FALSE(in(kA, data(7, 0)));
  // A refresh from a new address (NAT rebinding) moves that side.
  const Endpoint a2 = *Endpoint::parse("198.18.0.1:40099");
  in(kB, bind(7, 1));
  auto f = in(a2, bind(7, 0));
  ASSERT_TRUE(f);
  auto d = in(a2, data(7, 0));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->to, kB);
}

}  // namespace
}  // namespace torii::p2p
