// StatementStrategy: what failed transactions say of a pooler, and what the store does about it.
#include "sidecar/pg/statement_strategy.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/testing/stderr_capture.h"

namespace ratelimit {
namespace {

struct SignCase {
  std::string sqlstate;
  std::string error;
  PoolerSign sign;
};

TEST(PoolerSignOf, NamesTheTwoPoolerFailuresAndNothingElse) {
  const SignCase cases[] = {
      {"42P05", "ERROR:  prepared statement \"rl_timeouts\" already exists (SQLSTATE 42P05)",
       PoolerSign::kPreparedStatementsLost},
      {"26000", "ERROR:  prepared statement \"rl_lock\" does not exist (SQLSTATE 26000)",
       PoolerSign::kPreparedStatementsLost},
      // By its code alone: a server that writes its messages in another language.
      {"42P05", "FEHLER:  vorbereitete Anweisung \u00bbrl_timeouts\u00ab existiert bereits",
       PoolerSign::kPreparedStatementsLost},
      // Another SQLSTATE with similar words: not a lost statement.
      {"42601", "ERROR:  prepared statement \"rl_lock\" syntax error", PoolerSign::kNone},
      {"08P01", "FATAL:  transaction blocks not allowed in statement pooling mode (SQLSTATE 08P01)",
       PoolerSign::kStatementPooling},
      // The same text when it arrives as the reason of a closed connection.
      {"",
       "database connection lost: FATAL:  transaction blocks not allowed in statement pooling "
       "mode\nserver closed the connection unexpectedly",
       PoolerSign::kStatementPooling},
      {"42P01", "ERROR:  relation \"t\" does not exist", PoolerSign::kNone},
      {"", "database connection lost: server closed the connection unexpectedly",
       PoolerSign::kNone},
  };
  for (const SignCase& c : cases) {
    EXPECT_EQ(PoolerSignOf(c.sqlstate, c.error), c.sign) << c.sqlstate << " " << c.error;
  }
}

constexpr const char* kLost = "ERROR:  prepared statement \"rl_timeouts\" already exists";
constexpr const char* kStatementPooling =
    "FATAL:  transaction blocks not allowed in statement pooling mode";

TEST(StatementStrategy, AutoSwitchesToUnnamedAtTheFirstLostPreparedStatementAndSaysWhatToSet) {
  StderrCapture log;
  StatementStrategy strategy(StatementMode::kPrepared, /*adapt=*/true);
  const StatementMode& seen_by_sessions = strategy.mode();
  strategy.OnTransactionFailed("40001", "ERROR:  could not serialize access");
  EXPECT_EQ(seen_by_sessions, StatementMode::kPrepared);
  strategy.OnTransactionFailed("42P05", kLost);
  EXPECT_EQ(seen_by_sessions, StatementMode::kUnnamed);
  EXPECT_EQ(strategy.state(), StatementStrategy::State::kSwitched);
  EXPECT_FALSE(strategy.refusing());
  strategy.OnTransactionFailed("26000", "ERROR:  prepared statement \"rl_lock\" does not exist");
  const std::vector<std::string> lines = log.Lines();
  ASSERT_EQ(lines.size(), 1u) << log.Text();
  EXPECT_NE(lines[0].find("\"level\":\"error\""), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("RATE_LIMIT_PG_STATEMENTS=unnamed"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("pgbouncer=true"), std::string::npos) << lines[0];
}

TEST(StatementStrategy, ExplicitPreparedStaysPreparedAndSaysSoOnce) {
  StderrCapture log;
  StatementStrategy strategy(StatementMode::kPrepared, /*adapt=*/false);
  for (int i = 0; i < 3; ++i) strategy.OnTransactionFailed("42P05", kLost);
  EXPECT_EQ(strategy.mode(), StatementMode::kPrepared);
  EXPECT_EQ(strategy.state(), StatementStrategy::State::kPreparedLost);
  const std::vector<std::string> lines = log.Lines();
  ASSERT_EQ(lines.size(), 1u) << log.Text();
  EXPECT_NE(lines[0].find("RATE_LIMIT_PG_STATEMENTS=unnamed"), std::string::npos) << lines[0];
}

TEST(StatementStrategy, AStatementPoolerIsRefusedForGoodWithOneLineNamingTheFix) {
  for (StatementMode mode : {StatementMode::kPrepared, StatementMode::kUnnamed}) {
    StderrCapture log;
    StatementStrategy strategy(mode, /*adapt=*/true);
    strategy.OnTransactionFailed("08P01", kStatementPooling);
    EXPECT_TRUE(strategy.refusing());
    strategy.OnTransactionFailed("", std::string("database connection lost: ") + kStatementPooling);
    strategy.OnTransactionFailed("42P05", kLost);
    EXPECT_TRUE(strategy.refusing()) << "final: nothing is retried through such a pooler";
    EXPECT_EQ(strategy.mode(), mode);
    const std::vector<std::string> lines = log.Lines();
    ASSERT_EQ(lines.size(), 1u) << log.Text();
    EXPECT_NE(lines[0].find("statement pooling"), std::string::npos) << lines[0];
    EXPECT_NE(lines[0].find("pool_mode = transaction"), std::string::npos) << lines[0];
  }
}

}  // namespace
}  // namespace ratelimit
