// Tests of the fixed window arithmetic against a transcription of the older gateway's limiter.
#include "sidecar/core/fixed_window.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sidecar/core/memory_engine.h"
#include "tests/testing/bucket_steps.h"
#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

constexpr uint32_t kMaxU32 = std::numeric_limits<uint32_t>::max();
constexpr int64_t kUsPerMs = 1000;

// The older gateway's limiter for one key, written down as it was, in integer milliseconds of
// Date.now(). It is the reference the sidecar must reproduce. reset_after_ms is not the
// gateway's (it had none): it is the sidecar's documented extension, 0 when nothing is spent.
class GatewayModel {
 public:
  struct Answer {
    bool allowed;
    int64_t retry_after_ms;
    int64_t tokens;
    int64_t reset_after_ms;
  };

  Answer Check(int64_t now_ms, int64_t limit, int64_t window_ms, int64_t cost) {
    if (!has_state_) {
      has_state_ = true;
      tokens_ = limit;
      window_start_ = now_ms;
    }
    if (now_ms - window_start_ >= window_ms) {
      tokens_ = limit;
      window_start_ = now_ms;
    }
    const int64_t left = window_ms - (now_ms - window_start_);
    const int64_t reset_after_ms = tokens_ == limit ? 0 : left;
    if (tokens_ < cost) return {false, std::max<int64_t>(left, 0), tokens_, reset_after_ms};
    tokens_ -= cost;
    return {true, 0, tokens_, tokens_ == limit ? 0 : left};
  }

 private:
  bool has_state_ = false;
  int64_t tokens_ = 0;
  int64_t window_start_ = 0;
};

// Date.now() for a clock reading that is never negative in the differential tests.
int64_t DateNow(int64_t now_us) { return now_us / kUsPerMs; }

struct Scenario {
  const char* name;
  Policy policy;
  int64_t start_us;
  std::vector<Step> steps;
};

TEST(FixedWindowTest, ScenariosGiveExactAnswers) {
  const Scenario kScenarios[] = {
      // Columns: advance_us, cost, allowed, remaining, retry_after_ms, reset_after_ms.
      {"the window starts at the first request, not at a multiple of window_ms",
       {2, 1000},
       1'234'567,
       {{0, 1, true, 1, 0, 1000},
        {500'000, 1, true, 0, 0, 500},
        {266'000, 1, false, 0, 234, 234},  // At 2000 ms: an aligned window would reset here.
        {233'000, 1, false, 0, 1, 1},
        {1'000, 1, true, 1, 0, 1000}}},
      {"a window ends exactly window_ms after it started",
       {1, 100},
       1'234'000,
       {{0, 1, true, 0, 0, 100}, {99'000, 1, false, 0, 1, 1}, {1'000, 1, true, 0, 0, 100}}},
      {"a denial's retry_after is the rest of the window",
       {1, 60'000},
       1'234'000,
       {{0, 1, true, 0, 0, 60'000}, {12'345'678, 1, false, 0, 47'655, 47'655}}},
      {"a denial takes nothing and does not move the window",
       {3, 1000},
       1'000'000,
       {{0, 2, true, 1, 0, 1000},
        {0, 2, false, 1, 1000, 1000},
        {300'000, 2, false, 1, 700, 700},
        {0, 1, true, 0, 0, 700},
        {700'000, 3, true, 0, 0, 1000}}},
      {"cost 0 reads, even when empty",
       {2, 1000},
       1'000'000,
       {{0, 0, true, 2, 0, 0},
        {0, 2, true, 0, 0, 1000},
        {0, 0, true, 0, 0, 1000},
        {400'000, 0, true, 0, 0, 600}}},
      {"sub-millisecond movement is truncated like Date.now()",
       {1, 1000},
       1'000'999,
       {{0, 1, true, 0, 0, 1000},
        {999'000, 1, false, 0, 1, 1},  // 999.000 ms of real time, 999 ms counted.
        {1, 1, true, 0, 0, 1000}}},    // 999.001 ms of real time, a whole window counted.
      {"microseconds within one millisecond do not count",
       {1, 1},
       1'000'000,
       {{0, 1, true, 0, 0, 1}, {999, 1, false, 0, 1, 1}, {1, 1, true, 0, 0, 1}}},
      {"a long idle starts a fresh window",
       {3, 1000},
       1'000'000,
       {{0, 3, true, 0, 0, 1000}, {864'000'000'000, 1, true, 2, 0, 1000}}},
      {"millisecond boundaries stay uniform across the clock's origin",
       {1, 1},
       -500,
       {{0, 1, true, 0, 0, 1}, {500, 1, true, 0, 0, 1}}},
      {"the largest policy does not overflow",
       {kMaxU32, kMaxU32},
       1'000'000,
       {{0, kMaxU32, true, 0, 0, kMaxU32},
        {0, 1, false, 0, kMaxU32, kMaxU32},
        {(int64_t{kMaxU32} - 1) * kUsPerMs, 1, false, 0, 1, 1},
        {kUsPerMs, kMaxU32, true, 0, 0, kMaxU32}}},
  };
  for (const Scenario& scenario : kScenarios) {
    SCOPED_TRACE(scenario.name);
    ExpectSteps<FixedWindow>(scenario.policy, scenario.start_us, scenario.steps);
  }
}

TEST(FixedWindowTest, NewKeyStartsWithLimitTokens) {
  FakeClock clock(1'234'567);
  const Policy policy{5, 1000};
  FixedWindow::State state = FixedWindow::Fresh(policy, clock.NowMicros());
  EXPECT_EQ(state.tokens, 5u);
  EXPECT_EQ(state.window_start_ms, 1234);
  // Its window has begun, so it is not the same as no state until the window is over.
  EXPECT_FALSE(FixedWindow::IsFull(state, clock.NowMicros()));
  EXPECT_TRUE(FixedWindow::IsFull(state, clock.NowMicros() + 1'000'000));
}

// IsFull: only once the window has expired. A window with nothing spent still fixes when the
// next window starts, so forgetting it would change later answers.
TEST(FixedWindowTest, ForgetCostIsTheFractionSpentUntilTheWindowExpires) {
  const Policy kFour{4, 1000};
  FixedWindow::State state = FixedWindow::Fresh(kFour, 0);
  EXPECT_EQ(FixedWindow::ForgetCost(state, 0), 0.0);
  ASSERT_TRUE(FixedWindow::Decide(state, kFour, 3, 5 * kUsPerMs).allowed);
  EXPECT_EQ(FixedWindow::LastUsedUs(state), 5 * kUsPerMs);
  EXPECT_DOUBLE_EQ(FixedWindow::ForgetCost(state, 900 * kUsPerMs), 0.75);
  EXPECT_EQ(FixedWindow::ForgetCost(state, 1000 * kUsPerMs), 0.0) << "the window expired";
}

TEST(FixedWindowTest, IsFullOnlyWhenTheWindowHasExpired) {
  struct Case {
    const char* name;
    int64_t start_us;
    uint32_t cost;  // Taken at start_us, limit 1, window 1000 ms.
    int64_t probe_offset_us;
    bool full;
  };
  const Case kCases[] = {
      {"nothing spent, window running", 1'000'000, 0, 0, false},
      {"nothing spent, window over", 1'000'000, 0, 5'000'000, true},
      {"spent, window running", 1'000'000, 1, 0, false},
      {"spent, last microsecond of the window", 1'000'000, 1, 999'999, false},
      {"spent, window over", 1'000'000, 1, 1'000'000, true},
      {"spent, window over by truncated milliseconds", 1'000'999, 1, 999'001, true},
      {"spent, clock stepped back", 10'000'000, 1, -5'000'000, false},
  };
  const Policy policy{1, 1000};
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    FixedWindow::State state = FixedWindow::Fresh(policy, c.start_us);
    ASSERT_TRUE(FixedWindow::Decide(state, policy, c.cost, c.start_us).allowed);
    EXPECT_EQ(FixedWindow::IsFull(state, c.start_us + c.probe_offset_us), c.full);
  }
}

TEST(FixedWindowTest, PolicyChangeKeepsTheWindowAndClampsTokens) {
  struct Case {
    const char* name;
    Policy before;
    uint32_t taken;      // At time 0, under `before`.
    int64_t advance_us;  // Then one check under `after`.
    Policy after;
    uint32_t cost;
    bool allowed;
    uint32_t remaining;
    uint32_t retry_after_ms;
  };
  const Case kCases[] = {
      {"smaller limit clamps tokens", {5, 1000}, 1, 0, {2, 1000}, 0, true, 2, 0},
      {"larger limit grants nothing before the window ends",
       {2, 1000},
       2,
       0,
       {10, 1000},
       1,
       false,
       0,
       1000},
      {"shorter window ends the current window sooner",
       {2, 1000},
       2,
       150'000,
       {2, 100},
       1,
       true,
       1,
       0},
      {"longer window extends the current one", {2, 100}, 2, 50'000, {2, 1000}, 1, false, 0, 950},
      // As the memory store's sweep would have forgotten it: the answer must not depend on
      // whether the sweep came first.
      {"a window over by its own length stays over under a longer one",
       {2, 100},
       2,
       150'000,
       {2, 1000},
       1,
       true,
       1,
       0},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    FakeClock clock;
    FixedWindow::State state = FixedWindow::Fresh(c.before, clock.NowMicros());
    ASSERT_TRUE(FixedWindow::Decide(state, c.before, c.taken, clock.NowMicros()).allowed);
    clock.AdvanceMicros(c.advance_us);
    const CheckResult r = FixedWindow::Decide(state, c.after, c.cost, clock.NowMicros());
    EXPECT_EQ(r.limit, c.after.limit);
    EXPECT_EQ(r.allowed, c.allowed);
    EXPECT_EQ(r.remaining, c.remaining);
    EXPECT_EQ(r.retry_after_ms, c.retry_after_ms);
    EXPECT_LE(state.tokens, c.after.limit);
  }
}

const Policy kDifferentialPolicies[] = {{1, 1},        {1, 1000}, {3, 1000},         {10, 250},
                                        {100, 60'000}, {7, 7},    {kMaxU32, kMaxU32}};

// The clock moves by nothing, by less than a millisecond, by about one token's share of the
// window, or by up to two windows, so every branch of the algorithm comes up often.
int64_t RandomAdvanceMicros(Rng& rng, const Policy& policy) {
  const uint64_t window_us = uint64_t{policy.window_ms} * 1000;
  switch (rng.UpTo(3)) {
    case 0:
      return 0;
    case 1:
      return static_cast<int64_t>(rng.UpTo(999));
    case 2:
      return static_cast<int64_t>(rng.UpTo(2 * window_us / policy.limit + 1));
    default:
      return static_cast<int64_t>(rng.UpTo(2 * window_us));
  }
}

uint32_t RandomCost(Rng& rng, const Policy& policy, uint32_t min_cost) {
  const uint64_t max_cost = rng.UpTo(3) == 0 ? policy.limit : std::min(policy.limit, 2u);
  return static_cast<uint32_t>(std::max<uint64_t>(min_cost, rng.UpTo(max_cost)));
}

// Differential test: FixedWindow, state kept across checks, against the gateway model over a
// fixed pseudo-random sequence of (advance, cost) steps, cost 0 included.
TEST(FixedWindowTest, MatchesTheGatewayModelOnRandomSteps) {
  for (const Policy& policy : kDifferentialPolicies) {
    SCOPED_TRACE(PolicyName(policy));
    Rng rng(20240611);
    FakeClock clock(1'000'000 + static_cast<int64_t>(rng.UpTo(999'999)));
    GatewayModel model;
    FixedWindow::State state = FixedWindow::Fresh(policy, clock.NowMicros());
    int allowed = 0;
    int denied = 0;
    for (int i = 0; i < 20'000; ++i) {
      clock.AdvanceMicros(RandomAdvanceMicros(rng, policy));
      const uint32_t cost = RandomCost(rng, policy, 0);
      const GatewayModel::Answer want =
          model.Check(DateNow(clock.NowMicros()), policy.limit, policy.window_ms, cost);
      const CheckResult got = FixedWindow::Decide(state, policy, cost, clock.NowMicros());
      ASSERT_EQ(got.allowed, want.allowed) << "step " << i << " cost " << cost;
      ASSERT_EQ(got.retry_after_ms, want.retry_after_ms) << "step " << i;
      ASSERT_EQ(got.remaining, want.tokens) << "step " << i;
      ASSERT_EQ(got.reset_after_ms, want.reset_after_ms) << "step " << i;
      ++(got.allowed ? allowed : denied);
    }
    EXPECT_GT(allowed, 0);
    EXPECT_GT(denied, 0);
  }
}

class ResultHolder final : public CheckCallback {
 public:
  void OnCheckDone(uint64_t, const CheckResult& result) override {
    ++calls;
    last = result;
  }
  int calls = 0;
  CheckResult last;
};

// Differential test through the memory engine, which forgets buckets that are full: for several
// interleaved keys and periodic sweeps, answers must still be the gateway's. Costs are at least 1,
// as the gateway only knew cost 1; reads (cost 0), which the gateway never saw, are interleaved
// and must change nothing.
TEST(FixedWindowTest, MemoryEngineMatchesTheGatewayModelOnRandomSteps) {
  const std::string kKeys[] = {"alpha", "beta", "gamma", "delta"};
  for (const Policy& policy : kDifferentialPolicies) {
    SCOPED_TRACE(PolicyName(policy));
    Rng rng(1234);
    FakeClock clock(7'000'000);
    std::unique_ptr<MemoryEngine> engine =
        NewMemoryEngine(Algorithm::kFixedWindow, clock, HashKey{1, 2}, 100000);
    std::map<std::string, GatewayModel> models;
    for (int i = 0; i < 20'000; ++i) {
      clock.AdvanceMicros(RandomAdvanceMicros(rng, policy) / 2);
      const std::string& key = kKeys[rng.UpTo(3)];
      const uint32_t cost = RandomCost(rng, policy, 1);
      const GatewayModel::Answer want =
          models[key].Check(DateNow(clock.NowMicros()), policy.limit, policy.window_ms, cost);
      if (rng.UpTo(3) == 0) {  // A read first, invisible to the gateway model.
        ResultHolder read;
        engine->Check(CheckQuery{key, 0, policy}, 0, read);
        ASSERT_TRUE(read.last.allowed) << "step " << i;
      }
      ResultHolder done;
      engine->Check(CheckQuery{key, cost, policy}, 0, done);
      ASSERT_EQ(done.calls, 1);
      ASSERT_EQ(done.last.allowed, want.allowed) << "step " << i << " key " << key;
      ASSERT_EQ(done.last.retry_after_ms, want.retry_after_ms) << "step " << i;
      ASSERT_EQ(done.last.remaining, want.tokens) << "step " << i;
      if (i % 16 == 0) (void)engine->Sweep(8);
    }
  }
}

}  // namespace
}  // namespace ratelimit
