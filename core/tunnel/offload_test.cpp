// Segmentation / coalescing offloads (issue 4, A9): checksums, TSO segments that are valid IP
// packets, coalesced segments that carry the same bytes, and refusal of inconsistent input.
#include "core/tunnel/offload.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "core/tunnel/packet.hpp"

namespace torii::tunnel::offload {
namespace {

using Bytes = std::vector<uint8_t>;
using wire::load16;
using wire::load32;
using wire::store16;
using wire::store32;

// Reference RFC 1071 sum, one 16-bit word at a time.
uint16_t ref_sum(const uint8_t* p, size_t n) {
  uint32_t s = 0;
  for (size_t i = 0; i + 1 < n; i += 2) s += uint32_t(p[i] << 8 | p[i + 1]);
  if (n % 2) s += uint32_t(p[n - 1] << 8);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(s);
}

Bytes pseudo(const Bytes& ip, bool v6, size_t l4) {
  Bytes ph;
  if (v6) {
    ph.assign(ip.begin() + 8, ip.begin() + 40);
    ph.insert(ph.end(),
              {uint8_t(l4 >> 24), uint8_t(l4 >> 16), uint8_t(l4 >> 8), uint8_t(l4), 0, 0, 0, 6});
  } else {
    ph.assign(ip.begin() + 12, ip.begin() + 20);
    ph.insert(ph.end(), {0, 6, uint8_t(l4 >> 8), uint8_t(l4)});
  }
  return ph;
}

bool tcp_checksum_ok(const Bytes& ip) {
  const bool v6 = (ip[0] >> 4) == 6;
  const size_t ihl = v6 ? 40 : size_t(ip[0] & 15) * 4;
  Bytes all = pseudo(ip, v6, ip.size() - ihl);
  all.insert(all.end(), ip.begin() + long(ihl), ip.end());
  return ref_sum(all.data(), all.size()) == 0xffff;
}

bool ipv4_checksum_ok(const Bytes& ip) {
  return ref_sum(ip.data(), size_t(ip[0] & 15) * 4) == 0xffff;
}

struct Flow {
  bool v6 = false;
  uint8_t src = 1, dst = 2;
  uint16_t sport = 40000, dport = 5201;
};

// An IPv4/IPv6 TCP packet with `payload` bytes (pattern from `seq`), valid checksums.
Bytes tcp_packet(const Flow& f, uint32_t seq, size_t payload, uint8_t flags = 0x10,
                 uint32_t ack = 777, size_t options = 12) {
  const size_t ihl = f.v6 ? 40 : 20, thl = 20 + options;
  Bytes p(ihl + thl + payload, 0);
  if (f.v6) {
    p[0] = 0x60;
    store16(&p[4], uint16_t(thl + payload));
    p[6] = 6;
    p[7] = 64;
    p[8] = 0xfd;
    p[23] = f.src;
    p[24] = 0xfd;
    p[39] = f.dst;
  } else {
    p[0] = 0x45;
    store16(&p[2], uint16_t(p.size()));
    store16(&p[4], 0x1234);
    p[6] = 0x40;  // DF
    p[8] = 64;
    p[9] = 6;
    p[12] = 100;
    p[15] = f.src;
    p[16] = 100;
    p[19] = f.dst;
    store16(&p[10], uint16_t(~ref_sum(p.data(), 20)));
  }
  uint8_t* t = &p[ihl];
  store16(t, f.sport);
  store16(t + 2, f.dport);
  store32(t + 4, seq);
  store32(t + 8, ack);
  t[12] = uint8_t((thl / 4) << 4);
  t[13] = flags;
  store16(t + 14, 512);
  for (size_t i = 0; i < options; ++i) t[20 + i] = i == 0 ? 1 : uint8_t(i);  // NOP + filler
  for (size_t i = 0; i < payload; ++i) p[ihl + thl + i] = uint8_t((seq + i) * 7);
  Bytes all = pseudo(p, f.v6, thl + payload);
  all.insert(all.end(), p.begin() + long(ihl), p.end());
  store16(t + 16, uint16_t(~ref_sum(all.data(), all.size())));
  return p;
}

// What the kernel hands over with TSO: one large segment, partial checksum.
Bytes tso_packet(const Flow& f, uint32_t seq, size_t payload, uint8_t flags = 0x18) {
  Bytes p = tcp_packet(f, seq, payload, flags);
  const size_t ihl = f.v6 ? 40 : 20;
  if (!f.v6) store16(&p[2], 0);  // the kernel's tot_len is not relied on
  const Bytes ph = pseudo(p, f.v6, p.size() - ihl);
  store16(&p[ihl + 16], ref_sum(ph.data(), ph.size()));
  return p;
}

TEST(Checksum, MatchesTheReferenceForAnyLengthAndContent) {
  std::mt19937 rng(7);
  for (size_t n = 0; n < 300; ++n) {
    Bytes b(n);
    for (auto& x : b) x = uint8_t(rng());
    EXPECT_EQ(checksum_fold(checksum_add(0, b.data(), n)), ref_sum(b.data(), n)) << n;
  }
  Bytes ff(4000, 0xff);
  EXPECT_EQ(checksum_fold(checksum_add(0, ff.data(), ff.size())), 0xffff);
}

TEST(VnetHdr, RoundTripsLittleEndian) {
  VnetHdr h{kNeedsCsum, kGsoTcpV4, 52, 1360, 20, 16};
  uint8_t b[kVnetHdrSize];
  store_vnet(h, b);
  EXPECT_EQ(b[4], 1360 & 0xff);
  EXPECT_EQ(b[5], 1360 >> 8);
  EXPECT_EQ(load_vnet(b), h);
}

class SegmenterTest : public ::testing::TestWithParam<bool> {};

TEST_P(SegmenterTest, CutsATsoSegmentIntoValidPackets) {
  Flow f;
  f.v6 = GetParam();
  const size_t ihl = f.v6 ? 40 : 20, hdr = ihl + 32, mss = 1348, payload = 10000;
  const Bytes big = tso_packet(f, 1000, payload, 0x19);  // ACK | PSH | FIN
  VnetHdr h{kNeedsCsum,         f.v6 ? kGsoTcpV6 : kGsoTcpV4,
            uint16_t(hdr + 30), uint16_t(mss),
            uint16_t(ihl),      16};
  Segmenter s;
  ASSERT_TRUE(s.reset(h, big));
  ASSERT_EQ(s.count(), 8u);  // ceil(10000 / 1348)
  Bytes joined;
  for (size_t i = 0; i < s.count(); ++i) {
    Bytes out(s.size(i));
    ASSERT_EQ(s.write(i, out.data()), out.size());
    const size_t len = i + 1 < s.count() ? mss : payload - 7 * mss;
    ASSERT_EQ(out.size(), hdr + len);
    EXPECT_TRUE(tcp_checksum_ok(out)) << i;
    if (f.v6) {
      EXPECT_EQ(load16(&out[4]), 32 + len);
    } else {
      EXPECT_EQ(load16(&out[2]), out.size());
      EXPECT_EQ(load16(&out[4]), 0x1234 + i);
      EXPECT_TRUE(ipv4_checksum_ok(out));
    }
    EXPECT_EQ(load32(&out[ihl + 4]), 1000 + i * mss);
    const uint8_t flags = out[ihl + 13];
    EXPECT_EQ(flags, i + 1 < s.count() ? 0x10 : 0x19) << i;  // PSH and FIN on the last only
    joined.insert(joined.end(), out.begin() + long(hdr), out.end());
  }
  EXPECT_EQ(joined, Bytes(big.begin() + long(hdr), big.end()));
}

TEST_P(SegmenterTest, CoalescerRebuildsTheSegment) {
  Flow f;
  f.v6 = GetParam();
  const size_t ihl = f.v6 ? 40 : 20, hdr = ihl + 32, mss = 1348;
  const Bytes big = tso_packet(f, 5, 20000, 0x18);
  Segmenter s;
  ASSERT_TRUE(s.reset({kNeedsCsum, f.v6 ? kGsoTcpV6 : kGsoTcpV4, 0, uint16_t(mss), 0, 0}, big));
  std::vector<Bytes> segs;
  for (size_t i = 0; i < s.count(); ++i) {
    segs.emplace_back(s.size(i));
    s.write(i, segs.back().data());
  }
  Coalescer c;
  std::vector<std::pair<VnetHdr, Bytes>> outs;
  auto emit = [&](const Coalescer::Output& o) {
    Bytes b(o.head.begin(), o.head.end());
    for (auto p : o.pieces) b.insert(b.end(), p.begin(), p.end());
    outs.emplace_back(o.vnet, b);
  };
  for (const auto& sg : segs) c.add(sg, emit);
  EXPECT_TRUE(outs.empty());
  c.flush(emit);
  ASSERT_EQ(outs.size(), 1u);
  const auto& [vh, pkt] = outs[0];
  EXPECT_EQ(vh.gso_type, f.v6 ? kGsoTcpV6 : kGsoTcpV4);
  EXPECT_EQ(vh.flags, kNeedsCsum);
  EXPECT_EQ(vh.gso_size, mss);
  EXPECT_EQ(vh.hdr_len, hdr);
  EXPECT_EQ(vh.csum_start, ihl);
  EXPECT_EQ(vh.csum_offset, 16);
  ASSERT_EQ(pkt.size(), big.size());
  EXPECT_TRUE(std::equal(pkt.begin() + long(hdr), pkt.end(), big.begin() + long(hdr)));
  if (f.v6) {
    EXPECT_EQ(load16(&pkt[4]), pkt.size() - 40);
  } else {
    EXPECT_TRUE(ipv4_checksum_ok(pkt));
    EXPECT_EQ(load16(&pkt[2]), pkt.size());
  }
  EXPECT_EQ(pkt[ihl + 13], 0x18);  // PSH of the last segment kept
  // Partial checksum: the pseudo-header sum, which the kernel completes.
  const Bytes ph = pseudo(pkt, f.v6, pkt.size() - ihl);
  EXPECT_EQ(load16(&pkt[ihl + 16]), ref_sum(ph.data(), ph.size()));
  EXPECT_EQ(c.stats().merged, s.count() - 1);
}

INSTANTIATE_TEST_SUITE_P(IPv4AndIPv6, SegmenterTest, ::testing::Bool(),
                         [](const auto& i) { return i.param ? "v6" : "v4"; });

TEST(Segmenter, CompletesAPartialChecksumWithoutGso) {
  Flow f;
  Bytes p = tso_packet(f, 9, 300);
  store16(&p[2], uint16_t(p.size()));
  Segmenter s;
  ASSERT_TRUE(s.reset({kNeedsCsum, kGsoNone, 0, 0, 20, 16}, p));
  ASSERT_EQ(s.count(), 1u);
  Bytes out(s.size(0));
  s.write(0, out.data());
  EXPECT_TRUE(tcp_checksum_ok(out));
  // No flag: copied as it is.
  ASSERT_TRUE(s.reset({}, p));
  s.write(0, out.data());
  EXPECT_EQ(out, p);
}

TEST(Segmenter, RefusesInconsistentInput) {
  Flow f;
  const Bytes v4 = tso_packet(f, 1, 5000);
  Segmenter s;
  EXPECT_FALSE(s.reset({}, {}));
  EXPECT_FALSE(s.reset({kNeedsCsum, kGsoTcpV6, 0, 1000, 20, 16}, v4));  // type vs version
  EXPECT_FALSE(s.reset({kNeedsCsum, kGsoUdp, 0, 1000, 20, 16}, v4));    // not offered
  EXPECT_FALSE(s.reset({kNeedsCsum, kGsoTcpV4, 0, 0, 20, 16}, v4));     // no MSS
  EXPECT_FALSE(s.reset({kNeedsCsum, kGsoTcpV4, 0, 8, 20, 16}, v4));     // > kMaxSegments
  EXPECT_FALSE(s.reset({kNeedsCsum, kGsoNone, 0, 0, 5040, 16}, v4));    // csum outside
  EXPECT_FALSE(s.reset({kNeedsCsum, kGsoTcpV4, 0, 1000, 20, 16},
                       std::span<const uint8_t>(v4).first(52)));  // headers only
  Bytes bad = v4;
  bad[20 + 12] = 0x30;  // TCP data offset 12 bytes
  EXPECT_FALSE(s.reset({kNeedsCsum, kGsoTcpV4, 0, 1000, 20, 16}, bad));
  bad = v4;
  bad[9] = 17;  // UDP
  EXPECT_FALSE(s.reset({kNeedsCsum, kGsoTcpV4, 0, 1000, 20, 16}, bad));
}

struct Collected {
  std::vector<std::pair<VnetHdr, Bytes>> outs;
  void operator()(const Coalescer::Output& o) {
    Bytes b(o.head.begin(), o.head.end());
    for (auto p : o.pieces) b.insert(b.end(), p.begin(), p.end());
    outs.emplace_back(o.vnet, b);
  }
};

TEST(Coalescer, PassesOtherTrafficThroughAtOnce) {
  Coalescer c;
  Collected got;
  Bytes udp = tcp_packet({}, 1, 100);
  udp[9] = 17;
  c.add(udp, got);
  Bytes junk = {0x45, 1, 2};
  c.add(junk, got);
  ASSERT_EQ(got.outs.size(), 2u);
  EXPECT_EQ(got.outs[0].first, VnetHdr{});
  EXPECT_EQ(got.outs[0].second, udp);
  EXPECT_EQ(got.outs[1].second, junk);
}

TEST(Coalescer, KeepsOrderWithinAFlowAndMergesOnlyWhatFollows) {
  Flow f;
  Coalescer c;
  Collected got;
  const auto a = tcp_packet(f, 0, 1000), b = tcp_packet(f, 1000, 1000);
  const auto gap = tcp_packet(f, 5000, 1000);                   // not the next sequence number
  const auto other_ack = tcp_packet(f, 6000, 1000, 0x10, 778);  // different ACK
  const auto syn = tcp_packet(f, 9, 0, 0x02);
  for (const auto* p : {&a, &b, &gap, &other_ack, &syn}) c.add(*p, got);
  c.flush(got);
  ASSERT_EQ(got.outs.size(), 4u);
  EXPECT_EQ(got.outs[0].first.gso_type, kGsoTcpV4);  // a + b
  EXPECT_EQ(got.outs[0].second.size(), a.size() + 1000);
  EXPECT_EQ(got.outs[1].second, gap);  // alone: unchanged, no offload flags
  EXPECT_EQ(got.outs[1].first, VnetHdr{});
  EXPECT_EQ(got.outs[2].second, other_ack);  // flushed by the SYN of the same flow
  EXPECT_EQ(got.outs[3].second, syn);
}

TEST(Coalescer, ShortOrPushSegmentEndsARun) {
  Flow f;
  Coalescer c;
  Collected got;
  // The coalescer references the packets' bytes until it emits them: they must outlive that.
  const std::vector<Bytes> pkts = {
      tcp_packet(f, 0, 1000),    tcp_packet(f, 1000, 400),         // shorter: last of this run
      tcp_packet(f, 1400, 1000), tcp_packet(f, 2400, 1000, 0x18),  // PSH: last of the next run
      tcp_packet(f, 3400, 1000),
  };
  for (const auto& p : pkts) c.add(p, got);
  c.flush(got);
  ASSERT_EQ(got.outs.size(), 3u);
  EXPECT_EQ(got.outs[0].second.size(), 52 + 1400u);
  EXPECT_EQ(got.outs[1].second.size(), 52 + 2000u);
  EXPECT_EQ(got.outs[2].second.size(), 52 + 1000u);
}

// Property: whatever mix of flows, sizes and flags arrives, every payload byte leaves exactly
// once, in order within each flow, and no merged packet exceeds the IP length limit.
TEST(Coalescer, ConservesBytesAndPerFlowOrderForRandomTraffic) {
  std::mt19937 rng(42);
  for (int round = 0; round < 50; ++round) {
    Coalescer c;
    Collected got;
    std::map<uint16_t, uint32_t> next;  // sport -> next seq
    std::map<uint16_t, Bytes> sent;
    for (int i = 0; i < 400; ++i) {
      Flow f;
      f.v6 = rng() % 2;
      f.sport = uint16_t(1000 + (f.v6 ? 100 : 0) + rng() % 12);  // more flows than slots
      const size_t len = rng() % 4 == 0 ? rng() % 1400 : 1348;
      const uint8_t flags = rng() % 10 == 0 ? 0x18 : 0x10;
      const uint32_t seq = next[f.sport];
      next[f.sport] = seq + uint32_t(len);
      auto p = tcp_packet(f, seq, len, flags);
      auto& s = sent[f.sport];
      s.insert(s.end(), p.end() - long(len), p.end());
      static std::vector<Bytes> keep;  // the coalescer references bytes until flush
      keep.push_back(std::move(p));
      c.add(keep.back(), got);
      if (rng() % 50 == 0) c.flush(got);
    }
    c.flush(got);
    std::map<uint16_t, Bytes> recv;
    for (const auto& [vh, b] : got.outs) {
      ASSERT_LE(b.size(), Coalescer::kMaxTotal);
      const bool v6 = (b[0] >> 4) == 6;
      const size_t ihl = v6 ? 40 : 20, hdr = ihl + size_t(b[ihl + 12] >> 4) * 4;
      auto& r = recv[load16(&b[ihl])];
      r.insert(r.end(), b.begin() + long(hdr), b.end());
    }
    EXPECT_EQ(recv, sent) << round;
  }
}

}  // namespace
}  // namespace torii::tunnel::offload
