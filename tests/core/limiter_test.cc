// Tests of the Limiter: key and policy validation, default policy, cost above the limit.
#include "sidecar/core/limiter.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "sidecar/core/memory_engine.h"
#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

constexpr Policy kDefaultPolicy{10, 1000};

// An Engine that records the queries it receives and answers each with a canned result.
class RecordingEngine final : public Engine {
 public:
  struct Query {
    std::string key;
    uint32_t cost;
    Policy policy;
  };

  void Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) override {
    queries.push_back(Query{std::string(query.key), query.cost, query.policy});
    CheckResult result = answer;
    result.limit = query.policy.limit;
    done.OnCheckDone(tag, result);
  }
  std::string_view store_name() const override { return "recording"; }
  bool ready() const override { return true; }

  CheckResult answer{.allowed = true,
                     .status = CheckStatus::kOk,
                     .limit = 0,
                     .remaining = 4,
                     .retry_after_ms = 0,
                     .reset_after_ms = 321,
                     .source = Source::kDatabase};
  std::vector<Query> queries;
};

class RecordingCallback final : public CheckCallback {
 public:
  void OnCheckDone(uint64_t tag, const CheckResult& result) override {
    tags.push_back(tag);
    results.push_back(result);
  }
  std::vector<uint64_t> tags;
  std::vector<CheckResult> results;
};

TEST(LimiterTest, InvalidRequestsAreRefusedWithoutConsultingTheEngine) {
  const std::string too_long(kMaxKeyBytes + 1, 'k');
  struct Case {
    const char* name;
    CheckArgs args;
  };
  const Case kCases[] = {
      {"empty key", {"", 1, 0, 0}},
      {"empty key with a policy", {"", 1, 5, 1000}},
      {"key of 513 bytes", {too_long, 1, 0, 0}},
      {"only limit given", {"user", 1, 5, 0}},
      {"only window_ms given", {"user", 1, 0, 1000}},
      {"empty key and cost above the limit", {"", 1000, 0, 0}},
      {"only limit given and cost above it", {"user", 1000, 5, 0}},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    RecordingEngine engine;
    Limiter limiter(kDefaultPolicy, engine);
    RecordingCallback done;
    limiter.Check(c.args, 77, done);
    ASSERT_EQ(done.results.size(), 1u);
    EXPECT_EQ(done.tags[0], 77u);
    const CheckResult& r = done.results[0];
    EXPECT_EQ(r.status, CheckStatus::kInvalidRequest);
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.remaining, 0u);
    EXPECT_EQ(r.retry_after_ms, 0u);
    EXPECT_EQ(r.reset_after_ms, 0u);
    EXPECT_TRUE(engine.queries.empty());
  }
}

TEST(LimiterTest, ValidRequestsGoToTheEngineWithTheResolvedPolicy) {
  const std::string longest(kMaxKeyBytes, 'k');
  const std::string binary("a\0b\xff", 4);
  struct Case {
    const char* name;
    CheckArgs args;
    Policy policy;  // What the engine must receive.
  };
  const Case kCases[] = {
      {"key of 1 byte", {"k", 1, 0, 0}, kDefaultPolicy},
      {"key of 512 bytes", {longest, 1, 0, 0}, kDefaultPolicy},
      {"key with NUL and high bytes", {binary, 1, 0, 0}, kDefaultPolicy},
      {"limit and window 0 select the default policy", {"user", 3, 0, 0}, kDefaultPolicy},
      {"both given override the default", {"user", 3, 5, 250}, {5, 250}},
      {"override above the default", {"user", 50, 100, 60'000}, {100, 60'000}},
      {"cost equal to the default limit", {"user", 10, 0, 0}, kDefaultPolicy},
      {"cost equal to the override limit", {"user", 5, 5, 250}, {5, 250}},
      {"cost 0 reads", {"user", 0, 0, 0}, kDefaultPolicy},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    RecordingEngine engine;
    Limiter limiter(kDefaultPolicy, engine);
    RecordingCallback done;
    limiter.Check(c.args, 5, done);
    ASSERT_EQ(engine.queries.size(), 1u);
    EXPECT_EQ(engine.queries[0].key, std::string(c.args.key));
    EXPECT_EQ(engine.queries[0].cost, c.args.cost);
    EXPECT_EQ(engine.queries[0].policy, c.policy);
    ASSERT_EQ(done.results.size(), 1u);
    EXPECT_EQ(done.tags[0], 5u);
    CheckResult expected = engine.answer;
    expected.limit = c.policy.limit;
    EXPECT_TRUE(done.results[0] == expected) << "the engine's answer is not passed on unchanged";
    EXPECT_EQ(done.results[0].limit, c.policy.limit);
  }
}

TEST(LimiterTest, CostAboveTheLimitIsRefusedWithoutConsultingTheEngine) {
  struct Case {
    const char* name;
    CheckArgs args;
    uint32_t limit;  // The resolved limit the answer reports.
  };
  const Case kCases[] = {
      {"above the default limit", {"user", 11, 0, 0}, 10},
      {"above the override limit", {"user", 6, 5, 1000}, 5},
      {"above an override larger than the default", {"user", 101, 100, 1000}, 100},
      {"largest cost", {"user", 4294967295u, 4294967294u, 1}, 4294967294u},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    RecordingEngine engine;
    Limiter limiter(kDefaultPolicy, engine);
    RecordingCallback done;
    limiter.Check(c.args, 9, done);
    EXPECT_TRUE(engine.queries.empty());
    ASSERT_EQ(done.results.size(), 1u);
    EXPECT_EQ(done.tags[0], 9u);
    const CheckResult& r = done.results[0];
    EXPECT_EQ(r.status, CheckStatus::kCostExceedsLimit);
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.limit, c.limit);
    EXPECT_EQ(r.remaining, 0u);
    EXPECT_EQ(r.retry_after_ms, 0u);
    EXPECT_EQ(r.reset_after_ms, 0u);
  }
}

// With a real engine: refusals leave the bucket untouched, so the whole limit is still there.
TEST(LimiterTest, RefusalsTakeNothingFromTheBucket) {
  FakeClock clock;
  std::unique_ptr<MemoryEngine> engine =
      NewMemoryEngine(Algorithm::kTokenBucket, clock, HashKey{1, 2}, 100000);
  Limiter limiter(kDefaultPolicy, *engine);
  const CheckArgs kRefused[] = {
      {"user", 11, 0, 0},    // Cost above the default limit.
      {"user", 6, 5, 1000},  // Cost above an override.
      {"user", 1, 10, 0},    // Half a policy.
      {"user", 1, 0, 1000},  // The other half.
  };
  RecordingCallback done;
  for (const CheckArgs& args : kRefused) limiter.Check(args, 1, done);
  ASSERT_EQ(done.results.size(), std::size(kRefused));
  for (const CheckResult& r : done.results) EXPECT_NE(r.status, CheckStatus::kOk);
  EXPECT_EQ(engine->size(), 0u);

  limiter.Check(CheckArgs{"user", 10, 0, 0}, 2, done);
  ASSERT_EQ(done.results.size(), std::size(kRefused) + 1);
  EXPECT_TRUE(done.results.back().allowed);
  EXPECT_EQ(done.results.back().remaining, 0u);
}

TEST(LimiterTest, ExposesItsDefaultPolicyAndEngine) {
  RecordingEngine engine;
  Limiter limiter(kDefaultPolicy, engine);
  EXPECT_EQ(limiter.default_policy(), kDefaultPolicy);
  EXPECT_EQ(&limiter.engine(), &engine);
}

}  // namespace
}  // namespace ratelimit
