// TableKeeper without PostgreSQL: check, creation, retries and the lost-table path, on fakes.
#include "sidecar/pg/table_keeper.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sidecar/log/log.h"
#include "tests/testing/canned_table_check.h"
#include "tests/testing/fake_pool.h"
#include "tests/testing/stderr_capture.h"

namespace ratelimit {
namespace {

using State = TableKeeper::State;

class TableKeeperTest : public testing::Test {
 protected:
  explicit TableKeeperTest(bool create_table = true)
      : keeper_(fake_.loop(), fake_.pool(), TableKeeper::Options{TableName{"", "t"}, create_table},
                collected_, [this] { ++ready_calls_; }) {
    ResetLogRepeatLimiter();  // Counts of lines start at zero in each test of the process.
    fake_.on_connected = [this](SessionPool::Slot& slot) {
      if (!keeper_.ready()) keeper_.Ensure(slot);  // As PgStore does.
    };
    fake_.pool().Start();
  }
  void TearDown() override {
    bool closed = false;
    keeper_.Close([&closed] { closed = true; });
    fake_.pool().Shutdown([] {});
    EXPECT_TRUE(fake_.RunUntil([&] { return closed; }));
  }

  FakeDbSession& session() { return fake_.session(0); }
  const std::string& LastSql() { return session().runs().back().front().sql; }

  StderrCapture capture_;
  FakePool fake_{1};
  Counter collected_;
  TableKeeper keeper_;
  int ready_calls_ = 0;
};

class TableKeeperWithoutCreation : public TableKeeperTest {
 protected:
  TableKeeperWithoutCreation() : TableKeeperTest(/*create_table=*/false) {}
};

TEST_F(TableKeeperTest, AnExistingUsableTableIsReadyAfterOneCheck) {
  EXPECT_FALSE(keeper_.ready());
  session().Connected();
  ASSERT_EQ(session().runs().size(), 1u);
  EXPECT_NE(LastSql().find("to_regclass($1)"), std::string::npos);
  EXPECT_EQ(session().runs()[0][0].params, std::vector<std::string>{"\"t\""});
  EXPECT_EQ(keeper_.state(), State::kChecking);
  session().Answer(TableCheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
  EXPECT_EQ(ready_calls_, 1);
  EXPECT_TRUE(fake_.pool().FreeSlot(SessionPool::End::kFirst) != nullptr) << "session given back";
}

TEST_F(TableKeeperTest, AMissingTableIsCreatedUnderAnAdvisoryLockThenCheckedAgain) {
  session().Connected();
  session().Answer(TableCheckAnswer(std::nullopt));
  ASSERT_EQ(session().runs().size(), 2u);
  const std::vector<PgQuery>& create = session().runs()[1];
  ASSERT_EQ(create.size(), 4u);
  EXPECT_EQ(create[0].sql, "BEGIN");
  EXPECT_NE(create[1].sql.find("pg_advisory_xact_lock"), std::string::npos);
  EXPECT_NE(create[2].sql.find("CREATE TABLE IF NOT EXISTS \"t\""), std::string::npos);
  EXPECT_EQ(create[3].sql, "COMMIT");
  session().Answer(CommandResults(4));
  ASSERT_EQ(session().runs().size(), 3u);
  EXPECT_NE(LastSql().find("to_regclass($1)"), std::string::npos);
  session().Answer(TableCheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
}

TEST_F(TableKeeperTest, AFailedCreationIsRolledBackLoggedOnceAndRetriedWithBackoff) {
  session().Connected();
  session().Answer(TableCheckAnswer(std::nullopt));
  session().FailStatement("permission denied for schema public", "42501");
  ASSERT_EQ(session().runs().size(), 3u);
  EXPECT_EQ(LastSql(), "ROLLBACK");
  EXPECT_EQ(keeper_.state(), State::kFailed);
  session().Answer(CommandResults(1));

  // The retry, after the session's backoff: checked again, created again, failing again.
  ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == 4; }));
  EXPECT_EQ(keeper_.state(), State::kRechecking);
  session().Answer(TableCheckAnswer(std::nullopt));
  session().FailStatement("permission denied for schema public", "42501");
  session().Answer(CommandResults(1));
  EXPECT_EQ(keeper_.state(), State::kFailed);
  EXPECT_EQ(capture_.Count("cannot create or use the rate limit table"), 1u) << capture_.Text();
}

TEST_F(TableKeeperTest, ARoleWithoutPrivilegesOnTheTableIsNotReady) {
  session().Connected();
  session().Answer(TableCheckAnswer("f"));
  EXPECT_FALSE(keeper_.ready());
  EXPECT_EQ(keeper_.state(), State::kFailed);
  EXPECT_NE(capture_.Text().find("lacks SELECT, INSERT or UPDATE"), std::string::npos);
}

TEST_F(TableKeeperWithoutCreation, AMissingTableIsNotCreatedAndIsCheckedUntilItAppears) {
  session().Connected();
  session().Answer(TableCheckAnswer(std::nullopt));
  EXPECT_EQ(keeper_.state(), State::kFailed);
  ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == 2; }));
  EXPECT_NE(LastSql().find("to_regclass($1)"), std::string::npos) << "a check, not a creation";
  session().Answer(TableCheckAnswer(std::nullopt));
  ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == 3; }));
  session().Answer(TableCheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
  EXPECT_EQ(capture_.Count("the rate limit table is not usable"), 1u) << capture_.Text();
}

TEST_F(TableKeeperTest, ASessionLostDuringTheCheckChecksAgainOnceReconnected) {
  session().Connected();
  session().Break("server closed the connection unexpectedly");
  EXPECT_EQ(keeper_.state(), State::kFailed);
  ASSERT_TRUE(fake_.RunUntil([&] { return session().connects() == 2; }));
  EXPECT_EQ(session().runs().size(), 1u) << "no retry on a broken session";
  session().Connected();
  ASSERT_EQ(session().runs().size(), 2u);
  EXPECT_EQ(keeper_.state(), State::kRechecking);
  session().Answer(TableCheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
}

TEST_F(TableKeeperTest, ATransactionFindingTheTableUnusableMakesItNotReady) {
  session().Connected();
  session().Answer(TableCheckAnswer("t"));
  keeper_.OnTransactionFailed("40P01", Status::IoError("deadlock detected"));
  EXPECT_TRUE(keeper_.ready()) << "a failure that says nothing of the table";
  keeper_.OnTransactionFailed("42P01", Status::IoError("relation \"t\" does not exist"));
  EXPECT_FALSE(keeper_.ready());
  EXPECT_EQ(keeper_.state(), State::kUnknown);
  EXPECT_NE(capture_.Text().find("not usable any more"), std::string::npos);

  keeper_.Ensure(*fake_.pool().FreeSlot(SessionPool::End::kFirst));
  EXPECT_EQ(keeper_.state(), State::kChecking);
  session().Answer(TableCheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
}

TEST_F(TableKeeperTest, ATableOfAnotherShapeIsRefusedNeverAlteredAndLoggedOnceUntilItChanges) {
  session().Connected();
  EXPECT_NE(LastSql().find("format_type"), std::string::npos) << "the columns are checked";
  session().Answer(TableCheckAnswer("t", OlderGatewayColumns()));
  EXPECT_FALSE(keeper_.ready());
  EXPECT_EQ(keeper_.state(), State::kFailed);
  const std::string first = capture_.Text();
  EXPECT_NE(first.find("\"table\":\"t\""), std::string::npos) << first;
  EXPECT_NE(first.find("missing columns key, updated_at, capacity, window_ms"), std::string::npos)
      << first;
  EXPECT_NE(first.find("column tokens is integer, not double precision"), std::string::npos)
      << first;

  // Retried with backoff: the same problem is not logged again.
  for (size_t run = 2; run <= 3; ++run) {
    ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == run; }));
    EXPECT_EQ(keeper_.state(), State::kRechecking);
    session().Answer(TableCheckAnswer("t", OlderGatewayColumns()));
    EXPECT_EQ(keeper_.state(), State::kFailed);
  }
  EXPECT_EQ(capture_.Count("cannot create or use the rate limit table"), 1u) << capture_.Text();

  // The operator fixed some of it: what is left is logged, once.
  std::vector<ColumnFact> half_fixed = SchemaTableColumns();
  half_fixed[1].type = "integer";
  for (size_t run = 4; run <= 5; ++run) {
    ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == run; }));
    session().Answer(TableCheckAnswer("t", half_fixed));
  }
  EXPECT_EQ(capture_.Count("cannot create or use the rate limit table"), 2u) << capture_.Text();
  EXPECT_EQ(capture_.Count("column tokens is integer"), 2u) << capture_.Text();

  // Then all of it.
  ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == 6; }));
  session().Answer(TableCheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
  EXPECT_EQ(ready_calls_, 1);
  for (const std::vector<PgQuery>& run : session().runs()) {
    ASSERT_EQ(run.size(), 1u) << "only checks: nothing created, altered or dropped";
    EXPECT_NE(run[0].sql.find("to_regclass($1)"), std::string::npos) << run[0].sql;
  }
}

TEST_F(TableKeeperTest, ATableReplacedByAnotherShapeWhileReadyStaysNotReady) {
  session().Connected();
  session().Answer(TableCheckAnswer("t"));
  ASSERT_TRUE(keeper_.ready());
  keeper_.OnTransactionFailed("42703", Status::IoError("column \"key\" does not exist"));
  keeper_.Ensure(*fake_.pool().FreeSlot(SessionPool::End::kFirst));
  session().Answer(TableCheckAnswer("t", OlderGatewayColumns()));
  EXPECT_FALSE(keeper_.ready()) << "no \"database ready\" until the table fits";
  EXPECT_EQ(keeper_.state(), State::kFailed);
  EXPECT_EQ(ready_calls_, 1);
  EXPECT_EQ(capture_.Count("database ready"), 1u) << capture_.Text();
  EXPECT_EQ(capture_.Count("cannot create or use the rate limit table"), 1u) << capture_.Text();
}

TEST_F(TableKeeperWithoutCreation, AKeyWithoutAUniqueIndexIsRefused) {
  std::vector<ColumnFact> columns = SchemaTableColumns();
  columns[0].unique_alone = false;
  session().Connected();
  session().Answer(TableCheckAnswer("t", columns));
  EXPECT_EQ(keeper_.state(), State::kFailed);
  EXPECT_EQ(capture_.Count("no primary key or unique index on key alone"), 1u) << capture_.Text();
}

// A table of the first version (before the algorithm column): the column is added under the
// creation's advisory lock, then the table is checked again.
TEST_F(TableKeeperTest, AnOlderTableGetsTheAlgorithmColumnAddedUnderTheLockThenIsReady) {
  session().Connected();
  session().Answer(TableCheckAnswer("t", SchemaTableColumns()));
  ASSERT_EQ(session().runs().size(), 2u);
  const std::vector<PgQuery>& alter = session().runs()[1];
  ASSERT_EQ(alter.size(), 4u);
  EXPECT_EQ(alter[0].sql, "BEGIN");
  EXPECT_NE(alter[1].sql.find("pg_advisory_xact_lock"), std::string::npos);
  EXPECT_EQ(alter[2].sql,
            "ALTER TABLE \"t\" ADD COLUMN IF NOT EXISTS algorithm smallint NOT NULL DEFAULT 0");
  EXPECT_EQ(alter[3].sql, "COMMIT");
  EXPECT_FALSE(keeper_.ready());
  session().Answer(CommandResults(4));
  ASSERT_EQ(session().runs().size(), 3u);
  EXPECT_NE(LastSql().find("to_regclass($1)"), std::string::npos);
  session().Answer(TableCheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
}

// A role that may not alter the table: one error line with the statement to run.
TEST_F(TableKeeperTest, AnAlterTheRoleMayNotRunSaysWhatToRun) {
  session().Connected();
  session().Answer(TableCheckAnswer("t", SchemaTableColumns()));
  session().FailStatement("must be owner of table t", "42501");
  session().Answer(CommandResults(1));  // The ROLLBACK.
  EXPECT_EQ(keeper_.state(), State::kFailed);
  EXPECT_EQ(capture_.Count("must be owner of table t (SQLSTATE 42501); the table lacks column "
                           "algorithm"),
            1u)
      << capture_.Text();
  // The log line is JSON: the quoted name's quotes are escaped.
  EXPECT_EQ(capture_.Count("run: ALTER TABLE \\\"t\\\" ADD COLUMN IF NOT EXISTS algorithm "
                           "smallint NOT NULL DEFAULT 0"),
            1u)
      << capture_.Text();
}

TEST_F(TableKeeperWithoutCreation, AnOlderTableIsNotAlteredAndTheErrorSaysWhatToRun) {
  session().Connected();
  session().Answer(TableCheckAnswer("t", SchemaTableColumns()));
  EXPECT_EQ(keeper_.state(), State::kFailed);
  ASSERT_EQ(session().runs().size(), 1u) << "no DDL";
  EXPECT_EQ(capture_.Count("ADD COLUMN IF NOT EXISTS algorithm smallint NOT NULL DEFAULT 0"), 1u)
      << capture_.Text();
}

// The algorithm column of another type is refused like any other.
TEST_F(TableKeeperTest, AnAlgorithmColumnOfAnotherTypeIsRefused) {
  std::vector<ColumnFact> columns = CurrentTableColumns();
  columns.back().type = "text";
  session().Connected();
  session().Answer(TableCheckAnswer("t", columns));
  EXPECT_EQ(keeper_.state(), State::kFailed);
  EXPECT_EQ(capture_.Count("column algorithm is text, not smallint"), 1u) << capture_.Text();
}

TEST(TableKeeper, SqlStatesThatSayTheTableIsUnusable) {
  for (const char* sqlstate : {"42P01", "3F000", "42703", "42804", "42P10", "42501"}) {
    EXPECT_TRUE(TableKeeper::TableUnusable(sqlstate)) << sqlstate;
  }
  for (const char* sqlstate : {"", "40P01", "55P03", "57014", "23505"}) {
    EXPECT_FALSE(TableKeeper::TableUnusable(sqlstate)) << sqlstate;
  }
}

}  // namespace
}  // namespace ratelimit
