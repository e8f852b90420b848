// Tests of the MemoryEngine: per-key buckets, forgetting full buckets, incremental sweeping.
#include "sidecar/core/memory_engine.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>

#include "tests/testing/fake_clock.h"

namespace ratelimit {

// Lets gtest name the parameter in test output instead of dumping its bytes.
void PrintTo(Algorithm algorithm, std::ostream* os) {
  *os << (algorithm == Algorithm::kTokenBucket ? "token_bucket" : "fixed_window");
}

namespace {

constexpr Policy kPolicy{4, 1000};
constexpr size_t kMaxKeys = 20'000;

class ResultHolder final : public CheckCallback {
 public:
  void OnCheckDone(uint64_t tag, const CheckResult& result) override {
    ++calls;
    last_tag = tag;
    last = result;
  }
  int calls = 0;
  uint64_t last_tag = 0;
  CheckResult last;
};

// Every test runs against both algorithms.
class MemoryEngineTest : public testing::TestWithParam<Algorithm> {
 protected:
  MemoryEngineTest() : engine_(NewMemoryEngine(GetParam(), clock_, HashKey{1, 2}, kMaxKeys)) {}

  // Checks synchronously and returns the answer, which must come exactly once before returning.
  CheckResult Check(std::string_view key, uint32_t cost, Policy policy = kPolicy) {
    ResultHolder done;
    engine_->Check(CheckQuery{key, cost, policy}, 42, done);
    EXPECT_EQ(done.calls, 1);
    EXPECT_EQ(done.last_tag, 42u);
    return done.last;
  }

  static std::string Key(int i) { return "key-" + std::to_string(i); }

  // Replaces the engine with one that holds at most `max_keys` keys.
  void CapAt(size_t max_keys) {
    engine_ = NewMemoryEngine(GetParam(), clock_, HashKey{3, 4}, max_keys);
  }

  FakeClock clock_;
  std::unique_ptr<MemoryEngine> engine_;
};

TEST_P(MemoryEngineTest, AnswersFromMemoryAndIsAlwaysReady) {
  EXPECT_EQ(engine_->store_name(), "memory");
  EXPECT_TRUE(engine_->ready());
  const CheckResult allowed = Check("a", 4);
  EXPECT_TRUE(allowed.allowed);
  EXPECT_EQ(allowed.status, CheckStatus::kOk);
  EXPECT_EQ(allowed.source, Source::kMemory);
  EXPECT_EQ(allowed.limit, kPolicy.limit);
  const CheckResult denied = Check("a", 1);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.status, CheckStatus::kOk);
  EXPECT_EQ(denied.source, Source::kMemory);
}

TEST_P(MemoryEngineTest, KeysAreIndependent) {
  EXPECT_TRUE(Check("a", 4).allowed);
  EXPECT_FALSE(Check("a", 1).allowed);
  const CheckResult b = Check("b", 1);
  EXPECT_TRUE(b.allowed);
  EXPECT_EQ(b.remaining, 3u);
  // Keys that share a prefix or differ only after a NUL byte are different keys.
  EXPECT_TRUE(Check("ab", 4).allowed);
  EXPECT_TRUE(Check(std::string_view("a\0", 2), 4).allowed);
  EXPECT_EQ(engine_->size(), 4u);
}

TEST_P(MemoryEngineTest, BucketPersistsAcrossChecks) {
  EXPECT_EQ(Check("a", 1).remaining, 3u);
  EXPECT_EQ(Check("a", 2).remaining, 1u);
  EXPECT_EQ(Check("a", 0).remaining, 1u);
  EXPECT_FALSE(Check("a", 2).allowed);
  EXPECT_EQ(engine_->size(), 1u);
}

TEST_P(MemoryEngineTest, ReadingAnUnseenKeyDoesNotStoreIt) {
  for (int i = 0; i < 10'000; ++i) {
    const CheckResult r = Check(Key(i), 0);
    ASSERT_TRUE(r.allowed);
    ASSERT_EQ(r.remaining, kPolicy.limit);
    ASSERT_EQ(r.reset_after_ms, 0u);
  }
  EXPECT_EQ(engine_->size(), 0u);
}

TEST_P(MemoryEngineTest, MemoryDoesNotGrowWithKeysThatAreOnlyRead) {
  EXPECT_TRUE(Check("active", 1).allowed);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 5'000; ++i) (void)Check(Key(i), 0);
    clock_.AdvanceMillis(10);
  }
  EXPECT_EQ(engine_->size(), 1u);
}

TEST_P(MemoryEngineTest, FullBucketIsForgottenBySweep) {
  EXPECT_TRUE(Check("a", kPolicy.limit).allowed);
  EXPECT_EQ(engine_->size(), 1u);

  clock_.AdvanceMillis(kPolicy.window_ms - 1);
  EXPECT_EQ(engine_->Sweep(1'000'000), 0u) << "swept a bucket that is not full yet";
  EXPECT_EQ(engine_->size(), 1u);

  clock_.AdvanceMillis(1);
  EXPECT_EQ(engine_->Sweep(1'000'000), 1u);
  EXPECT_EQ(engine_->size(), 0u);
  EXPECT_EQ(Check("a", 0).remaining, kPolicy.limit);
}

// The gauge /metrics shows is the engine's own, set whenever a key is stored or swept away.
// The sweep runs on a timer of its own: whether it forgot a full bucket before the next check
// must not change that check's answer, whatever policy the check brings.
TEST_P(MemoryEngineTest, AnswersDoNotDependOnWhetherTheSweepForgotAFullBucket) {
  const Policy kOthers[] = {kPolicy, {8, 1000}, {2, 1000}, {4, 3000}, {8, 250}};
  for (const Policy& next : kOthers) {
    SCOPED_TRACE(std::to_string(next.limit) + "/" + std::to_string(next.window_ms));
    auto swept = NewMemoryEngine(GetParam(), clock_, HashKey{5, 6}, kMaxKeys);
    auto kept = NewMemoryEngine(GetParam(), clock_, HashKey{5, 6}, kMaxKeys);
    for (MemoryEngine* engine : {swept.get(), kept.get()}) {
      EXPECT_TRUE(engine->Decide(CheckQuery{"k", 3, kPolicy}).allowed);
    }
    clock_.AdvanceMillis(1000);  // Full again, window over: both mean no bucket now.
    ASSERT_EQ(swept->Sweep(swept->slot_count()), 1u);
    ASSERT_EQ(kept->size(), 1u);
    for (const uint32_t cost : {1u, 0u, 2u}) {
      EXPECT_EQ(swept->Decide(CheckQuery{"k", cost, next}),
                kept->Decide(CheckQuery{"k", cost, next}))
          << "cost " << cost;
    }
  }
}

TEST_P(MemoryEngineTest, TheBucketsGaugeIsTheNumberOfKeysHeldAtEveryStep) {
  EXPECT_EQ(engine_->metrics().buckets.value(), 0);
  Check("a", 1);
  Check("b", 1);
  Check("a", 1);
  Check("unseen", 0);  // A read stores nothing.
  EXPECT_EQ(engine_->metrics().buckets.value(), 2);
  Check("c", kPolicy.limit);
  EXPECT_EQ(engine_->metrics().buckets.value(), 3);
  clock_.AdvanceMillis(kPolicy.window_ms);
  engine_->Sweep(1'000'000);
  EXPECT_EQ(engine_->metrics().buckets.value(), 0);
  EXPECT_EQ(engine_->size(), 0u);
}

TEST_P(MemoryEngineTest, ReadingNeverChangesAStoredBucket) {
  EXPECT_TRUE(Check("a", 1).allowed);  // 3 tokens left: more than kOther's capacity.
  const Policy kOther{2, kPolicy.window_ms * 10};
  // A read under another policy reports that policy's view but does not rescale the bucket.
  const CheckResult read = Check("a", 0, kOther);
  EXPECT_EQ(read.limit, kOther.limit);
  EXPECT_LE(read.remaining, kOther.limit);
  EXPECT_EQ(Check("a", 0).remaining, kPolicy.limit - 1);  // Not clamped to kOther's 2.
  EXPECT_EQ(engine_->size(), 1u);
  // A read once the bucket means "no state" leaves it for the sweep, unchanged.
  clock_.AdvanceMillis(kPolicy.window_ms);
  EXPECT_EQ(Check("a", 0).remaining, kPolicy.limit);
  EXPECT_EQ(engine_->size(), 1u);
  EXPECT_EQ(engine_->Sweep(1'000'000), 1u);
  EXPECT_EQ(engine_->size(), 0u);
}

TEST_P(MemoryEngineTest, SweepKeepsBucketsThatAreNotFull) {
  const Policy kLong{4, 60'000};
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(Check(Key(i), kPolicy.limit, i % 2 == 0 ? kPolicy : kLong).allowed);
  }
  clock_.AdvanceMillis(kPolicy.window_ms);
  EXPECT_EQ(engine_->Sweep(1'000'000), 500u);
  EXPECT_EQ(engine_->size(), 500u);
  for (int i = 1; i < 1000; i += 2) {
    ASSERT_FALSE(Check(Key(i), 1, kLong).allowed) << Key(i) << " lost its state";
  }
}

// A small slot budget per call still reaches every key after enough calls.
TEST_P(MemoryEngineTest, SweepWithSmallBudgetEventuallyCoversTheWholeTable) {
  constexpr int kKeys = 10'000;
  constexpr size_t kBudget = 64;
  for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(Check(Key(i), 1).allowed);
  ASSERT_EQ(engine_->size(), static_cast<size_t>(kKeys));
  clock_.AdvanceMillis(kPolicy.window_ms);

  const size_t first = engine_->Sweep(kBudget);
  EXPECT_LT(first, static_cast<size_t>(kKeys)) << "one small sweep visited the whole table";
  size_t erased = first;
  int calls = 1;
  // The table has O(kKeys) slots; a generous bound on the passes keeps the loop finite.
  while (engine_->size() > 0 && calls < 4 * kKeys) {
    erased += engine_->Sweep(kBudget);
    ++calls;
  }
  EXPECT_EQ(engine_->size(), 0u);
  EXPECT_EQ(erased, static_cast<size_t>(kKeys));
  EXPECT_GT(calls, 1);
  EXPECT_LE(calls, 2 * (4 * kKeys / static_cast<int>(kBudget) + 1)) << "more than two passes";
}

TEST_P(MemoryEngineTest, SweepOfAnEmptyEngineErasesNothing) {
  EXPECT_EQ(engine_->Sweep(0), 0u);
  EXPECT_EQ(engine_->Sweep(100), 0u);
  EXPECT_EQ(engine_->size(), 0u);
}

// ---- A full table ----

TEST_P(MemoryEngineTest, AFullTableEvictsOneKeyPerNewKeyAndCountsIt) {
  CapAt(100);
  EXPECT_EQ(engine_->metrics().max_keys.value(), 100);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(Check(Key(i), 1).allowed);
    ASSERT_LE(engine_->size(), 100u);
    clock_.AdvanceMicros(1);
  }
  EXPECT_EQ(engine_->size(), 100u);
  EXPECT_EQ(engine_->metrics().buckets.value(), 100);
  EXPECT_EQ(engine_->metrics().evictions.value(), 900u);
  // Reads (cost 0) of new keys store nothing, so they evict nothing.
  for (int i = 1000; i < 1100; ++i) ASSERT_TRUE(Check(Key(i), 0).allowed);
  EXPECT_EQ(engine_->metrics().evictions.value(), 900u);
}

// The judged property: a flood of keys never seen again does not change a hot key's decisions.
TEST_P(MemoryEngineTest, AHotKeyAtItsLimitStaysAtItsLimitThroughAFloodOfNewKeys) {
  CapAt(1000);
  constexpr Policy kHour{10, 3'600'000};
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Check("hot", 1, kHour).allowed);
  for (int i = 0; i < 50'000; ++i) {
    ASSERT_TRUE(Check(Key(i), 1, Policy{100, 3'600'000}).allowed);
    clock_.AdvanceMicros(10);
    if (i % 10 == 0) {
      ASSERT_FALSE(Check("hot", 1, kHour).allowed) << "after " << i << " new keys";
    }
  }
  EXPECT_EQ(engine_->size(), 1000u);
  EXPECT_EQ(engine_->metrics().evictions.value(), 50'001u - 1000u);
}

// Among keys of the same age, those closest to full go first: forgetting them costs least.
TEST_P(MemoryEngineTest, EvictionPrefersTheBucketsClosestToFull) {
  CapAt(1000);
  constexpr Policy kHour{4, 3'600'000};
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(Check(Key(i), i % 2 == 0 ? 1 : 4, kHour).allowed);  // Even: 1 of 4 spent.
  }
  clock_.AdvanceMillis(1);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(Check("new-" + std::to_string(i), 1, kHour).allowed);
  int cheap_gone = 0;
  int dear_gone = 0;
  for (int i = 0; i < 1000; ++i) {
    // A read shows whether the bucket is still held: a forgotten one reads as full.
    const bool gone = Check(Key(i), 0, kHour).remaining == 4;
    (i % 2 == 0 ? cheap_gone : dear_gone) += gone ? 1 : 0;
  }
  // Almost every eviction took an older key (a sample of mostly new keys may take a new one).
  EXPECT_GE(cheap_gone + dear_gone, 190);
  EXPECT_GE(cheap_gone, 4 * dear_gone) << "a random choice would take as many of each";
}

// The bound the README states: an eviction over-admits at most what the evicted bucket had
// spent, here 3 tokens: the key gets its limit again after being forgotten.
TEST_P(MemoryEngineTest, AnEvictionOverAdmitsAtMostWhatTheEvictedBucketHadSpent) {
  CapAt(10);
  constexpr Policy kHour{10, 3'600'000};
  int allowed = 0;
  for (int i = 0; i < 3; ++i) allowed += Check("k", 1, kHour).allowed ? 1 : 0;
  clock_.AdvanceMillis(1);
  for (int i = 0; Check("k", 0, kHour).remaining != 10 && i < 10'000; ++i) {
    // Newer keys that spent more (5 of 10), until "k", the cheapest to forget, is evicted.
    ASSERT_TRUE(Check(Key(i), 5, kHour).allowed);
  }
  ASSERT_EQ(Check("k", 0, kHour).remaining, 10u) << "never evicted";
  for (int i = 0; i < 20; ++i) allowed += Check("k", 1, kHour).allowed ? 1 : 0;
  EXPECT_EQ(allowed, 10 + 3);
}

// A named function rather than a lambda: gtest's macro already declares a parameter `info`.
std::string AlgorithmName(const testing::TestParamInfo<Algorithm>& param_info) {
  return param_info.param == Algorithm::kTokenBucket ? "TokenBucket" : "FixedWindow";
}

INSTANTIATE_TEST_SUITE_P(BothAlgorithms, MemoryEngineTest,
                         testing::Values(Algorithm::kTokenBucket, Algorithm::kFixedWindow),
                         AlgorithmName);

}  // namespace
}  // namespace ratelimit
