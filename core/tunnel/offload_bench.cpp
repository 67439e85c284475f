// Benchmarks of the agent's per-packet data path with offloads (issue 4): a TSO segment of 64 KiB
// from TUN cut into MTU-sized packets and sealed in place (what one TUN read costs), and the
// receive side: open in place and coalesce back (what one GRO batch costs). Items are IP
// packets, bytes are TCP payload. Reproduce with:
//   cmake --build --preset release --target torii_core_bench &&
//   ./build/release/core/torii_core_bench --benchmark_filter='Offload|Checksum'
#include <benchmark/benchmark.h>

#include <vector>

#include "core/tunnel/data_channel.hpp"
#include "core/tunnel/offload.hpp"

namespace torii::tunnel {
namespace {

constexpr std::array<uint8_t, kExportedKeySize> kExported = [] {
  std::array<uint8_t, kExportedKeySize> a{};
  for (size_t i = 0; i < a.size(); ++i) a[i] = uint8_t(i * 5 + 3);
  return a;
}();

constexpr size_t kMss = 1360, kHdr = 40;

// An IPv4/TCP segment as TUN hands it over with TSO (checksums left to us).
std::vector<uint8_t> tso_segment(size_t payload) {
  std::vector<uint8_t> p(kHdr + payload, 0x5a);
  p[0] = 0x45;
  p[6] = 0x40;
  p[8] = 64;
  p[9] = 6;
  p[12] = 100, p[15] = 1, p[16] = 100, p[19] = 2;
  p[32] = 5 << 4;
  p[33] = 0x10;
  return p;
}

void BM_OffloadSegmentSeal(benchmark::State& state) {
  const size_t payload = size_t(state.range(0));
  const auto seg_in = tso_segment(payload);
  const offload::VnetHdr vh{offload::kNeedsCsum, offload::kGsoTcpV4, 40, kMss, 20, 16};
  DataChannel tx(Cipher::aes_256_gcm, kExported, true, 1, instant_from_ms(0));
  std::vector<uint8_t> out(128 * 1500);
  offload::Segmenter s;
  size_t packets = 0;
  const Instant now = instant_from_ms(1);
  for (auto _ : state) {
    if (!s.reset(vh, seg_in)) state.SkipWithError("reset");
    uint8_t* p = out.data();
    for (size_t i = 0; i < s.count(); ++i) {
      const size_t n = s.write(i, p + kHeaderSize);
      p += tx.seal(now, {p + kHeaderSize, n}, p);
    }
    packets += s.count();
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(packets));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(payload));
}

void BM_OffloadOpenCoalesce(benchmark::State& state) {
  const size_t payload = size_t(state.range(0));
  offload::Segmenter s;
  s.reset({offload::kNeedsCsum, offload::kGsoTcpV4, 40, kMss, 20, 16}, tso_segment(payload));
  // Many rounds of sealed datagrams (fresh counters each), opened by a fresh receiver per batch.
  const size_t rounds = 64;
  DataChannel tx(Cipher::aes_256_gcm, kExported, true, 1, instant_from_ms(0));
  std::vector<std::vector<uint8_t>> wire;
  const Instant now = instant_from_ms(1);
  std::vector<uint8_t> seg(1500);
  for (size_t r = 0; r < rounds; ++r)
    for (size_t i = 0; i < s.count(); ++i) {
      const size_t n = s.write(i, seg.data());
      // consecutive sequence numbers across rounds are irrelevant here: each round coalesces
      std::vector<uint8_t> d(n + kOverhead);
      d.resize(tx.seal(now, {seg.data(), n}, d.data()));
      wire.push_back(std::move(d));
    }
  std::vector<std::vector<uint8_t>> work = wire;
  std::optional<DataChannel> rx;
  offload::Coalescer c;
  size_t next = wire.size(), packets = 0, written = 0;
  auto emit = [&](const offload::Coalescer::Output& o) { written += o.head.size(); };
  for (auto _ : state) {
    if (next == wire.size()) {
      state.PauseTiming();
      rx.emplace(Cipher::aes_256_gcm, kExported, false, 2, instant_from_ms(0));
      work = wire;
      next = 0;
      state.ResumeTiming();
    }
    for (size_t i = 0; i < s.count(); ++i, ++next) {
      auto& d = work[next];
      auto n = rx->open(now, d, d.data() + kHeaderSize);
      if (!n) state.SkipWithError("open failed");
      c.add({d.data() + kHeaderSize, *n}, emit);
    }
    c.flush(emit);
    packets += s.count();
  }
  benchmark::DoNotOptimize(written);
  state.SetItemsProcessed(int64_t(packets));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(payload));
}

void BM_Checksum(benchmark::State& state) {
  std::vector<uint8_t> b(size_t(state.range(0)), 0x3c);
  for (auto _ : state) benchmark::DoNotOptimize(offload::checksum_add(0, b.data(), b.size()));
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}

BENCHMARK(BM_OffloadSegmentSeal)->Arg(kMss)->Arg(16 * kMss)->Arg(48 * kMss);
BENCHMARK(BM_OffloadOpenCoalesce)->Arg(16 * kMss)->Arg(48 * kMss);
BENCHMARK(BM_Checksum)->Arg(1400);

}  // namespace
}  // namespace torii::tunnel
