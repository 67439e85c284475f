// Segmentation and coalescing offloads (see offload.hpp). A9, issue 4.
#include "core/tunnel/offload.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include "core/tunnel/packet.hpp"

namespace torii::tunnel::offload {

using wire::load16;
using wire::load32;
using wire::store16;
using wire::store32;

namespace {

constexpr uint8_t kFin = 0x01, kPsh = 0x08, kAck = 0x10, kCwr = 0x80;
constexpr uint8_t kProtoTcp = 6;

uint16_t le16(const uint8_t* p) {
  return uint16_t(p[0] | (p[1] << 8));
}
void put_le16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}

// Sum of the pseudo header (RFC 793 / RFC 8200 8.1) of an IP packet whose header starts at ip.
uint32_t pseudo_sum(const uint8_t* ip, bool v6, size_t l4_len, uint8_t proto) {
  std::array<uint8_t, 40> ph{};
  size_t n;
  if (v6) {
    std::memcpy(ph.data(), ip + 8, 32);
    store32(ph.data() + 32, uint32_t(l4_len));
    ph[39] = proto;
    n = 40;
  } else {
    std::memcpy(ph.data(), ip + 12, 8);
    ph[9] = proto;
    store16(ph.data() + 10, uint16_t(l4_len));
    n = 12;
  }
  return checksum_add(0, ph.data(), n);
}

void ipv4_header_checksum(uint8_t* ip, size_t ihl) {
  store16(ip + 10, 0);
  store16(ip + 10, uint16_t(~checksum_fold(checksum_add(0, ip, ihl))));
}

}  // namespace

VnetHdr load_vnet(const uint8_t* p) noexcept {
  return {p[0], p[1], le16(p + 2), le16(p + 4), le16(p + 6), le16(p + 8)};
}

void store_vnet(const VnetHdr& h, uint8_t* p) noexcept {
  p[0] = h.flags;
  p[1] = h.gso_type;
  put_le16(p + 2, h.hdr_len);
  put_le16(p + 4, h.gso_size);
  put_le16(p + 6, h.csum_start);
  put_le16(p + 8, h.csum_offset);
}

// One's-complement sums do not depend on byte order if the result is swapped at the end
// (RFC 1071 2(B)), so words are added in native order, eight bytes at a time, and folded into
// the 32-bit accumulator here (a carry out of 32 bits is added back in).
uint32_t checksum_add(uint32_t sum, const uint8_t* p, size_t n) noexcept {
  uint64_t s = 0;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    s += (w & 0xffffffffu) + (w >> 32);
    p += 8;
    n -= 8;
  }
  if (n) {
    uint8_t tail[8] = {};
    std::memcpy(tail, p, n);
    uint64_t w;
    std::memcpy(&w, tail, 8);
    s += (w & 0xffffffffu) + (w >> 32);
  }
  // Native-order partial sum: fold to 16 bits, then to big-endian value order.
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffffffu) + (s >> 32);
  uint32_t x = uint32_t(s);
  x = (x & 0xffff) + (x >> 16);
  x = (x & 0xffff) + (x >> 16);
  uint16_t v = uint16_t(x);
  if constexpr (std::endian::native == std::endian::little) v = uint16_t((v >> 8) | (v << 8));
  uint32_t r = sum + v;
  return r;
}

uint16_t checksum_fold(uint32_t sum) noexcept {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(sum);
}

// ---------------------------------------------------------------------------------------------
// Segmenter

bool Segmenter::reset(const VnetHdr& h, std::span<const uint8_t> packet) noexcept {
  pkt_ = packet;
  h_ = h;
  count_ = 0;
  gso_ = false;
  if (packet.empty()) return false;
  const uint8_t gso = h.gso_type & uint8_t(~kGsoEcn);
  if (gso == kGsoNone) {
    if (h.flags & kNeedsCsum) {
      if (size_t(h.csum_start) + h.csum_offset + 2 > packet.size()) return false;
    }
    count_ = 1;
    return true;
  }
  if (gso != kGsoTcpV4 && gso != kGsoTcpV6) return false;
  v6_ = gso == kGsoTcpV6;
  const unsigned version = packet[0] >> 4;
  if (v6_ ? version != 6 : version != 4) return false;
  if (v6_) {
    if (packet.size() < 40 || packet[6] != kProtoTcp) return false;  // no extension headers
    ip_len_ = 40;
  } else {
    ip_len_ = size_t(packet[0] & 0x0f) * 4;
    if (ip_len_ < 20 || packet.size() < ip_len_ || packet[9] != kProtoTcp) return false;
  }
  if (packet.size() < ip_len_ + 20) return false;
  const size_t tcp_len = size_t(packet[ip_len_ + 12] >> 4) * 4;
  if (tcp_len < 20) return false;
  hdr_len_ = ip_len_ + tcp_len;
  if (packet.size() <= hdr_len_ || h.gso_size == 0) return false;
  payload_ = packet.size() - hdr_len_;
  const size_t n = (payload_ + h.gso_size - 1) / h.gso_size;
  if (n > kMaxSegments) return false;
  count_ = n;
  gso_ = true;  // even a single segment gets its headers and checksum recomputed
  return true;
}

size_t Segmenter::size(size_t i) const noexcept {
  if (!gso_) return pkt_.size();
  const size_t mss = h_.gso_size;
  return hdr_len_ + std::min(mss, payload_ - i * mss);
}

size_t Segmenter::write(size_t i, uint8_t* out) const noexcept {
  if (!gso_) {
    std::memcpy(out, pkt_.data(), pkt_.size());
    if (h_.flags & kNeedsCsum) {
      // The field holds the pseudo-header sum; sum from csum_start over the rest.
      const size_t start = h_.csum_start;
      uint8_t* field = out + start + h_.csum_offset;
      uint16_t c = uint16_t(~checksum_fold(checksum_add(0, out + start, pkt_.size() - start)));
      if (c == 0 && h_.csum_offset == 6) c = 0xffff;  // UDP: zero means "no checksum"
      store16(field, c);
    }
    return pkt_.size();
  }
  const size_t mss = h_.gso_size;
  const size_t len = std::min(mss, payload_ - i * mss);
  const bool last = i + 1 == count_;
  std::memcpy(out, pkt_.data(), hdr_len_);
  std::memcpy(out + hdr_len_, pkt_.data() + hdr_len_ + i * mss, len);
  const size_t tcp_total = hdr_len_ - ip_len_ + len;
  if (v6_) {
    store16(out + 4, uint16_t(tcp_total));
  } else {
    store16(out + 2, uint16_t(hdr_len_ + len));
    store16(out + 4, uint16_t(load16(pkt_.data() + 4) + i));  // IP ID
    ipv4_header_checksum(out, ip_len_);
  }
  uint8_t* tcp = out + ip_len_;
  store32(tcp + 4, uint32_t(load32(pkt_.data() + ip_len_ + 4) + i * mss));
  if (!last) tcp[13] &= uint8_t(~(kFin | kPsh));
  if (i != 0) tcp[13] &= uint8_t(~kCwr);
  store16(tcp + 16, 0);
  uint32_t sum = pseudo_sum(out, v6_, tcp_total, kProtoTcp);
  sum = checksum_add(sum, tcp, tcp_total);
  store16(tcp + 16, uint16_t(~checksum_fold(sum)));
  return hdr_len_ + len;
}

// ---------------------------------------------------------------------------------------------
// Coalescer

namespace {

struct TcpView {
  bool v6 = false;
  size_t ip_len = 0, tcp_len = 0, payload = 0;
  uint8_t flags = 0;
  uint32_t seq = 0;
};

// A TCP packet over IPv4 (no fragment) or IPv6 (no extension header) whose lengths agree.
bool parse_tcp(std::span<const uint8_t> p, TcpView& v) {
  if (p.size() < 40) return false;
  const unsigned version = p[0] >> 4;
  if (version == 4) {
    v.v6 = false;
    v.ip_len = size_t(p[0] & 0x0f) * 4;
    if (v.ip_len < 20 || p[9] != kProtoTcp || load16(p.data() + 2) != p.size()) return false;
    if (load16(p.data() + 6) & 0x3fff) return false;  // MF or a fragment offset
  } else if (version == 6) {
    v.v6 = true;
    v.ip_len = 40;
    if (p[6] != kProtoTcp || size_t(load16(p.data() + 4)) + 40 != p.size()) return false;
  } else {
    return false;
  }
  if (p.size() < v.ip_len + 20) return false;
  v.tcp_len = size_t(p[v.ip_len + 12] >> 4) * 4;
  if (v.tcp_len < 20 || p.size() < v.ip_len + v.tcp_len) return false;
  v.payload = p.size() - v.ip_len - v.tcp_len;
  v.flags = p[v.ip_len + 13];
  v.seq = load32(p.data() + v.ip_len + 4);
  return true;
}

// Same addresses and ports (the flow, one direction).
bool same_flow(const uint8_t* a, size_t a_ip_len, const uint8_t* b, const TcpView& v) {
  if (v.v6) return std::memcmp(a + 8, b + 8, 32) == 0 && std::memcmp(a + 40, b + 40, 4) == 0;
  return std::memcmp(a + 12, b + 12, 8) == 0 && std::memcmp(a + a_ip_len, b + v.ip_len, 4) == 0;
}

}  // namespace

void Coalescer::add_impl(std::span<const uint8_t> ip, void* ctx, EmitFn fn) noexcept {
  ++stats_.packets_in;
  auto emit_raw = [&] {
    ++stats_.emitted;
    fn(ctx, Output{VnetHdr{}, ip, {}});
  };
  TcpView v;
  if (!parse_tcp(ip, v)) return emit_raw();
  const size_t hdr = v.ip_len + v.tcp_len;
  Flow* match = nullptr;
  for (auto& f : flows_)
    if (f.used && f.v6 == v.v6 && same_flow(f.head.data(), f.ip_len, ip.data(), v)) {
      match = &f;
      break;
    }
  const bool mergeable =
      v.payload > 0 && (v.flags & kAck) && (v.flags & ~(kAck | kPsh)) == 0 && hdr <= kMaxHead;
  if (match && mergeable) {
    Flow& f = *match;
    const uint8_t* a = f.head.data();
    const uint8_t* b = ip.data();
    bool ok = !f.closed && f.ip_len == v.ip_len && f.tcp_len == v.tcp_len && v.seq == f.next_seq &&
              v.payload <= f.mss && f.n < kMaxPieces && f.total + v.payload <= kMaxTotal &&
              std::memcmp(a + f.ip_len + 8, b + v.ip_len + 8, 4) == 0 &&               // ack
              std::memcmp(a + f.ip_len + 20, b + v.ip_len + 20, v.tcp_len - 20) == 0;  // options
    if (ok && v.v6)
      ok = std::memcmp(a, b, 4) == 0 && a[7] == b[7];  // class, flow label; hop limit
    else if (ok)
      ok = a[1] == b[1] && a[8] == b[8] && a[6] == b[6] && v.ip_len == 20;  // TOS, TTL, DF
    if (ok) {
      f.pieces[f.n++] = ip.subspan(hdr);
      f.total += v.payload;
      f.next_seq += uint32_t(v.payload);
      uint8_t* tcp = f.head.data() + f.ip_len;
      std::memcpy(tcp + 14, b + v.ip_len + 14, 2);  // the latest window
      if (v.flags & kPsh) tcp[13] |= kPsh;
      if (v.payload < f.mss || (v.flags & kPsh)) f.closed = true;
      ++stats_.merged;
      return;
    }
  }
  if (match) emit_flow(*match, ctx, fn);  // keep this flow's order
  if (!mergeable || (!v.v6 && v.ip_len != 20)) return emit_raw();
  Flow* slot = nullptr;
  for (auto& f : flows_)
    if (!f.used) {
      slot = &f;
      break;
    }
  if (!slot) {
    slot = &*std::min_element(flows_.begin(), flows_.end(),
                              [](const Flow& x, const Flow& y) { return x.age < y.age; });
    emit_flow(*slot, ctx, fn);
  }
  Flow& f = *slot;
  f.used = true;
  f.v6 = v.v6;
  f.age = ++clock_;
  f.ip_len = v.ip_len;
  f.tcp_len = v.tcp_len;
  std::memcpy(f.head.data(), ip.data(), hdr);
  f.pieces[0] = ip.subspan(hdr);
  f.n = 1;
  f.mss = v.payload;
  f.total = ip.size();
  f.next_seq = v.seq + uint32_t(v.payload);
  f.closed = (v.flags & kPsh) != 0;
}

void Coalescer::emit_flow(Flow& f, void* ctx, EmitFn fn) noexcept {
  f.used = false;
  ++stats_.emitted;
  const size_t hdr = f.ip_len + f.tcp_len;
  uint8_t* h = f.head.data();
  if (f.n == 1) {  // unchanged: its own checksums are still right
    fn(ctx, Output{VnetHdr{}, {h, hdr}, {f.pieces.data(), 1}});
    return;
  }
  const size_t tcp_total = f.total - f.ip_len;
  if (f.v6) {
    store16(h + 4, uint16_t(tcp_total));
  } else {
    store16(h + 2, uint16_t(f.total));
    ipv4_header_checksum(h, f.ip_len);
  }
  // Partial checksum: the kernel (or nobody, for local delivery) completes it. The payload was
  // authenticated by the tunnel's AEAD.
  store16(h + f.ip_len + 16, checksum_fold(pseudo_sum(h, f.v6, tcp_total, kProtoTcp)));
  VnetHdr vh;
  vh.flags = kNeedsCsum;
  vh.gso_type = f.v6 ? kGsoTcpV6 : kGsoTcpV4;
  vh.hdr_len = uint16_t(hdr);
  vh.gso_size = uint16_t(f.mss);
  vh.csum_start = uint16_t(f.ip_len);
  vh.csum_offset = 16;
  fn(ctx, Output{vh, {h, hdr}, {f.pieces.data(), f.n}});
}

void Coalescer::flush_impl(void* ctx, EmitFn fn) noexcept {
  for (auto& f : flows_)
    if (f.used) emit_flow(f, ctx, fn);
}

}  // namespace torii::tunnel::offload
