// PgSession: how it sends statements (prepared or unnamed), planned without and run on PostgreSQL.
#include "sidecar/pg/pg_session.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <uv.h>

#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using Kind = PipelineEntry::Kind;

// A transaction's shape: unnamed BEGIN and COMMIT around two named statements.
std::vector<PgQuery> Transaction() {
  return {{"BEGIN", {}},
          {"SELECT $1::int", {"1"}, "rl_one"},
          {"SELECT $1::int + 1", {"2"}, "rl_two"},
          {"COMMIT", {}}};
}

TEST(PlanPipeline, PreparedPreparesEachNamedStatementBeforeItsFirstUseThenExecutesItByName) {
  EXPECT_EQ(PlanPipeline(Transaction(), StatementMode::kPrepared, {}),
            (std::vector<PipelineEntry>{{Kind::kExecuteUnnamed, 0},
                                        {Kind::kPrepare, 1},
                                        {Kind::kExecutePrepared, 1},
                                        {Kind::kPrepare, 2},
                                        {Kind::kExecutePrepared, 2},
                                        {Kind::kExecuteUnnamed, 3}}));
}

TEST(PlanPipeline, PreparedDoesNotPrepareAgainWhatTheConnectionOrThePipelineHasPrepared) {
  std::vector<PgQuery> queries = Transaction();
  queries.insert(queries.begin() + 3, PgQuery{"SELECT $1::int", {"3"}, "rl_one"});
  EXPECT_EQ(PlanPipeline(queries, StatementMode::kPrepared, {"rl_two"}),
            (std::vector<PipelineEntry>{{Kind::kExecuteUnnamed, 0},
                                        {Kind::kPrepare, 1},
                                        {Kind::kExecutePrepared, 1},
                                        {Kind::kExecutePrepared, 2},
                                        {Kind::kExecutePrepared, 3},
                                        {Kind::kExecuteUnnamed, 4}}));
}

TEST(PlanPipeline, UnnamedSendsEveryStatementAsTheUnnamedOneAndPreparesNothing) {
  for (const std::unordered_set<std::string>& prepared :
       {std::unordered_set<std::string>{}, std::unordered_set<std::string>{"rl_one"}}) {
    EXPECT_EQ(PlanPipeline(Transaction(), StatementMode::kUnnamed, prepared),
              (std::vector<PipelineEntry>{{Kind::kExecuteUnnamed, 0},
                                          {Kind::kExecuteUnnamed, 1},
                                          {Kind::kExecuteUnnamed, 2},
                                          {Kind::kExecuteUnnamed, 3}}));
  }
}

// One PgSession on the test database, driven by a loop of its own.
class PgSessionOnDatabase : public testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_TEST_DATABASE();
    uv_loop_init(&loop_);
    loop_open_ = true;
    session_ = std::make_unique<PgSession>(&loop_, TestDatabaseUrl(), mode_, [] {});
    session_->Connect();
    RunUntil([this] { return session_->state() != DbSession::State::kConnecting; });
    ASSERT_EQ(session_->state(), DbSession::State::kIdle) << session_->last_error();
  }
  void TearDown() override {
    if (!loop_open_) return;
    session_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  template <typename Done>
  void RunUntil(Done done) {
    while (!done() && uv_run(&loop_, UV_RUN_ONCE) != 0) {
    }
  }

  // Runs `queries` as one pipeline; the first column of the last statement's first row, or the
  // error.
  std::string Run(std::vector<PgQuery> queries) {
    std::optional<Result<std::vector<PgResultPtr>>> results;
    session_->Run(std::move(queries),
                  [&](Result<std::vector<PgResultPtr>> r) { results = std::move(r); });
    RunUntil([&] { return results.has_value(); });
    if (!results.has_value()) return "no answer";
    if (!results->ok()) return results->status().ToString();
    PGresult* last = (*results)->back().get();
    return PQntuples(last) > 0 ? PQgetvalue(last, 0, 0) : "";
  }

  // The prepared statements on the session's connection.
  std::string Prepared() {
    return Run(
        {{"SELECT coalesce(string_agg(name, ',' ORDER BY name), '')"
          " FROM pg_prepared_statements",
          {}}});
  }

  uv_loop_t loop_;
  bool loop_open_ = false;
  StatementMode mode_ = StatementMode::kPrepared;
  std::unique_ptr<PgSession> session_;
};

TEST_F(PgSessionOnDatabase, PreparedStatementsStayOnTheConnectionForTheNextTransactions) {
  std::vector<PgQuery> transaction = Transaction();
  EXPECT_EQ(Run(transaction), "");
  EXPECT_EQ(Prepared(), "rl_one,rl_two");
  transaction.pop_back();  // COMMIT: the last answer is then rl_two's.
  EXPECT_EQ(Run(transaction), "3") << "executed by name, prepared before";
  EXPECT_EQ(Run({{"COMMIT", {}}}), "");
}

TEST_F(PgSessionOnDatabase, UnnamedStatementsLeaveNothingOnTheConnectionAndGiveTheSameAnswers) {
  mode_ = StatementMode::kUnnamed;  // Read at every Run, as the store's switch needs.
  std::vector<PgQuery> transaction = Transaction();
  transaction.pop_back();
  EXPECT_EQ(Run(transaction), "3");
  EXPECT_EQ(Run({{"COMMIT", {}}}), "");
  EXPECT_EQ(Prepared(), "") << "a pooler may hand the next transaction to any server connection";
}

TEST_F(PgSessionOnDatabase, SwitchedToUnnamedItNoLongerPreparesNorUsesWhatItPrepared) {
  EXPECT_EQ(Run({{"SELECT $1::int", {"7"}, "rl_one"}}), "7");
  EXPECT_EQ(Run({{"DEALLOCATE ALL", {}}}), "") << "as a pooler's other server connection";
  mode_ = StatementMode::kUnnamed;
  EXPECT_EQ(Run({{"SELECT $1::int", {"8"}, "rl_one"}, {"SELECT $1::int", {"9"}, "rl_two"}}), "9");
  EXPECT_EQ(Prepared(), "");
}

// As PgBouncer answers a transaction in statement pooling mode: an error, then the connection
// closed. The error says why, and must not be lost behind libpq's "server closed the
// connection".
TEST_F(PgSessionOnDatabase, AConnectionLostAfterAStatementErrorKeepsThatErrorInFront) {
  mode_ = StatementMode::kUnnamed;
  const std::string error =
      Run({{"BEGIN", {}}, {"SELECT pg_terminate_backend(pg_backend_pid())", {}}, {"COMMIT", {}}});
  EXPECT_NE(error.find("database connection lost: FATAL:  terminating connection due to "
                       "administrator command (SQLSTATE 57P01); then "),
            std::string::npos)
      << error;
  EXPECT_EQ(session_->last_sqlstate(), "57P01");
  EXPECT_EQ(session_->state(), DbSession::State::kBroken);
}

}  // namespace
}  // namespace ratelimit
