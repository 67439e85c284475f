// Benchmarks of the tunnel data channel (A9): seal and open, AES-256-GCM and ChaCha20-Poly1305,
// at 64, 512, 1400 and 8192 bytes of plaintext, one packet per iteration on one core.
// Reports plaintext bytes/s and packets/s (items). Reproduce with:
//   ninja -C build torii_core_bench && ./build/core/torii_core_bench --benchmark_filter=Tunnel
#include <benchmark/benchmark.h>

#include <vector>

#include "core/tunnel/data_channel.hpp"

namespace torii::tunnel {
namespace {

constexpr std::array<uint8_t, kExportedKeySize> kExported = [] {
  std::array<uint8_t, kExportedKeySize> a{};
  for (size_t i = 0; i < a.size(); ++i) a[i] = uint8_t(i * 7 + 1);
  return a;
}();

void report(benchmark::State& state, size_t n) {
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(n));
  state.SetItemsProcessed(int64_t(state.iterations()));
}

template <Cipher C>
void BM_TunnelSeal(benchmark::State& state) {
  const size_t n = size_t(state.range(0));
  DataChannel tx(C, kExported, true, 1, instant_from_ms(0));
  std::vector<uint8_t> pt(n, 0xA5), out(n + kOverhead);
  const Instant now = instant_from_ms(1);
  for (auto _ : state) {
    const size_t len = tx.seal(now, pt, out.data());
    benchmark::DoNotOptimize(len);
    benchmark::ClobberMemory();
  }
  report(state, n);
}

// Opening needs a fresh counter each time, so a batch of packets is sealed up front and a new
// receiver opens it again each round (its setup, outside the timing, is amortised over the
// batch). Output goes to a separate buffer so the batch stays intact.
template <Cipher C>
void BM_TunnelOpen(benchmark::State& state) {
  const size_t n = size_t(state.range(0));
  const size_t batch = std::max<size_t>(256, (4u << 20) / (n + kOverhead));
  DataChannel tx(C, kExported, true, 1, instant_from_ms(0));
  std::vector<uint8_t> pt(n, 0x5A), packets(batch * (n + kOverhead)), out(n + kOverhead);
  const Instant now = instant_from_ms(1);
  for (size_t i = 0; i < batch; ++i) tx.seal(now, pt, packets.data() + i * (n + kOverhead));
  std::optional<DataChannel> rx;
  size_t i = batch;
  for (auto _ : state) {
    if (i == batch) {
      state.PauseTiming();
      rx.emplace(C, kExported, false, 2, instant_from_ms(0));
      i = 0;
      state.ResumeTiming();
    }
    const auto got =
        rx->open(now, std::span(packets.data() + i++ * (n + kOverhead), n + kOverhead), out.data());
    if (!got) state.SkipWithError("open failed");
    benchmark::DoNotOptimize(got);
    benchmark::ClobberMemory();
  }
  report(state, n);
}

#define TUNNEL_SIZES Arg(64)->Arg(512)->Arg(1400)->Arg(8192)
BENCHMARK(BM_TunnelSeal<Cipher::aes_256_gcm>)->TUNNEL_SIZES;
BENCHMARK(BM_TunnelOpen<Cipher::aes_256_gcm>)->TUNNEL_SIZES;
BENCHMARK(BM_TunnelSeal<Cipher::chacha20_poly1305>)->TUNNEL_SIZES;
BENCHMARK(BM_TunnelOpen<Cipher::chacha20_poly1305>)->TUNNEL_SIZES;

}  // namespace
}  // namespace torii::tunnel
