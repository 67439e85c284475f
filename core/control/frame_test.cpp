// Control framing: round trips, reassembly from arbitrary chunks, size and field limits.
#include "core/control/frame.hpp"

#include <gtest/gtest.h>

namespace torii::control {
namespace {

std::vector<uint8_t> echo_frame(uint64_t seq) {
  return make_frame([&](pb::Envelope& e) { e.mutable_echo()->set_seq(seq); });
}

TEST(Frame, RoundTripByteByByte) {
  std::vector<uint8_t> stream;
  for (uint64_t i = 1; i <= 3; ++i) {
    auto f = echo_frame(i);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  FrameDecoder dec;
  std::vector<uint64_t> seqs;
  for (uint8_t b : stream) {
    ASSERT_TRUE(dec.feed(&b, 1));
    while (auto p = dec.next()) {
      pb::Envelope e;
      ASSERT_EQ(decode_envelope(reinterpret_cast<const uint8_t*>(p->data()), p->size(), e),
                DecodeError::none);
      seqs.push_back(e.echo().seq());
    }
  }
  EXPECT_EQ(seqs, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(dec.buffered(), 0u);
}

TEST(Frame, OversizedFrameCorruptsStream) {
  FrameDecoder dec(1024);
  const uint8_t hdr[] = {0, 0, 0x04, 0x01};  // 1025
  EXPECT_FALSE(dec.feed(hdr, 4));
  EXPECT_TRUE(dec.corrupt());
  EXPECT_FALSE(dec.next());
}

TEST(Frame, EmptyFrameIsDeliveredAndRejectedByDecode) {
  FrameDecoder dec;
  const uint8_t hdr[] = {0, 0, 0, 0};
  ASSERT_TRUE(dec.feed(hdr, 4));
  auto p = dec.next();
  ASSERT_TRUE(p);
  pb::Envelope e;
  EXPECT_EQ(decode_envelope(reinterpret_cast<const uint8_t*>(p->data()), p->size(), e),
            DecodeError::unsupported_version);
}

TEST(Frame, DecodeChecks) {
  pb::Envelope e;
  const uint8_t junk[] = {0xff, 0xff, 0xff};
  EXPECT_EQ(decode_envelope(junk, sizeof junk, e), DecodeError::bad_protobuf);

  pb::Envelope v2;
  v2.set_version(2);
  v2.mutable_echo();
  auto s = v2.SerializeAsString();
  EXPECT_EQ(decode_envelope(reinterpret_cast<const uint8_t*>(s.data()), s.size(), e),
            DecodeError::unsupported_version);

  pb::Envelope nobody;
  nobody.set_version(limits::kProtocolVersion);
  s = nobody.SerializeAsString();
  EXPECT_EQ(decode_envelope(reinterpret_cast<const uint8_t*>(s.data()), s.size(), e),
            DecodeError::empty_body);

  pb::Envelope longid;
  longid.set_version(limits::kProtocolVersion);
  longid.mutable_hello()->set_device_id(std::string(limits::kMaxDeviceIdLength + 1, 'a'));
  s = longid.SerializeAsString();
  EXPECT_EQ(decode_envelope(reinterpret_cast<const uint8_t*>(s.data()), s.size(), e),
            DecodeError::bad_field);

  pb::Envelope many;
  many.set_version(limits::kProtocolVersion);
  for (size_t i = 0; i <= limits::kMaxLocalAddresses; ++i)
    many.mutable_hello()->add_local_addresses("10.0.0.1");
  s = many.SerializeAsString();
  EXPECT_EQ(decode_envelope(reinterpret_cast<const uint8_t*>(s.data()), s.size(), e),
            DecodeError::bad_field);
}

}  // namespace
}  // namespace torii::control
