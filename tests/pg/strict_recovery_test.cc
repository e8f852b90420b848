// Strict mode on a real PostgreSQL: a sidecar started before its database serves once it exists.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/temp_dir.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::ConnectToTestDatabase;
using pg_test::ExpectFallbackDenial;

using pg_test::PingsReady;
using pg_test::WaitUntil;

TEST(StrictRecovery, ASidecarStartedBeforeItsDatabaseExistsConnectsByItselfOnceItDoes) {
  REQUIRE_TEST_DATABASE();
  const std::string database = "rl_appears_" + std::to_string(getpid());
  PgConnPtr admin = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(admin.get()), CONNECTION_OK) << PQerrorMessage(admin.get());
  Command(admin.get(), "DROP DATABASE IF EXISTS " + database + " WITH (FORCE)");

  // In a keyword/value conninfo string the last dbname wins.
  Result<std::unique_ptr<SidecarProcess>> started =
      SidecarProcess::Start({{"RATE_LIMIT_STORE", "postgres"},
                             {"RATE_LIMIT_MODE", "strict"},
                             {"RATE_LIMIT_FALLBACK", "deny"},
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
  ExpectFallbackDenial(*refused);

  ASSERT_EQ(Command(admin.get(), "CREATE DATABASE " + database), "");
  // Reconnection backs off to at most 1.25 s between attempts.
  EXPECT_TRUE(WaitUntil([&] { return PingsReady(sidecar.socket_path()); }, 15000))
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

// libpq fails at once when the socket file is missing: every such attempt must still schedule
// the next one, so the sidecar connects by itself once the socket appears.
TEST(StrictRecovery, ASidecarWhoseSocketPathIsMissingConnectsOnceItAppears) {
  REQUIRE_TEST_DATABASE();
  const char* pghost = std::getenv("PGHOST");
  const char* pgport = std::getenv("PGPORT");
  ASSERT_TRUE(pghost != nullptr && pgport != nullptr);
  TempDir dir;
  Result<std::unique_ptr<SidecarProcess>> started =
      SidecarProcess::Start({{"RATE_LIMIT_STORE", "postgres"},
                             {"RATE_LIMIT_MODE", "strict"},
                             {"RATE_LIMIT_FALLBACK", "deny"},
                             {"RATE_LIMIT_PG_TABLE", "t_strict_socket_appears"},
                             {"DATABASE_URL", "host=" + dir.path() + " port=" + pgport +
                                                  " user=postgres dbname=postgres"}});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  SidecarProcess& sidecar = **started;
  Client client({.socket_path = sidecar.socket_path(), .timeout_ms = 2000});
  usleep(1500000);  // Several attempts fail at once (backoff 100 ms, doubling).
  Result<PingResult> down = client.Ping();
  ASSERT_TRUE(down.ok());
  EXPECT_FALSE(down->ready);

  const std::string name = std::string("/.s.PGSQL.") + pgport;
  ASSERT_EQ(symlink((std::string(pghost) + name).c_str(), (dir.path() + name).c_str()), 0);
  EXPECT_TRUE(WaitUntil([&] { return PingsReady(sidecar.socket_path()); }, 15000))
      << sidecar.Stderr();
}

// With the database stuck (the table locked by another session), SIGTERM still ends the
// sidecar within its grace period: waiting checks are answered by the fallback.
TEST(StrictRecovery, ShutdownIsNotHeldUpByADatabaseThatDoesNotAnswer) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_stuck_shutdown";
  PgConnPtr admin = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(admin.get()), CONNECTION_OK);
  Command(admin.get(), "DROP TABLE IF EXISTS " + table);
  Result<std::unique_ptr<SidecarProcess>> started =
      SidecarProcess::Start({{"RATE_LIMIT_STORE", "postgres"},
                             {"RATE_LIMIT_MODE", "strict"},
                             {"RATE_LIMIT_FALLBACK", "deny"},
                             {"RATE_LIMIT_PG_TABLE", table},
                             {"RATE_LIMIT_SHUTDOWN_GRACE_MS", "500"},
                             {"DATABASE_URL", TestDatabaseUrl()}});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  SidecarProcess& sidecar = **started;
  Client client({.socket_path = sidecar.socket_path(), .timeout_ms = 5000});
  ASSERT_TRUE(WaitUntil([&] { return PingsReady(sidecar.socket_path()); }));
  ASSERT_TRUE(client.Check({.key = "k"}).ok());

  ASSERT_EQ(Command(admin.get(), "BEGIN"), "");
  ASSERT_EQ(Command(admin.get(), "LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE"), "");
  std::thread stuck([&] {
    Result<CheckResult> r = client.Check({.key = "k"});
    // Either answered by the fallback (deny) or cut off with the connection: never allowed.
    EXPECT_TRUE(!r.ok() ||
                (r->status == CheckStatus::kOk && !r->allowed && r->source == Source::kFallback));
  });
  usleep(300000);  // The check is now waiting for the lock.
  sidecar.Signal(SIGTERM);
  EXPECT_EQ(sidecar.WaitExit(10000), 0) << sidecar.Stderr();
  Command(admin.get(), "ROLLBACK");
  stuck.join();
}

// A host name is resolved off the event loop and the address handed to libpq: "localhost"
// (from /etc/hosts, no DNS query) over TCP reaches the test server.
TEST(StrictConfig, AHostNameIsResolvedAndUsed) {
  REQUIRE_TEST_DATABASE();
  const char* pgport = std::getenv("PGPORT");
  ASSERT_NE(pgport, nullptr);
  Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(
      {{"RATE_LIMIT_STORE", "postgres"},
       {"RATE_LIMIT_MODE", "strict"},
       {"RATE_LIMIT_FALLBACK", "deny"},
       {"RATE_LIMIT_PG_TABLE", "t_strict_host_name"},
       {"DATABASE_URL", std::string("postgresql://postgres@localhost:") + pgport + "/postgres"}});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  Client client({.socket_path = (*started)->socket_path(), .timeout_ms = 5000});
  EXPECT_TRUE(WaitUntil([&] { return PingsReady((*started)->socket_path()); }))
      << (*started)->Stderr();
  Result<CheckResult> r = client.Check({.key = "k"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, Source::kDatabase);
  EXPECT_TRUE(r->allowed);
}

TEST(StrictConfig, AMalformedDatabaseUrlStopsStartUpWithoutShowingIt) {
  TempDir dir;
  ProcessResult r =
      RunProcess({kSidecarBin}, {{"RATE_LIMIT_SOCKET", dir.File("rl.sock")},
                                 {"RATE_LIMIT_STORE", "postgres"},
                                 {"RATE_LIMIT_MODE", "strict"},
                                 {"RATE_LIMIT_FALLBACK", "deny"},
                                 {"DATABASE_URL", "postgresql://rl:Secr%zzet@127.0.0.1:1/db"}});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("DATABASE_URL is invalid"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Secr"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace ratelimit
