// Tests of the token bucket arithmetic: refill, retry and reset times, extremes, policy changes.
#include "sidecar/core/token_bucket.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tests/testing/bucket_steps.h"
#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

constexpr uint32_t kMaxU32 = std::numeric_limits<uint32_t>::max();
constexpr int64_t kMaxI64 = std::numeric_limits<int64_t>::max();
constexpr int64_t kUsPerMs = 1000;
constexpr int64_t kUsPerYear = 365LL * 24 * 3600 * 1'000'000;

uint128_t CapacityUnits(const Policy& policy) {
  return static_cast<uint128_t>(policy.limit) * policy.window_ms * 1000;
}

TEST(TokenBucketTest, ScenariosGiveExactAnswers) {
  for (const Scenario& scenario : TokenBucketScenarios()) {
    SCOPED_TRACE(scenario.name);
    ExpectSteps<TokenBucket>(scenario.policy, 1'234'567, scenario.steps);
  }
}

TEST(TokenBucketTest, NewKeyStartsFull) {
  for (const Policy policy : {Policy{1, 1}, Policy{10, 1000}, Policy{kMaxU32, kMaxU32}}) {
    SCOPED_TRACE(PolicyName(policy));
    FakeClock clock;
    TokenBucket::State state = TokenBucket::Fresh(policy, clock.NowMicros());
    EXPECT_TRUE(TokenBucket::IsFull(state, clock.NowMicros()));
    const CheckResult r = TokenBucket::Decide(state, policy, 0, clock.NowMicros());
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.remaining, policy.limit);
    EXPECT_EQ(r.reset_after_ms, 0u);
  }
}

TEST(TokenBucketTest, BurstAdmitsExactlyLimitThenDenies) {
  for (const Policy policy : {Policy{1, 1000}, Policy{3, 1000}, Policy{10, 60'000}, Policy{1000, 1},
                              Policy{50'000, 10}}) {
    SCOPED_TRACE(PolicyName(policy));
    FakeClock clock;
    TokenBucket::State state = TokenBucket::Fresh(policy, clock.NowMicros());
    for (uint32_t i = 0; i < policy.limit; ++i) {
      const CheckResult r = TokenBucket::Decide(state, policy, 1, clock.NowMicros());
      ASSERT_TRUE(r.allowed) << "check " << i;
      ASSERT_EQ(r.remaining, policy.limit - 1 - i);
    }
    const CheckResult denied = TokenBucket::Decide(state, policy, 1, clock.NowMicros());
    EXPECT_FALSE(denied.allowed);
    EXPECT_EQ(denied.remaining, 0u);
  }
}

// Refilling in many small steps must give exactly the level that one big step gives.
TEST(TokenBucketTest, FractionalRefillIsExactWhateverTheStepSize) {
  for (const Policy policy : {Policy{3, 1000}, Policy{7, 333}, Policy{1, 3}, Policy{997, 1013}}) {
    SCOPED_TRACE(PolicyName(policy));
    Rng rng(42);
    const int64_t start = 5'000'000;
    TokenBucket::State drained = TokenBucket::Fresh(policy, start);
    ASSERT_TRUE(TokenBucket::Decide(drained, policy, policy.limit, start).allowed);

    TokenBucket::State stepped = drained;
    int64_t now = start;
    const int64_t end = start + 2 * int64_t{policy.window_ms} * kUsPerMs;
    while (now < end) {
      now += 1 + static_cast<int64_t>(rng.UpTo(996));
      const CheckResult small = TokenBucket::Decide(stepped, policy, 0, now);
      TokenBucket::State jumped = drained;
      const CheckResult big = TokenBucket::Decide(jumped, policy, 0, now);
      ASSERT_EQ(stepped.level, jumped.level) << "at +" << now - start << " us";
      ASSERT_EQ(small.remaining, big.remaining);
      ASSERT_EQ(small.reset_after_ms, big.reset_after_ms);
    }
    EXPECT_EQ(stepped.level, CapacityUnits(policy));
  }
}

// Denials promise a wait: the wait must be enough, and one millisecond less must not be. The
// same holds for the time to full. Checked along a pseudo-random walk of (advance, cost) steps.
TEST(TokenBucketTest, RetryAfterAndResetAfterAreTheShortestWaitsThatSuffice) {
  const Policy kPolicies[] = {{1, 1},       {1, 1000},         {3, 1000}, {10, 1000},
                              {7, 333},     {60, 60'000},      {1000, 1}, {kMaxU32, 1},
                              {1, kMaxU32}, {kMaxU32, kMaxU32}};
  for (const Policy& policy : kPolicies) {
    SCOPED_TRACE(PolicyName(policy));
    Rng rng(7);
    FakeClock clock;
    TokenBucket::State state = TokenBucket::Fresh(policy, clock.NowMicros());
    const uint64_t token_us = uint64_t{policy.window_ms} * 1000 / policy.limit;
    int denials = 0;
    for (int i = 0; i < 2000; ++i) {
      clock.AdvanceMicros(static_cast<int64_t>(rng.UpTo(3 * token_us + 2)));
      // Mostly small costs, sometimes anything up to the limit.
      const uint64_t max_cost = rng.UpTo(3) == 0 ? policy.limit : std::min(policy.limit, 2u);
      const uint32_t cost = static_cast<uint32_t>(rng.UpTo(max_cost));
      const int64_t now = clock.NowMicros();
      const CheckResult r = TokenBucket::Decide(state, policy, cost, now);
      ASSERT_LE(r.retry_after_ms, policy.window_ms);
      ASSERT_LE(r.reset_after_ms, policy.window_ms);
      if (r.allowed) {
        ASSERT_EQ(r.retry_after_ms, 0u);
      } else {
        ++denials;
        ASSERT_GE(r.retry_after_ms, 1u);
        const int64_t wait_us = int64_t{r.retry_after_ms} * kUsPerMs;
        TokenBucket::State early = state;
        ASSERT_FALSE(TokenBucket::Decide(early, policy, cost, now + wait_us - kUsPerMs).allowed)
            << "step " << i << ": a millisecond before retry_after_ms already passes";
        TokenBucket::State on_time = state;
        ASSERT_TRUE(TokenBucket::Decide(on_time, policy, cost, now + wait_us).allowed)
            << "step " << i << ": waiting retry_after_ms=" << r.retry_after_ms << " is not enough";
      }
      const int64_t reset_us = int64_t{r.reset_after_ms} * kUsPerMs;
      ASSERT_TRUE(TokenBucket::IsFull(state, now + reset_us)) << "step " << i;
      if (r.reset_after_ms > 0) {
        ASSERT_FALSE(TokenBucket::IsFull(state, now + reset_us - kUsPerMs)) << "step " << i;
      } else {
        ASSERT_EQ(r.remaining, policy.limit);
      }
    }
    EXPECT_GT(denials, 0) << "the walk never exercised a denial";
  }
}

// IsFull(state, t) must say exactly whether a check at t would find the bucket full.
TEST(TokenBucketTest, IsFullMatchesRefilledToFull) {
  for (const Policy policy : {Policy{1, 1}, Policy{3, 1000}, Policy{kMaxU32, kMaxU32}}) {
    SCOPED_TRACE(PolicyName(policy));
    Rng rng(99);
    FakeClock clock;
    TokenBucket::State state = TokenBucket::Fresh(policy, clock.NowMicros());
    const int64_t window_us = int64_t{policy.window_ms} * kUsPerMs;
    int full = 0;
    int not_full = 0;
    for (int i = 0; i < 1000; ++i) {
      clock.AdvanceMicros(static_cast<int64_t>(rng.UpTo(static_cast<uint64_t>(window_us) / 2)));
      const uint32_t cost = static_cast<uint32_t>(rng.UpTo(policy.limit));
      (void)TokenBucket::Decide(state, policy, cost, clock.NowMicros());
      // Probe before (the clock stepped back), at, and after the last update.
      const int64_t probe = clock.NowMicros() - window_us +
                            static_cast<int64_t>(rng.UpTo(3 * static_cast<uint64_t>(window_us)));
      TokenBucket::State refilled = state;
      (void)TokenBucket::Decide(refilled, policy, 0, probe);
      const bool is_full = refilled.level == CapacityUnits(policy);
      ASSERT_EQ(TokenBucket::IsFull(state, probe), is_full) << "step " << i;
      ++(is_full ? full : not_full);
    }
    EXPECT_GT(full, 0);
    EXPECT_GT(not_full, 0);
  }
}

// Draining the whole bucket at the extremes of uint32: nothing overflows, and retry/reset times
// stay within window_ms (which always fits in uint32).
TEST(TokenBucketTest, ExtremeLimitsAndWindowsDoNotOverflow) {
  const Policy kPolicies[] = {{1, 1}, {1, kMaxU32}, {kMaxU32, 1}, {kMaxU32, kMaxU32}, {2, kMaxU32}};
  for (const Policy& policy : kPolicies) {
    SCOPED_TRACE(PolicyName(policy));
    FakeClock clock;
    TokenBucket::State state = TokenBucket::Fresh(policy, clock.NowMicros());
    const uint32_t cost = policy.limit;  // cost == limit, up to 4294967295.

    CheckResult r = TokenBucket::Decide(state, policy, cost, clock.NowMicros());
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.remaining, 0u);
    EXPECT_EQ(r.reset_after_ms, policy.window_ms);

    r = TokenBucket::Decide(state, policy, cost, clock.NowMicros());
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.retry_after_ms, policy.window_ms);
    EXPECT_EQ(r.reset_after_ms, policy.window_ms);

    clock.AdvanceMillis(int64_t{policy.window_ms} - 1);
    r = TokenBucket::Decide(state, policy, cost, clock.NowMicros());
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.retry_after_ms, 1u);

    clock.AdvanceMillis(1);
    EXPECT_TRUE(TokenBucket::IsFull(state, clock.NowMicros()));
    r = TokenBucket::Decide(state, policy, cost, clock.NowMicros());
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.remaining, 0u);
  }
}

TEST(TokenBucketTest, LongIdleRefillsToFullWithoutOverflow) {
  struct Case {
    const char* name;
    Policy policy;
    int64_t idle_until_us;  // Absolute time of the second check; the first is at 1 s.
  };
  const Case kCases[] = {
      {"ten years, small policy", {10, 1000}, 1'000'000 + 10 * kUsPerYear},
      {"ten years, largest policy", {kMaxU32, kMaxU32}, 1'000'000 + 10 * kUsPerYear},
      {"to the end of int64 time, largest limit", {kMaxU32, 1}, kMaxI64},
      {"to the end of int64 time, largest policy", {kMaxU32, kMaxU32}, kMaxI64},
      {"to the end of int64 time, one token per window", {1, kMaxU32}, kMaxI64},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    FakeClock clock(1'000'000);
    TokenBucket::State state = TokenBucket::Fresh(c.policy, clock.NowMicros());
    ASSERT_TRUE(TokenBucket::Decide(state, c.policy, c.policy.limit, clock.NowMicros()).allowed);
    clock.SetMicros(c.idle_until_us);
    EXPECT_TRUE(TokenBucket::IsFull(state, clock.NowMicros()));
    const CheckResult read = TokenBucket::Decide(state, c.policy, 0, clock.NowMicros());
    EXPECT_EQ(read.remaining, c.policy.limit);
    EXPECT_EQ(read.reset_after_ms, 0u);
    EXPECT_EQ(state.level, CapacityUnits(c.policy));
    const CheckResult take =
        TokenBucket::Decide(state, c.policy, c.policy.limit, clock.NowMicros());
    EXPECT_TRUE(take.allowed);
    EXPECT_EQ(take.remaining, 0u);
  }
}

// A request with another policy keeps the bucket's tokens (fractions included), never above the
// new capacity, and never grants the extra capacity at once.
TEST(TokenBucketTest, PolicyChangeRescalesKeepingTokens) {
  struct Case {
    const char* name;
    Policy before;
    uint32_t taken;      // At time 0, under `before`.
    int64_t advance_us;  // Then, under `after`, a read.
    Policy after;
    uint32_t remaining;
    uint32_t reset_after_ms;
  };
  const Case kCases[] = {
      {"smaller capacity clamps to full", {10, 1000}, 2, 0, {5, 1000}, 5, 0},
      {"larger capacity keeps tokens", {5, 1000}, 2, 0, {10, 1000}, 3, 700},
      {"longer window keeps tokens", {10, 1000}, 4, 0, {10, 10'000}, 6, 4000},
      {"shorter window keeps tokens", {10, 10'000}, 4, 0, {10, 1000}, 6, 400},
      {"refill before the change uses the old rate", {10, 1000}, 10, 500'000, {100, 1000}, 5, 950},
      {"largest to smallest", {kMaxU32, kMaxU32}, 7, 0, {1, 1}, 1, 0},
      {"smallest to largest", {1, 1}, 1, 0, {kMaxU32, kMaxU32}, 0, kMaxU32},
      // As the memory store's sweep would have forgotten it: the answer must not depend on
      // whether the sweep came first.
      {"a bucket refilled to full starts full at a larger capacity",
       {5, 1000},
       2,
       400'000,
       {10, 1000},
       10,
       0},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    FakeClock clock;
    TokenBucket::State state = TokenBucket::Fresh(c.before, clock.NowMicros());
    ASSERT_TRUE(TokenBucket::Decide(state, c.before, c.taken, clock.NowMicros()).allowed);
    clock.AdvanceMicros(c.advance_us);
    const CheckResult r = TokenBucket::Decide(state, c.after, 0, clock.NowMicros());
    EXPECT_EQ(r.limit, c.after.limit);
    EXPECT_EQ(r.remaining, c.remaining);
    EXPECT_EQ(r.reset_after_ms, c.reset_after_ms);
    EXPECT_EQ(state.policy, c.after);
    EXPECT_LE(state.level, CapacityUnits(c.after));
  }
}

TEST(TokenBucketTest, PolicyChangeKeepsFractionalTokens) {
  FakeClock clock;
  const Policy before{3, 1000};
  const Policy after{3, 2000};
  TokenBucket::State state = TokenBucket::Fresh(before, clock.NowMicros());
  ASSERT_TRUE(TokenBucket::Decide(state, before, 3, clock.NowMicros()).allowed);
  clock.AdvanceMillis(500);  // 1.5 tokens.
  EXPECT_EQ(TokenBucket::Decide(state, after, 0, clock.NowMicros()).remaining, 1u);
  // At 1.5 tokens per second, the half token missing for 2 takes 333.333... ms.
  TokenBucket::State early = state;
  EXPECT_EQ(TokenBucket::Decide(early, after, 0, clock.NowMicros() + 333'333).remaining, 1u);
  EXPECT_EQ(TokenBucket::Decide(state, after, 0, clock.NowMicros() + 333'334).remaining, 2u);
}

// Refund gives back tokens taken `age` ago less what the bucket refilled in that time, never
// above capacity, and reports the whole tokens it gave back. 10 per second: 100 ms per token.
TEST(TokenBucketTest, RefundGivesBackTokensLessTheRefillOverTheirAgeUpToCapacity) {
  struct Case {
    const char* name;
    Policy policy;
    uint32_t taken;      // From a full bucket at time 0.
    int64_t advance_us;  // Then the refund, at this time.
    uint32_t tokens;
    uint64_t age_us;
    uint32_t returned;
    uint32_t remaining;        // Whole tokens right after.
    uint32_t remaining_later;  // And 50 ms later: fractions are kept.
  };
  const Policy kTen{10, 1000};
  const Policy kMax{kMaxU32, kMaxU32};
  constexpr uint64_t kMaxAge = std::numeric_limits<uint64_t>::max();
  const Case kCases[] = {
      {"taken just now: all back", kTen, 10, 0, 4, 0, 4, 4, 4},
      {"less one token refilled in 100 ms", kTen, 10, 0, 4, 100'000, 3, 3, 3},
      {"refill of its age as large as the refund: nothing", kTen, 10, 0, 4, 400'000, 0, 0, 0},
      {"refill of its age larger than the refund: nothing", kTen, 10, 0, 4, 1'000'000, 0, 0, 0},
      {"never above capacity", kTen, 2, 0, 5, 0, 2, 10, 10},
      {"a full bucket takes nothing back", kTen, 0, 0, 3, 0, 0, 10, 10},
      {"the bucket refills to now first", kTen, 10, 300'000, 4, 300'000, 1, 4, 4},
      {"refilled to capacity meanwhile: nothing", kTen, 10, 1'000'000, 4, 0, 0, 10, 10},
      {"half a token back is kept, not counted", kTen, 10, 0, 1, 50'000, 0, 0, 1},
      {"one and a half back counts one", kTen, 10, 0, 3, 150'000, 1, 1, 2},
      {"3 per second: 1 of 2 back after 1/6 s", {3, 1000}, 3, 0, 2, 166'667, 1, 1, 1},
      {"largest policy: all back", kMax, kMaxU32, 0, kMaxU32, 0, kMaxU32, kMaxU32, kMaxU32},
      // Nothing back; 50 ms later, at 1 per ms, 50 tokens.
      {"largest policy and age: nothing", kMax, kMaxU32, 0, kMaxU32, kMaxAge, 0, 0, 50},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    FakeClock clock;
    TokenBucket::State state = TokenBucket::Fresh(c.policy, clock.NowMicros());
    ASSERT_TRUE(TokenBucket::Decide(state, c.policy, c.taken, clock.NowMicros()).allowed);
    clock.AdvanceMicros(c.advance_us);
    EXPECT_EQ(TokenBucket::Refund(state, c.tokens, c.age_us, clock.NowMicros()), c.returned);
    EXPECT_EQ(state.policy, c.policy);
    EXPECT_LE(state.level, CapacityUnits(c.policy));
    TokenBucket::State later = state;
    EXPECT_EQ(TokenBucket::Decide(state, c.policy, 0, clock.NowMicros()).remaining, c.remaining);
    EXPECT_EQ(TokenBucket::Decide(later, c.policy, 0, clock.NowMicros() + 50'000).remaining,
              c.remaining_later);
  }
}

// A refund at a time before the bucket's last update (a clock that stepped back) refills nothing
// but still gives the tokens back.
TEST(TokenBucketTest, RefundAtATimeBeforeTheLastUpdateRefillsNothing) {
  const Policy kTen{10, 1000};
  FakeClock clock;
  TokenBucket::State state = TokenBucket::Fresh(kTen, clock.NowMicros());
  ASSERT_TRUE(TokenBucket::Decide(state, kTen, 10, clock.NowMicros()).allowed);
  EXPECT_EQ(TokenBucket::Refund(state, 2, 0, clock.NowMicros() - 500'000), 2u);
  EXPECT_EQ(state.updated_us, clock.NowMicros());
  EXPECT_EQ(TokenBucket::Decide(state, kTen, 0, clock.NowMicros()).remaining, 2u);
}

// What forgetting a bucket can over-admit: its missing tokens at that moment, over capacity.
TEST(TokenBucketTest, ForgetCostIsTheFractionMissingNowAndShrinksAsItRefills) {
  const Policy kTen{10, 1000};  // One token per 100 ms.
  FakeClock clock;
  TokenBucket::State state = TokenBucket::Fresh(kTen, clock.NowMicros());
  EXPECT_EQ(TokenBucket::ForgetCost(state, clock.NowMicros()), 0.0);
  ASSERT_TRUE(TokenBucket::Decide(state, kTen, 4, clock.NowMicros()).allowed);
  EXPECT_DOUBLE_EQ(TokenBucket::ForgetCost(state, clock.NowMicros()), 0.4);
  EXPECT_DOUBLE_EQ(TokenBucket::ForgetCost(state, clock.NowMicros() + 150'000), 0.25);
  EXPECT_EQ(TokenBucket::ForgetCost(state, clock.NowMicros() + 400'000), 0.0);
  EXPECT_EQ(TokenBucket::ForgetCost(state, clock.NowMicros() + 10'000'000), 0.0);
  EXPECT_DOUBLE_EQ(TokenBucket::ForgetCost(state, clock.NowMicros() - 1), 0.4) << "no refill back";
  EXPECT_EQ(TokenBucket::LastUsedUs(state), clock.NowMicros());
  const Policy kHuge{kMaxU32, kMaxU32};
  TokenBucket::State huge = TokenBucket::Fresh(kHuge, 0);
  ASSERT_TRUE(TokenBucket::Decide(huge, kHuge, kMaxU32, 0).allowed);
  EXPECT_DOUBLE_EQ(TokenBucket::ForgetCost(huge, 0), 1.0);
}

}  // namespace
}  // namespace ratelimit
