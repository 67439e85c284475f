// Anti-replay window of the tunnel data channel (A9), see replay_window.hpp.
//
// Unlike RFC 6479, which clears whole 64-bit blocks when the window slides (and so tracks one
// block less than its bitmap), this clears exactly the slots of the counters skipped over, so
// all kSize bits are usable and the window is exactly kSize counters wide.
#include "core/tunnel/replay_window.hpp"

#include <algorithm>

namespace torii::tunnel {

bool ReplayWindow::check(uint64_t counter) const noexcept {
  if (counter == kRejectCounter) return false;
  if (counter >= next_) return true;          // new highest
  if (next_ - counter > kSize) return false;  // highest - counter >= kSize: too old
  const uint64_t slot = counter % kSize;
  return !(bits_[slot / kWordBits] & (uint64_t(1) << (slot % kWordBits)));
}

bool ReplayWindow::accept(uint64_t counter) noexcept {
  if (!check(counter)) return false;
  if (counter >= next_) {
    if (counter - next_ >= kSize)
      bits_.fill(0);  // far jump: every tracked counter falls out of the window
    else
      clear_range(next_, counter);
    next_ = counter + 1;  // counter < UINT64_MAX, no overflow
  }
  const uint64_t slot = counter % kSize;
  bits_[slot / kWordBits] |= uint64_t(1) << (slot % kWordBits);
  return true;
}

void ReplayWindow::clear_range(uint64_t from, uint64_t to) noexcept {
  uint64_t n = to - from + 1;  // 1..kSize slots, starting at from % kSize, wrapping around
  uint64_t slot = from % kSize;
  while (n > 0) {
    const uint64_t bit = slot % kWordBits;
    const uint64_t take = std::min(n, kWordBits - bit);
    const uint64_t mask = take == kWordBits ? ~uint64_t(0) : ((uint64_t(1) << take) - 1) << bit;
    bits_[slot / kWordBits] &= ~mask;
    n -= take;
    slot = (slot + take) % kSize;
  }
}

void ReplayWindow::reset() noexcept {
  next_ = 0;
  bits_.fill(0);
}

}  // namespace torii::tunnel
