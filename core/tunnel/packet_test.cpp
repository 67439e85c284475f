// Tests for the tunnel wire format (A9): header codec, hole-punching probe, relay bind and
// bind-ack. Known answers were computed independently with Python (hmac, hashlib).
#include "core/tunnel/packet.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace torii::tunnel {
namespace {

std::vector<uint8_t> from_hex(const std::string& s) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    out.push_back(uint8_t(std::stoi(s.substr(i, 2), nullptr, 16)));
  return out;
}

template <size_t N>
std::array<uint8_t, N> seq(uint8_t first) {
  std::array<uint8_t, N> a;
  for (size_t i = 0; i < N; ++i) a[i] = uint8_t(first + i);
  return a;
}

template <typename A>
std::vector<uint8_t> vec(const A& a) {
  return {a.begin(), a.end()};
}

TEST(TunnelHeader, RoundTripIsBigEndian) {
  const Header h{PacketType::data, 7, 0x0102, 0xA1B2C3D4, 0x0011223344556677ull};
  uint8_t buf[kHeaderSize];
  write_header(h, buf);
  EXPECT_EQ(vec(std::to_array(buf)), from_hex("03070102a1b2c3d40011223344556677"));
  auto parsed = parse_header(buf);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, h);
}

TEST(TunnelHeader, EveryKnownTypeParses) {
  for (auto t : {PacketType::probe, PacketType::handshake, PacketType::data, PacketType::relay_bind,
                 PacketType::relay_bind_ack}) {
    uint8_t buf[kHeaderSize + 3] = {};
    write_header({t, 0, 0xFFFF, UINT32_MAX, UINT64_MAX}, buf);
    auto h = parse_header(buf);  // trailing bytes are the payload, not an error
    ASSERT_TRUE(h);
    EXPECT_EQ(h->type, t);
    EXPECT_EQ(h->flags, 0xFFFF);
    EXPECT_EQ(h->receiver, UINT32_MAX);
    EXPECT_EQ(h->counter, UINT64_MAX);
  }
}

TEST(TunnelHeader, RejectsShortAndUnknownTypes) {
  uint8_t buf[kHeaderSize] = {};
  write_header({PacketType::data}, buf);
  for (size_t n = 0; n < kHeaderSize; ++n)
    EXPECT_FALSE(parse_header(std::span<const uint8_t>(buf, n))) << n;
  for (int t : {0, 7, 8, 0x80, 0xFF}) {
    buf[0] = uint8_t(t);
    EXPECT_FALSE(parse_header(buf)) << t;
  }
}

// --- Probe --------------------------------------------------------------------------------

const auto kPunchKey = seq<32>(0);

TEST(TunnelProbe, KnownAnswer) {
  const auto p = make_probe(kPunchKey, kProbeRequest, 0x01020304, 0x1122334455667788ull);
  EXPECT_EQ(vec(p), from_hex("0100000101020304112233445566778807eb86ba2a0f922ef448fb99175b8341"));
  EXPECT_TRUE(verify_probe(kPunchKey, p));
  auto h = parse_header(p);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->type, PacketType::probe);
  EXPECT_EQ(h->flags, kProbeRequest);
  EXPECT_EQ(h->receiver, 0x01020304u);
  EXPECT_EQ(h->counter, 0x1122334455667788ull);
}

TEST(TunnelProbe, ReplyVerifies) {
  EXPECT_TRUE(verify_probe(kPunchKey, make_probe(kPunchKey, kProbeReply, 9, 42)));
}

TEST(TunnelProbe, BadKeyFails) {
  auto other = kPunchKey;
  other[31] ^= 1;
  EXPECT_FALSE(verify_probe(other, make_probe(kPunchKey, kProbeRequest, 1, 2)));
}

TEST(TunnelProbe, AnyFlippedBitFails) {
  const auto good = make_probe(kPunchKey, kProbeRequest, 1, 2);
  for (size_t i = 0; i < good.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      auto p = good;
      p[i] ^= uint8_t(1 << bit);
      EXPECT_FALSE(verify_probe(kPunchKey, p)) << i << ":" << bit;
    }
}

TEST(TunnelProbe, TruncatedOrExtendedFails) {
  const auto good = make_probe(kPunchKey, kProbeReply, 1, 2);
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_FALSE(verify_probe(kPunchKey, std::span<const uint8_t>(good.data(), n))) << n;
  auto longer = vec(good);
  longer.push_back(0);
  EXPECT_FALSE(verify_probe(kPunchKey, longer));
}

TEST(TunnelProbe, UnknownFlagsRefusedEvenWithValidTag) {
  for (uint16_t flags : {0, 3, 0x8001}) {
    const auto p = make_probe(kPunchKey, flags, 1, 2);
    EXPECT_FALSE(verify_probe(kPunchKey, p)) << flags;
  }
}

TEST(TunnelProbe, OtherTypeWithSameKeyRefused) {
  // A relay bind-ack has the probe's size; tagged with the punch key it must still not pass.
  const auto ack = make_relay_bind_ack(kPunchKey, 5, 1);
  EXPECT_FALSE(verify_probe(kPunchKey, ack));
}

// --- Relay bind ---------------------------------------------------------------------------

const auto kServerSecret = seq<32>(0x20);
constexpr uint64_t kTunnelId = 0x0102030405060708ull;

TEST(TunnelRelay, RelayKeyKnownAnswer) {
  EXPECT_EQ(vec(relay_key(kServerSecret, kTunnelId)),
            from_hex("9463811619365ca334bf1b47f3e2446e4adbda26c6ee841955e455be9cfc4500"));
  EXPECT_NE(relay_key(kServerSecret, kTunnelId), relay_key(kServerSecret, kTunnelId + 1));
}

TEST(TunnelRelay, BindKnownAnswerAndParse) {
  const auto key = relay_key(kServerSecret, kTunnelId);
  const auto p = make_relay_bind(key, kTunnelId, kSideResponder, 1700000000000ull);
  EXPECT_EQ(vec(p), from_hex("040000010000000001020304050607080000018bcfe5680016db8db1b441d948"
                             "0ea0593207774bd7"));
  auto b = parse_relay_bind(p);
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, (RelayBind{kTunnelId, kSideResponder, 1700000000000ull}));
  EXPECT_TRUE(verify_relay_bind(key, p));
}

TEST(TunnelRelay, BindBadKeyTamperedTruncated) {
  const auto key = relay_key(kServerSecret, kTunnelId);
  const auto p = make_relay_bind(key, kTunnelId, kSideInitiator, 123);
  EXPECT_TRUE(verify_relay_bind(key, p));
  EXPECT_FALSE(verify_relay_bind(relay_key(kServerSecret, kTunnelId + 1), p));
  for (size_t i = 0; i < p.size(); ++i) {
    auto t = p;
    t[i] ^= 0x01;
    EXPECT_FALSE(verify_relay_bind(key, t)) << i;
  }
  for (size_t n = 0; n < p.size(); ++n) {
    EXPECT_FALSE(parse_relay_bind(std::span<const uint8_t>(p.data(), n))) << n;
    EXPECT_FALSE(verify_relay_bind(key, std::span<const uint8_t>(p.data(), n))) << n;
  }
  auto longer = vec(p);
  longer.push_back(0);
  EXPECT_FALSE(parse_relay_bind(longer));
}

TEST(TunnelRelay, BindParseRejectsBadStructure) {
  const auto key = relay_key(kServerSecret, kTunnelId);
  EXPECT_FALSE(parse_relay_bind(make_relay_bind(key, kTunnelId, 2, 0)));  // side 0 or 1
  auto p = make_relay_bind(key, kTunnelId, 0, 0);
  p[0] = uint8_t(PacketType::probe);
  EXPECT_FALSE(parse_relay_bind(p));
  p = make_relay_bind(key, kTunnelId, 0, 0);
  p[7] = 1;  // receiver must be 0
  EXPECT_FALSE(parse_relay_bind(p));
  p = make_relay_bind(key, kTunnelId, 0, 0);
  p[1] = 1;  // epoch must be 0
  EXPECT_FALSE(parse_relay_bind(p));
}

TEST(TunnelRelay, BindAckKnownAnswerAndVerify) {
  const auto key = relay_key(kServerSecret, kTunnelId);
  const auto a = make_relay_bind_ack(key, kTunnelId, kSideInitiator);
  EXPECT_EQ(vec(a), from_hex("050000000000000001020304050607088a31d030b73d7ce9946e6fead386a994"));
  auto parsed = parse_relay_bind_ack(a);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, (RelayBindAck{kTunnelId, kSideInitiator}));
  EXPECT_TRUE(verify_relay_bind_ack(key, a));
  EXPECT_FALSE(verify_relay_bind_ack(relay_key(kServerSecret, 1), a));
  for (size_t n = 0; n < a.size(); ++n)
    EXPECT_FALSE(verify_relay_bind_ack(key, std::span<const uint8_t>(a.data(), n))) << n;
  for (size_t i = 0; i < a.size(); ++i) {
    auto t = a;
    t[i] ^= 0x80;
    EXPECT_FALSE(verify_relay_bind_ack(key, t)) << i;
  }
}

TEST(TunnelRelay, BindAndAckAreNotInterchangeable) {
  const auto key = relay_key(kServerSecret, kTunnelId);
  const auto bind = make_relay_bind(key, kTunnelId, 0, 0);
  const auto ack = make_relay_bind_ack(key, kTunnelId, 0);
  EXPECT_FALSE(verify_relay_bind_ack(key, bind));
  EXPECT_FALSE(verify_relay_bind(key, ack));
  EXPECT_FALSE(verify_probe(key, ack));
}

}  // namespace
}  // namespace torii::tunnel
