// Time as the I/O-free core sees it: a monotonic instant handed in by the caller, never read
// from a clock inside the core (style.md 1), so tests drive it with simulated time.
#pragma once
#include <chrono>
#include <cstdint>

namespace torii {

using Duration = std::chrono::milliseconds;
// Milliseconds on a monotonic clock whose origin only the caller knows.
using Instant = std::chrono::time_point<std::chrono::steady_clock, Duration>;

inline Instant instant_from_ms(int64_t ms) {
  return Instant(Duration(ms));
}
inline int64_t to_ms(Instant t) {
  return t.time_since_epoch().count();
}

// Wall-clock time (Unix milliseconds) for records that outlive a process (store, audit log).
using UnixMs = int64_t;

}  // namespace torii
