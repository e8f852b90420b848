// DATABASE_URLs as Node stacks write them (Prisma's parameters in the query), on a real
// PostgreSQL: accepted, the schema parameter placing the table, one warning for the others.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <cctype>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ratelimit/client.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::Lines;
using pg_test::LinesContaining;
using pg_test::QueryValue;
using pg_test::StartReadySidecar;
using pg_test::StrictEnv;

// A password the server never asks for (it trusts local connections): it must reach no log.
constexpr const char* kPassword = "url-canary-secret";

std::string PercentEncode(const std::string& text) {
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char escaped[4];
      std::snprintf(escaped, sizeof(escaped), "%%%02X", c);
      out += escaped;
    }
  }
  return out;
}

// The test server as a Prisma-style URI with `query`:
//   postgresql://user:password@host:port/dbname?query
// (the host, a socket directory, percent-encoded).
std::string PrismaUrl(const std::string& query) {
  std::map<std::string, std::string> settings;
  PQconninfoOption* options = PQconninfoParse(TestDatabaseUrl().c_str(), nullptr);
  for (PQconninfoOption* o = options; o != nullptr && o->keyword != nullptr; ++o) {
    if (o->val != nullptr) settings[o->keyword] = o->val;
  }
  PQconninfoFree(options);
  return "postgresql://" + settings["user"] + ":" + kPassword + "@" +
         PercentEncode(settings["host"]) + ":" + settings["port"] + "/" + settings["dbname"] + "?" +
         query;
}

// Tests may run in parallel on the shared server: each makes a schema of its own.
class DatabaseUrl : public testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_TEST_DATABASE();
    conn_ = ConnectToTestDatabase();
    ASSERT_EQ(PQstatus(conn_.get()), CONNECTION_OK) << PQerrorMessage(conn_.get());
  }
  void FreshSchema(const std::string& schema) {
    ASSERT_EQ(Command(conn_.get(), "DROP SCHEMA IF EXISTS " + schema + " CASCADE"), "");
    ASSERT_EQ(Command(conn_.get(), "CREATE SCHEMA " + schema), "");
  }
  PgConnPtr conn_;
};

TEST_F(DatabaseUrl, PrismaStyleUrlIsAcceptedItsSchemaHoldsTheTableAndOneWarningNamesTheRest) {
  const std::string table = "t_url_schema";
  DropTable(table);
  FreshSchema("rl_url_prisma");
  Env env = StrictEnv(table, "url_prisma");
  env["DATABASE_URL"] = PrismaUrl(
      "schema=rl_url_prisma&connection_limit=5&application_name=url_prisma&pool_timeout=10");
  std::unique_ptr<SidecarProcess> sidecar = StartReadySidecar(env);
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  Result<CheckResult> r = client.Check({.key = "prisma-url"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, Source::kDatabase);
  EXPECT_TRUE(r->allowed);

  EXPECT_EQ(QueryValue(conn_.get(), "SELECT count(*) FROM rl_url_prisma." + table), "1");
  EXPECT_EQ(QueryValue(conn_.get(), "SELECT to_regclass($1) IS NULL", {"public." + table}), "t");
  // The libpq parameter among the ORM ones reached the server.
  EXPECT_NE(
      QueryValue(conn_.get(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                 {"url_prisma"}),
      "0");

  const std::string err = sidecar->Stderr();
  const std::vector<std::string> warnings =
      LinesContaining(err, {"\"level\":\"warn\"", "DATABASE_URL parameters"});
  ASSERT_EQ(warnings.size(), 1u) << err;
  EXPECT_NE(warnings[0].find("\"parameters\":\"connection_limit,pool_timeout\""), std::string::npos)
      << warnings[0];
  EXPECT_EQ(err.find(kPassword), std::string::npos) << err;
  const std::vector<std::string> effective = LinesContaining(err, {"effective configuration"});
  ASSERT_EQ(effective.size(), 1u) << err;
  EXPECT_NE(effective[0].find("password=***"), std::string::npos) << effective[0];
  EXPECT_EQ(effective[0].find("schema="), std::string::npos) << effective[0];
  // The keepalives every session adds, as libpq gets them.
  EXPECT_NE(effective[0].find("keepalives=1 keepalives_idle=10 keepalives_interval=5 "
                              "keepalives_count=3 tcp_user_timeout=10000"),
            std::string::npos)
      << effective[0];
  EXPECT_EQ(LinesContaining(err, {"database ready", "rl_url_prisma." + table}).size(), 1u) << err;
}

TEST_F(DatabaseUrl, ATableNamedWithItsSchemaWinsOverTheUrlsSchema) {
  const std::string table = "t_url_named_schema";
  DropTable(table);
  FreshSchema("rl_url_named");
  Env env = StrictEnv("public." + table, "url_named_schema");
  env["DATABASE_URL"] = PrismaUrl("schema=rl_url_named");
  std::unique_ptr<SidecarProcess> sidecar = StartReadySidecar(env);
  ASSERT_TRUE(sidecar);
  EXPECT_EQ(QueryValue(conn_.get(), "SELECT to_regclass($1) IS NOT NULL", {"public." + table}),
            "t");
  EXPECT_EQ(QueryValue(conn_.get(), "SELECT to_regclass($1) IS NULL", {"rl_url_named." + table}),
            "t");
  const std::vector<std::string> warnings =
      LinesContaining(sidecar->Stderr(), {"\"level\":\"warn\"", "DATABASE_URL parameters"});
  ASSERT_EQ(warnings.size(), 1u) << sidecar->Stderr();
  EXPECT_NE(warnings[0].find("\"parameters\":\"schema\""), std::string::npos) << warnings[0];
}

TEST_F(DatabaseUrl, AnUnknownParameterStillStopsStartUpWithOneLineAndExitCode2) {
  TempDir dir;
  Env env = StrictEnv("t_url_unknown", "url_unknown");
  env["RATE_LIMIT_SOCKET"] = dir.File("rl.sock");
  env["DATABASE_URL"] = PrismaUrl("schema=public&connection_limit=5&bogus=1");
  ProcessResult run = RunProcess({kSidecarBin}, env);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  const std::vector<std::string> lines = Lines(run.err);
  ASSERT_EQ(lines.size(), 1u) << run.err;
  EXPECT_NE(lines[0].find("DATABASE_URL is invalid"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("unknown parameter \\\"bogus\\\""), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find(kPassword), std::string::npos) << lines[0];
}

}  // namespace
}  // namespace ratelimit
