// Helpers for table-driven tests of bucket algorithms: a seeded generator and scripted steps.
#ifndef RATELIMIT_TESTS_TESTING_BUCKET_STEPS_H_
#define RATELIMIT_TESTS_TESTING_BUCKET_STEPS_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sidecar/core/check.h"
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
