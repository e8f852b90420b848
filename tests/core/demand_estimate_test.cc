// Tests of the DemandEstimate: what a fetch measures, and how it is blended with the past.
#include "sidecar/core/demand_estimate.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

constexpr int64_t kRefreshUs = 250'000;  // R.

TEST(DemandEstimateTest, NothingIsKnownUntilASecondFetchMeasuresTheTimeBetween) {
  FakeClock clock;
  DemandEstimate demand;
  demand.Ask(100);
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  EXPECT_EQ(demand.per_us(), 0) << "no interval to divide by yet";
  demand.Ask(50);
  clock.AdvanceMicros(kRefreshUs);
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  EXPECT_DOUBLE_EQ(demand.per_us(), 50.0 / kRefreshUs) << "only what was asked since the first";
}

TEST(DemandEstimateTest, AFetchAWholeROrMoreAfterTheLastTakesTheNewDemandOnly) {
  FakeClock clock;
  DemandEstimate demand;
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  demand.Ask(1000);
  clock.AdvanceMicros(kRefreshUs);
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  ASSERT_DOUBLE_EQ(demand.per_us(), 1000.0 / kRefreshUs);
  demand.Ask(10);
  clock.AdvanceMicros(2 * kRefreshUs);
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  EXPECT_DOUBLE_EQ(demand.per_us(), 10.0 / (2 * kRefreshUs));
}

TEST(DemandEstimateTest, ShorterIntervalsBlendInProportionToRButAtLeastHalfNew) {
  struct Case {
    int64_t elapsed_us;
    double alpha;  // The new sample's weight.
  };
  for (const Case& c : {Case{kRefreshUs / 10, 0.5}, Case{kRefreshUs / 2, 0.5},
                        Case{kRefreshUs * 3 / 4, 0.75}, Case{kRefreshUs, 1.0}}) {
    SCOPED_TRACE(c.elapsed_us);
    FakeClock clock;
    DemandEstimate demand;
    demand.OnFetch(clock.NowMicros(), kRefreshUs);
    demand.Ask(500);
    clock.AdvanceMicros(kRefreshUs);
    demand.OnFetch(clock.NowMicros(), kRefreshUs);
    const double before = demand.per_us();
    demand.Ask(30);
    clock.AdvanceMicros(c.elapsed_us);
    demand.OnFetch(clock.NowMicros(), kRefreshUs);
    const double sample = 30.0 / static_cast<double>(c.elapsed_us);
    EXPECT_DOUBLE_EQ(demand.per_us(), before * (1 - c.alpha) + sample * c.alpha);
  }
}

TEST(DemandEstimateTest, AFetchAtTheSameInstantOrAClockStepBackLeavesTheEstimate) {
  FakeClock clock;
  DemandEstimate demand;
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  demand.Ask(100);
  clock.AdvanceMicros(kRefreshUs);
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  const double before = demand.per_us();
  demand.Ask(7);
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  EXPECT_EQ(demand.per_us(), before);
  demand.Ask(9);
  clock.AdvanceMicros(-1000);
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  EXPECT_EQ(demand.per_us(), before);
  // Counting restarted at each fetch: only what is asked from here on is measured next.
  demand.Ask(250);
  clock.AdvanceMicros(kRefreshUs);
  demand.OnFetch(clock.NowMicros(), kRefreshUs);
  EXPECT_DOUBLE_EQ(demand.per_us(), 250.0 / kRefreshUs);
}

}  // namespace
}  // namespace ratelimit
