// Tests of the DemandEstimate: what a fetch measures, and how it is blended with the past.
#include "sidecar/core/demand_estimate.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

constexpr int64_t kRefreshUs = 250'000;  // R.

// A demand estimate and the clock its fetches are sent by.
struct Key {
  // `tokens` asked, then a fetch `elapsed_us` later.
  void AskThenFetchAfter(uint32_t tokens, int64_t elapsed_us) {
    demand.Ask(tokens);
    clock.AdvanceMicros(elapsed_us);
    demand.OnFetch(clock.NowMicros(), kRefreshUs);
  }

  FakeClock clock;
  DemandEstimate demand;
};

TEST(DemandEstimateTest, NothingIsKnownUntilASecondFetchMeasuresTheTimeBetween) {
  Key key;
  key.AskThenFetchAfter(100, 0);
  EXPECT_EQ(key.demand.per_us(), 0) << "no interval to divide by yet";
  key.AskThenFetchAfter(50, kRefreshUs);
  EXPECT_DOUBLE_EQ(key.demand.per_us(), 50.0 / kRefreshUs) << "only what was asked since";
}

TEST(DemandEstimateTest, AFetchAWholeROrMoreAfterTheLastTakesTheNewDemandOnly) {
  Key key;
  key.AskThenFetchAfter(0, 0);
  key.AskThenFetchAfter(1000, kRefreshUs);
  ASSERT_DOUBLE_EQ(key.demand.per_us(), 1000.0 / kRefreshUs);
  key.AskThenFetchAfter(10, 2 * kRefreshUs);
  EXPECT_DOUBLE_EQ(key.demand.per_us(), 10.0 / (2 * kRefreshUs));
}

TEST(DemandEstimateTest, ShorterIntervalsBlendInProportionToRButAtLeastHalfNew) {
  struct Case {
    int64_t elapsed_us;
    double alpha;  // The new sample's weight.
  };
  for (const Case& c : {Case{kRefreshUs / 10, 0.5}, Case{kRefreshUs / 2, 0.5},
                        Case{kRefreshUs * 3 / 4, 0.75}, Case{kRefreshUs, 1.0}}) {
    SCOPED_TRACE(c.elapsed_us);
    Key key;
    key.AskThenFetchAfter(0, 0);
    key.AskThenFetchAfter(500, kRefreshUs);
    const double before = key.demand.per_us();
    key.AskThenFetchAfter(30, c.elapsed_us);
    const double sample = 30.0 / static_cast<double>(c.elapsed_us);
    EXPECT_DOUBLE_EQ(key.demand.per_us(), before * (1 - c.alpha) + sample * c.alpha);
  }
}

TEST(DemandEstimateTest, AFetchAtTheSameInstantOrAClockStepBackLeavesTheEstimate) {
  Key key;
  key.AskThenFetchAfter(0, 0);
  key.AskThenFetchAfter(100, kRefreshUs);
  const double before = key.demand.per_us();
  key.AskThenFetchAfter(7, 0);
  EXPECT_EQ(key.demand.per_us(), before);
  key.AskThenFetchAfter(9, -1000);
  EXPECT_EQ(key.demand.per_us(), before);
  // Counting restarted at each fetch: only what is asked from here on is measured next.
  key.AskThenFetchAfter(250, kRefreshUs);
  EXPECT_DOUBLE_EQ(key.demand.per_us(), 250.0 / kRefreshUs);
}

}  // namespace
}  // namespace ratelimit
