// Helpers for table-driven tests of bucket algorithms: a seeded generator and scripted steps.
#ifndef RATELIMIT_TESTS_TESTING_BUCKET_STEPS_H_
#define RATELIMIT_TESTS_TESTING_BUCKET_STEPS_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "schema/check.h"
#include "tests/testing/fake_clock.h"

namespace ratelimit {

// A deterministic generator (splitmix64), so every run and every platform sees the same steps.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform enough in [0, bound]; bound may be the largest uint64_t - 1.
  uint64_t UpTo(uint64_t bound) { return Next() % (bound + 1); }

 private:
  uint64_t state_;
};

inline std::string PolicyName(const Policy& policy) {
  return "limit=" + std::to_string(policy.limit) + " window_ms=" + std::to_string(policy.window_ms);
}

// One check in a scenario: move the clock, take `cost`, expect the whole answer.
struct Step {
  int64_t advance_us;
  uint32_t cost;
  bool allowed;
  uint32_t remaining;
  uint32_t retry_after_ms;
  uint32_t reset_after_ms;
};

struct Scenario {
  const char* name;
  Policy policy;
  std::vector<Step> steps;
};

// Token bucket scenarios with their exact answers: every implementation of the arithmetic (the
// memory store's TokenBucket, decisions on a shared row) must reproduce them.
inline std::vector<Scenario> TokenBucketScenarios() {
  return {
      // Columns: advance_us, cost, allowed, remaining, retry_after_ms, reset_after_ms.
      {"burst admits exactly limit then denies",
       {3, 1000},
       {{0, 1, true, 2, 0, 334},
        {0, 1, true, 1, 0, 667},
        {0, 1, true, 0, 0, 1000},
        {0, 1, false, 0, 334, 1000}}},
      {"limit 10 per second refills one token in exactly 100 ms",
       {10, 1000},
       {{0, 10, true, 0, 0, 1000},
        {99'999, 1, false, 0, 1, 901},
        {1, 1, true, 0, 0, 1000},
        {0, 1, false, 0, 100, 1000}}},
      {"fractional tokens accumulate: 3 per second gives a token at 333.334 ms",
       {3, 1000},
       {{0, 3, true, 0, 0, 1000},
        {333'333, 1, false, 0, 1, 667},
        {1, 1, true, 0, 0, 1000},
        {0, 1, false, 0, 334, 1000}}},
      {"a denial takes nothing",
       {3, 1000},
       {{0, 2, true, 1, 0, 667},
        {0, 2, false, 1, 334, 667},
        {0, 2, false, 1, 334, 667},
        {0, 1, true, 0, 0, 1000}}},
      {"cost 0 reads without taking, even from an empty bucket",
       {5, 1000},
       {{0, 0, true, 5, 0, 0},
        {0, 2, true, 3, 0, 400},
        {0, 0, true, 3, 0, 400},
        {0, 3, true, 0, 0, 1000},
        {0, 0, true, 0, 0, 1000}}},
      {"remaining counts whole tokens only",
       {4, 1000},
       {{0, 4, true, 0, 0, 1000}, {625'000, 0, true, 2, 0, 375}, {0, 3, false, 2, 125, 375}}},
      {"refill stops at capacity",
       {2, 1000},
       {{0, 2, true, 0, 0, 1000},
        {10'000'000, 0, true, 2, 0, 0},
        {0, 1, true, 1, 0, 500},
        {0, 1, true, 0, 0, 1000},
        {0, 1, false, 0, 500, 1000}}},
      {"a clock that does not move refills nothing",
       {1, 1000},
       {{0, 1, true, 0, 0, 1000}, {0, 1, false, 0, 1000, 1000}, {0, 1, false, 0, 1000, 1000}}},
      {"a clock that steps back refills nothing, then or when it catches up",
       {10, 1000},
       {{0, 10, true, 0, 0, 1000},
        {-500'000, 1, false, 0, 100, 1000},
        {-500'000, 0, true, 0, 0, 1000},
        {1'000'000, 1, false, 0, 100, 1000},
        {100'000, 1, true, 0, 0, 1000},
        {0, 1, false, 0, 100, 1000}}},
  };
}

// Runs `steps` against one fresh bucket of algorithm Algo (TokenBucket, FixedWindow) created at
// `start_us`, expecting each step's whole answer.
template <typename Algo>
void ExpectSteps(const Policy& policy, int64_t start_us, const std::vector<Step>& steps) {
  FakeClock clock(start_us);
  typename Algo::State state = Algo::Fresh(policy, clock.NowMicros());
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    const Step& step = steps[i];
    clock.AdvanceMicros(step.advance_us);
    const CheckResult r = Algo::Decide(state, policy, step.cost, clock.NowMicros());
    EXPECT_EQ(r.status, CheckStatus::kOk);
    EXPECT_EQ(r.limit, policy.limit);
    EXPECT_EQ(r.allowed, step.allowed);
    EXPECT_EQ(r.remaining, step.remaining);
    EXPECT_EQ(r.retry_after_ms, step.retry_after_ms);
    EXPECT_EQ(r.reset_after_ms, step.reset_after_ms);
  }
}

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_BUCKET_STEPS_H_
