// D1 failure limiter: window, lockout, expiry, bounded memory.
#include "core/server/failure_limiter.hpp"

#include <gtest/gtest.h>

namespace torii::server {
namespace {

using namespace std::chrono_literals;

TEST(FailureLimiter, LocksAfterThresholdWithinWindowAndExpires) {
  FailureLimiter l({3, 60s, 300s, 100});
  auto t = instant_from_ms(0);
  EXPECT_FALSE(l.record_failure("a", t));
  EXPECT_FALSE(l.record_failure("a", t + 1s));
  EXPECT_FALSE(l.locked("a", t + 2s));
  EXPECT_TRUE(l.record_failure("a", t + 2s));  // third: lockout starts
  EXPECT_TRUE(l.locked("a", t + 3s));
  EXPECT_FALSE(l.locked("b", t + 3s));
  EXPECT_FALSE(l.record_failure("a", t + 10s));  // already locked: not extended
  EXPECT_TRUE(l.locked("a", t + 301s));
  EXPECT_FALSE(l.locked("a", t + 302s));
}

TEST(FailureLimiter, WindowResets) {
  FailureLimiter l({3, 60s, 300s, 100});
  auto t = instant_from_ms(0);
  l.record_failure("a", t);
  l.record_failure("a", t + 1s);
  EXPECT_FALSE(l.record_failure("a", t + 61s));  // new window: count 1
  EXPECT_FALSE(l.locked("a", t + 62s));
}

TEST(FailureLimiter, MemoryIsBounded) {
  FailureLimiter l({3, 60s, 300s, 50});
  auto t = instant_from_ms(0);
  for (int i = 0; i < 1000; ++i)
    l.record_failure("k" + std::to_string(i), t + std::chrono::milliseconds(i));
  EXPECT_LE(l.size(), 50u);
}

}  // namespace
}  // namespace torii::server
