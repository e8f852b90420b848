// BatchTransaction without PostgreSQL: planning, statements, decisions from canned results.
#include "sidecar/pg/batch_transaction.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "tests/testing/canned_lock_results.h"
#include "tests/testing/fake_pool.h"

namespace ratelimit {
namespace {

using Rows = CannedRows;

constexpr int64_t kNowUs = 1'700'000'000'000'000;  // Database time, in 2023.
constexpr Policy kPolicy{10, 1000};
const std::string kTable = "\"t\"";

// "a" and "b" at rest with RATE_LIMIT_PG_KEY_HASH=none: their bytes in hex.
const std::string kRowA = "61";
const std::string kRowB = "62";

StoreOp Check(const std::string& key, uint32_t cost, Policy policy = kPolicy) {
  return StoreOp{.key = key, .cost = cost, .policy = policy};
}

std::vector<PgResultPtr> LockResults(const CannedRows& rows,
                                     std::optional<int64_t> now_us = kNowUs) {
  return CannedLockResults(rows, now_us);
}

// A row of `tokens` of kPolicy's bucket, last written at kNowUs.
std::vector<std::optional<std::string>> Row(const std::string& key,
                                            std::optional<std::string> tokens) {
  return {key, std::move(tokens), std::to_string(kNowUs), "10", "1000"};
}

TransactionDecision DecideOk(const TransactionPlan& plan, const Rows& rows) {
  Result<TransactionDecision> decision = Decide(plan, LockResults(rows));
  EXPECT_TRUE(decision.ok()) << decision.status().ToString();
  return decision.ok() ? std::move(*decision) : TransactionDecision{};
}

TEST(TransactionPlan, GroupsOperationsByRowKeyInKeyOrderAndKeepsBatchOrderWithinAKey) {
  const TransactionPlan plan =
      PlanTransaction({Check("b", 1), Check("a", 2), Check("b", 3)}, KeyHashing::kNone);
  EXPECT_EQ(plan.keys, (std::vector<std::string>{kRowA, kRowB}));
  EXPECT_EQ(plan.positions, (std::vector<std::vector<size_t>>{{1}, {0, 2}}));
  EXPECT_EQ(plan.batch.size(), 3u);
}

TEST(TransactionPlan, HashesKeysWithSha256ByDefault) {
  const TransactionPlan plan = PlanTransaction({Check("a", 1)}, KeyHashing::kSha256);
  ASSERT_EQ(plan.keys.size(), 1u);
  EXPECT_EQ(plan.keys[0], RowKeyHex("a", KeyHashing::kSha256));
  EXPECT_EQ(plan.keys[0].size(), 64u);
}

TEST(LockQueries, EachStatementStandsAtThePlaceItsNameSays) {
  const TransactionPlan plan = PlanTransaction(
      {Check("b", 1, Policy{7, 500}), Check("a", 2, Policy{5, 100}), Check("b", 1, kPolicy)},
      KeyHashing::kNone);
  const std::vector<PgQuery> q = LockQueries(plan, kTable, 250);
  ASSERT_EQ(q.size(), size_t{LockPipeline::kStatements});
  EXPECT_EQ(q[LockPipeline::kBegin].sql, "BEGIN");
  EXPECT_NE(q[LockPipeline::kTimeouts].sql.find("lock_timeout"), std::string::npos);
  EXPECT_NE(q[LockPipeline::kTimeouts].sql.find("idle_in_transaction_session_timeout"),
            std::string::npos);
  // Locks and statements at 4/5 of the deadline; idle in a transaction, the whole deadline.
  EXPECT_EQ(q[LockPipeline::kTimeouts].params, (std::vector<std::string>{"200", "250"}));
  EXPECT_NE(q[LockPipeline::kInsert].sql.find("INSERT INTO \"t\""), std::string::npos);
  // A missing row starts with the policy of its key's first operation.
  EXPECT_EQ(q[LockPipeline::kInsert].params,
            (std::vector<std::string>{"{61,62}", "{5,7}", "{100,500}"}));
  EXPECT_NE(q[LockPipeline::kLock].sql.find("ORDER BY key FOR UPDATE"), std::string::npos);
  EXPECT_EQ(q[LockPipeline::kLock].params, (std::vector<std::string>{"{61,62}"}));
  EXPECT_NE(q[LockPipeline::kClock].sql.find("clock_timestamp()"), std::string::npos);
  EXPECT_EQ(LockQueries(plan, kTable, 1)[LockPipeline::kTimeouts].params,
            (std::vector<std::string>{"1", "1"}));
}

TEST(LockQueries, AReservationShortOfTheKeysBoundsTheInsertToKeysWithoutARow) {
  TransactionPlan plan = PlanTransaction({Check("b", 1), Check("a", 1)}, KeyHashing::kNone);
  const std::string unbounded = LockQueries(plan, kTable, 250)[LockPipeline::kInsert].sql;
  EXPECT_EQ(unbounded.find("LIMIT"), std::string::npos) << "the normal path is unchanged";
  EXPECT_EQ(unbounded.find("NOT EXISTS"), std::string::npos);
  for (const size_t reserved : {size_t{1}, size_t{0}}) {
    plan.new_keys = reserved;
    const std::vector<PgQuery> q = LockQueries(plan, kTable, 250);
    ASSERT_EQ(q.size(), size_t{LockPipeline::kStatements}) << "the pipeline keeps its shape";
    const PgQuery& insert = q[LockPipeline::kInsert];
    EXPECT_NE(insert.sql.find("WHERE NOT EXISTS"), std::string::npos) << insert.sql;
    EXPECT_NE(insert.sql.find("ORDER BY 1 LIMIT $4 ON CONFLICT (key) DO NOTHING"),
              std::string::npos)
        << insert.sql;
    EXPECT_EQ(insert.params, (std::vector<std::string>{"{61,62}", "{10,10}", "{1000,1000}",
                                                       std::to_string(reserved)}));
    EXPECT_NE(insert.name, LockQueries(PlanTransaction({Check("a", 1)}, KeyHashing::kNone), kTable,
                                       250)[LockPipeline::kInsert]
                               .name)
        << "a statement of its own name";
    EXPECT_EQ(q[LockPipeline::kLock].params, (std::vector<std::string>{"{61,62}"}))
        << "every key is still locked and read";
  }
}

TEST(Decide, UnderABoundedInsertAKeyLeftWithoutARowIsDeferredAndCounted) {
  TransactionPlan plan =
      PlanTransaction({Check("a", 1), Check("b", 1), Check("b", 2)}, KeyHashing::kNone);
  plan.new_keys = 1;  // The INSERT added "a"'s row; "b" got none.
  const TransactionDecision d = DecideOk(plan, {Row(kRowA, "10")});
  EXPECT_TRUE(d.answers[0].check.allowed);
  for (const size_t deferred : {size_t{1}, size_t{2}}) {
    EXPECT_EQ(d.answers[deferred].check.status, CheckStatus::kStoreUnavailable);
    EXPECT_EQ(d.answers[deferred].check.source, Source::kDatabase);
  }
  EXPECT_EQ(d.deferred, 2u);
  EXPECT_EQ(d.keys, (std::vector<std::string>{kRowA}));

  plan.new_keys = 2;  // Unbounded: a missing row is one collected under us, not deferred.
  EXPECT_EQ(DecideOk(plan, {Row(kRowA, "10")}).deferred, 0u);
}

TEST(Decide, TakesFromTheLockedRowAndWritesItBack) {
  const TransactionPlan plan = PlanTransaction({Check("a", 3)}, KeyHashing::kNone);
  const TransactionDecision d = DecideOk(plan, {Row(kRowA, "10")});
  ASSERT_EQ(d.answers.size(), 1u);
  EXPECT_TRUE(d.answers[0].check.allowed);
  EXPECT_EQ(d.answers[0].check.remaining, 7u);
  EXPECT_EQ(d.answers[0].check.source, Source::kDatabase);
  EXPECT_EQ(d.answers[0].now_us, kNowUs);
  EXPECT_EQ(d.keys, (std::vector<std::string>{kRowA}));
  EXPECT_EQ(d.tokens, (std::vector<std::string>{"7"}));
  EXPECT_EQ(d.updated_us, (std::vector<std::string>{std::to_string(kNowUs)}));
  EXPECT_EQ(d.repaired_rows, 0u);

  const std::vector<PgQuery> finish = FinishQueries(d, kTable);
  ASSERT_EQ(finish.size(), size_t{FinishPipeline::kStatements});
  EXPECT_NE(finish[FinishPipeline::kUpdate].sql.find("UPDATE \"t\""), std::string::npos);
  EXPECT_EQ(finish[FinishPipeline::kUpdate].params,
            (std::vector<std::string>{"{61}", "{7}", "{" + std::to_string(kNowUs) + "}", "{10}",
                                      "{1000}"}));
  EXPECT_EQ(finish[FinishPipeline::kCommit].sql, "COMMIT");
}

TEST(Decide, ChecksOfOneKeyAreDecidedOneAfterAnotherInBatchOrder) {
  const TransactionPlan plan =
      PlanTransaction({Check("a", 6), Check("b", 1), Check("a", 6)}, KeyHashing::kNone);
  const TransactionDecision d = DecideOk(plan, {Row(kRowA, "10"), Row(kRowB, "10")});
  ASSERT_EQ(d.answers.size(), 3u);
  EXPECT_TRUE(d.answers[0].check.allowed);
  EXPECT_TRUE(d.answers[1].check.allowed);
  EXPECT_FALSE(d.answers[2].check.allowed) << "4 tokens left after the first";
  EXPECT_EQ(d.keys, (std::vector<std::string>{kRowA, kRowB}));
  EXPECT_EQ(d.tokens, (std::vector<std::string>{"4", "9"}));
}

TEST(Decide, DenialsWriteNothingAndTheTransactionRollsBack) {
  const TransactionPlan plan = PlanTransaction({Check("a", 3), Check("a", 0)}, KeyHashing::kNone);
  const TransactionDecision d = DecideOk(plan, {Row(kRowA, "1")});
  EXPECT_FALSE(d.answers[0].check.allowed);
  EXPECT_GT(d.answers[0].check.retry_after_ms, 0u);
  EXPECT_TRUE(d.answers[1].check.allowed) << "cost 0 only reads";
  EXPECT_TRUE(d.keys.empty());
  const std::vector<PgQuery> finish = FinishQueries(d, kTable);
  ASSERT_EQ(finish.size(), 1u);
  EXPECT_EQ(finish[0].sql, "ROLLBACK");
}

TEST(Decide, AMalformedRowIsRepairedCountedAndWrittenEvenByARead) {
  const TransactionPlan plan = PlanTransaction({Check("a", 0)}, KeyHashing::kNone);
  const TransactionDecision d = DecideOk(plan, {Row(kRowA, std::nullopt)});  // tokens NULL.
  EXPECT_EQ(d.repaired_rows, 1u);
  EXPECT_TRUE(d.answers[0].check.allowed);
  EXPECT_EQ(d.answers[0].check.remaining, 10u) << "NULL tokens read as a full bucket";
  EXPECT_EQ(d.keys, (std::vector<std::string>{kRowA}));
  EXPECT_EQ(d.tokens, (std::vector<std::string>{"10"}));
}

StoreOp WindowCheck(const std::string& key, uint32_t cost) {
  StoreOp op = Check(key, cost);
  op.algorithm = Algorithm::kFixedWindow;
  return op;
}

// A fixed window's missing row is inserted with its window ended, so that its first check opens
// it at the time read once the locks are held; its algorithm is written with every update.
TEST(LockQueries, AFixedWindowsNewRowStartsWithItsWindowEnded) {
  const TransactionPlan plan = PlanTransaction({WindowCheck("a", 1)}, KeyHashing::kNone);
  const PgQuery insert = LockQueries(plan, kTable, 250)[LockPipeline::kInsert];
  EXPECT_NE(insert.sql.find("clock_timestamp() - w * interval '1 millisecond', c, w, 1"),
            std::string::npos)
      << insert.sql;
  EXPECT_EQ(insert.params, (std::vector<std::string>{"{61}", "{10}", "{1000}"}));
  EXPECT_EQ(LockQueries(PlanTransaction({Check("a", 1)}, KeyHashing::kNone), kTable,
                        250)[LockPipeline::kInsert]
                .sql.find("algorithm"),
            std::string::npos)
      << "a token bucket's row leaves the column to its default";
}

TEST(Decide, AFixedWindowRowIsDecidedAndWrittenWithItsAlgorithm) {
  const TransactionPlan plan =
      PlanTransaction({WindowCheck("a", 3), WindowCheck("b", 1)}, KeyHashing::kNone);
  // "a": a window that started 100 ms ago with 4 left; "b": a token bucket, converted.
  const TransactionDecision d =
      DecideOk(plan, {{kRowA, "4", std::to_string(kNowUs - 100'000), "10", "1000", "1"},
                      {kRowB, "10", std::to_string(kNowUs), "10", "1000", "0"}});
  EXPECT_TRUE(d.answers[0].check.allowed);
  EXPECT_EQ(d.answers[0].check.remaining, 1u);
  EXPECT_EQ(d.answers[0].check.reset_after_ms, 900u);
  EXPECT_EQ(d.answers[0].window_end_us, kNowUs + 900'000);
  EXPECT_EQ(d.switched_rows, 1u);
  EXPECT_EQ(d.tokens, (std::vector<std::string>{"1", "9"}));
  EXPECT_EQ(d.updated_us,
            (std::vector<std::string>{std::to_string(kNowUs - 100'000), std::to_string(kNowUs)}));
  const PgQuery update = FinishQueries(d, kTable)[FinishPipeline::kUpdate];
  EXPECT_NE(update.sql.find("algorithm = 1 FROM"), std::string::npos) << update.sql;
  EXPECT_EQ(update.params.size(), 5u);
}

// A repaired row left as it was by a read keeps its own algorithm, beside a row of the batch's:
// the algorithms then go as one more array.
TEST(Decide, RowsOfBothAlgorithmsAreWrittenWithAnArrayOfThem) {
  const TransactionPlan plan =
      PlanTransaction({WindowCheck("a", 1), WindowCheck("b", 0)}, KeyHashing::kNone);
  const TransactionDecision d = DecideOk(
      plan, {Row(kRowA, "10"), {kRowB, std::nullopt, std::to_string(kNowUs), "10", "1000", "0"}});
  EXPECT_EQ(d.repaired_rows, 1u);
  const PgQuery update = FinishQueries(d, kTable)[FinishPipeline::kUpdate];
  EXPECT_NE(update.sql.find("algorithm = u.alg"), std::string::npos) << update.sql;
  ASSERT_EQ(update.params.size(), 6u);
  EXPECT_EQ(update.params[5], "{1,0}");
}

TEST(Decide, AKeyWhoseRowIsGoneIsRefusedAndOthersAreDecided) {
  const TransactionPlan plan = PlanTransaction({Check("a", 1), Check("b", 1)}, KeyHashing::kNone);
  const TransactionDecision d = DecideOk(plan, {Row(kRowB, "10")});
  EXPECT_EQ(d.answers[0].check.status, CheckStatus::kStoreUnavailable);
  EXPECT_EQ(d.answers[0].check.source, Source::kDatabase);
  EXPECT_FALSE(d.answers[0].check.allowed);
  EXPECT_EQ(d.answers[0].now_us, kNowUs);
  EXPECT_TRUE(d.answers[1].check.allowed);
  EXPECT_EQ(d.keys, (std::vector<std::string>{kRowB}));
}

TEST(Decide, NoDatabaseTimeFailsTheTransaction) {
  const TransactionPlan plan = PlanTransaction({Check("a", 1)}, KeyHashing::kNone);
  Result<TransactionDecision> d = Decide(plan, LockResults({Row(kRowA, "10")}, std::nullopt));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().message(), "database returned no clock");
}

// A transaction run on a pool of fake sessions, answered by hand.
class BatchTransactionRun : public testing::Test {
 protected:
  BatchTransactionRun()
      : context_{fake_.pool(),
                 metrics_,
                 new_keys_,
                 kTable,
                 250,
                 KeyHashing::kNone,
                 [this](std::string_view sqlstate, const Status&) {
                   failed_sqlstates_.emplace_back(sqlstate);
                 },
                 [this](SessionPool::Slot& slot) { ended_free_.push_back(slot.free()); }} {
    fake_.StartConnected();
  }

  // Work still in flight ends here, while what its callbacks write is alive.
  void TearDown() override {
    fake_.pool().Shutdown([] {});
  }

  // Starts a transaction of `batch` on the first free slot; its result lands in result_.
  SessionPool::Slot& Start(std::vector<StoreOp> batch) {
    SessionPool::Slot* slot = fake_.pool().FreeSlot(SessionPool::End::kFirst);
    BatchTransaction::Start(context_, *slot, std::move(batch),
                            [this](Result<std::vector<StoreAnswer>> r) {
                              result_ = std::move(r);
                              slot_free_at_done_ = slot_->free();
                            });
    slot_ = slot;
    return *slot;
  }

  FakePool fake_{1};
  PgStoreMetrics metrics_;
  // Two new rows a second: batches of one key never reach it.
  NewKeyBudget new_keys_{2};
  BatchTransaction::Context context_;
  SessionPool::Slot* slot_ = nullptr;
  std::optional<Result<std::vector<StoreAnswer>>> result_;
  bool slot_free_at_done_ = false;
  std::vector<std::string> failed_sqlstates_;
  std::vector<bool> ended_free_;
};

TEST_F(BatchTransactionRun, LocksDecidesWritesAndGivesTheSessionBackBeforeAnswering) {
  SessionPool::Slot& slot = Start({Check("a", 4)});
  FakeDbSession& session = fake_.session(0);
  ASSERT_EQ(session.runs().size(), 1u);
  EXPECT_EQ(session.runs()[0].size(), size_t{LockPipeline::kStatements});
  EXPECT_EQ(slot.state(), SessionPool::Slot::State::kLent);
  EXPECT_EQ(metrics_.transactions.value(), 1u);

  session.Answer(LockResults({Row(kRowA, "10")}));
  ASSERT_EQ(session.runs().size(), 2u);
  EXPECT_EQ(session.runs()[1][FinishPipeline::kCommit].sql, "COMMIT");
  EXPECT_FALSE(result_.has_value()) << "answered only once COMMIT is";

  session.Answer(CommandResults(2));
  ASSERT_TRUE(result_.has_value());
  ASSERT_TRUE(result_->ok()) << result_->status().ToString();
  EXPECT_EQ((**result_)[0].check.remaining, 6u);
  EXPECT_TRUE(slot_free_at_done_);
  EXPECT_TRUE(ended_free_.empty()) << "a transaction that succeeded triggers no table check";
  EXPECT_EQ(metrics_.failed_transactions.value(), 0u);
  EXPECT_EQ(metrics_.duration.Read().cumulative.back(), 1u);
  EXPECT_TRUE(failed_sqlstates_.empty());
}

TEST_F(BatchTransactionRun, AFailedStatementIsReportedRolledBackThenAnswered) {
  Start({Check("a", 1)});
  FakeDbSession& session = fake_.session(0);
  session.FailStatement("relation \"t\" does not exist", "42P01");
  EXPECT_EQ(failed_sqlstates_, std::vector<std::string>{"42P01"}) << "before the ROLLBACK";
  ASSERT_EQ(session.runs().size(), 2u);
  ASSERT_EQ(session.runs()[1].size(), 1u);
  EXPECT_EQ(session.runs()[1][0].sql, "ROLLBACK");
  EXPECT_FALSE(result_.has_value());

  session.Answer(CommandResults(1));
  ASSERT_TRUE(result_.has_value());
  ASSERT_FALSE(result_->ok());
  EXPECT_NE(result_->status().message().find("42P01"), std::string::npos);
  EXPECT_TRUE(slot_free_at_done_);
  EXPECT_EQ(metrics_.failed_transactions.value(), 1u);
}

TEST_F(BatchTransactionRun, ALostConnectionFailsAtOnceWithoutRollback) {
  SessionPool::Slot& slot = Start({Check("a", 1)});
  FakeDbSession& session = fake_.session(0);
  session.Answer(LockResults({Row(kRowA, "10")}));
  session.Break("server closed the connection unexpectedly");
  ASSERT_TRUE(result_.has_value());
  EXPECT_EQ(result_->status().code(), Status::Code::kUnavailable);
  EXPECT_EQ(session.runs().size(), 2u) << "no ROLLBACK on a broken session";
  EXPECT_EQ(slot.state(), SessionPool::Slot::State::kDown);
  EXPECT_EQ(ended_free_, std::vector<bool>{false});
  EXPECT_EQ(metrics_.failed_transactions.value(), 1u);
}

TEST_F(BatchTransactionRun, AReadOnlyServerDropsTheSessionInsteadOfRollingBack) {
  SessionPool::Slot& slot = Start({Check("a", 1)});
  FakeDbSession& session = fake_.session(0);
  session.FailStatement("cannot execute INSERT in a read-only transaction", "25006");
  ASSERT_TRUE(result_.has_value());
  ASSERT_FALSE(result_->ok());
  EXPECT_NE(result_->status().message().find("25006"), std::string::npos);
  EXPECT_EQ(session.abandons(), 1);
  EXPECT_EQ(session.runs().size(), 1u) << "no ROLLBACK: the session is dropped";
  EXPECT_EQ(slot.state(), SessionPool::Slot::State::kDown) << "it reconnects, to the primary";
  EXPECT_EQ(failed_sqlstates_, std::vector<std::string>{"25006"});
}

TEST_F(BatchTransactionRun, NoDatabaseTimeFailsAndRollsBack) {
  Start({Check("a", 1)});
  FakeDbSession& session = fake_.session(0);
  session.Answer(LockResults({Row(kRowA, "10")}, std::nullopt));
  ASSERT_EQ(session.runs().size(), 2u);
  EXPECT_EQ(session.runs()[1][0].sql, "ROLLBACK");
  EXPECT_EQ(failed_sqlstates_, std::vector<std::string>{""});
}

TEST_F(BatchTransactionRun, ReservesNewKeysDefersThoseLeftOutAndGivesBackWhatWasNotInserted) {
  Start({Check("a", 1), Check("b", 1), Check("c", 1)});
  FakeDbSession& session = fake_.session(0);
  const PgQuery& insert = session.runs()[0][LockPipeline::kInsert];
  EXPECT_NE(insert.sql.find("LIMIT $4"), std::string::npos);
  EXPECT_EQ(insert.params.back(), "2") << "all the budget had";
  EXPECT_EQ(new_keys_.Reserve(1, 0), 0u) << "held while the transaction runs";

  session.Answer(LockResults({Row(kRowA, "10")}));  // Only "a" has a row.
  EXPECT_EQ(metrics_.new_keys_deferred.value(), 2u);
  session.Answer(CommandResults(2));
  ASSERT_TRUE(result_.has_value() && result_->ok());
  EXPECT_TRUE((**result_)[0].check.allowed);
  EXPECT_EQ((**result_)[1].check.status, CheckStatus::kStoreUnavailable);
  EXPECT_EQ((**result_)[2].check.status, CheckStatus::kStoreUnavailable);
  // The fake's INSERT reports no row inserted: the whole reservation comes back.
  EXPECT_EQ(metrics_.new_keys.value(), 0u);
  EXPECT_EQ(new_keys_.Reserve(5, 0), 2u);
}

TEST_F(BatchTransactionRun, AFailedTransactionGivesItsWholeReservationBack) {
  Start({Check("a", 1), Check("b", 1)});
  fake_.session(0).FailStatement("canceling statement due to lock timeout", "55P03");
  fake_.session(0).Answer(CommandResults(1));  // The ROLLBACK.
  ASSERT_TRUE(result_.has_value());
  EXPECT_FALSE(result_->ok());
  EXPECT_EQ(new_keys_.Reserve(5, 0), 2u);
}

}  // namespace
}  // namespace ratelimit
