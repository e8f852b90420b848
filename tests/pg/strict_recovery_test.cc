// Strict mode on a real PostgreSQL: a sidecar started before its database serves once it exists.
#include <signal.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "tests/pg/strict_test_support.h"

namespace ratelimit {
namespace {

using strict_test::Command;
using strict_test::ConnectToTestDatabase;
using strict_test::PgConnPtr;
using strict_test::WaitUntil;

TEST(StrictRecovery, ASidecarStartedBeforeItsDatabaseExistsConnectsByItselfOnceItDoes) {
  REQUIRE_TEST_DATABASE();
  const std::string database = "rl_appears_" + std::to_string(getpid());
  PgConnPtr admin = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(admin.get()), CONNECTION_OK) << PQerrorMessage(admin.get());
  Command(admin.get(), "DROP DATABASE IF EXISTS " + database + " WITH (FORCE)");

  // In a keyword/value conninfo string the last dbname wins.
  Result<std::unique_ptr<SidecarProcess>> started =
      SidecarProcess::Start({{"RATE_LIMIT_STORE", "postgres"},
                             {"RATE_LIMIT_PG_TABLE", "t_strict_recovery"},
                             {"DATABASE_URL", TestDatabaseUrl() + " dbname=" + database}});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  SidecarProcess& sidecar = **started;
  Client client({.socket_path = sidecar.socket_path(), .timeout_ms = 2000});
  Result<PingResult> ping = client.Ping();
  ASSERT_TRUE(ping.ok());
  EXPECT_FALSE(ping->ready);
  Result<CheckResult> refused = client.Check({.key = "k"});
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->status, CheckStatus::kStoreUnavailable);

  ASSERT_EQ(Command(admin.get(), "CREATE DATABASE " + database), "");
  // Reconnection backs off to at most 5 s between attempts.
  EXPECT_TRUE(WaitUntil(
      [&] {
        Result<PingResult> p = client.Ping();
        return p.ok() && p->ready;
      },
      15000))
      << sidecar.Stderr();
  Result<CheckResult> served = client.Check({.key = "k"});
  ASSERT_TRUE(served.ok());
  EXPECT_EQ(served->status, CheckStatus::kOk);
  EXPECT_TRUE(served->allowed);
  EXPECT_EQ(served->source, Source::kDatabase);

  sidecar.Signal(SIGTERM);
  EXPECT_EQ(sidecar.WaitExit(), 0);
  Command(admin.get(), "DROP DATABASE IF EXISTS " + database + " WITH (FORCE)");
}

}  // namespace
}  // namespace ratelimit
