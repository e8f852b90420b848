// Tests of the FallbackEngine: what checks get while the shared store cannot decide them.
#include "sidecar/core/fallback_engine.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sidecar/core/keyed_hash.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/recorder.h"

namespace ratelimit {
namespace {

constexpr Policy kHundredPerSecond{100, 1000};

// An inner engine whose answers the test gives: held until Answer(), so that answers can come
// after the caller's key buffer is gone, as the database's do.
class FakeSharedEngine final : public Engine {
 public:
  struct Held {
    uint64_t tag;
    CheckCallback* done;
  };

  void Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) override {
    keys.emplace_back(query.key);
    held.push_back(Held{tag, &done});
  }
  std::string_view store_name() const override { return "fake"; }
  bool ready() const override { return is_ready; }

  // Answers every held check with `result`, in order.
  void AnswerAll(const CheckResult& result) {
    std::vector<Held> now = std::move(held);
    held.clear();
    for (const Held& h : now) h.done->OnCheckDone(h.tag, result);
  }

  std::vector<std::string> keys;
  std::vector<Held> held;
  bool is_ready = true;
};

CheckResult Unavailable(uint32_t limit) {
  return Refusal(CheckStatus::kStoreUnavailable, limit, Source::kDatabase);
}

// Sends `n` checks of `key` (its bytes in a buffer that is gone before the answers come).
void CheckMany(FallbackEngine& engine, const std::string& key, int n, Recorder& done,
               uint32_t cost = 1, const Policy& policy = kHundredPerSecond) {
  for (int i = 0; i < n; ++i) {
    std::string buffer = key;
    engine.Check(CheckQuery{buffer, cost, policy}, static_cast<uint64_t>(i), done);
    buffer.assign(buffer.size(), '#');  // The caller's buffer is reused before the answer.
  }
}

struct Fixture {
  explicit Fixture(FallbackPolicy policy, uint32_t replicas = 1)
      : engine(inner, policy,
               policy == FallbackPolicy::kLocal
                   ? NewMemoryEngine(Algorithm::kTokenBucket, clock, HashKey{1, 2})
                   : nullptr,
               replicas) {}

  FakeClock clock;
  FakeSharedEngine inner;
  FallbackEngine engine;
  Recorder done;
};

TEST(FallbackEngineTest, AnswersTheStoreGavePassThroughUntouched) {
  Fixture f(FallbackPolicy::kDeny);
  CheckMany(f.engine, "k", 3, f.done);
  CheckResult decided;
  decided.allowed = true;
  decided.limit = 100;
  decided.remaining = 42;
  decided.source = Source::kLease;
  f.inner.AnswerAll(decided);
  ASSERT_EQ(f.done.tags(), (std::vector<uint64_t>{0, 1, 2}));
  for (const Recorder::Answer& a : f.done.answers) EXPECT_EQ(a.result, decided);
  // So do refusals other than StoreUnavailable: the sidecar protecting itself, or stopping.
  for (CheckStatus status : {CheckStatus::kOverloaded, CheckStatus::kShuttingDown}) {
    Recorder done;
    CheckMany(f.engine, "k", 1, done);
    f.inner.AnswerAll(Refusal(status, 100, Source::kDatabase));
    ASSERT_EQ(done.answers.size(), 1u);
    EXPECT_EQ(done.answers[0].result.status, status);
  }
  EXPECT_EQ(f.engine.fallbacks(), 0u);
}

TEST(FallbackEngineTest, AllowAllowsEveryCheckTheStoreCannotDecide) {
  Fixture f(FallbackPolicy::kAllow);
  CheckMany(f.engine, "k", 500, f.done);
  f.inner.AnswerAll(Unavailable(100));
  ASSERT_EQ(f.done.answers.size(), 500u);
  for (const Recorder::Answer& a : f.done.answers) {
    EXPECT_TRUE(a.result.allowed);
    EXPECT_EQ(a.result.status, CheckStatus::kOk);
    EXPECT_EQ(a.result.source, Source::kFallback);
    EXPECT_EQ(a.result.limit, 100u);
  }
  EXPECT_EQ(f.engine.fallbacks(), 500u);
}

TEST(FallbackEngineTest, DenyDeniesEveryCheckTheStoreCannotDecideWithARetryTime) {
  Fixture f(FallbackPolicy::kDeny);
  CheckMany(f.engine, "k", 5, f.done);
  f.inner.AnswerAll(Unavailable(100));
  ASSERT_EQ(f.done.answers.size(), 5u);
  for (const Recorder::Answer& a : f.done.answers) {
    EXPECT_FALSE(a.result.allowed);
    EXPECT_EQ(a.result.status, CheckStatus::kOk);
    EXPECT_EQ(a.result.source, Source::kFallback);
    EXPECT_EQ(a.result.retry_after_ms, FallbackEngine::kDenyRetryMs);
  }
}

// The local policy: each key gets a bucket of limit / replicas in this pod, decided on the key
// the check asked about (copied: the caller's buffer was reused before the store answered).
TEST(FallbackEngineTest, LocalGivesEachKeyThisPodsShareOfItsBucket) {
  struct Case {
    uint32_t replicas;
    uint32_t limit;
    uint32_t admitted;  // Of 200 checks at one instant.
  };
  for (const Case& c : {Case{1, 100, 100}, Case{4, 100, 25}, Case{3, 100, 33},
                        Case{1000, 100, 1} /* never below one token */}) {
    SCOPED_TRACE("replicas " + std::to_string(c.replicas));
    Fixture f(FallbackPolicy::kLocal, c.replicas);
    CheckMany(f.engine, "a", 200, f.done, 1, Policy{c.limit, 1000});
    CheckMany(f.engine, "b", 200, f.done, 1, Policy{c.limit, 1000});
    EXPECT_EQ(f.inner.keys.front(), "a");
    f.inner.AnswerAll(Unavailable(c.limit));
    ASSERT_EQ(f.done.answers.size(), 400u);
    uint32_t admitted_a = 0, admitted_b = 0;
    for (size_t i = 0; i < f.done.answers.size(); ++i) {
      const CheckResult& r = f.done.answers[i].result;
      EXPECT_EQ(r.status, CheckStatus::kOk);
      EXPECT_EQ(r.source, Source::kFallback);
      (i < 200 ? admitted_a : admitted_b) += r.allowed ? 1 : 0;
    }
    EXPECT_EQ(admitted_a, c.admitted);
    EXPECT_EQ(admitted_b, c.admitted) << "keys share nothing";
    // The share refills at its own rate: a tenth of the window later, a tenth of the share.
    f.clock.AdvanceMillis(100);
    Recorder later;
    CheckMany(f.engine, "a", 200, later, 1, Policy{c.limit, 1000});
    f.inner.AnswerAll(Unavailable(c.limit));
    uint32_t refilled = 0;
    for (const Recorder::Answer& a : later.answers) refilled += a.result.allowed ? 1 : 0;
    EXPECT_EQ(refilled, c.admitted / 10);
  }
}

TEST(FallbackEngineTest, LocalDeniesACheckCostingMoreThanThisPodsShare) {
  Fixture f(FallbackPolicy::kLocal, 4);
  CheckMany(f.engine, "k", 1, f.done, 30, kHundredPerSecond);  // The share is 25.
  f.inner.AnswerAll(Unavailable(100));
  ASSERT_EQ(f.done.answers.size(), 1u);
  const CheckResult& r = f.done.answers[0].result;
  EXPECT_EQ(r.status, CheckStatus::kOk);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.source, Source::kFallback);
  EXPECT_EQ(r.retry_after_ms, 1000u);
  EXPECT_EQ(r.limit, 25u) << "the share, as every local answer reports";
  EXPECT_EQ(r.remaining, 25u) << "nothing was taken";
  // A check that fits is answered from the same bucket, with the same limit.
  Recorder small;
  CheckMany(f.engine, "k", 1, small, 5, kHundredPerSecond);
  f.inner.AnswerAll(Unavailable(100));
  ASSERT_EQ(small.answers.size(), 1u);
  EXPECT_TRUE(small.answers[0].result.allowed);
  EXPECT_EQ(small.answers[0].result.limit, 25u);
  EXPECT_EQ(small.answers[0].result.remaining, 20u);
}

TEST(FallbackEngineTest, ReadinessAndStoreNameAreTheStoresAndRecordsAreReused) {
  Fixture f(FallbackPolicy::kAllow);
  EXPECT_EQ(f.engine.store_name(), "fake");
  f.inner.is_ready = false;
  EXPECT_FALSE(f.engine.ready());
  // Answered one at a time, checks keep reusing the same record: none is lost or doubled.
  for (int i = 0; i < 1000; ++i) {
    Recorder done;
    CheckMany(f.engine, "k" + std::to_string(i), 1, done);
    EXPECT_EQ(f.inner.keys.back(), "k" + std::to_string(i));
    f.inner.AnswerAll(Unavailable(100));
    ASSERT_EQ(done.answers.size(), 1u);
  }
}

}  // namespace
}  // namespace ratelimit
