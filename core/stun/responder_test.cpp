// Tests for the STUN responder: RFC 8489 and RFC 3489 replies, CHANGE-REQUEST socket choice,
// the 420 policy without an alternate address, drops and counters.
#include "core/stun/responder.hpp"

#include <gtest/gtest.h>

#include "core/stun/message.hpp"

namespace torii::stun {
namespace {

Endpoint ep(const char* text) {
  return *Endpoint::parse(text);
}

const Endpoint kPrimary = ep("198.51.100.1:3478");
const Endpoint kAlt = ep("198.51.100.2:3479");
const Endpoint kClient = ep("203.0.113.9:50000");

std::vector<uint8_t> modern_request(std::optional<ChangeRequest> change = std::nullopt) {
  Message m;
  m.transaction_id = make_transaction_id({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  m.change_request = change;
  return serialize(m);
}

std::vector<uint8_t> classic_request(std::optional<ChangeRequest> change = ChangeRequest{}) {
  Message m;
  for (size_t i = 0; i < 16; ++i) m.transaction_id[i] = uint8_t(0x10 + i);
  m.change_request = change;
  return serialize(m);
}

Message reply_message(const Responder::Reply& r) {
  auto p = parse(r.bytes.data(), r.bytes.size());
  EXPECT_TRUE(p) << to_string(p.error);
  return p ? *p.message : Message{};
}

TEST(StunResponder, SocketLayout) {
  Responder full(kPrimary, kAlt);
  EXPECT_EQ(full.socket_indexes(), (std::vector<size_t>{0, 1, 2, 3}));
  EXPECT_EQ(full.socket_endpoint(kPrimaryIpAltPort), ep("198.51.100.1:3479"));
  EXPECT_EQ(full.socket_endpoint(kAltIpPrimaryPort), ep("198.51.100.2:3478"));
  EXPECT_EQ(full.socket_endpoint(kAltIpAltPort), kAlt);
  EXPECT_TRUE(full.full_rfc5780());

  EXPECT_EQ(Responder(kPrimary).socket_indexes(), std::vector<size_t>{0});
  EXPECT_EQ(Responder(kPrimary, ep("198.51.100.1:4000")).socket_indexes(),
            (std::vector<size_t>{0, 1}));
  EXPECT_EQ(Responder(kPrimary, ep("198.51.100.9:3478")).socket_indexes(),
            (std::vector<size_t>{0, 2}));
  EXPECT_EQ(Responder(kPrimary, ep("[2001:db8::1]:4000")).socket_indexes(),
            std::vector<size_t>{0});  // other family: ignored
}

TEST(StunResponder, ModernBindingWithAlternate) {
  Responder r(kPrimary, kAlt);
  auto req = modern_request();
  auto reply = r.handle(req.data(), req.size(), kClient, kPrimaryIpPrimaryPort);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->socket_index, kPrimaryIpPrimaryPort);
  Message m = reply_message(*reply);
  EXPECT_EQ(m.cls, MessageClass::success);
  EXPECT_EQ(m.transaction_id, make_transaction_id({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(m.xor_mapped_address, kClient);
  EXPECT_EQ(m.mapped_address, kClient);
  EXPECT_EQ(m.response_origin, kPrimary);
  EXPECT_EQ(m.other_address, kAlt);
  EXPECT_EQ(m.software, "torii");
  EXPECT_TRUE(m.fingerprint);
  EXPECT_FALSE(m.source_address);
  EXPECT_FALSE(m.changed_address);
  // Sent to the alternate socket, OTHER-ADDRESS is the primary (differs in IP and port).
  reply = r.handle(req.data(), req.size(), kClient, kAltIpAltPort);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply_message(*reply).other_address, kPrimary);
  EXPECT_EQ(reply_message(*reply).response_origin, kAlt);
}

TEST(StunResponder, ModernBindingWithoutAlternate) {
  Responder r(kPrimary);
  auto req = modern_request();
  auto reply = r.handle(req.data(), req.size(), kClient, 0);
  ASSERT_TRUE(reply);
  Message m = reply_message(*reply);
  EXPECT_EQ(m.xor_mapped_address, kClient);
  EXPECT_FALSE(m.other_address);
}

TEST(StunResponder, Ipv6Client) {
  Endpoint p6 = ep("[2001:db8::1]:3478");
  Endpoint c6 = ep("[2001:db8:ffff::42]:61000");
  Responder r(p6, ep("[2001:db8::2]:3479"));
  auto req = modern_request();
  auto reply = r.handle(req.data(), req.size(), c6, 0);
  ASSERT_TRUE(reply);
  Message m = reply_message(*reply);
  EXPECT_EQ(m.xor_mapped_address, c6);
  EXPECT_EQ(m.other_address, ep("[2001:db8::2]:3479"));
}

TEST(StunResponder, ChangeRequestPicksSocket) {
  Responder r(kPrimary, kAlt);
  struct Case {
    bool ip, port;
    size_t arrive, expect;
  } cases[] = {{false, false, 0, 0}, {true, false, 0, 2}, {false, true, 0, 1},
               {true, true, 0, 3},   {true, true, 3, 0},  {false, true, 2, 3}};
  for (const auto& c : cases) {
    auto req = modern_request(ChangeRequest{c.ip, c.port});
    auto reply = r.handle(req.data(), req.size(), kClient, c.arrive);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->socket_index, c.expect);
    Message m = reply_message(*reply);
    EXPECT_EQ(m.response_origin, r.socket_endpoint(c.expect));
    EXPECT_EQ(m.other_address, r.socket_endpoint(c.arrive ^ 3));
  }
}

TEST(StunResponder, ChangeRequestWithoutAlternateIs420) {
  Responder r(kPrimary);
  for (auto change : {ChangeRequest{true, true}, ChangeRequest{false, false}}) {
    auto req = modern_request(change);
    auto reply = r.handle(req.data(), req.size(), kClient, 0);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->socket_index, 0u);
    Message m = reply_message(*reply);
    EXPECT_EQ(m.cls, MessageClass::error);
    ASSERT_TRUE(m.error_code);
    EXPECT_EQ(m.error_code->code, 420);
    EXPECT_EQ(m.unknown_attributes, std::vector<uint16_t>{attr::kChangeRequest});
    EXPECT_FALSE(m.xor_mapped_address);
  }
}

TEST(StunResponder, ImpossibleChangeWithPartialAlternateIs420) {
  Responder r(kPrimary, ep("198.51.100.1:3479"));  // port only
  auto req = modern_request(ChangeRequest{false, true});
  auto reply = r.handle(req.data(), req.size(), kClient, 0);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->socket_index, 1u);
  EXPECT_EQ(reply_message(*reply).cls, MessageClass::success);
  EXPECT_FALSE(reply_message(*reply).other_address);  // not full RFC 5780
  req = modern_request(ChangeRequest{true, false});
  reply = r.handle(req.data(), req.size(), kClient, 0);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply_message(*reply).error_code->code, 420);
}

TEST(StunResponder, UnknownRequiredAttributeIs420) {
  Message m;
  m.transaction_id = make_transaction_id({});
  auto req = serialize(m);
  // Append RESPONSE-PORT (unsupported, comprehension-required) and an optional unknown one.
  for (uint8_t b : {0x00, 0x27, 0x00, 0x02, 0x12, 0x34, 0x00, 0x00, 0xC0, 0x01, 0x00, 0x00})
    req.push_back(b);
  req[3] = uint8_t(req.size() - 20);
  Responder r(kPrimary, kAlt);
  auto reply = r.handle(req.data(), req.size(), kClient, 0);
  ASSERT_TRUE(reply);
  Message resp = reply_message(*reply);
  EXPECT_EQ(resp.cls, MessageClass::error);
  EXPECT_EQ(resp.error_code->code, 420);
  EXPECT_EQ(resp.unknown_attributes, std::vector<uint16_t>{attr::kResponsePort});
  EXPECT_TRUE(resp.fingerprint);
}

TEST(StunResponder, ClassicRequestGetsRfc3489Attributes) {
  Responder r(kPrimary, kAlt);
  auto req = classic_request();
  auto reply = r.handle(req.data(), req.size(), kClient, 0);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->socket_index, 0u);
  // The 16-byte ID, including the "cookie" position, is echoed verbatim.
  EXPECT_EQ(std::vector<uint8_t>(reply->bytes.begin() + 4, reply->bytes.begin() + 20),
            std::vector<uint8_t>(req.begin() + 4, req.begin() + 20));
  Message m = reply_message(*reply);
  EXPECT_EQ(m.cls, MessageClass::success);
  EXPECT_EQ(m.mapped_address, kClient);
  EXPECT_EQ(m.source_address, kPrimary);
  EXPECT_EQ(m.changed_address, kAlt);
  // Nothing an RFC 3489 client would reject or misread.
  EXPECT_FALSE(m.xor_mapped_address);
  EXPECT_FALSE(m.other_address);
  EXPECT_FALSE(m.response_origin);
  EXPECT_FALSE(m.fingerprint);
  EXPECT_FALSE(m.software);
  // Only types 0x0001, 0x0004, 0x0005 are on the wire.
  ASSERT_EQ(reply->bytes.size(), 20u + 3 * 12);
  EXPECT_EQ(reply->bytes[21], 0x01);
  EXPECT_EQ(reply->bytes[33], 0x04);
  EXPECT_EQ(reply->bytes[45], 0x05);
}

TEST(StunResponder, ClassicChangeRequest) {
  Responder r(kPrimary, kAlt);
  auto req = classic_request(ChangeRequest{true, true});
  auto reply = r.handle(req.data(), req.size(), kClient, 0);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->socket_index, 3u);
  EXPECT_EQ(reply_message(*reply).source_address, kAlt);
  EXPECT_EQ(reply_message(*reply).changed_address, kAlt);

  // Without an alternate: a no-change request is answered, a change request is dropped.
  Responder single(kPrimary);
  req = classic_request(ChangeRequest{});
  reply = single.handle(req.data(), req.size(), kClient, 0);
  ASSERT_TRUE(reply);
  EXPECT_FALSE(reply_message(*reply).changed_address);
  req = classic_request(ChangeRequest{false, true});
  EXPECT_FALSE(single.handle(req.data(), req.size(), kClient, 0));
  EXPECT_EQ(single.counters().dropped_other, 1u);
}

TEST(StunResponder, DropsWhatItShouldNotAnswer) {
  Responder r(kPrimary, kAlt);
  std::vector<uint8_t> garbage = {1, 2, 3};
  EXPECT_FALSE(r.handle(garbage.data(), garbage.size(), kClient, 0));
  EXPECT_FALSE(r.handle(nullptr, 0, kClient, 0));
  // A success response must never be answered (two servers could ping-pong forever).
  Message resp;
  resp.cls = MessageClass::success;
  auto bytes = serialize(resp);
  EXPECT_FALSE(r.handle(bytes.data(), bytes.size(), kClient, 0));
  Message ind;
  ind.cls = MessageClass::indication;
  bytes = serialize(ind);
  EXPECT_FALSE(r.handle(bytes.data(), bytes.size(), kClient, 0));
  Message other_method;
  other_method.method = 0x003;  // TURN Allocate
  bytes = serialize(other_method);
  EXPECT_FALSE(r.handle(bytes.data(), bytes.size(), kClient, 0));
  auto req = modern_request();
  EXPECT_FALSE(r.handle(req.data(), req.size(), kClient, 7));  // no such socket
  // Corrupted fingerprint.
  Message fp;
  fp.transaction_id = make_transaction_id({});
  fp.fingerprint = true;
  bytes = serialize(fp);
  bytes.back() ^= 0xff;
  EXPECT_FALSE(r.handle(bytes.data(), bytes.size(), kClient, 0));

  EXPECT_TRUE(r.handle(req.data(), req.size(), kClient, 0));
  const auto& c = r.counters();
  EXPECT_EQ(c.requests, 8u);
  EXPECT_EQ(c.answered, 1u);
  EXPECT_EQ(c.dropped_malformed, 3u);
  EXPECT_EQ(c.dropped_other, 4u);
}

TEST(StunResponder, WildcardSocketOmitsOrigin) {
  Responder r(ep("0.0.0.0:3478"));
  auto req = modern_request();
  auto reply = r.handle(req.data(), req.size(), kClient, 0);
  ASSERT_TRUE(reply);
  EXPECT_FALSE(reply_message(*reply).response_origin);
  EXPECT_EQ(reply_message(*reply).xor_mapped_address, kClient);
}

}  // namespace
}  // namespace torii::stun
