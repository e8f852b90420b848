// Tests of the Fallback policy, alone and as the strict and lease engines consult it: what
// checks get while the shared store cannot decide them.
#include "sidecar/core/fallback.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sidecar/core/keyed_hash.h"
#include "sidecar/core/lease_engine.h"
#include "sidecar/core/store_batcher.h"
#include "sidecar/core/strict_engine.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_store.h"
#include "tests/testing/recorder.h"

namespace ratelimit {
namespace {

constexpr Policy kHundredPerSecond{100, 1000};

CheckResult Unavailable(uint32_t limit) {
  return Refusal(CheckStatus::kStoreUnavailable, limit, Source::kDatabase);
}

std::unique_ptr<MemoryEngine> LocalBuckets(FallbackPolicy policy, Clock& clock) {
  return policy == FallbackPolicy::kLocal
             ? NewMemoryEngine(Algorithm::kTokenBucket, clock, HashKey{1, 2}, 100000)
             : nullptr;
}

// A decision (status ok) of the fallback: allowed or not.
void ExpectFallbackDecision(const CheckResult& r, bool allowed) {
  EXPECT_EQ(r.allowed, allowed);
  EXPECT_EQ(r.status, CheckStatus::kOk);
  EXPECT_EQ(r.source, Source::kFallback);
}

// ---------------------------------------------------------------------------------------------
// The policy alone: Resolve as an engine calls it with the answer it would give.

struct PolicyFixture {
  explicit PolicyFixture(FallbackPolicy policy, uint32_t replicas = 1)
      : fallback(policy, LocalBuckets(policy, clock), replicas) {}

  // Resolves `n` checks of `key` that the store could not decide.
  std::vector<CheckResult> Undecided(const std::string& key, int n, uint32_t cost = 1,
                                     const Policy& policy = kHundredPerSecond) {
    std::vector<CheckResult> out;
    for (int i = 0; i < n; ++i) {
      out.push_back(fallback.Resolve(CheckQuery{key, cost, policy}, Unavailable(policy.limit)));
    }
    return out;
  }

  FakeClock clock;
  Fallback fallback;
};

TEST(FallbackTest, AnswersTheStoreGavePassThroughUntouched) {
  PolicyFixture f(FallbackPolicy::kDeny);
  CheckResult decided;
  decided.allowed = true;
  decided.limit = 100;
  decided.remaining = 42;
  decided.source = Source::kLease;
  EXPECT_EQ(f.fallback.Resolve(CheckQuery{"k", 1, kHundredPerSecond}, decided), decided);
  // So do refusals other than StoreUnavailable: the sidecar protecting itself, or stopping.
  for (CheckStatus status : {CheckStatus::kOverloaded, CheckStatus::kShuttingDown}) {
    const CheckResult refusal = Refusal(status, 100, Source::kDatabase);
    EXPECT_EQ(f.fallback.Resolve(CheckQuery{"k", 1, kHundredPerSecond}, refusal), refusal);
  }
  EXPECT_EQ(f.fallback.metrics().fallbacks.value(), 0u);
}

TEST(FallbackTest, AllowAllowsEveryCheckTheStoreCannotDecide) {
  PolicyFixture f(FallbackPolicy::kAllow);
  for (const CheckResult& r : f.Undecided("k", 500)) {
    ExpectFallbackDecision(r, true);
    EXPECT_EQ(r.limit, 100u);
  }
  EXPECT_EQ(f.fallback.metrics().fallbacks.value(), 500u);
}

TEST(FallbackTest, DenyDeniesEveryCheckTheStoreCannotDecideWithARetryTime) {
  PolicyFixture f(FallbackPolicy::kDeny);
  for (const CheckResult& r : f.Undecided("k", 5)) {
    ExpectFallbackDecision(r, false);
    EXPECT_EQ(r.retry_after_ms, Fallback::kDenyRetryMs);
  }
}

// The local policy: each key gets a bucket of limit / replicas in this pod.
TEST(FallbackTest, LocalGivesEachKeyThisPodsShareOfItsBucket) {
  struct Case {
    uint32_t replicas;
    uint32_t limit;
    uint32_t admitted;  // Of 200 checks at one instant.
  };
  for (const Case& c : {Case{1, 100, 100}, Case{4, 100, 25}, Case{3, 100, 33},
                        Case{1000, 100, 1} /* never below one token */}) {
    SCOPED_TRACE("replicas " + std::to_string(c.replicas));
    PolicyFixture f(FallbackPolicy::kLocal, c.replicas);
    auto admitted = [](const std::vector<CheckResult>& results) {
      uint32_t n = 0;
      for (const CheckResult& r : results) {
        EXPECT_EQ(r.status, CheckStatus::kOk);
        EXPECT_EQ(r.source, Source::kFallback);
        n += r.allowed ? 1 : 0;
      }
      return n;
    };
    EXPECT_EQ(admitted(f.Undecided("a", 200, 1, Policy{c.limit, 1000})), c.admitted);
    EXPECT_EQ(admitted(f.Undecided("b", 200, 1, Policy{c.limit, 1000})), c.admitted)
        << "keys share nothing";
    // The share refills at its own rate: a tenth of the window later, a tenth of the share.
    f.clock.AdvanceMillis(100);
    EXPECT_EQ(admitted(f.Undecided("a", 200, 1, Policy{c.limit, 1000})), c.admitted / 10);
  }
}

TEST(FallbackTest, LocalDeniesACheckCostingMoreThanThisPodsShare) {
  PolicyFixture f(FallbackPolicy::kLocal, 4);
  const CheckResult r = f.Undecided("k", 1, 30).at(0);  // The share is 25.
  EXPECT_EQ(r.status, CheckStatus::kOk);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.source, Source::kFallback);
  EXPECT_EQ(r.retry_after_ms, 1000u);
  EXPECT_EQ(r.limit, 25u) << "the share, as every local answer reports";
  EXPECT_EQ(r.remaining, 25u) << "nothing was taken";
  // A check that fits is answered from the same bucket, with the same limit.
  const CheckResult small = f.Undecided("k", 1, 5).at(0);
  EXPECT_TRUE(small.allowed);
  EXPECT_EQ(small.limit, 25u);
  EXPECT_EQ(small.remaining, 20u);
}

// ---------------------------------------------------------------------------------------------
// Through the engines that consult it, where the store refuses (not ready) or fails a Take.

enum class Mode { kStrict, kLease };

struct EngineFixture {
  EngineFixture(Mode mode, FallbackPolicy policy, uint32_t replicas = 1)
      : fallback(policy, LocalBuckets(policy, clock), replicas) {
    if (mode == Mode::kStrict) {
      engine = std::make_unique<StrictEngine>(store, &fallback);
    } else {
      engine = std::make_unique<LeaseEngine>(store, clock, HashKey{1, 2}, LeaseOptions{1000, false},
                                             &fallback);
    }
  }

  // Sends `n` checks of `key`, its bytes in a buffer that is reused before the answers come.
  void CheckMany(const std::string& key, int n, Recorder& done, uint32_t cost = 1,
                 const Policy& policy = kHundredPerSecond) {
    for (int i = 0; i < n; ++i) {
      std::string buffer = key;
      engine->Check(CheckQuery{buffer, cost, policy}, static_cast<uint64_t>(i), done);
      buffer.assign(buffer.size(), '#');
    }
  }

  // Fails every Take in flight, and those that failing them starts.
  void FailAll() {
    for (size_t index = 0; index < store.take_count(); ++index) {
      if (!store.answered(index)) store.Fail(index, Status::IoError("connection lost"));
    }
  }

  FakeClock clock;
  FakeStore store;
  Fallback fallback;
  std::unique_ptr<Engine> engine;
};

class FallbackThroughEngineTest : public testing::TestWithParam<Mode> {};

INSTANTIATE_TEST_SUITE_P(StrictAndLease, FallbackThroughEngineTest,
                         testing::Values(Mode::kStrict, Mode::kLease),
                         [](const testing::TestParamInfo<Mode>& param) {
                           return param.param == Mode::kStrict ? "Strict" : "Lease";
                         });

TEST_P(FallbackThroughEngineTest, AnswersTheStoreDecidedAreTheEnginesOwn) {
  EngineFixture f(GetParam(), FallbackPolicy::kDeny);
  Recorder done;
  f.CheckMany("k", 3, done);
  for (size_t index = 0; index < f.store.take_count(); ++index) f.store.Decide(index, 1'000'000);
  ASSERT_EQ(done.answers.size(), 3u);
  for (const Recorder::Answer& a : done.answers) {
    EXPECT_TRUE(a.result.allowed);
    EXPECT_NE(a.result.source, Source::kFallback);
  }
  // Overloaded is the sidecar protecting itself, not the store failing: it passes through.
  Recorder overloaded;
  f.CheckMany("q", 1, overloaded);  // Holds the slot.
  for (size_t i = 0; i < StoreBatcher::kMaxQueued; ++i) {
    f.CheckMany("q" + std::to_string(i), 1, overloaded);
  }
  const size_t before = overloaded.answers.size();
  f.CheckMany("z", 1, overloaded);
  ASSERT_EQ(overloaded.answers.size(), before + 1);
  EXPECT_EQ(overloaded.answers.back().result.status, CheckStatus::kOverloaded);
  EXPECT_EQ(f.fallback.metrics().fallbacks.value(), 0u);
}

TEST_P(FallbackThroughEngineTest, AStoreThatIsNotReadyGetsTheFallbacksAnswerAtOnce) {
  EngineFixture f(GetParam(), FallbackPolicy::kAllow);
  f.store.set_ready(false);
  EXPECT_EQ(f.engine->store_name(), "fake");
  EXPECT_FALSE(f.engine->ready());
  Recorder done;
  f.CheckMany("k", 500, done);
  ASSERT_EQ(done.answers.size(), 500u) << "answered before Check returned";
  for (const Recorder::Answer& a : done.answers) {
    EXPECT_TRUE(a.result.allowed);
    EXPECT_EQ(a.result.source, Source::kFallback);
    EXPECT_EQ(a.result.limit, 100u);
  }
  EXPECT_EQ(f.store.take_count(), 0u);
  EXPECT_EQ(f.fallback.metrics().fallbacks.value(), 500u);
}

// A failed Take is answered after the caller's key buffer is gone: the local buckets are still
// those of the key each check asked about.
TEST_P(FallbackThroughEngineTest, AFailedTakeGetsTheLocalShareOfEachChecksOwnKey) {
  EngineFixture f(GetParam(), FallbackPolicy::kLocal, 4);
  Recorder done;
  f.CheckMany("a", 200, done);
  f.CheckMany("b", 200, done);
  EXPECT_TRUE(done.answers.empty());
  f.FailAll();
  ASSERT_EQ(done.answers.size(), 400u);
  uint32_t admitted = 0;
  for (const Recorder::Answer& a : done.answers) {
    EXPECT_EQ(a.result.status, CheckStatus::kOk);
    EXPECT_EQ(a.result.source, Source::kFallback);
    EXPECT_EQ(a.result.limit, 25u);
    admitted += a.result.allowed ? 1 : 0;
  }
  EXPECT_EQ(admitted, 50u) << "25 of each key's share";
  EXPECT_EQ(f.fallback.local()->size(), 2u);
  EXPECT_EQ(f.fallback.metrics().fallbacks.value(), 400u);
}

// Checks answered one at a time, each with its own key: none is lost, doubled or mixed up.
TEST_P(FallbackThroughEngineTest, EachFailedCheckIsAnsweredOnceWithItsOwnKey) {
  EngineFixture f(GetParam(), FallbackPolicy::kLocal);
  for (int i = 0; i < 1000; ++i) {
    Recorder done;
    f.CheckMany("k" + std::to_string(i), 1, done);
    EXPECT_EQ(f.store.batch(f.store.take_count() - 1).back().key, "k" + std::to_string(i));
    f.FailAll();
    ASSERT_EQ(done.answers.size(), 1u);
    EXPECT_TRUE(done.answers[0].result.allowed);
  }
  EXPECT_EQ(f.fallback.local()->size(), 1000u);
}

// Leases already held stay usable while the store is away; only what needs the store falls back.
TEST(FallbackThroughLeaseTest, AHeldLeaseIsSpentWhileTheStoreIsAwayAndOnlyTheRestFallsBack) {
  EngineFixture f(Mode::kLease, FallbackPolicy::kDeny);
  Recorder done;
  f.CheckMany("k", 1, done);  // Leases what it needs.
  f.store.Decide(0, 1'000'000);
  f.clock.AdvanceMillis(10);
  f.CheckMany("k", 1, done);  // Leases by the demand: more than it needs.
  f.store.Decide(1, 1'010'000);
  ASSERT_EQ(done.answers.size(), 2u);
  f.store.set_ready(false);
  Recorder later;
  f.CheckMany("k", 1, later);
  f.CheckMany("other", 1, later);
  ASSERT_EQ(later.answers.size(), 2u);
  EXPECT_TRUE(later.answers[0].result.allowed);
  EXPECT_EQ(later.answers[0].result.source, Source::kLease);
  EXPECT_FALSE(later.answers[1].result.allowed);
  EXPECT_EQ(later.answers[1].result.source, Source::kFallback);
  EXPECT_EQ(f.fallback.metrics().fallbacks.value(), 1u);
}

}  // namespace
}  // namespace ratelimit
