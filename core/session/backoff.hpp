// Jittered exponential reconnect backoff (A5): delay n is drawn uniformly in [d/2, d] with
// d = min(max, initial * 2^n). The random source is seeded by the caller so tests are exact.
#pragma once
#include <cstdint>
#include <random>

#include "core/session/limits.hpp"

namespace torii::session {

class Backoff {
 public:
  Backoff(uint64_t seed, Duration initial = limits::kBackoffInitial,
          Duration max = limits::kBackoffMax)
      : rng_(seed), initial_(initial), max_(max) {}

  Duration next() {
    Duration d = initial_;
    for (uint32_t i = 0; i < attempt_ && d < max_; ++i) d *= 2;
    if (d > max_) d = max_;
    ++attempt_;
    std::uniform_int_distribution<int64_t> pick(d.count() / 2, d.count());
    return Duration(pick(rng_));
  }
  void reset() { attempt_ = 0; }
  uint32_t attempts() const { return attempt_; }

 private:
  std::mt19937_64 rng_;
  Duration initial_;
  Duration max_;
  uint32_t attempt_ = 0;
};

}  // namespace torii::session
