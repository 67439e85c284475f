// Tests for the tunnel anti-replay window (A9): a table of (counter, accepted?) rows run in
// order on one window, as in WireGuard's selftest, plus loops over whole windows and a
// randomised comparison with a set-based reference model.
#include "core/tunnel/replay_window.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>
#include <set>
#include <vector>

namespace torii::tunnel {
namespace {

constexpr uint64_t W = ReplayWindow::kSize;
constexpr uint64_t kMax = UINT64_MAX;

struct Row {
  enum Op { accept, reset } op;
  uint64_t counter;
  bool expected;
  const char* why;
};
Row T(uint64_t c, bool e, const char* why = "") {
  return {Row::accept, c, e, why};
}
Row Reset() {
  return {Row::reset, 0, true, "reset"};
}

TEST(ReplayWindow, Table) {
  const std::vector<Row> rows = {
      T(0, true, "first packet 0"),
      T(1, true, "in order"),
      T(1, false, "duplicate"),
      T(0, false, "duplicate of the first"),
      T(9, true, "small jump ahead"),
      T(8, true, "reordered"),
      T(7, true, "reordered"),
      T(7, false, "duplicate of a reordered one"),
      T(10, true, "in order again"),
      T(W, true, "highest = kSize"),
      T(0, false, "0 == highest - kSize: just outside"),
      T(1, false, "1 inside, already seen"),
      T(2, true, "2 == highest - kSize + 2, unseen"),
      T(W - 1, true, "reordered below highest"),
      T(W + 1, true, "advance by one: 1 leaves the window"),
      T(1, false, "now outside"),
      T(3, true, "highest - kSize + 2, unseen"),
      Reset(),
      T(5000, true, "first packet far from 0"),
      T(5000 - W + 1, true, "just inside: highest - kSize + 1"),
      T(5000 - W, false, "just outside: highest - kSize"),
      T(5000 - W + 1, false, "duplicate at the edge"),
      T(4999, true, "reordered"),
      T(5001, true, "in order"),
      T(5001 - W + 1, true, "new lower edge, unseen"),
      T(5001 - W, false, "just outside after sliding by one"),
      T(5001 + W, true, "jump by exactly kSize clears everything"),
      T(5001, false, "highest - kSize: outside"),
      T(5002, true, "highest - kSize + 1: inside, its slot cleared"),
      T(4999 + W, true, "slot of 4999 (seen before the jump) was cleared"),
      T(5000 + W, true, "slot of 5000 was cleared"),
      T(5001 + W, false, "duplicate of highest"),
      T(1'000'000'000, true, "far jump ahead"),
      T(5002, false, "far below"),
      T(1'000'000'000 - 1, true, "slot reused from before the far jump"),
      Reset(),
      T(kMax, false, "UINT64_MAX is never a valid counter"),
      T(kMax - 1, true, "largest usable counter"),
      T(kMax - 1, false, "duplicate"),
      T(kMax, false, "still refused above highest"),
      T(kMax - 1 - (W - 1), true, "just inside at the top of the range"),
      T(kMax - 1 - W, false, "just outside at the top of the range"),
      T(0, false, "far below"),
      Reset(),
      T(kMax, false, "refused on an empty window too"),
      T(W - 1, true, "first packet inside the first window"),
      T(0, true, "0 is highest - kSize + 1"),
      T(W, true, "advance"),
      T(0, false, "0 now outside"),
      Reset(),
      T(0, true, "reset forgets everything"),
  };
  ReplayWindow w;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (r.op == Row::reset) {
      w.reset();
      EXPECT_TRUE(w.empty());
      continue;
    }
    const bool would = w.check(r.counter);
    EXPECT_EQ(would, r.expected) << "row " << i << " check(" << r.counter << "): " << r.why;
    EXPECT_EQ(w.accept(r.counter), r.expected)
        << "row " << i << " accept(" << r.counter << "): " << r.why;
    EXPECT_FALSE(w.check(r.counter)) << "row " << i << ": accepted counters are recorded";
  }
}

TEST(ReplayWindow, HighestAndEmpty) {
  ReplayWindow w;
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.highest(), 0u);
  EXPECT_TRUE(w.accept(0));
  EXPECT_FALSE(w.empty());
  EXPECT_EQ(w.highest(), 0u);
  EXPECT_TRUE(w.accept(100));
  EXPECT_TRUE(w.accept(50));
  EXPECT_EQ(w.highest(), 100u);
  w.reset();
  EXPECT_TRUE(w.empty());
}

TEST(ReplayWindow, WholeWindowThenPartialSlide) {
  ReplayWindow w;
  for (uint64_t c = 0; c < W; ++c) ASSERT_TRUE(w.accept(c)) << c;
  for (uint64_t c = 0; c < W; ++c) ASSERT_FALSE(w.accept(c)) << c;
  // Slide by 101: slots of 0..100 are reused for 2048..2148.
  ASSERT_TRUE(w.accept(W + 100));
  for (uint64_t c = 0; c <= 100; ++c) EXPECT_FALSE(w.check(c)) << c;       // outside
  for (uint64_t c = 101; c < W; ++c) EXPECT_FALSE(w.check(c)) << c;        // seen
  for (uint64_t c = W; c < W + 100; ++c) EXPECT_TRUE(w.accept(c)) << c;    // unseen
  for (uint64_t c = W; c <= W + 100; ++c) EXPECT_FALSE(w.accept(c)) << c;  // now seen
}

TEST(ReplayWindow, FarJumpClearsBitmap) {
  ReplayWindow w;
  for (uint64_t c = 0; c < W; ++c) ASSERT_TRUE(w.accept(c));
  const uint64_t top = 1ull << 40;
  ASSERT_TRUE(w.accept(top));
  for (uint64_t c = top - W + 1; c < top; ++c) EXPECT_TRUE(w.accept(c)) << c;
  EXPECT_FALSE(w.accept(top - W));
}

TEST(ReplayWindow, ReorderedBurstAcceptedOnce) {
  ReplayWindow w;
  std::vector<uint64_t> burst;
  for (uint64_t c = 10'000; c < 10'000 + W; ++c) burst.push_back(c);
  std::mt19937_64 rng(7);
  std::shuffle(burst.begin(), burst.end(), rng);
  // The highest first, so every other counter of the burst is inside the window.
  std::iter_swap(burst.begin(), std::max_element(burst.begin(), burst.end()));
  for (uint64_t c : burst) EXPECT_TRUE(w.accept(c)) << c;
  for (uint64_t c : burst) EXPECT_FALSE(w.accept(c)) << c;
}

// Reference model: a set of accepted counters and the window rule written out directly.
TEST(ReplayWindow, MatchesReferenceModel) {
  std::mt19937_64 rng(1234);
  for (int run = 0; run < 20; ++run) {
    ReplayWindow w;
    std::set<uint64_t> seen;
    std::optional<uint64_t> highest;
    uint64_t base = run % 2 ? kMax - 10 * W : uint64_t(run) * 1000;
    for (int i = 0; i < 20'000; ++i) {
      // Mostly near the highest counter, sometimes far ahead or far behind.
      const uint64_t h = highest.value_or(base);
      uint64_t c;
      switch (rng() % 16) {
        case 0:
          c = h + (rng() % (4 * W));
          break;
        case 1:
          c = h > 3 * W ? h - 3 * W + rng() % W : rng() % (W + 1);
          break;
        default:
          c = h + 8 - std::min<uint64_t>(h, rng() % (W + 64));
      }
      if (c > kMax - 2 * W && run % 2 == 0) c = kMax - (rng() % 3);
      const bool expect =
          c != kMax && !seen.count(c) && (!highest || c > *highest || *highest - c < W);
      ASSERT_EQ(w.check(c), expect) << "run " << run << " i " << i << " c " << c;
      ASSERT_EQ(w.accept(c), expect) << "run " << run << " i " << i << " c " << c;
      if (expect) {
        seen.insert(c);
        if (!highest || c > *highest) highest = c;
      }
      ASSERT_EQ(w.highest(), highest.value_or(0));
    }
  }
}

}  // namespace
}  // namespace torii::tunnel
