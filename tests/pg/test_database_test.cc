// Tests of the throwaway PostgreSQL that scripts/with-postgres.sh provides to every test.
#include "tests/testing/test_database.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <stdlib.h>

#include <memory>
#include <string>

#include "sidecar/pg/pg_ptr.h"
#include "tests/testing/temp_dir.h"

namespace ratelimit {
namespace {

// Connects with a blocking PQconnectdb; check PQstatus() before use.
PgConnPtr Connect(const std::string& conninfo) { return PgConnPtr(PQconnectdb(conninfo.c_str())); }

// Runs a query returning one value; on error the text is the error message, prefixed "ERROR ".
std::string QueryValue(PGconn* conn, const std::string& sql) {
  PgResultPtr result(PQexec(conn, sql.c_str()));
  if (PQresultStatus(result.get()) != PGRES_TUPLES_OK || PQntuples(result.get()) != 1) {
    return std::string("ERROR ") + PQerrorMessage(conn);
  }
  return PQgetvalue(result.get(), 0, 0);
}

std::string Env(const char* name) {
  const char* value = getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

TEST(TestDatabase, UrlConnectsToPostgres15) {
  REQUIRE_TEST_DATABASE();
  PgConnPtr conn = Connect(TestDatabaseUrl());
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  std::string version = QueryValue(conn.get(), "SHOW server_version_num");
  EXPECT_EQ(version.substr(0, 2), "15") << version;
}

TEST(TestDatabase, ServerListensOnLoopbackAtPgport) {
  REQUIRE_TEST_DATABASE();
  std::string port = Env("PGPORT");
  ASSERT_FALSE(port.empty());
  PgConnPtr conn = Connect("host=127.0.0.1 port=" + port + " user=postgres dbname=postgres");
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  EXPECT_EQ(QueryValue(conn.get(), "SELECT inet_server_port()::text"), port);
  EXPECT_EQ(QueryValue(conn.get(), "SHOW listen_addresses"), "127.0.0.1");
}

// Store tests must see the commit behaviour of production, so durability stays on.
TEST(TestDatabase, DurabilitySettingsStayOn) {
  REQUIRE_TEST_DATABASE();
  PgConnPtr conn = Connect(TestDatabaseUrl());
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  for (const char* setting : {"fsync", "synchronous_commit", "full_page_writes"}) {
    EXPECT_EQ(QueryValue(conn.get(), std::string("SHOW ") + setting), "on") << setting;
  }
}

TEST(TestDatabase, ServerAllowsManySidecarsAndLogsLockWaits) {
  REQUIRE_TEST_DATABASE();
  PgConnPtr conn = Connect(TestDatabaseUrl());
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  EXPECT_EQ(QueryValue(conn.get(), "SHOW max_connections"), "200");
  EXPECT_EQ(QueryValue(conn.get(), "SHOW log_lock_waits"), "on");
}

TEST(TestDatabase, ServerLogFileRecordsStartUp) {
  REQUIRE_TEST_DATABASE();
  ASSERT_FALSE(TestPgLogPath().empty());
  EXPECT_NE(ReadFile(TestPgLogPath()).find("ready to accept connections"), std::string::npos);
  EXPECT_FALSE(TestPgDataDir().empty());
  EXPECT_FALSE(TestPgBinDir().empty());
}

TEST(TestDatabase, MissingDatabaseMessageNamesTheWrapperScript) {
  EXPECT_NE(NoTestDatabaseMessage().find("scripts/with-postgres.sh"), std::string::npos);
}

}  // namespace
}  // namespace ratelimit
