// Strict mode on a real PostgreSQL: idle full buckets leave the table; busy ones stay.
#include <unistd.h>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "tests/testing/pg_test_support.h"

namespace ratelimit {
namespace {

using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;

using pg_test::QueryValue;
using pg_test::StartReadySidecar;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

TEST(StrictGc, IdleFullBucketsAreDeletedAndBucketsStillRefillingStay) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_gc";
  DropTable(table);
  std::unique_ptr<SidecarProcess> sidecar = StartReadySidecar(StrictEnv(table, "strict_gc"));
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  // 50 keys that refill within 200 ms, and one that needs ten minutes.
  for (int i = 0; i < 50; ++i) {
    const std::string key = "idle-" + std::to_string(i);
    ASSERT_TRUE(client.Check({.key = key, .limit = 5, .window_ms = 200}).ok());
  }
  ASSERT_TRUE(client.Check({.key = "busy", .limit = 5, .window_ms = 600000}).ok());
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  ASSERT_EQ(QueryValue(conn.get(), "SELECT count(*) FROM " + table), "51");

  // Collection runs every 5 s and takes rows full and untouched for at least a second.
  const bool collected = WaitUntil(
      [&] { return QueryValue(conn.get(), "SELECT count(*) FROM " + table) == "1"; }, 20000);
  EXPECT_TRUE(collected) << QueryValue(conn.get(), "SELECT count(*) FROM " + table);
  EXPECT_EQ(QueryValue(conn.get(), "SELECT count(*) FROM " + table +
                                       " WHERE key = sha256(convert_to('busy', 'UTF8'))"),
            "1");
  // A collected key is a fresh, full bucket again.
  Result<CheckResult> again = client.Check({.key = "idle-7", .limit = 5, .window_ms = 200});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->remaining, 4u);
}

TEST(StrictConfig, ThePasswordInDatabaseUrlNeverReachesTheLog) {
  // Nothing listens on port 1: every connection attempt fails and is logged.
  std::unique_ptr<SidecarProcess> sidecar;
  {
    Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(
        {{"RATE_LIMIT_STORE", "postgres"},
         {"RATE_LIMIT_MODE", "strict"},
         {"RATE_LIMIT_FALLBACK", "deny"},
         {"RATE_LIMIT_LOG_LEVEL", "debug"},
         {"DATABASE_URL",
          "postgresql://ratelimit:s3cr3t-Pa55w0rd@127.0.0.1:1/app?connect_timeout=1"}});
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    sidecar = std::move(*started);
  }
  Client client({.socket_path = sidecar->socket_path()});
  Result<CheckResult> r = client.Check({.key = "k"});
  ASSERT_TRUE(r.ok());
  pg_test::ExpectFallbackDenial(*r);
  usleep(300000);  // A few reconnect attempts.
  const std::string log = sidecar->Stderr();
  EXPECT_NE(log.find("database connection failed"), std::string::npos) << log;
  EXPECT_EQ(log.find("s3cr3t"), std::string::npos) << log;
}

}  // namespace
}  // namespace ratelimit
