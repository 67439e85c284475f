// Fixed keys of the tunnel_packet fuzz target (A9), shared with the test that writes its seed
// corpus (fuzz/corpus/tunnel_packet), so the corpus holds packets that really authenticate.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

namespace torii::tunnel::fuzz_fixture {

template <size_t N>
constexpr std::array<uint8_t, N> sequence(uint8_t first) {
  std::array<uint8_t, N> a{};
  for (size_t i = 0; i < N; ++i) a[i] = uint8_t(first + i);
  return a;
}

// Packets of the initiator (sends with bytes 0..31) are opened by the fuzz target's responder.
inline constexpr std::array<uint8_t, 64> kExported = sequence<64>(0);
inline constexpr uint32_t kResponderIndex = 0x00000BB0;  // written by the initiator
inline constexpr uint32_t kInitiatorIndex = 0x00000AA0;  // written by the responder
inline constexpr std::array<uint8_t, 32> kPunchKey = sequence<32>(0x50);
inline constexpr std::array<uint8_t, 32> kServerSecret = sequence<32>(0x20);
inline constexpr uint64_t kTunnelId = 0x0102030405060708ull;

}  // namespace torii::tunnel::fuzz_fixture
