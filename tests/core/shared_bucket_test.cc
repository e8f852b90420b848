// Tests of shared buckets: repair of malformed rows, and checks decided on a row of the table.
#include "sidecar/core/shared_bucket.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "sidecar/core/fixed_window.h"
#include "sidecar/core/token_bucket.h"
#include "tests/testing/bucket_steps.h"
#include "tests/testing/recorder.h"

namespace ratelimit {

// Lets gtest print rows in failure messages instead of dumping their bytes.
void PrintTo(const SharedRow& row, std::ostream* os) {
  *os << "{tokens=" << row.tokens << " updated_us=" << row.updated_us
      << " capacity=" << row.capacity << " window_ms=" << row.window_ms
      << " algorithm=" << static_cast<int>(row.algorithm) << "}";
}

namespace {

constexpr uint32_t kMaxU32 = std::numeric_limits<uint32_t>::max();
constexpr int64_t kNowUs = 1'700'000'000'000'000;  // Database time, in 2023.
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------------------------------------
// RepairRow

constexpr Policy kRepairPolicy{10, 1000};
constexpr int64_t kPastUs = kNowUs - 5'000;
constexpr int64_t kHourUs = int64_t{3600} * 1'000'000;
constexpr int64_t kDayUs = kHourUs * 24;

struct RepairCase {
  const char* name;
  RawRow raw;
  SharedRow repaired;
};

TEST(RepairRowTest, MalformedRowsAreRepairedAndReported) {
  constexpr int64_t k2To32 = int64_t{1} << 32;
  const RepairCase kCases[] = {
      {"tokens NULL: full", {std::nullopt, kPastUs, 20, 2000}, {20, kPastUs, 20, 2000}},
      {"tokens NaN: full", {kNaN, kPastUs, 20, 2000}, {20, kPastUs, 20, 2000}},
      {"tokens +infinity: full", {kInf, kPastUs, 20, 2000}, {20, kPastUs, 20, 2000}},
      {"tokens -infinity: full", {-kInf, kPastUs, 20, 2000}, {20, kPastUs, 20, 2000}},
      {"a debt beyond the most sidecars may owe: empty",
       {-1024.5, kPastUs, 20, 2000},
       {0, kPastUs, 20, 2000}},
      {"a debt beyond a large capacity: empty",
       {-5000.5, kPastUs, 5000, 2000},
       {0, kPastUs, 5000, 2000}},
      {"tokens above capacity: capacity", {20.5, kPastUs, 20, 2000}, {20, kPastUs, 20, 2000}},
      {"tokens huge: capacity", {1e300, kPastUs, 20, 2000}, {20, kPastUs, 20, 2000}},
      {"capacity NULL: the policy", {2.5, kPastUs, std::nullopt, 2000}, {2.5, kPastUs, 10, 1000}},
      {"capacity 0: the policy", {2.5, kPastUs, 0, 2000}, {2.5, kPastUs, 10, 1000}},
      {"capacity negative: the policy", {2.5, kPastUs, -3, 2000}, {2.5, kPastUs, 10, 1000}},
      {"capacity 2^32: the policy", {2.5, kPastUs, k2To32, 2000}, {2.5, kPastUs, 10, 1000}},
      {"capacity NULL and tokens above the policy's limit",
       {15, kPastUs, std::nullopt, 2000},
       {10, kPastUs, 10, 1000}},
      {"window NULL: the policy", {2.5, kPastUs, 20, std::nullopt}, {2.5, kPastUs, 10, 1000}},
      {"window 0: the policy", {2.5, kPastUs, 20, 0}, {2.5, kPastUs, 10, 1000}},
      {"window negative: the policy", {2.5, kPastUs, 20, -1}, {2.5, kPastUs, 10, 1000}},
      {"window 2^32: the policy", {2.5, kPastUs, 20, k2To32}, {2.5, kPastUs, 10, 1000}},
      {"updated_at NULL: now", {2.5, std::nullopt, 20, 2000}, {2.5, kNowUs, 20, 2000}},
      {"updated_at a window and 1 us in the future: now",
       {2.5, kNowUs + 2000 * 1000 + 1, 20, 2000},
       {2.5, kNowUs, 20, 2000}},
      {"updated_at far in the future: a full bucket of the policy, now",
       {2.5, std::numeric_limits<int64_t>::max(), 20, 2000},
       {10, kNowUs, 10, 1000}},
      {"updated_at 30 days ahead, window 4e9 ms, no tokens: a full bucket of the policy, now",
       {0, kNowUs + kDayUs * 30, 50, 4'000'000'000},
       {10, kNowUs, 10, 1000}},
      {"updated_at an hour and 1 us ahead, within a 2 h window: a full bucket of the policy",
       {2.5, kNowUs + kHourUs + 1, 20, 7'200'000},
       {10, kNowUs, 10, 1000}},
      {"updated_at 49 days ahead, largest window: a full bucket of the policy",
       {kMaxU32, kNowUs + kDayUs * 49, kMaxU32, kMaxU32},
       {10, kNowUs, 10, 1000}},
      {"capacity the largest int8: the policy",
       {2.5, kPastUs, std::numeric_limits<int64_t>::max(), 2000},
       {2.5, kPastUs, 10, 1000}},
      {"window the smallest int8: the policy",
       {2.5, kPastUs, 20, std::numeric_limits<int64_t>::min()},
       {2.5, kPastUs, 10, 1000}},
      {"everything NULL: a full bucket of the policy, now",
       {std::nullopt, std::nullopt, std::nullopt, std::nullopt},
       {10, kNowUs, 10, 1000}},
      {"everything wrong at once", {kNaN, kNowUs + 7'000'000'000, -1, 0}, {10, kNowUs, 10, 1000}},
  };
  for (const RepairCase& c : kCases) {
    SCOPED_TRACE(c.name);
    SharedRow row{99, 99, 99, 99};  // Every field must be overwritten.
    const std::string problems = RepairRow(c.raw, kRepairPolicy, kNowUs, row);
    EXPECT_FALSE(problems.empty()) << "a repair must say what was wrong";
    EXPECT_EQ(row, c.repaired);
  }
}

TEST(RepairRowTest, WellFormedRowsAreKeptAsTheyAre) {
  const RepairCase kCases[] = {
      {"fractional tokens", {2.5, kPastUs, 20, 2000}, {2.5, kPastUs, 20, 2000}},
      {"empty", {0, kPastUs, 20, 2000}, {0, kPastUs, 20, 2000}},
      {"full", {20, kPastUs, 20, 2000}, {20, kPastUs, 20, 2000}},
      {"updated exactly now", {2.5, kNowUs, 20, 2000}, {2.5, kNowUs, 20, 2000}},
      {"updated long ago", {2.5, 0, 20, 2000}, {2.5, 0, 20, 2000}},
      {"smallest capacity and window", {0.5, kPastUs, 1, 1}, {0.5, kPastUs, 1, 1}},
      {"largest capacity and window",
       {kMaxU32, kPastUs, kMaxU32, kMaxU32},
       {kMaxU32, kPastUs, kMaxU32, kMaxU32}},
      {"a policy other than the request's", {2.5, kPastUs, 3, 60'000}, {2.5, kPastUs, 3, 60'000}},
      {"a debt", {-1.5, kPastUs, 20, 2000}, {-1.5, kPastUs, 20, 2000}},
      {"a debt barely below zero", {-1e-300, kPastUs, 20, 2000}, {-1e-300, kPastUs, 20, 2000}},
      {"the largest debt of a small bucket",
       {-1024, kPastUs, 20, 2000},
       {-1024, kPastUs, 20, 2000}},
      {"the largest debt of a large bucket",
       {-5000, kPastUs, 5000, 2000},
       {-5000, kPastUs, 5000, 2000}},
      {"updated a whole window ahead (a clock stepped back)",
       {2.5, kNowUs + 2000 * 1000, 20, 2000},
       {2.5, kNowUs + 2000 * 1000, 20, 2000}},
      {"updated an hour ahead, within a 2 h window (a clock stepped back)",
       {2.5, kNowUs + kHourUs, 20, 7'200'000},
       {2.5, kNowUs + kHourUs, 20, 7'200'000}},
  };
  for (const RepairCase& c : kCases) {
    SCOPED_TRACE(c.name);
    SharedRow row{99, 99, 99, 99};
    EXPECT_EQ(RepairRow(c.raw, kRepairPolicy, kNowUs, row), "");
    EXPECT_EQ(row, c.repaired);
  }
}

// A row stamped 30 days ahead, with an in-range window of 46 days and no tokens, locked its key:
// judged against its own window it was a clock step, so it refilled nothing for 30 days.
TEST(RepairRowTest, ARowFromTheFutureNoLongerLocksItsKey) {
  const Policy kFifty{50, 1000};
  const RawRow kRaw{0, kNowUs + kDayUs * 30, 50, 4'000'000'000};
  SharedRow row;
  EXPECT_NE(RepairRow(kRaw, kFifty, kNowUs, row), "");
  const StoreOp check{"k", 1, kFifty};
  const StoreOp* const ops[] = {&check};
  std::vector<StoreAnswer> answers;
  EXPECT_TRUE(ApplyOnRow(row, ops, kNowUs, answers));
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_TRUE(answers[0].check.allowed);
  EXPECT_EQ(answers[0].check.remaining, 49u);
  EXPECT_EQ(row, (SharedRow{49, kNowUs, 50, 1000}));
}

// ---------------------------------------------------------------------------------------------
// ApplyOnRow

SharedRow FullRow(const Policy& policy, int64_t now_us) {
  return SharedRow{static_cast<double>(policy.limit), now_us, policy.limit, policy.window_ms};
}

// The token bucket state a correct reader of `row` holds: the row's exact number of tokens.
TokenBucket::State StateOf(const SharedRow& row) {
  const Policy policy{row.capacity, row.window_ms};
  TokenBucket::State state = TokenBucket::Fresh(policy, row.updated_us);
  const uint128_t units = static_cast<uint128_t>(row.tokens * 1000) * row.window_ms;
  state.level = std::min(uint128_t{state.level}, units);  // Exact for the small rows built here.
  return state;
}

// What the memory store's arithmetic answers, stamped with the database as its source.
CheckResult Expected(TokenBucket::State& state, const StoreOp& check, int64_t now_us) {
  CheckResult r = TokenBucket::Decide(state, check.policy, check.cost, now_us);
  r.source = Source::kDatabase;
  return r;
}

// Applies `ops` on `row` as one batch and returns the full answers.
std::vector<StoreAnswer> Apply(SharedRow& row, const std::vector<StoreOp>& ops, int64_t now_us,
                               bool& wrote) {
  std::vector<const StoreOp*> pointers;
  for (const StoreOp& op : ops) pointers.push_back(&op);
  std::vector<StoreAnswer> answers;
  wrote = ApplyOnRow(row, pointers, now_us, answers);
  EXPECT_EQ(answers.size(), ops.size()) << "one answer per operation";
  return answers;
}

// Decides `checks` on `row` as one batch.
std::vector<CheckResult> Decide(SharedRow& row, const std::vector<StoreOp>& checks, int64_t now_us,
                                bool& wrote) {
  std::vector<CheckResult> results;
  for (const StoreAnswer& a : Apply(row, checks, now_us, wrote)) results.push_back(a.check);
  return results;
}

// Whether some check of `checks` took tokens, i.e. whether the row must be written.
bool AnyTook(const std::vector<StoreOp>& checks, const std::vector<CheckResult>& results) {
  for (size_t i = 0; i < checks.size(); ++i) {
    if (results[i].allowed && checks[i].cost > 0) return true;
  }
  return false;
}

// The row must be one that RepairRow accepts unchanged: reading it back gives what was written.
void ExpectWellFormed(const SharedRow& row, int64_t now_us) {
  ASSERT_TRUE(std::isfinite(row.tokens)) << testing::PrintToString(row);
  SharedRow reread;
  const RawRow raw{row.tokens, row.updated_us, row.capacity, row.window_ms,
                   static_cast<int64_t>(row.algorithm)};
  EXPECT_EQ(RepairRow(raw, Policy{row.capacity, row.window_ms}, now_us, reread), "");
  EXPECT_EQ(reread, row);
}

TEST(ApplyOnRowTest, AFreshFullRowAdmitsExactlyCapacityThenDenies) {
  for (const Policy policy : {Policy{1, 1000}, Policy{3, 1000}, Policy{10, 60'000}, Policy{1000, 1},
                              Policy{50'000, 10}}) {
    SCOPED_TRACE(PolicyName(policy));
    const std::vector<StoreOp> kOne = {StoreOp{"k", 1, policy}};

    // One check per batch, reading back what each batch wrote.
    SharedRow row = FullRow(policy, kNowUs);
    for (uint32_t i = 0; i < policy.limit; ++i) {
      bool wrote = false;
      const CheckResult r = Decide(row, kOne, kNowUs, wrote)[0];
      ASSERT_TRUE(r.allowed) << "check " << i;
      ASSERT_EQ(r.remaining, policy.limit - 1 - i);
      ASSERT_EQ(r.source, Source::kDatabase);
      ASSERT_TRUE(wrote);
    }
    bool wrote = true;
    const SharedRow drained = row;
    const CheckResult denied = Decide(row, kOne, kNowUs, wrote)[0];
    EXPECT_FALSE(denied.allowed);
    EXPECT_EQ(denied.status, CheckStatus::kOk);
    EXPECT_EQ(denied.source, Source::kDatabase);
    EXPECT_FALSE(wrote);
    EXPECT_EQ(row, drained);

    // All of them in one batch.
    SharedRow batch_row = FullRow(policy, kNowUs);
    const std::vector<StoreOp> batch(policy.limit + 2, StoreOp{"k", 1, policy});
    const std::vector<CheckResult> results = Decide(batch_row, batch, kNowUs, wrote);
    EXPECT_TRUE(wrote);
    int allowed = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      ASSERT_EQ(results[i].allowed, i < policy.limit) << "check " << i;
      ASSERT_EQ(results[i].source, Source::kDatabase);
      allowed += results[i].allowed ? 1 : 0;
    }
    EXPECT_EQ(allowed, static_cast<int>(policy.limit));
    EXPECT_EQ(batch_row, drained) << "one batch ends where one check per batch ended";
  }
}

// The token bucket scenarios, each check its own batch, the row carried between batches the
// way the table carries it (written only when ApplyOnRow says so); plus one showing that
// fractional tokens survive being written to and read from a row.
TEST(ApplyOnRowTest, RefillByDatabaseTimeGivesTheTokenBucketsExactAnswers) {
  std::vector<Scenario> scenarios = TokenBucketScenarios();
  scenarios.push_back({"fractions survive the row: 7 per 333 ms",
                       {7, 333},
                       {{0, 7, true, 0, 0, 333},
                        {10'001, 0, true, 0, 0, 323},
                        {37'570, 1, false, 0, 1, 286},
                        {1, 1, true, 0, 0, 333},
                        {47'572, 1, true, 0, 0, 333}}});
  for (const Scenario& scenario : scenarios) {
    SCOPED_TRACE(scenario.name);
    // The steps must agree with the memory store's arithmetic in the first place.
    ExpectSteps<TokenBucket>(scenario.policy, kNowUs, scenario.steps);

    SharedRow row = FullRow(scenario.policy, kNowUs);
    int64_t now = kNowUs;
    for (size_t i = 0; i < scenario.steps.size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(i));
      const Step& step = scenario.steps[i];
      now += step.advance_us;
      bool wrote = false;
      const CheckResult r = Decide(row, {StoreOp{"k", step.cost, scenario.policy}}, now, wrote)[0];
      EXPECT_EQ(r.status, CheckStatus::kOk);
      EXPECT_EQ(r.source, Source::kDatabase);
      EXPECT_EQ(r.limit, scenario.policy.limit);
      EXPECT_EQ(r.allowed, step.allowed);
      EXPECT_EQ(r.remaining, step.remaining);
      EXPECT_EQ(r.retry_after_ms, step.retry_after_ms);
      EXPECT_EQ(r.reset_after_ms, step.reset_after_ms);
      EXPECT_EQ(wrote, step.allowed && step.cost > 0);
    }
  }
}

// Pseudo-random batches against one row carried the way the table carries it, compared answer
// by answer with the memory store's arithmetic carried in memory. Because every later batch is
// decided from what was written, this also proves the written row is exactly the in-memory
// state (tokens and updated_us), or the answers would drift apart.
//
// Database time only moves forward here. After a read or a denial the row keeps its older
// updated_us (nothing is written) while the memory bucket has moved on, so if the clock then
// steps back the row refills from the older time and may hold less than the memory bucket:
// never more. Steps back are covered by the scenarios above and the test below.
TEST(ApplyOnRowTest, BatchesFromTheWrittenRowMatchTheTokenBucketInMemory) {
  const Policy kPolicies[] = {{1, 1},       {1, 1000},           {3, 1000}, {7, 333},
                              {10, 1000},   {60, 60'000},        {1000, 1}, {997, 1013},
                              {1, kMaxU32}, {100'000, 3'600'000}};
  for (const Policy& policy : kPolicies) {
    SCOPED_TRACE(PolicyName(policy));
    Rng rng(policy.limit * 31 + policy.window_ms);
    SharedRow row = FullRow(policy, kNowUs);
    TokenBucket::State state = TokenBucket::Fresh(policy, kNowUs);
    const uint64_t token_us = uint64_t{policy.window_ms} * 1000 / policy.limit;
    int64_t now = kNowUs;
    int writes = 0;
    int skipped_writes = 0;
    for (int b = 0; b < 400; ++b) {
      SCOPED_TRACE("batch " + std::to_string(b));
      now += static_cast<int64_t>(rng.UpTo(3 * token_us + 2));
      std::vector<StoreOp> checks(1 + rng.UpTo(4), StoreOp{"k", 1, policy});
      for (StoreOp& check : checks) {
        const uint64_t max_cost = rng.UpTo(3) == 0 ? policy.limit : std::min(policy.limit, 2u);
        check.cost = static_cast<uint32_t>(rng.UpTo(max_cost));
      }
      const SharedRow before = row;
      bool wrote = false;
      const std::vector<CheckResult> results = Decide(row, checks, now, wrote);
      for (size_t i = 0; i < checks.size(); ++i) {
        ASSERT_EQ(results[i], Expected(state, checks[i], now)) << "check " << i;
      }
      ASSERT_EQ(wrote, AnyTook(checks, results));
      if (wrote) {
        ++writes;
        ASSERT_NO_FATAL_FAILURE(ExpectWellFormed(row, std::max(now, row.updated_us)));
      } else {
        ++skipped_writes;
        ASSERT_EQ(row, before) << "nothing written, so nothing may change";
      }
    }
    EXPECT_GT(writes, 0);
    EXPECT_GT(skipped_writes, 0);
  }
}

struct NoWriteCase {
  const char* name;
  std::vector<StoreOp> checks;
};

TEST(ApplyOnRowTest, BatchesOfOnlyDenialsOrReadsWriteNothing) {
  const Policy kThree{3, 1000};
  // 0.5 tokens, 100 ms ago: 0.8 tokens now.
  const SharedRow kRow{0.5, kNowUs - 100'000, 3, 1000};
  const NoWriteCase kCases[] = {
      {"one denial", {{"k", 1, kThree}}},
      {"several denials", {{"k", 1, kThree}, {"k", 2, kThree}, {"k", 3, kThree}}},
      {"one read", {{"k", 0, kThree}}},
      {"reads and denials", {{"k", 0, kThree}, {"k", 1, kThree}, {"k", 0, kThree}}},
      {"a read with another policy", {{"k", 0, Policy{100, 10}}}},
      {"a denial with another policy", {{"k", 1, Policy{2, 60'000}}}},
  };
  for (const NoWriteCase& c : kCases) {
    SCOPED_TRACE(c.name);
    SharedRow row = kRow;
    TokenBucket::State state = StateOf(kRow);
    bool wrote = true;
    const std::vector<CheckResult> results = Decide(row, c.checks, kNowUs, wrote);
    EXPECT_FALSE(wrote);
    EXPECT_EQ(row, kRow);
    for (size_t i = 0; i < c.checks.size(); ++i) {
      EXPECT_EQ(results[i], Expected(state, c.checks[i], kNowUs)) << "check " << i;
      EXPECT_EQ(results[i].allowed, c.checks[i].cost == 0);
    }
  }
}

// Applies `ops` one transaction each, as a store that batches nothing would: the row is
// replaced only when ApplyOnRow says it must be written.
std::vector<StoreAnswer> ApplyOneByOne(SharedRow& row, const std::vector<StoreOp>& ops,
                                       int64_t now_us) {
  std::vector<StoreAnswer> answers;
  for (const StoreOp& op : ops) {
    SharedRow copy = row;
    bool wrote = false;
    answers.push_back(Apply(copy, {op}, now_us, wrote).front());
    if (wrote) row = copy;
  }
  return answers;
}

struct AloneCase {
  const char* name;
  std::vector<StoreOp> ops;
  SharedRow written;  // What the batch leaves in the table.
};

// A read (cost 0) under another policy used to rescale the row when it landed in a batch after
// a take: `[check 50/1000, check 50/1000, read 50/100]` left window_ms = 100, so the key then
// refilled ten times as fast (or starved, under a slower read). A batch now leaves the row as the
// same operations one transaction each, and answers as they do.
TEST(ApplyOnRowTest, ReadsAndDenialsUnderAnotherPolicyNeverChangeTheRowInABatch) {
  const Policy kChecks{50, 1000};
  const Policy kFast{50, 100};
  const Policy kSlow{50, 100'000};
  const StoreOp kCheck{"k", 1, kChecks};
  const AloneCase kCases[] = {
      {"the issue's batch", {kCheck, kCheck, {"k", 0, kFast}}, {48, kNowUs, 50, 1000}},
      {"a read first", {{"k", 0, kFast}, kCheck, kCheck}, {48, kNowUs, 50, 1000}},
      {"a slower read between takes", {kCheck, {"k", 0, kSlow}, kCheck}, {48, kNowUs, 50, 1000}},
      {"a read of a smaller capacity", {kCheck, {"k", 0, Policy{5, 1000}}}, {49, kNowUs, 50, 1000}},
      {"a denial under another policy after a take",
       {kCheck, {"k", 50, kFast}},
       {49, kNowUs, 50, 1000}},
      {"a lease granting nothing under another policy after a take",
       {kCheck, {"k", 50, kFast, StoreOp::Kind::kLease, 50}},
       {49, kNowUs, 50, 1000}},
  };
  for (const AloneCase& c : kCases) {
    SCOPED_TRACE(c.name);
    SharedRow batched = FullRow(kChecks, kNowUs - 5'000'000);
    SharedRow alone = batched;
    bool wrote = false;
    const std::vector<StoreAnswer> answers = Apply(batched, c.ops, kNowUs, wrote);
    const std::vector<StoreAnswer> one_by_one = ApplyOneByOne(alone, c.ops, kNowUs);
    EXPECT_TRUE(wrote);
    EXPECT_EQ(batched, c.written);
    EXPECT_EQ(batched, alone);
    for (size_t i = 0; i < c.ops.size(); ++i) {
      EXPECT_EQ(answers[i].check, one_by_one[i].check) << "op " << i;
      EXPECT_EQ(answers[i].granted, one_by_one[i].granted) << "op " << i;
      EXPECT_EQ(answers[i].check.limit, c.ops[i].policy.limit) << "op " << i;
    }
  }
}

// The read of the batch is answered under its own policy: the row's 48 tokens, of which
// a bucket of 50 per 100 ms misses 2, refilled in 4 ms.
TEST(ApplyOnRowTest, AReadIsAnsweredUnderThePolicyItNames) {
  const Policy kChecks{50, 1000};
  const Policy kFast{50, 100};
  SharedRow row = FullRow(kChecks, kNowUs);
  bool wrote = false;
  const std::vector<CheckResult> results =
      Decide(row, {{"k", 1, kChecks}, {"k", 1, kChecks}, {"k", 0, kFast}}, kNowUs, wrote);
  EXPECT_TRUE(results[2].allowed);
  EXPECT_EQ(results[2].limit, 50u);
  EXPECT_EQ(results[2].remaining, 48u);
  EXPECT_EQ(results[2].reset_after_ms, 4u);
  EXPECT_EQ(results[1].reset_after_ms, 40u) << "the checks' own policy: 2 tokens in 40 ms";
  EXPECT_EQ(row, (SharedRow{48, kNowUs, 50, 1000}));
}

// Checks under 50 per 1000 ms every 5 ms for 3 s, each batched with a read under a faster or a
// slower policy: exactly as many admitted as by the checks alone, so reads neither raise the
// checks' bound (capacity + rate * T) nor starve them.
TEST(ApplyOnRowTest, InterleavedReadsUnderAnyPolicyAdmitExactlyTheChecksAlone) {
  const Policy kChecks{50, 1000};
  for (const Policy& read : {Policy{50, 100}, Policy{50, 100'000}, Policy{1, 1}, kChecks}) {
    SCOPED_TRACE(PolicyName(read));
    SharedRow row = FullRow(kChecks, kNowUs);
    TokenBucket::State alone = TokenBucket::Fresh(kChecks, kNowUs);
    int admitted = 0;
    int admitted_alone = 0;
    for (int64_t t = kNowUs; t <= kNowUs + 3'000'000; t += 5'000) {
      const std::vector<StoreOp> batch =
          t % 10'000 == 0 ? std::vector<StoreOp>{{"k", 1, kChecks}, {"k", 0, read}}
                          : std::vector<StoreOp>{{"k", 0, read}, {"k", 1, kChecks}};
      bool wrote = false;
      const std::vector<CheckResult> results = Decide(row, batch, t, wrote);
      admitted += results[t % 10'000 == 0 ? 0 : 1].allowed;
      admitted_alone += TokenBucket::Decide(alone, kChecks, 1, t).allowed;
      ASSERT_EQ(row.window_ms, kChecks.window_ms);
    }
    EXPECT_EQ(admitted, admitted_alone);
    EXPECT_EQ(admitted, 50 + 150) << "capacity + rate * 3 s";
  }
}

struct WriteCase {
  const char* name;
  SharedRow row;
  std::vector<StoreOp> checks;
  int64_t now_us;
  SharedRow written;
};

TEST(ApplyOnRowTest, ATakeWritesTheRefilledRemainderAtTheDatabaseTime) {
  const Policy kThree{3, 1000};
  const Policy kTen{10, 1000};
  const WriteCase kCases[] = {
      {"a take from a full row",
       FullRow(kThree, kNowUs),
       {{"k", 1, kThree}},
       kNowUs,
       {2, kNowUs, 3, 1000}},
      {"refill of 1.5 tokens, then a take",
       {0, kNowUs, 3, 1000},
       {{"k", 1, kThree}},
       kNowUs + 500'000,
       {0.5, kNowUs + 500'000, 3, 1000}},
      {"a fractional remainder is kept to the microsecond",
       {0, kNowUs, 3, 1000},
       {{"k", 1, kThree}},
       kNowUs + 333'334,
       {2.0 / 1'000'000, kNowUs + 333'334, 3, 1000}},
      {"a take after a denial",
       {1, kNowUs, 10, 1000},
       {{"k", 2, kTen}, {"k", 1, kTen}},
       kNowUs + 50'000,
       {0.5, kNowUs + 50'000, 10, 1000}},
      {"a denial after a take still writes the take",
       {2.25, kNowUs, 10, 1000},
       {{"k", 2, kTen}, {"k", 1, kTen}, {"k", 0, kTen}},
       kNowUs,
       {0.25, kNowUs, 10, 1000}},
      {"a take then a read",
       {10, kNowUs - 1'000'000, 10, 1000},
       {{"k", 0, kTen}, {"k", 4, kTen}, {"k", 0, kTen}},
       kNowUs,
       {6, kNowUs, 10, 1000}},
  };
  for (const WriteCase& c : kCases) {
    SCOPED_TRACE(c.name);
    SharedRow row = c.row;
    TokenBucket::State state = StateOf(c.row);
    bool wrote = false;
    const std::vector<CheckResult> results = Decide(row, c.checks, c.now_us, wrote);
    EXPECT_TRUE(wrote);
    EXPECT_DOUBLE_EQ(row.tokens, c.written.tokens);
    EXPECT_EQ(row.updated_us, c.written.updated_us);
    EXPECT_EQ(row.capacity, c.written.capacity);
    EXPECT_EQ(row.window_ms, c.written.window_ms);
    for (size_t i = 0; i < c.checks.size(); ++i) {
      EXPECT_EQ(results[i], Expected(state, c.checks[i], c.now_us)) << "check " << i;
    }

    // Deciding on from the written row answers as the state kept in memory does.
    const int64_t later = c.now_us + 123'457;
    const std::vector<StoreOp> next = {{"k", 1, c.checks[0].policy}, {"k", 0, c.checks[0].policy}};
    const std::vector<CheckResult> reread = Decide(row, next, later, wrote);
    for (size_t i = 0; i < next.size(); ++i) {
      EXPECT_EQ(reread[i], Expected(state, next[i], later)) << "next check " << i;
    }
  }
}

TEST(ApplyOnRowTest, ARowUpdatedAfterNowRefillsNothing) {
  const Policy kTen{10, 1000};
  for (const int64_t ahead_us : {int64_t{1}, int64_t{10'000'000}}) {
    SCOPED_TRACE("row updated " + std::to_string(ahead_us) + " us after now");
    const SharedRow kRow{1, kNowUs + ahead_us, 10, 1000};
    SharedRow row = kRow;
    TokenBucket::State state = StateOf(kRow);
    bool wrote = false;
    const std::vector<StoreOp> checks = {{"k", 1, kTen}, {"k", 1, kTen}, {"k", 0, kTen}};
    const std::vector<CheckResult> results = Decide(row, checks, kNowUs, wrote);
    EXPECT_TRUE(results[0].allowed);
    EXPECT_EQ(results[0].remaining, 0u);
    EXPECT_FALSE(results[1].allowed) << "the step back refilled something";
    EXPECT_EQ(results[1].retry_after_ms, 100u);
    EXPECT_EQ(results[2].remaining, 0u);
    for (size_t i = 0; i < checks.size(); ++i) {
      EXPECT_EQ(results[i], Expected(state, checks[i], kNowUs)) << "check " << i;
    }
    EXPECT_TRUE(wrote);
    EXPECT_EQ(row.tokens, 0);
    EXPECT_GE(row.updated_us, kNowUs);

    // Still before the row's time: still nothing refilled.
    const int64_t later = kNowUs + ahead_us / 2;
    const CheckResult again = Decide(row, {{"k", 1, kTen}}, later, wrote)[0];
    EXPECT_EQ(again, Expected(state, StoreOp{"k", 1, kTen}, later));
    EXPECT_FALSE(again.allowed);
  }
}

struct RescaleCase {
  const char* name;
  Policy policy;
  uint32_t cost;
  bool allowed;
  uint32_t remaining;
  bool wrote;
  SharedRow row_after;
};

TEST(ApplyOnRowTest, AnotherPolicyRescalesAndTheRowRecordsItWhenItTakes) {
  const SharedRow kRow{4, kNowUs, 10, 1000};  // 4 tokens of 10 per second.
  const RescaleCase kCases[] = {
      {"smaller capacity above the tokens keeps them",
       {5, 500},
       1,
       true,
       3,
       true,
       {3, kNowUs, 5, 500}},
      {"capacity below the tokens clamps them", {2, 1000}, 1, true, 1, true, {1, kNowUs, 2, 1000}},
      {"larger capacity and window keeps the tokens",
       {100, 60'000},
       1,
       true,
       3,
       true,
       {3, kNowUs, 100, 60'000}},
      {"a read with another policy records nothing", {2, 1000}, 0, true, 2, false, kRow},
      {"a denial with another policy records nothing", {5, 1000}, 5, false, 4, false, kRow},
  };
  for (const RescaleCase& c : kCases) {
    SCOPED_TRACE(c.name);
    SharedRow row = kRow;
    TokenBucket::State state = StateOf(kRow);
    const StoreOp check{"k", c.cost, c.policy};
    bool wrote = !c.wrote;
    const CheckResult r = Decide(row, {check}, kNowUs, wrote)[0];
    EXPECT_EQ(r, Expected(state, check, kNowUs));
    EXPECT_EQ(r.allowed, c.allowed);
    EXPECT_EQ(r.remaining, c.remaining);
    EXPECT_EQ(r.limit, c.policy.limit);
    EXPECT_EQ(wrote, c.wrote);
    EXPECT_EQ(row, c.row_after);
  }
}

// Runs batches that reach the extremes (full, empty, huge time gaps) on a fresh full row of
// `policy`, expecting the memory store's answers and a well-formed row after each batch.
void ExpectExtremeBatchesMatchTheTokenBucket(const Policy& policy) {
  SharedRow row = FullRow(policy, kNowUs);
  TokenBucket::State state = TokenBucket::Fresh(policy, kNowUs);
  struct Batch {
    int64_t advance_us;
    std::vector<uint32_t> costs;
  };
  const Batch kBatches[] = {
      {0, {0}},                    // A read of the full row.
      {0, {1}},                    // One token from the full row.
      {0, {policy.limit}},         // All of them, one short: denied.
      {1, {0, 1}},                 // One microsecond later.
      {int64_t{1} << 40, {0}},     // 12.7 days later.
      {0, {policy.limit, 0}},      // The whole bucket at once.
      {int64_t{1} << 62, {1, 0}},  // Time far beyond any window.
  };
  int64_t now = kNowUs;
  for (size_t b = 0; b < std::size(kBatches); ++b) {
    SCOPED_TRACE("batch " + std::to_string(b));
    now += kBatches[b].advance_us;
    std::vector<StoreOp> checks;
    for (uint32_t cost : kBatches[b].costs) checks.push_back(StoreOp{"k", cost, policy});
    bool wrote = false;
    const std::vector<CheckResult> results = Decide(row, checks, now, wrote);
    for (size_t i = 0; i < checks.size(); ++i) {
      EXPECT_EQ(results[i], Expected(state, checks[i], now)) << "check " << i;
    }
    ASSERT_TRUE(std::isfinite(row.tokens));
    EXPECT_GE(row.tokens, 0);
    EXPECT_LE(row.tokens, policy.limit);
    EXPECT_EQ(row.capacity, policy.limit);
    EXPECT_EQ(row.window_ms, policy.window_ms);
  }
}

// The largest capacity and window: no overflow, no NaN, and the same answers as the memory store.
TEST(ApplyOnRowTest, ExtremeCapacityOrWindowStayExactWithoutOverflow) {
  for (const Policy policy :
       {Policy{kMaxU32, 1}, Policy{1, kMaxU32}, Policy{kMaxU32, 60'000}, Policy{1000, kMaxU32}}) {
    SCOPED_TRACE(PolicyName(policy));
    ExpectExtremeBatchesMatchTheTokenBucket(policy);
  }
}

// A full row must read as exactly full even when capacity * window_ms * 1000 exceeds 2^53,
// where a double cannot hold the level: whole tokens convert exactly.
TEST(ApplyOnRowTest, AFullRowOfAHugeCapacityTimesWindowIsExactlyFull) {
  for (const Policy policy : {Policy{kMaxU32, kMaxU32}, Policy{999'999'999, 86'400'000}}) {
    SCOPED_TRACE(PolicyName(policy));
    ExpectExtremeBatchesMatchTheTokenBucket(policy);

    SharedRow row = FullRow(policy, kNowUs);
    bool wrote = false;
    const std::vector<CheckResult> all = Decide(row, {{"k", policy.limit, policy}}, kNowUs, wrote);
    EXPECT_TRUE(all[0].allowed) << "the whole capacity of a full row is denied";
    EXPECT_EQ(all[0].retry_after_ms, 0u);
  }
}

// A database clock that stepped back (a failover) leaves updated_at slightly ahead: that is no
// damage, and keeping it only delays refill until the clock catches up.
TEST(RepairRowTest, UpdatedAtLessThanAWindowAheadIsKept) {
  const RawRow raw{2.5, kNowUs + 2000 * 1000, 20, 2000};
  SharedRow row;
  EXPECT_EQ(RepairRow(raw, Policy{10, 1000}, kNowUs, row), "");
  EXPECT_EQ(row.updated_us, kNowUs + 2000 * 1000);
}

// ---------------------------------------------------------------------------------------------
// ApplyOnRow: leases and returns

StoreOp LeaseOp(uint32_t cost, uint32_t want, const Policy& policy) {
  return StoreOp{"k", cost, policy, StoreOp::Kind::kLease, want};
}

StoreOp ReturnOp(uint32_t tokens, int64_t debit_us, const Policy& policy) {
  return StoreOp{"k", tokens, policy, StoreOp::Kind::kReturn, 0, debit_us};
}

// 10 per second: a token every 100 ms.
constexpr Policy kTenPerSecond{10, 1000};

TEST(ApplyOnRowTest, ALeaseGrantsWhatIsWantedUpToHalfOfTheWholeTokensOrItsCostIfThatIsThere) {
  struct Case {
    const char* name;
    double tokens;
    int64_t updated_ago_us;
    uint32_t cost;
    uint32_t want;
    uint32_t granted;
    uint32_t remaining;
    uint32_t retry_after_ms;
    double tokens_after;  // In the row, written only when something was granted.
  };
  const Case kCases[] = {
      {"a full row grants all that is wanted", 10, 0, 1, 4, 4, 6, 0, 6},
      {"more than half of what is there wanted: half of the whole tokens", 7.5, 0, 1, 10, 3, 4, 0,
       4.5},
      {"a cost above half of what is there: the cost", 10, 0, 7, 8, 7, 3, 0, 3},
      {"the last whole token", 1.5, 0, 1, 5, 1, 0, 0, 0.5},
      {"exactly the cost in whole tokens is enough", 2.5, 0, 2, 5, 2, 0, 0, 0.5},
      {"refill up to the database time counts", 0, 250'000, 1, 5, 1, 1, 0, 1.5},
      {"want equal to cost", 10, 0, 3, 3, 3, 7, 0, 7},
      {"fewer whole tokens than the cost: nothing, until the cost is there", 2.5, 0, 3, 5, 0, 2, 50,
       2.5},
      {"an empty row: nothing, until the cost is there", 0, 0, 4, 4, 0, 0, 400, 0},
      {"less than one whole token: nothing", 0.99, 0, 1, 1, 0, 0, 1, 0.99},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const SharedRow before{c.tokens, kNowUs - c.updated_ago_us, 10, 1000};
    SharedRow row = before;
    bool wrote = !(c.granted > 0);
    const StoreAnswer a = Apply(row, {LeaseOp(c.cost, c.want, kTenPerSecond)}, kNowUs, wrote)[0];
    EXPECT_EQ(a.granted, c.granted);
    EXPECT_EQ(a.check.allowed, c.granted > 0);
    EXPECT_EQ(a.check.status, CheckStatus::kOk);
    EXPECT_EQ(a.check.limit, 10u);
    EXPECT_EQ(a.check.remaining, c.remaining);
    EXPECT_EQ(a.check.retry_after_ms, c.retry_after_ms);
    EXPECT_EQ(a.check.source, Source::kDatabase);
    EXPECT_EQ(a.now_us, kNowUs) << "the debit time";
    EXPECT_EQ(wrote, c.granted > 0) << "a denial must not ask for a write";
    if (c.granted > 0) {
      EXPECT_DOUBLE_EQ(row.tokens, c.tokens_after);
      EXPECT_EQ(row.updated_us, kNowUs);
    } else {
      EXPECT_EQ(row, before);
    }
  }
}

// The contract of kLease: take at most `want`, and only if at least `cost` are there. A lease
// that wants less than its cost can never take anything, so it must be a denial that takes
// nothing, even when the row has the cost and the batch writes the row for another operation.
TEST(ApplyOnRowTest, ALeaseWantingLessThanItsCostTakesNothing) {
  SharedRow row = FullRow(kTenPerSecond, kNowUs);
  bool wrote = false;
  const std::vector<StoreAnswer> answers =
      Apply(row, {LeaseOp(3, 2, kTenPerSecond), StoreOp{"k", 1, kTenPerSecond}}, kNowUs, wrote);
  EXPECT_EQ(answers[0].granted, 0u);
  EXPECT_FALSE(answers[0].check.allowed) << "allowed without granting anything";
  EXPECT_TRUE(answers[1].check.allowed);
  EXPECT_EQ(answers[1].check.remaining, 9u) << "the lease took tokens it did not grant";
  EXPECT_TRUE(wrote);
  EXPECT_DOUBLE_EQ(row.tokens, 9);
}

TEST(ApplyOnRowTest, AReturnGivesBackItsTokensLessTheRefillSinceItsDebitUpToCapacity) {
  struct Case {
    const char* name;
    double tokens;  // In the row, updated `updated_ago_us` before now.
    int64_t updated_ago_us;
    uint32_t returned;     // Tokens of the lease.
    int64_t debit_ago_us;  // Negative: dated after now.
    uint32_t granted;      // Whole tokens put back.
    bool writes;           // Whether the row changes (and so must be written).
    double tokens_after;
  };
  const Case kCases[] = {
      {"debited just now: all back", 2, 0, 5, 0, 5, true, 7},
      {"less one token refilled in the 100 ms since", 2, 0, 5, 100'000, 4, true, 6},
      {"less 2.5 tokens: the fraction is kept", 2, 0, 5, 250'000, 2, true, 4.5},
      {"less than a whole token back still counts", 2, 0, 1, 50'000, 0, true, 2.5},
      {"refilled as much as the lease since: nothing", 2, 0, 5, 500'000, 0, false, 2},
      {"refilled more than the lease since: nothing", 2, 0, 5, 10'000'000, 0, false, 2},
      {"never above capacity", 8, 0, 5, 0, 2, true, 10},
      {"a full row takes nothing back", 10, 0, 5, 0, 0, false, 10},
      {"the row refills to now first", 0, 300'000, 4, 300'000, 1, true, 4},
      {"dated after now, a clock that stepped back: nothing", 2, 0, 5, -1, 0, false, 2},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const SharedRow before{c.tokens, kNowUs - c.updated_ago_us, 10, 1000};
    SharedRow row = before;
    bool wrote = !c.writes;
    const StoreAnswer a = Apply(row, {ReturnOp(c.returned, kNowUs - c.debit_ago_us, kTenPerSecond)},
                                kNowUs, wrote)[0];
    EXPECT_EQ(a.granted, c.granted);
    EXPECT_TRUE(a.check.allowed);
    EXPECT_EQ(a.check.status, CheckStatus::kOk);
    EXPECT_EQ(a.check.limit, 10u);
    EXPECT_EQ(a.check.source, Source::kDatabase);
    EXPECT_EQ(wrote, c.writes);
    if (c.writes) {
      EXPECT_DOUBLE_EQ(row.tokens, c.tokens_after);
      EXPECT_EQ(row.updated_us, kNowUs);
      EXPECT_EQ(row.capacity, 10u);
    } else {
      EXPECT_EQ(row, before) << "nothing given back, nothing written";
    }
  }
}

// Operations of one key in one batch are decided one after another, each seeing what the one
// before left.
TEST(ApplyOnRowTest, AMixedBatchOfOneKeyIsAppliedInOrder) {
  SharedRow row = FullRow(kTenPerSecond, kNowUs);  // 10 tokens.
  bool wrote = false;
  const std::vector<StoreOp> ops = {
      StoreOp{"k", 3, kTenPerSecond}, LeaseOp(2, 5, kTenPerSecond),
      LeaseOp(5, 5, kTenPerSecond),   ReturnOp(4, kNowUs, kTenPerSecond),
      StoreOp{"k", 6, kTenPerSecond}, StoreOp{"k", 0, kTenPerSecond},
  };
  const std::vector<StoreAnswer> answers = Apply(row, ops, kNowUs, wrote);
  struct Expected {
    bool allowed;
    uint32_t granted;
    uint32_t remaining;
  };
  const Expected kExpected[] = {
      {true, 0, 7},   // The check takes 3 of 10.
      {true, 3, 4},   // The lease wants 5 of 7: it takes half, 3.
      {false, 0, 4},  // The next needs 5 of the 4 left: nothing.
      {true, 4, 0},   // The return puts 4 back: 8. (A return's remaining is not reported.)
      {true, 0, 2},   // The check takes 6 of 8.
      {true, 0, 2},   // A read.
  };
  for (size_t i = 0; i < answers.size(); ++i) {
    SCOPED_TRACE("operation " + std::to_string(i));
    EXPECT_EQ(answers[i].check.allowed, kExpected[i].allowed);
    EXPECT_EQ(answers[i].granted, kExpected[i].granted);
    if (i != 3) {
      EXPECT_EQ(answers[i].check.remaining, kExpected[i].remaining);
    }
  }
  EXPECT_EQ(answers[2].check.retry_after_ms, 100u);
  EXPECT_TRUE(wrote);
  EXPECT_DOUBLE_EQ(row.tokens, 2);
}

// ---------------------------------------------------------------------------------------------
// Fixed windows

constexpr Algorithm kWindow = Algorithm::kFixedWindow;

StoreOp WindowCheck(uint32_t cost, const Policy& policy) {
  StoreOp op{"k", cost, policy};
  op.algorithm = kWindow;
  return op;
}

StoreOp WindowLease(uint32_t cost, uint32_t want, const Policy& policy) {
  StoreOp op = LeaseOp(cost, want, policy);
  op.algorithm = kWindow;
  return op;
}

StoreOp WindowReturn(uint32_t tokens, int64_t window_start_us, const Policy& policy) {
  StoreOp op = ReturnOp(tokens, window_start_us, policy);
  op.algorithm = kWindow;
  return op;
}

// A fixed window row as the INSERT creates it: full, and its window already over, so that the
// first check opens the window at its own (database) time.
SharedRow NewWindowRow(const Policy& policy, int64_t now_us) {
  return SharedRow{static_cast<double>(policy.limit), now_us - int64_t{policy.window_ms} * 1000,
                   policy.limit, policy.window_ms, kWindow};
}

// Random checks and clock steps, each in a transaction of its own on a row written back only
// when ApplyOnRow says so, answer exactly as the memory store's FixedWindow (which starts with
// no state at the first check).
TEST(FixedWindowRowTest, ChecksOnTheRowAnswerExactlyAsTheMemoryStoresFixedWindow) {
  Rng rng(17);
  for (int run = 0; run < 50; ++run) {
    const Policy policy{static_cast<uint32_t>(1 + rng.UpTo(9)),
                        static_cast<uint32_t>(1 + rng.UpTo(2000))};
    int64_t now = kNowUs + static_cast<int64_t>(rng.UpTo(999));
    SharedRow row = NewWindowRow(policy, now);
    std::optional<FixedWindow::State> memory;
    for (int step = 0; step < 200; ++step) {
      now += static_cast<int64_t>(rng.UpTo(uint64_t{policy.window_ms} * 400));
      const uint32_t cost = static_cast<uint32_t>(rng.UpTo(std::min<uint32_t>(policy.limit, 3)));
      const std::optional<FixedWindow::State> before = memory;
      if (!memory) memory = FixedWindow::Fresh(policy, now);
      CheckResult expected = FixedWindow::Decide(*memory, policy, cost, now);
      if (cost == 0) memory = before;  // A read stores nothing, in memory as in the table.
      expected.source = Source::kDatabase;
      bool wrote = false;
      const StoreAnswer answer = Apply(row, {WindowCheck(cost, policy)}, now, wrote)[0];
      ASSERT_EQ(answer.check, expected) << "run " << run << " step " << step;
      EXPECT_EQ(wrote, expected.allowed && cost > 0);
      EXPECT_EQ(answer.window_end_us - answer.window_start_us, int64_t{policy.window_ms} * 1000);
      EXPECT_EQ(row.algorithm, kWindow);
    }
  }
}

TEST(FixedWindowRowTest, TheRowHoldsAdmissionsLeftAndTheWindowsStart) {
  const Policy kFive{5, 1000};
  SharedRow row = NewWindowRow(kFive, kNowUs);
  bool wrote = false;
  const std::vector<StoreAnswer> answers =
      Apply(row, {WindowCheck(2, kFive), WindowCheck(3, kFive), WindowCheck(1, kFive)},
            kNowUs + 1500, wrote);
  EXPECT_TRUE(wrote);
  EXPECT_EQ(row, (SharedRow{0, kNowUs + 1000, 5, 1000, kWindow})) << "opened at its first check";
  EXPECT_FALSE(answers[2].check.allowed);
  EXPECT_EQ(answers[2].check.retry_after_ms, 1000u) << "the rest of the window";
  EXPECT_EQ(answers[2].window_start_us, kNowUs + 1000);
  EXPECT_EQ(answers[2].window_end_us, kNowUs + 1'001'000);
  // A window opens at the first check after the previous one ended, not on a grid.
  const StoreAnswer later = Apply(row, {WindowCheck(1, kFive)}, kNowUs + 1'401'000, wrote)[0];
  EXPECT_TRUE(later.check.allowed);
  EXPECT_EQ(later.check.reset_after_ms, 1000u);
  EXPECT_EQ(row, (SharedRow{4, kNowUs + 1'401'000, 5, 1000, kWindow}));
}

// Leases are debited from the window's count: whatever is leased, checked and returned, the
// admissions a window's leases and checks can make never exceed its limit.
TEST(FixedWindowRowTest, LeasesAndChecksOfOneWindowNeverTakeMoreThanItsLimit) {
  const Policy kTen{10, 1000};
  SharedRow row = NewWindowRow(kTen, kNowUs);
  bool wrote = false;
  const std::vector<StoreAnswer> answers =
      Apply(row,
            {WindowLease(1, 8, kTen), WindowLease(1, 8, kTen), WindowCheck(1, kTen),
             WindowLease(1, 8, kTen), WindowLease(1, 8, kTen), WindowLease(1, 8, kTen),
             WindowLease(1, 8, kTen)},
            kNowUs + 10'000, wrote);
  uint32_t taken = 0;
  for (const StoreAnswer& a : answers) taken += a.granted + (a.granted == 0 && a.check.allowed);
  EXPECT_EQ(taken, 10u) << "the whole window, in halves for the next sidecar, and no more";
  EXPECT_EQ(answers[0].granted, 5u);
  EXPECT_EQ(answers[1].granted, 2u);
  EXPECT_FALSE(answers.back().check.allowed);
  EXPECT_EQ(answers.back().check.retry_after_ms, 1000u);
  EXPECT_EQ(answers.back().window_end_us, kNowUs + 1'010'000);
  EXPECT_DOUBLE_EQ(row.tokens, 0);
}

TEST(FixedWindowRowTest, AReturnGivesBackOnlyToItsOwnWindowWhileItHolds) {
  const Policy kTen{10, 1000};
  const int64_t start = kNowUs;
  SharedRow row{2, start, 10, 1000, kWindow};  // 8 of this window taken.
  bool wrote = false;
  // To its own window: back, never above the limit.
  StoreAnswer back = Apply(row, {WindowReturn(20, start, kTen)}, start + 500'000, wrote)[0];
  EXPECT_EQ(back.granted, 8u);
  EXPECT_TRUE(wrote);
  EXPECT_DOUBLE_EQ(row.tokens, 10);
  // To an older window (a newer one has opened): gone.
  row = SharedRow{2, start, 10, 1000, kWindow};
  back = Apply(row, {WindowReturn(3, start - 1'000'000, kTen)}, start + 500'000, wrote)[0];
  EXPECT_EQ(back.granted, 0u);
  EXPECT_FALSE(wrote);
  // After its window ended: gone, and the row is not touched.
  back = Apply(row, {WindowReturn(3, start, kTen)}, start + 1'000'000, wrote)[0];
  EXPECT_EQ(back.granted, 0u);
  EXPECT_FALSE(wrote);
  EXPECT_EQ(row, (SharedRow{2, start, 10, 1000, kWindow}));
}

TEST(FixedWindowRowTest, ARowOfTheOtherAlgorithmIsConvertedWhenTakenFromNeverWithMore) {
  const Policy kTen{10, 1000};
  bool wrote = false;
  // A token bucket of 2.5 tokens, refilled by 3 over 300 ms: a window of 5 opening now.
  SharedRow bucket{2.5, kNowUs, 10, 1000};
  const int64_t now = kNowUs + 300'000;
  StoreAnswer a = Apply(bucket, {WindowCheck(0, kTen)}, now, wrote)[0];
  EXPECT_FALSE(wrote) << "a read converts nothing";
  EXPECT_EQ(bucket.algorithm, Algorithm::kTokenBucket);
  EXPECT_EQ(a.check.remaining, 5u);
  a = Apply(bucket, {WindowCheck(1, kTen)}, now, wrote)[0];
  EXPECT_TRUE(wrote);
  EXPECT_EQ(bucket, (SharedRow{4, now, 10, 1000, kWindow}));
  // A fixed window with 4 left, back to a token bucket: 4 tokens refilling from now.
  SharedRow window = bucket;
  a = Apply(window, {StoreOp{"k", 1, kTen}}, now + 1000, wrote)[0];
  EXPECT_TRUE(a.check.allowed);
  EXPECT_EQ(window.algorithm, Algorithm::kTokenBucket);
  EXPECT_DOUBLE_EQ(window.tokens, 3);
  EXPECT_EQ(window.updated_us, now + 1000);
  // Once its window has ended, it is a full bucket.
  window = bucket;
  a = Apply(window, {StoreOp{"k", 1, kTen}}, now + 1'000'000, wrote)[0];
  EXPECT_DOUBLE_EQ(window.tokens, 9);
}

TEST(FixedWindowRowTest, RepairsFollowTheTokenBucketsRulesAndNameTheAlgorithm) {
  const Policy kTen{10, 1000};
  SharedRow row;
  // algorithm NULL or unknown: the operation's, the rest kept.
  EXPECT_EQ(RepairRow(RawRow{3.0, kPastUs, 10, 1000, std::nullopt}, kTen, kNowUs, row, kWindow),
            "algorithm missing or unknown");
  EXPECT_EQ(row, (SharedRow{3, kPastUs, 10, 1000, kWindow}));
  EXPECT_EQ(RepairRow(RawRow{3.0, kPastUs, 10, 1000, 7}, kTen, kNowUs, row),
            "algorithm missing or unknown");
  EXPECT_EQ(row.algorithm, Algorithm::kTokenBucket);
  // A fixed window's admissions are whole.
  EXPECT_EQ(RepairRow(RawRow{3.5, kPastUs, 10, 1000, 1}, kTen, kNowUs, row),
            "fractional admissions in a fixed window");
  EXPECT_EQ(row, (SharedRow{3, kPastUs, 10, 1000, kWindow}));
  // The shared rules: above capacity, a start a little ahead kept (a clock stepped back), far
  // ahead moved to now.
  EXPECT_EQ(RepairRow(RawRow{12.0, kNowUs + 500'000, 10, 1000, 1}, kTen, kNowUs, row),
            "tokens above capacity");
  EXPECT_EQ(row, (SharedRow{10, kNowUs + 500'000, 10, 1000, kWindow}));
  EXPECT_EQ(RepairRow(RawRow{4.0, kNowUs + 5'000'000, 10, 1000, 1}, kTen, kNowUs, row),
            "updated_at in the future");
  EXPECT_EQ(row, (SharedRow{4, kNowUs, 10, 1000, kWindow}));
  // Well formed: kept as it is.
  EXPECT_EQ(RepairRow(RawRow{4.0, kPastUs, 10, 1000, 1}, kTen, kNowUs, row), "");
}

// ---------------------------------------------------------------------------------------------
// Debt: tokens admitted before the row was asked (StoreOp::owed)

StoreOp OwedOp(uint32_t owed, uint32_t cost, uint32_t want, const Policy& policy,
               Algorithm algorithm = Algorithm::kTokenBucket) {
  StoreOp op = LeaseOp(cost, want, policy);
  op.owed = owed;
  op.algorithm = algorithm;
  return op;
}

// What the row owes is taken whether it is there or not; the row then grants nothing, to a
// check or a lease, until refill has repaid the debt; and every row written along the way reads
// back as it was written.
TEST(DebtTest, ARowInDebtGrantsNothingUntilRefillHasRepaidIt) {
  SharedRow row{1, kNowUs, 10, 1000};  // 1 token; 10 per second.
  bool wrote = false;
  StoreAnswer a = Apply(row, {OwedOp(4, 0, 0, kTenPerSecond)}, kNowUs, wrote)[0];
  EXPECT_TRUE(wrote) << "a debit always writes";
  EXPECT_TRUE(a.in_debt);
  EXPECT_EQ(a.granted, 0u);
  EXPECT_EQ(a.check.retry_after_ms, 400u) << "3 owed and 1 to have: 4 tokens at 10 per second";
  EXPECT_DOUBLE_EQ(row.tokens, -3);
  ExpectWellFormed(row, kNowUs);

  // 250 ms refill 2.5 tokens: still 0.5 owed. A check and a lease get nothing.
  const int64_t later = kNowUs + 250'000;
  std::vector<StoreAnswer> answers =
      Apply(row, {StoreOp{"k", 1, kTenPerSecond}, LeaseOp(1, 5, kTenPerSecond)}, later, wrote);
  EXPECT_FALSE(wrote);
  EXPECT_FALSE(answers[0].check.allowed);
  EXPECT_EQ(answers[0].check.retry_after_ms, 150u) << "0.5 owed and 1 to have";
  EXPECT_EQ(answers[0].check.remaining, 0u);
  EXPECT_EQ(answers[1].granted, 0u);
  EXPECT_TRUE(answers[1].in_debt);
  EXPECT_EQ(answers[1].check.retry_after_ms, 150u);
  EXPECT_DOUBLE_EQ(row.tokens, -3) << "denials write nothing";

  // 350 ms: repaid, 0.5 refilled: still short of 1. 400 ms: exactly 1.
  EXPECT_FALSE(Decide(row, {StoreOp{"k", 1, kTenPerSecond}}, kNowUs + 350'000, wrote)[0].allowed);
  const CheckResult r = Decide(row, {StoreOp{"k", 1, kTenPerSecond}}, kNowUs + 400'000, wrote)[0];
  EXPECT_TRUE(r.allowed);
  EXPECT_TRUE(wrote);
  EXPECT_EQ(row.tokens, 0);
  ExpectWellFormed(row, kNowUs + 400'000);
}

// A debit that the row can pay is an ordinary take; one it cannot pay in full takes what is
// there and owes the rest; a lease in the same operation then gets nothing.
TEST(DebtTest, ADebitTakesWhatIsThereAndOwesOnlyTheRest) {
  struct Case {
    const char* name;
    double tokens;
    uint32_t owed;
    uint32_t want;
    double tokens_after;
    bool in_debt;
    uint32_t granted;
  };
  const Case kCases[] = {
      {"paid in full, no lease wanted", 5, 2, 0, 3, false, 0},
      {"paid in full, then a lease of half the rest", 5, 1, 4, 2, false, 2},
      {"exactly what is there", 2, 2, 0, 0, false, 0},
      {"a fraction short", 1.5, 2, 3, -0.5, true, 0},
      {"an empty row", 0, 3, 1, -3, true, 0},
      {"a row already in debt owes more", -2, 1, 1, -3, true, 0},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    SharedRow row{c.tokens, kNowUs, 10, 1000};
    bool wrote = false;
    const StoreAnswer a = Apply(row, {OwedOp(c.owed, 1, c.want, kTenPerSecond)}, kNowUs, wrote)[0];
    EXPECT_TRUE(wrote);
    EXPECT_DOUBLE_EQ(row.tokens, c.tokens_after);
    EXPECT_EQ(a.in_debt, c.in_debt);
    EXPECT_EQ(a.granted, c.granted);
    ExpectWellFormed(row, kNowUs);
  }
}

// A return to a row in debt repays it first (less the refill since its debit, as always), and
// only what is left over fills the row.
TEST(DebtTest, AReturnRepaysTheDebtFirst) {
  SharedRow row{-2, kNowUs, 10, 1000};
  bool wrote = false;
  // 3 tokens debited 100 ms ago: 1 refilled since, 2 come back, all of it to the debt.
  StoreAnswer a = Apply(row, {ReturnOp(3, kNowUs - 100'000, kTenPerSecond)}, kNowUs, wrote)[0];
  EXPECT_TRUE(wrote);
  EXPECT_EQ(a.granted, 2u);
  EXPECT_DOUBLE_EQ(row.tokens, 0);
  row.tokens = -1;
  a = Apply(row, {ReturnOp(4, kNowUs, kTenPerSecond)}, kNowUs, wrote)[0];
  EXPECT_EQ(a.granted, 4u);
  EXPECT_DOUBLE_EQ(row.tokens, 3) << "1 to the debt, 3 to the row";
  ExpectWellFormed(row, kNowUs);
}

// Under another policy a debt keeps its tokens, and is repaid at the new rate.
TEST(DebtTest, ADebtKeepsItsTokensUnderANewPolicy) {
  SharedRow row{-2, kNowUs, 10, 1000};
  bool wrote = false;
  const Policy kTwentyPerSecond{20, 1000};
  const CheckResult r = Decide(row, {StoreOp{"k", 1, kTwentyPerSecond}}, kNowUs, wrote)[0];
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after_ms, 150u) << "2 owed and 1 to have, at 20 per second";
}

// A fixed window's debt is owed by its own window only: checks are denied until the window
// ends, and the next window opens full.
TEST(DebtTest, AFixedWindowsDebtEndsWithItsWindow) {
  const Policy kFivePerSecond{5, 1000};
  SharedRow row = NewWindowRow(kFivePerSecond, kNowUs);
  bool wrote = false;
  // Opens the window, takes 4 by lease, then owes 3 of which 1 is there.
  Apply(row, {WindowLease(4, 4, kFivePerSecond)}, kNowUs, wrote);
  StoreAnswer a =
      Apply(row, {OwedOp(3, 0, 0, kFivePerSecond, kWindow)}, kNowUs + 100'000, wrote)[0];
  EXPECT_TRUE(a.in_debt);
  EXPECT_DOUBLE_EQ(row.tokens, -2);
  EXPECT_EQ(a.check.retry_after_ms, 900u) << "the rest of the window";
  ExpectWellFormed(row, kNowUs + 100'000);
  // A return to the window repays its debt first.
  a = Apply(row, {WindowReturn(1, kNowUs, kFivePerSecond)}, kNowUs + 200'000, wrote)[0];
  EXPECT_EQ(a.granted, 1u);
  EXPECT_DOUBLE_EQ(row.tokens, -1);
  EXPECT_FALSE(Decide(row, {WindowCheck(1, kFivePerSecond)}, kNowUs + 999'000, wrote)[0].allowed);
  const CheckResult r = Decide(row, {WindowCheck(1, kFivePerSecond)}, kNowUs + 1'000'000, wrote)[0];
  EXPECT_TRUE(r.allowed) << "a new window owes nothing";
  EXPECT_EQ(r.remaining, 4u);
}

// A row in debt converted to the other algorithm still owes, never admitting more than it had.
TEST(DebtTest, AConvertedRowStillOwes) {
  SharedRow row{-1.5, kNowUs, 10, 1000};
  bool wrote = false;
  const StoreAnswer a = Apply(row, {OwedOp(1, 0, 0, kTenPerSecond, kWindow)}, kNowUs, wrote)[0];
  EXPECT_TRUE(a.in_debt);
  EXPECT_EQ(row.algorithm, kWindow);
  EXPECT_DOUBLE_EQ(row.tokens, -3) << "1.5 owed, rounded up to whole admissions, and 1 more";
  row = SharedRow{-2, kNowUs, 10, 1000, kWindow};
  EXPECT_FALSE(Decide(row, {StoreOp{"k", 1, kTenPerSecond}}, kNowUs, wrote)[0].allowed)
      << "a window in debt becomes a bucket in debt";
}

}  // namespace
}  // namespace ratelimit
