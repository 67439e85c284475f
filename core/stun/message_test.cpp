// Tests for the STUN codec: RFC 5769 vectors, round trips of every attribute, RFC 3489 headers
// and hostile input (truncation, bad lengths, bad fingerprints, exhaustive truncation).
#include "core/stun/message.hpp"

#include <gtest/gtest.h>

#include <random>

namespace torii::stun {
namespace {

// RFC 5769 2.1: sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY,
// FINGERPRINT).
const std::vector<uint8_t> kRfc5769Request = {
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf};

// RFC 5769 2.2: sample IPv4 response, XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const std::vector<uint8_t> kRfc5769V4Response = {
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96};

// RFC 5769 2.3: sample IPv6 response, XOR-MAPPED-ADDRESS
// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const std::vector<uint8_t> kRfc5769V6Response = {
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c};

const std::array<uint8_t, 12> kRfc5769Id = {0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
                                            0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae};

ParseResult parse_vec(const std::vector<uint8_t>& v) {
  return parse(v.data(), v.size());
}

Endpoint ep(const char* text) {
  return *Endpoint::parse(text);
}

TEST(StunMessage, Rfc5769SampleRequest) {
  auto r = parse_vec(kRfc5769Request);
  ASSERT_TRUE(r) << to_string(r.error);
  EXPECT_EQ(r.message->cls, MessageClass::request);
  EXPECT_EQ(r.message->method, kMethodBinding);
  EXPECT_EQ(r.message->transaction_id, make_transaction_id(kRfc5769Id));
  EXPECT_FALSE(r.message->is_rfc3489());
  EXPECT_EQ(r.message->software, "STUN test client");
  EXPECT_TRUE(r.message->fingerprint);
  // PRIORITY (ICE) is comprehension-required and not ours: a server must answer 420 listing it.
  EXPECT_EQ(r.message->unknown_comprehension_required, std::vector<uint16_t>{0x0024});
}

TEST(StunMessage, Rfc5769SampleIpv4Response) {
  auto r = parse_vec(kRfc5769V4Response);
  ASSERT_TRUE(r) << to_string(r.error);
  EXPECT_EQ(r.message->cls, MessageClass::success);
  EXPECT_EQ(r.message->software, "test vector");
  ASSERT_TRUE(r.message->xor_mapped_address);
  EXPECT_EQ(*r.message->xor_mapped_address, ep("192.0.2.1:32853"));
  EXPECT_TRUE(r.message->fingerprint);
  EXPECT_TRUE(r.message->unknown_comprehension_required.empty());
}

TEST(StunMessage, Rfc5769SampleIpv6Response) {
  auto r = parse_vec(kRfc5769V6Response);
  ASSERT_TRUE(r) << to_string(r.error);
  ASSERT_TRUE(r.message->xor_mapped_address);
  EXPECT_EQ(*r.message->xor_mapped_address, ep("[2001:db8:1234:5678:11:2233:4455:6677]:32853"));
  EXPECT_TRUE(r.message->fingerprint);
}

// Our encoder reproduces the vector's bytes for the attributes it writes: SOFTWARE and
// XOR-MAPPED-ADDRESS (the MESSAGE-INTEGRITY that follows in the RFC is not ours to produce).
TEST(StunMessage, EncoderMatchesRfc5769Prefix) {
  Message m;
  m.cls = MessageClass::success;
  m.transaction_id = make_transaction_id(kRfc5769Id);
  m.software = "test vector";
  m.xor_mapped_address = ep("192.0.2.1:32853");
  auto bytes = serialize(m);
  // Our order puts XOR-MAPPED-ADDRESS before SOFTWARE; compare attribute by attribute.
  ASSERT_EQ(bytes.size(), 20u + 12 + 16);
  std::vector<uint8_t> xma(kRfc5769V4Response.begin() + 36, kRfc5769V4Response.begin() + 48);
  std::vector<uint8_t> sw(kRfc5769V4Response.begin() + 20, kRfc5769V4Response.begin() + 36);
  sw[15] = 0;  // the RFC pads with a space, we pad with zero (padding content is free)
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin() + 20, bytes.begin() + 32), xma);
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin() + 32, bytes.end()), sw);
}

TEST(StunMessage, Crc32KnownValue) {
  const char* s = "123456789";
  EXPECT_EQ(crc32(reinterpret_cast<const uint8_t*>(s), 9), 0xCBF43926u);
}

TEST(StunMessage, MessageTypeEncoding) {
  EXPECT_EQ(message_type(kMethodBinding, MessageClass::request), 0x0001);
  EXPECT_EQ(message_type(kMethodBinding, MessageClass::indication), 0x0011);
  EXPECT_EQ(message_type(kMethodBinding, MessageClass::success), 0x0101);
  EXPECT_EQ(message_type(kMethodBinding, MessageClass::error), 0x0111);
  EXPECT_EQ(message_type(0x0FFF, MessageClass::error), 0x3FFF);
}

Message full_message() {
  Message m;
  m.cls = MessageClass::success;
  m.transaction_id = make_transaction_id({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  m.xor_mapped_address = ep("203.0.113.7:40001");
  m.mapped_address = ep("[2001:db8::7]:40002");
  m.source_address = ep("198.51.100.1:3478");
  m.changed_address = ep("198.51.100.2:3479");
  m.response_origin = ep("[2001:db8::1]:3478");
  m.other_address = ep("[2001:db8::2]:3479");
  m.change_request = ChangeRequest{true, false};
  m.error_code = ErrorCode{420, "Unknown Attribute"};
  m.unknown_attributes = {0x0024, 0x7fff, 0x0002};
  m.software = "torii 0.1";
  m.fingerprint = true;
  return m;
}

TEST(StunMessage, RoundTripAllAttributes) {
  Message m = full_message();
  auto bytes = serialize(m);
  EXPECT_EQ(bytes.size() % 4, 0u);
  auto r = parse_vec(bytes);
  ASSERT_TRUE(r) << to_string(r.error);
  EXPECT_EQ(*r.message, m);
}

TEST(StunMessage, RoundTripXorIpv6AndEachClass) {
  for (auto cls : {MessageClass::request, MessageClass::indication, MessageClass::success,
                   MessageClass::error}) {
    Message m;
    m.cls = cls;
    m.transaction_id = make_transaction_id({9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1});
    m.xor_mapped_address = ep("[fe80::1:2:3:4]:65535");
    auto r = parse_vec(serialize(m));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r.message, m);
  }
}

TEST(StunMessage, ChangeRequestFlags) {
  for (bool ip : {false, true}) {
    for (bool port : {false, true}) {
      Message m;
      m.change_request = ChangeRequest{ip, port};
      auto bytes = serialize(m);
      ASSERT_EQ(bytes.size(), 28u);
      EXPECT_EQ(bytes[27], (ip ? 0x04 : 0) | (port ? 0x02 : 0));
      auto r = parse_vec(bytes);
      ASSERT_TRUE(r);
      EXPECT_EQ(r.message->change_request, m.change_request);
    }
  }
}

TEST(StunMessage, Rfc3489HeaderKeepsAll16Bytes) {
  Message m;
  for (size_t i = 0; i < 16; ++i) m.transaction_id[i] = uint8_t(0xA0 + i);
  m.change_request = ChangeRequest{};
  ASSERT_TRUE(m.is_rfc3489());
  auto bytes = serialize(m);
  auto r = parse_vec(bytes);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r.message->is_rfc3489());
  EXPECT_EQ(r.message->transaction_id, m.transaction_id);
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin() + 4, bytes.begin() + 20),
            std::vector<uint8_t>(m.transaction_id.begin(), m.transaction_id.end()));
}

TEST(StunMessage, RejectsShortAndForeignInput) {
  EXPECT_EQ(parse(nullptr, 0).error, ParseError::too_short);
  std::vector<uint8_t> b(19, 0);
  EXPECT_EQ(parse_vec(b).error, ParseError::too_short);
  auto ok = serialize(Message{});
  ok[0] |= 0x80;  // e.g. an RTP or DTLS packet on the same port
  EXPECT_EQ(parse_vec(ok).error, ParseError::not_stun);
}

TEST(StunMessage, RejectsLengthMismatch) {
  auto bytes = serialize(full_message());
  auto longer = bytes;
  longer.push_back(0);
  EXPECT_EQ(parse_vec(longer).error, ParseError::bad_length);
  auto shorter = bytes;
  shorter.pop_back();
  EXPECT_EQ(parse_vec(shorter).error, ParseError::bad_length);
  auto odd = bytes;
  odd[3] ^= 0x02;  // length not a multiple of 4
  EXPECT_EQ(parse_vec(odd).error, ParseError::bad_length);
}

TEST(StunMessage, RejectsAttributeOverrun) {
  // Header says 8 bytes of attributes; the single attribute claims 8 bytes of value.
  std::vector<uint8_t> b = {0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 0, 0,
                            0,    0,    0,    0,    0,    0,    0,    0,    0, 0,
                            0x80, 0x22, 0x00, 0x08, 'a',  'b',  'c',  'd'};
  EXPECT_EQ(parse_vec(b).error, ParseError::truncated_attribute);
  // A 5-byte value whose padding would run past the end.
  b[23] = 0x05;
  EXPECT_EQ(parse_vec(b).error, ParseError::truncated_attribute);
  // 4-byte value fits exactly.
  b[23] = 0x04;
  EXPECT_TRUE(parse_vec(b));
}

TEST(StunMessage, RejectsMalformedKnownAttributes) {
  auto make = [](uint16_t type, std::vector<uint8_t> value) {
    std::vector<uint8_t> b = {0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1,  2,
                              3,    4,    5, 6, 7,    8,    9,    10,   11, 12};
    b.push_back(uint8_t(type >> 8));
    b.push_back(uint8_t(type));
    b.push_back(0);
    b.push_back(uint8_t(value.size()));
    b.insert(b.end(), value.begin(), value.end());
    while (b.size() % 4) b.push_back(0);
    b[3] = uint8_t(b.size() - 20);
    return b;
  };
  // Family 3 does not exist; IPv4 family with IPv6 length; too short.
  EXPECT_EQ(parse_vec(make(attr::kMappedAddress, {0, 3, 0, 1, 1, 2, 3, 4})).error,
            ParseError::bad_attribute);
  EXPECT_EQ(parse_vec(make(attr::kXorMappedAddress, std::vector<uint8_t>(20, 0))).error,
            ParseError::bad_attribute);  // family 0
  std::vector<uint8_t> v4_long(20, 0);
  v4_long[1] = 1;
  EXPECT_EQ(parse_vec(make(attr::kOtherAddress, v4_long)).error, ParseError::bad_attribute);
  EXPECT_EQ(parse_vec(make(attr::kResponseOrigin, {0, 1})).error, ParseError::bad_attribute);
  EXPECT_EQ(parse_vec(make(attr::kChangeRequest, {0, 0, 0, 4, 0})).error,
            ParseError::bad_attribute);
  EXPECT_EQ(parse_vec(make(attr::kErrorCode, {0, 0, 2, 0})).error, ParseError::bad_attribute);
  EXPECT_EQ(parse_vec(make(attr::kErrorCode, {0, 0, 4, 100})).error, ParseError::bad_attribute);
  EXPECT_EQ(parse_vec(make(attr::kUnknownAttributes, {0, 1, 0})).error, ParseError::bad_attribute);
  // Well-formed versions parse.
  EXPECT_TRUE(parse_vec(make(attr::kMappedAddress, {0, 1, 0, 1, 1, 2, 3, 4})));
  EXPECT_TRUE(parse_vec(make(attr::kErrorCode, {0, 0, 4, 20, 'x'})));
}

TEST(StunMessage, FingerprintIsVerified) {
  Message m;
  m.software = "abc";
  m.fingerprint = true;
  auto bytes = serialize(m);
  ASSERT_TRUE(parse_vec(bytes));
  auto bad = bytes;
  bad.back() ^= 1;
  EXPECT_EQ(parse_vec(bad).error, ParseError::bad_fingerprint);
  bad = bytes;
  bad[25] ^= 1;  // content change under the fingerprint
  EXPECT_EQ(parse_vec(bad).error, ParseError::bad_fingerprint);
  // An attribute after FINGERPRINT is not allowed.
  bad = bytes;
  for (uint8_t b : {0x80, 0x22, 0x00, 0x00}) bad.push_back(b);
  bad[3] = uint8_t(bad.size() - 20);
  EXPECT_EQ(parse_vec(bad).error, ParseError::bad_fingerprint);
}

TEST(StunMessage, UnknownAttributesAreClassified) {
  std::vector<uint8_t> b = {0x00, 0x01, 0x00, 0x18, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0,
                            0, 0, 0, 0,
                            // 0x7777 required, 0x8888 optional, 0x7777 again, 0x0002 required
                            0x77, 0x77, 0x00, 0x00, 0x88, 0x88, 0x00, 0x01, 0xff, 0, 0, 0, 0x77,
                            0x77, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00};
  b[3] = uint8_t(b.size() - 20);
  auto r = parse_vec(b);
  ASSERT_TRUE(r) << to_string(r.error);
  EXPECT_EQ(r.message->unknown_comprehension_required, (std::vector<uint16_t>{0x7777, 0x0002}));
}

TEST(StunMessage, FirstDuplicateWins) {
  Message a;
  a.mapped_address = ep("1.2.3.4:5");
  Message b;
  b.mapped_address = ep("5.6.7.8:9");
  auto bytes = serialize(a);
  auto extra = serialize(b);
  bytes.insert(bytes.end(), extra.begin() + 20, extra.end());
  bytes[3] = uint8_t(bytes.size() - 20);
  auto r = parse_vec(bytes);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.message->mapped_address, ep("1.2.3.4:5"));
}

TEST(StunMessage, LongTextIsCappedOnEncode) {
  Message m;
  m.software = std::string(2000, 'x');
  auto r = parse_vec(serialize(m));
  ASSERT_TRUE(r);
  EXPECT_EQ(r.message->software->size(), kMaxTextBytes);
}

// Every prefix and every single-byte corruption of valid messages must be handled without
// crashing (run under ASan in the debug preset); prefixes are never valid.
TEST(StunMessage, TruncationAndCorruptionNeverCrash) {
  for (const auto& v :
       {kRfc5769Request, kRfc5769V4Response, kRfc5769V6Response, serialize(full_message())}) {
    for (size_t n = 0; n < v.size(); ++n) {
      std::vector<uint8_t> prefix(v.begin(), v.begin() + n);
      EXPECT_FALSE(parse(prefix.data(), prefix.size())) << n;
    }
    for (size_t i = 0; i < v.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        auto c = v;
        c[i] ^= uint8_t(1 << bit);
        (void)parse(c.data(), c.size());
      }
    }
  }
}

TEST(StunMessage, RandomGarbageNeverCrashes) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> b(rng() % 200);
    for (auto& x : b) x = uint8_t(rng());
    if (b.size() >= 4 && (i % 2)) {
      // Make the header plausible so that the attribute walk is exercised.
      b[0] &= 0x3f;
      size_t len = (b.size() - 20 * (b.size() >= 20)) & ~size_t(3);
      if (b.size() >= 20) {
        b.resize(20 + len);
        b[2] = uint8_t(len >> 8);
        b[3] = uint8_t(len);
      }
    }
    (void)parse(b.data(), b.size());
  }
}

}  // namespace
}  // namespace torii::stun
