// PgStore without PostgreSQL: how its pieces compose, on fake sessions and canned results.
#include "sidecar/pg/pg_store.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/canned_lock_results.h"
#include "tests/testing/canned_table_check.h"
#include "tests/testing/fake_db_session.h"

namespace ratelimit {
namespace {

constexpr int64_t kNowUs = 1'700'000'000'000'000;  // Database time, in 2023.

std::vector<PgResultPtr> TableCheck(const char* answer) { return TableCheckAnswer(answer); }

bool IsTableCheck(const std::vector<PgQuery>& pipeline) {
  return pipeline.size() == 1 && pipeline[0].sql.find("to_regclass") != std::string::npos;
}

class PgStoreTest : public testing::Test {
 protected:
  // `adapt_statements`: RATE_LIMIT_PG_STATEMENTS=auto, resolved to prepared statements.
  // `gc_interval_ms`: how often garbage collection looks for work.
  explicit PgStoreTest(bool adapt_statements = false,
                       uint64_t gc_interval_ms = GarbageCollector::kIntervalMs) {
    uv_loop_init(&loop_);
    PgStoreOptions options;
    options.table = TableName{"", "t"};
    options.key_hashing = KeyHashing::kNone;
    options.adapt_statements = adapt_statements;
    options.gc_interval_ms = gc_interval_ms;
    store_ = std::make_unique<PgStore>(&loop_, options, [this](DbSession::StateListener l) {
      auto session = std::make_unique<FakeDbSession>(std::move(l));
      sessions_.push_back(session.get());
      return session;
    });
    store_->set_on_capacity([this] { ++capacity_calls_; });
    store_->Start();
  }
  ~PgStoreTest() override {
    if (!shutdown_started_) ShutDown();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_TRUE(shut_down_);
    store_.reset();
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  // Connects the first session and answers its table check: the store is ready.
  void MakeReady() {
    session(0).Connected();
    ASSERT_TRUE(IsTableCheck(session(0).runs().back()));
    session(0).Answer(TableCheck("t"));
    ASSERT_TRUE(store_->ready());
  }

  // Takes one check of key "a"; its answer lands in result_.
  void TakeOne() {
    store_->Take({StoreOp{.key = "a", .cost = 1, .policy = Policy{10, 1000}}},
                 [this](Result<std::vector<StoreAnswer>> r) { result_ = std::move(r); });
  }

  void ShutDown() {
    shutdown_started_ = true;
    store_->Shutdown([this] { shut_down_ = true; });
  }

  FakeDbSession& session(size_t i) { return *sessions_.at(i); }

  uv_loop_t loop_;
  std::vector<FakeDbSession*> sessions_;  // Owned by the store's pool.
  std::unique_ptr<PgStore> store_;
  int capacity_calls_ = 0;
  bool shutdown_started_ = false;
  bool shut_down_ = false;
  std::optional<Result<std::vector<StoreAnswer>>> result_;
};

TEST_F(PgStoreTest, ReadyOnceASessionIsConnectedAndTheTableChecked) {
  EXPECT_EQ(sessions_.size(), 2u);
  EXPECT_FALSE(store_->ready());
  EXPECT_EQ(store_->free_slots(), 0u);
  session(0).Connected();
  EXPECT_FALSE(store_->ready()) << "the table is being checked";
  EXPECT_EQ(store_->free_slots(), 0u);
  session(0).Answer(TableCheck("t"));
  EXPECT_TRUE(store_->ready());
  EXPECT_EQ(store_->free_slots(), 1u);
  session(1).Connected();
  EXPECT_EQ(session(1).runs().size(), 0u) << "the table is checked once, not per session";
  EXPECT_EQ(store_->free_slots(), 2u);
  EXPECT_GE(capacity_calls_, 2);
}

TEST_F(PgStoreTest, ATakeIsOneTransactionAnsweredAfterItsCommit) {
  MakeReady();
  TakeOne();
  EXPECT_EQ(store_->free_slots(), 0u);
  session(0).Answer(
      CannedLockResults({{"61", "10", std::to_string(kNowUs), "10", "1000"}}, kNowUs));
  session(0).Answer(CommandResults(2));
  ASSERT_TRUE(result_.has_value());
  ASSERT_TRUE(result_->ok()) << result_->status().ToString();
  EXPECT_TRUE((**result_)[0].check.allowed);
  EXPECT_EQ((**result_)[0].check.remaining, 9u);
  EXPECT_EQ(store_->metrics().transactions.value(), 1u);
  EXPECT_EQ(store_->free_slots(), 1u);
}

TEST_F(PgStoreTest, ATransactionThatFindsTheTableGoneChecksItAgainOnItsSession) {
  MakeReady();
  TakeOne();
  session(0).FailStatement("relation \"t\" does not exist", "42P01");
  EXPECT_FALSE(store_->ready()) << "at once, before the ROLLBACK's answer";
  EXPECT_EQ(store_->free_slots(), 0u);
  EXPECT_EQ(session(0).runs().back()[0].sql, "ROLLBACK");
  session(0).Answer(CommandResults(1));
  ASSERT_TRUE(result_.has_value());
  EXPECT_FALSE(result_->ok());
  EXPECT_EQ(store_->metrics().failed_transactions.value(), 1u);
  ASSERT_TRUE(IsTableCheck(session(0).runs().back()));
  session(0).Answer(TableCheck("t"));
  EXPECT_TRUE(store_->ready());
}

class PgStoreAutoStatementsTest : public PgStoreTest {
 protected:
  PgStoreAutoStatementsTest() : PgStoreTest(/*adapt_statements=*/true) {}
};

TEST_F(PgStoreAutoStatementsTest, APreparedStatementLostByAPoolerSwitchesToUnnamedStatements) {
  MakeReady();
  EXPECT_EQ(store_->statement_mode(), StatementMode::kPrepared);
  TakeOne();
  session(0).FailStatement("prepared statement \"rl_timeouts\" already exists", "42P05");
  EXPECT_EQ(store_->statement_mode(), StatementMode::kUnnamed);
  session(0).Answer(CommandResults(1));  // The ROLLBACK.
  EXPECT_TRUE(store_->ready()) << "the next transactions go, unnamed";
}

TEST_F(PgStoreTest, ExplicitPreparedStatementsStayPreparedWhenAPoolerLosesThem) {
  MakeReady();
  TakeOne();
  session(0).FailStatement("prepared statement \"rl_lock\" does not exist", "26000");
  session(0).Answer(CommandResults(1));
  EXPECT_EQ(store_->statement_mode(), StatementMode::kPrepared);
}

TEST_F(PgStoreAutoStatementsTest, AStatementPoolerMakesTheStoreNotReadyForGood) {
  MakeReady();
  session(1).Connected();
  TakeOne();
  session(0).Break("FATAL:  transaction blocks not allowed in statement pooling mode");
  ASSERT_TRUE(result_.has_value());
  EXPECT_FALSE(result_->ok());
  EXPECT_FALSE(store_->ready());
  EXPECT_EQ(store_->free_slots(), 0u) << "session 1 is free, but no transaction may start";
  while (session(0).connects() < 2) uv_run(&loop_, UV_RUN_ONCE);  // The reconnect's backoff.
  session(0).Connected();
  EXPECT_FALSE(store_->ready()) << "reconnecting changes nothing: the pooler is still there";
  EXPECT_EQ(store_->free_slots(), 0u);
}

class PgStoreCollectionTest : public PgStoreTest {
 protected:
  PgStoreCollectionTest() : PgStoreTest(/*adapt_statements=*/false, /*gc_interval_ms=*/1) {}
};

bool IsCollection(const std::vector<PgQuery>& pipeline) {
  return pipeline.size() == 1 && pipeline[0].sql.rfind("DELETE FROM", 0) == 0;
}

TEST_F(PgStoreCollectionTest, ADueCollectionTakesTheSessionATransactionGivesBackBeforeTheNextTake) {
  MakeReady();
  session(1).Connected();
  // What the batcher would see when told the answer: it starts its next Take from there.
  std::optional<size_t> free_at_done;
  bool collecting_at_done = false;
  store_->Take({StoreOp{.key = "a", .cost = 1, .policy = Policy{10, 1000}}},
               [&](Result<std::vector<StoreAnswer>> r) {
                 EXPECT_TRUE(r.ok());
                 free_at_done = store_->free_slots();
                 collecting_at_done = IsCollection(session(0).runs().back());
               });
  store_->Take({StoreOp{.key = "b", .cost = 1, .policy = Policy{10, 1000}}},
               [](Result<std::vector<StoreAnswer>>) {});
  ASSERT_EQ(store_->free_slots(), 0u);
  // A tick finds both sessions busy with checks: collection is due, and waits.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(session(0).runs().size(), 2u) << "the table check and the lock pipeline, no more";

  session(0).Answer(
      CannedLockResults({{"61", "10", std::to_string(kNowUs), "10", "1000"}}, kNowUs));
  session(0).Answer(CommandResults(2));  // The COMMIT: the transaction gives session 0 back.
  ASSERT_TRUE(free_at_done.has_value());
  EXPECT_TRUE(collecting_at_done) << "the due collection took session 0 before the answer";
  EXPECT_EQ(*free_at_done, 0u) << "so the batcher finds nothing free";
  EXPECT_EQ(session(1).runs().size(), 1u) << "session 1 is still the other check's";
}

TEST_F(PgStoreTest, ATakeWithoutAFreeSessionIsRefusedRatherThanQueued) {
  TakeOne();
  ASSERT_TRUE(result_.has_value());
  EXPECT_EQ(result_->status().code(), Status::Code::kUnavailable);
}

TEST_F(PgStoreTest, ShutdownFailsATakeInFlight) {
  MakeReady();
  TakeOne();
  ShutDown();
  ASSERT_TRUE(result_.has_value());
  EXPECT_EQ(result_->status().code(), Status::Code::kUnavailable);
  EXPECT_FALSE(store_->ready());
  EXPECT_EQ(store_->free_slots(), 0u);
}

}  // namespace
}  // namespace ratelimit
