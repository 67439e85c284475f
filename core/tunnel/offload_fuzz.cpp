// libFuzzer target (issue 4, A9): the offload codecs on arbitrary bytes. The input's first 10
// bytes are a virtio_net_hdr and the rest a packet "from the TUN device" for the Segmenter; then
// the whole input, cut into packets by its own length bytes, is fed to the Coalescer as
// decrypted peer traffic. Checks: segments stay within the sizes announced, the Coalescer emits
// every packet it took exactly once (payload bytes conserved) and never more than kMaxTotal.
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "core/tunnel/offload.hpp"

using namespace torii::tunnel::offload;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void segmenter(std::span<const uint8_t> in) {
  if (in.size() < kVnetHdrSize) return;
  const VnetHdr h = load_vnet(in.data());
  const auto pkt = in.subspan(kVnetHdrSize);
  Segmenter s;
  if (!s.reset(h, pkt)) return;
  check(s.count() >= 1 && s.count() <= Segmenter::kMaxSegments);
  static std::vector<uint8_t> out(70000);
  size_t total = 0;
  for (size_t i = 0; i < s.count(); ++i) {
    const size_t n = s.size(i);
    check(n <= pkt.size());
    check(s.write(i, out.data()) == n);
    total += n;
  }
  check(total <= pkt.size() * Segmenter::kMaxSegments);
}

void coalescer(std::span<const uint8_t> in) {
  Coalescer c;
  size_t in_bytes = 0, out_bytes = 0, taken = 0;
  auto emit = [&](const Coalescer::Output& o) {
    size_t n = o.head.size();
    for (auto p : o.pieces) n += p.size();
    check(n <= Coalescer::kMaxTotal);
    check(o.pieces.size() <= Coalescer::kMaxPieces);
    out_bytes += n;
  };
  // Each packet: 2 length bytes, then that many bytes (clamped to what is left).
  while (in.size() >= 2) {
    size_t n = size_t(in[0]) << 8 | in[1];
    in = in.subspan(2);
    n = std::min(n, in.size());
    c.add(in.first(n), emit);
    in_bytes += n;
    ++taken;
    in = in.subspan(n);
  }
  c.flush(emit);
  check(c.stats().packets_in == taken);
  // Merged packets lose their copies of the headers: never more bytes out than in.
  check(out_bytes <= in_bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  segmenter(in);
  coalescer(in);
  return 0;
}
