// Tests of lease planning: the size of a fetch, when to prefetch, and a denial's jitter range.
#include "sidecar/core/lease_plan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

constexpr int64_t kRefreshUs = 250'000;  // R, of a 1 s ttl.
// 1000 tokens per second: R refills 250 tokens, a lease is at most 125 (limit / 8).
constexpr Policy kPolicy{1000, 1000};

// A demand of `tokens` per R, as two fetches an R apart measure it.
DemandEstimate DemandOf(uint32_t tokens) {
  DemandEstimate demand;
  demand.OnFetch(0, kRefreshUs);
  demand.Ask(tokens);
  demand.OnFetch(kRefreshUs, kRefreshUs);
  return demand;
}

TEST(LeasePlanTest, AFetchAsksForRsDemandCappedAtAnEighthAndAtLeastRsRefill) {
  struct Case {
    const char* what;
    Policy policy;
    uint32_t demand_per_r;
    uint32_t need;
    uint64_t waiting;
    FetchSize size;
  };
  const Case cases[] = {
      {"no demand known: what the check needs", kPolicy, 0, 1, 0, {1, 1}},
      {"R's demand, within the cap", kPolicy, 100, 1, 0, {100, 100}},
      {"waiting checks add what they need", kPolicy, 100, 1, 10, {110, 110}},
      {"capped at an eighth of the bucket", kPolicy, 500, 1, 0, {125, 125}},
      {"a check needing more than the cap", kPolicy, 500, 200, 0, {200, 200}},
      {"need clamped to the limit", kPolicy, 0, 5000, 0, {1000, 1000}},
      {"a slow bucket: the least is R's refill", Policy{1000, 60'000}, 100, 1, 0, {5, 100}},
      {"a tiny bucket: at least a token", Policy{1, 60'000}, 0, 1, 0, {1, 1}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const FetchSize size =
        SizeFetch(c.policy, DemandOf(c.demand_per_r).per_us(), kRefreshUs, c.need, c.waiting);
    EXPECT_EQ(size.min_grant, c.size.min_grant);
    EXPECT_EQ(size.want, c.size.want);
  }
}

// The key's parts as ShouldPrefetch reads them, each set by a test case.
struct Parts {
  LeaseLedger ledger;
  DemandEstimate demand = DemandOf(100);  // A lease would be 100 tokens: prefetch below 50.
  DenialCache denial;
};

bool Prefetch(const Parts& parts, int64_t now) {
  return ShouldPrefetch(kPolicy, parts.ledger, parts.demand, parts.denial, now, kRefreshUs);
}

TEST(LeasePlanTest, APrefetchStartsWhenFewerThanHalfALeaseIsHeld) {
  FakeClock clock;
  Parts parts;
  parts.ledger.Add(51, 51, clock.NowMicros() + 1000, 0);
  EXPECT_FALSE(Prefetch(parts, clock.NowMicros())) << "51 held, half a lease is 50";
  parts.ledger.Spend(1);
  EXPECT_FALSE(Prefetch(parts, clock.NowMicros())) << "50 held is not fewer than 50";
  parts.ledger.Spend(1);
  EXPECT_TRUE(Prefetch(parts, clock.NowMicros()));
}

TEST(LeasePlanTest, NoPrefetchInFlightScarceDeniedOrWithoutADemand) {
  FakeClock clock;
  const int64_t now = clock.NowMicros();
  {
    Parts parts;
    ASSERT_TRUE(Prefetch(parts, now)) << "nothing held, a demand known";
    parts.ledger.set_fetching(true);
    EXPECT_FALSE(Prefetch(parts, now)) << "a fetch is in flight";
  }
  {
    Parts parts;
    parts.ledger.Add(1, 100, now + 1000, 0);
    EXPECT_FALSE(Prefetch(parts, now)) << "the last grant was cut short";
  }
  {
    Parts parts;
    parts.denial.OnDenied(now + 1);
    EXPECT_FALSE(Prefetch(parts, now)) << "denied";
    EXPECT_TRUE(Prefetch(parts, now + 1)) << "no longer denied";
  }
  {
    Parts parts;
    parts.demand = DemandEstimate();
    EXPECT_FALSE(Prefetch(parts, now)) << "no demand measured";
  }
}

TEST(LeasePlanTest, ADenialsJitterSpansHalfMinGrantsRefillAtMostHalfRInTheHalfByTheLastRound) {
  struct Case {
    std::string what;
    Policy policy;
    uint32_t min_grant;
    uint64_t span;
  };
  const Case cases[] = {
      {"100 tokens refill in 100 ms", kPolicy, 100, 50'000},
      {"1000 tokens take longer than R", kPolicy, 1000, kRefreshUs / 2},
      {"a token refills in 1 us: no jitter", Policy{1'000'000, 1000}, 1, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const JitterRange lost = DenialJitter(c.policy, c.min_grant, kRefreshUs, false);
    const JitterRange won = DenialJitter(c.policy, c.min_grant, kRefreshUs, true);
    EXPECT_EQ(lost.span, c.span);
    EXPECT_EQ(lost.low, 0u) << "denied last time: the lower half, to ask first";
    EXPECT_EQ(won.span, c.span);
    EXPECT_EQ(won.low, c.span) << "granted last time: the upper half";
  }
}

// A fixed window has no refill to wait for: the least worth having is what the check needs, so
// a window's last tokens are granted instead of left until its end.
TEST(SizeFetchTest, AFixedWindowsLeaseIsWorthHavingFromWhatTheCheckNeeds) {
  const Policy kFifty{50, 1000};
  const double demand = DemandOf(100).per_us();  // 100 tokens per R: want is the cap, 7.
  const FetchSize bucket = SizeFetch(kFifty, demand, kRefreshUs, 1, 0);
  const FetchSize window = SizeFetch(kFifty, demand, kRefreshUs, 1, 0, Algorithm::kFixedWindow);
  EXPECT_EQ(bucket.min_grant, 7u) << "a token bucket waits for R's refill, capped by want";
  EXPECT_EQ(window.min_grant, 1u);
  EXPECT_EQ(window.want, bucket.want);
  EXPECT_EQ(SizeFetch(kFifty, demand, kRefreshUs, 3, 0, Algorithm::kFixedWindow).min_grant, 3u);
}

}  // namespace
}  // namespace ratelimit
