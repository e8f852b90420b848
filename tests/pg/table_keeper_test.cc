// TableKeeper without PostgreSQL: check, creation, retries and the lost-table path, on fakes.
#include "sidecar/pg/table_keeper.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tests/testing/fake_pool.h"
#include "tests/testing/stderr_capture.h"

namespace ratelimit {
namespace {

using State = TableKeeper::State;

std::vector<PgResultPtr> One(PgResultPtr result) {
  std::vector<PgResultPtr> results;
  results.push_back(std::move(result));
  return results;
}

// The table check's answer: NULL (no table), "t" (usable) or "f" (a privilege missing).
std::vector<PgResultPtr> CheckAnswer(std::optional<std::string> value) {
  return One(CannedResult(1, {{std::move(value)}}));
}

class TableKeeperTest : public testing::Test {
 protected:
  explicit TableKeeperTest(bool create_table = true)
      : keeper_(fake_.loop(), fake_.pool(), TableKeeper::Options{TableName{"", "t"}, create_table},
                collected_, [this] { ++ready_calls_; }) {
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
  session().Answer(CheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
  EXPECT_EQ(ready_calls_, 1);
  EXPECT_TRUE(fake_.pool().FreeSlot(SessionPool::End::kFirst) != nullptr) << "session given back";
}

TEST_F(TableKeeperTest, AMissingTableIsCreatedUnderAnAdvisoryLockThenCheckedAgain) {
  session().Connected();
  session().Answer(CheckAnswer(std::nullopt));
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
  session().Answer(CheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
}

TEST_F(TableKeeperTest, AFailedCreationIsRolledBackLoggedOnceAndRetriedWithBackoff) {
  session().Connected();
  session().Answer(CheckAnswer(std::nullopt));
  session().FailStatement("permission denied for schema public", "42501");
  ASSERT_EQ(session().runs().size(), 3u);
  EXPECT_EQ(LastSql(), "ROLLBACK");
  EXPECT_EQ(keeper_.state(), State::kFailed);
  session().Answer(CommandResults(1));

  // The retry, after the session's backoff: checked again, created again, failing again.
  ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == 4; }));
  EXPECT_EQ(keeper_.state(), State::kRechecking);
  session().Answer(CheckAnswer(std::nullopt));
  session().FailStatement("permission denied for schema public", "42501");
  session().Answer(CommandResults(1));
  EXPECT_EQ(keeper_.state(), State::kFailed);
  EXPECT_EQ(capture_.Count("cannot create or use the rate limit table"), 1u) << capture_.Text();
}

TEST_F(TableKeeperTest, ARoleWithoutPrivilegesOnTheTableIsNotReady) {
  session().Connected();
  session().Answer(CheckAnswer("f"));
  EXPECT_FALSE(keeper_.ready());
  EXPECT_EQ(keeper_.state(), State::kFailed);
  EXPECT_NE(capture_.Text().find("lacks SELECT, INSERT or UPDATE"), std::string::npos);
}

TEST_F(TableKeeperWithoutCreation, AMissingTableIsNotCreatedAndIsCheckedUntilItAppears) {
  session().Connected();
  session().Answer(CheckAnswer(std::nullopt));
  EXPECT_EQ(keeper_.state(), State::kFailed);
  ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == 2; }));
  EXPECT_NE(LastSql().find("to_regclass($1)"), std::string::npos) << "a check, not a creation";
  session().Answer(CheckAnswer(std::nullopt));
  ASSERT_TRUE(fake_.RunUntil([&] { return session().runs().size() == 3; }));
  session().Answer(CheckAnswer("t"));
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
  session().Answer(CheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
}

TEST_F(TableKeeperTest, ATransactionFindingTheTableUnusableMakesItNotReady) {
  session().Connected();
  session().Answer(CheckAnswer("t"));
  keeper_.OnTransactionFailed("40P01", Status::IoError("deadlock detected"));
  EXPECT_TRUE(keeper_.ready()) << "a failure that says nothing of the table";
  keeper_.OnTransactionFailed("42P01", Status::IoError("relation \"t\" does not exist"));
  EXPECT_FALSE(keeper_.ready());
  EXPECT_EQ(keeper_.state(), State::kUnknown);
  EXPECT_NE(capture_.Text().find("not usable any more"), std::string::npos);

  keeper_.Ensure(*fake_.pool().FreeSlot(SessionPool::End::kFirst));
  EXPECT_EQ(keeper_.state(), State::kChecking);
  session().Answer(CheckAnswer("t"));
  EXPECT_TRUE(keeper_.ready());
}

TEST(TableKeeper, SqlStatesThatSayTheTableIsUnusable) {
  for (const char* sqlstate : {"42P01", "3F000", "42703", "42501"}) {
    EXPECT_TRUE(TableKeeper::TableUnusable(sqlstate)) << sqlstate;
  }
  for (const char* sqlstate : {"", "40P01", "55P03", "57014", "23505"}) {
    EXPECT_FALSE(TableKeeper::TableUnusable(sqlstate)) << sqlstate;
  }
}

}  // namespace
}  // namespace ratelimit
