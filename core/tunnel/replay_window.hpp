// Anti-replay window of the tunnel data channel (A9): a 2048-bit ring bitmap over 64-bit
// counters in the style of RFC 6479. Accepts each counter at most once and refuses counters
// kSize or more below the highest one accepted. Fixed size, no allocation, noexcept.
#pragma once
#include <array>
#include <cstdint>

namespace torii::tunnel {

class ReplayWindow {
 public:
  static constexpr uint64_t kSize = 2048;  // counters highest-kSize+1 .. highest are tracked
  // The sender never uses this counter (it rekeys first), so it is always refused; that also
  // keeps highest() + 1 from overflowing.
  static constexpr uint64_t kRejectCounter = UINT64_MAX;

  // Would accept(counter) succeed? Does not change the window.
  bool check(uint64_t counter) const noexcept;
  // Checks and records. Call only for authenticated packets, or a forged counter far ahead
  // would slide the window past every genuine packet.
  bool accept(uint64_t counter) noexcept;
  // Highest counter accepted so far; 0 while nothing was accepted (see empty()).
  uint64_t highest() const noexcept { return next_ == 0 ? 0 : next_ - 1; }
  bool empty() const noexcept { return next_ == 0; }
  void reset() noexcept;

 private:
  static constexpr uint64_t kWordBits = 64;
  static constexpr uint64_t kWords = kSize / kWordBits;
  static_assert((kSize & (kSize - 1)) == 0 && kSize % kWordBits == 0);

  // Clears the bits of counters from..to (inclusive, to - from < kSize): their slots held
  // counters that have now fallen out of the window.
  void clear_range(uint64_t from, uint64_t to) noexcept;

  uint64_t next_ = 0;                    // highest accepted + 1; 0 = nothing accepted yet
  std::array<uint64_t, kWords> bits_{};  // bit (c % kSize) set = counter c seen
};

}  // namespace torii::tunnel
