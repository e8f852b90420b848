// Strict mode's table on a real PostgreSQL: creation, its name, malformed rows, keys at rest.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "ratelimit/pipeline.h"
#include "sidecar/log/log.h"
#include "sidecar/pg/table_sql.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::ExpectFallbackDenial;
using pg_test::Lines;
using pg_test::LinesContaining;

using pg_test::PingsReady;
using pg_test::QueryValue;
using pg_test::StartReadySidecar;
using pg_test::StartReadySidecars;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

// schema/postgres.sql, for a table of another name.
std::string TableDdl(const std::string& table) { return CreateTableSql(TableName{"", table}); }

PgConnPtr ConnectOrFail() {
  PgConnPtr conn = ConnectToTestDatabase();
  EXPECT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  return conn;
}

// Lines of `text` that are not one JSON object.
std::vector<std::string> NonJsonLines(const std::string& text) {
  std::vector<std::string> bad;
  for (const std::string& line : Lines(text)) {
    if (line.front() != '{' || line.back() != '}') bad.push_back(line);
  }
  return bad;
}

std::string LastLineContaining(const std::string& text, const std::string& needle) {
  const std::vector<std::string> lines = LinesContaining(text, {needle});
  return lines.empty() ? "(no line with \"" + needle + "\")" : lines.back();
}

TEST(StrictTable, SidecarsStartingTogetherCreateTheMissingTableOnceWithoutErrors) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_create_race";
  DropTable(table);
  auto sidecars = StartReadySidecars(6, StrictEnv(table, "strict_create_race"));
  ASSERT_EQ(sidecars.size(), 6u);
  for (auto& sidecar : sidecars) {
    Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
    Result<CheckResult> r = client.Check({.key = "create-race"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, CheckStatus::kOk);
    EXPECT_EQ(r->source, Source::kDatabase);
    EXPECT_TRUE(r->allowed);
  }
  PgConnPtr conn = ConnectOrFail();
  EXPECT_EQ(QueryValue(conn.get(), "SELECT count(*) FROM pg_class WHERE relname = $1", {table}),
            "1");
  EXPECT_EQ(QueryValue(conn.get(), "SELECT count(*) FROM " + table), "1");
  for (auto& sidecar : sidecars) {
    const std::string err = sidecar->Stderr();
    EXPECT_EQ(LinesContaining(err, {"\"level\":\"error\""}), std::vector<std::string>{}) << err;
    EXPECT_EQ(err.find("cannot create"), std::string::npos) << err;
  }
}

// Server notices (CREATE TABLE IF NOT EXISTS on an existing table) must not break the
// JSON-lines log on stderr.
TEST(StrictTable, StderrHasOnlyJsonLinesWhenTheTableAlreadyExists) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_json_stderr";
  DropTable(table);
  PgConnPtr conn = ConnectOrFail();
  ASSERT_EQ(Command(conn.get(), TableDdl(table)), "");
  std::unique_ptr<SidecarProcess> sidecar =
      StartReadySidecar(StrictEnv(table, "strict_json_stderr"));
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  Result<CheckResult> r = client.Check({.key = "json-stderr"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->allowed);
  EXPECT_EQ(NonJsonLines(sidecar->Stderr()), std::vector<std::string>{});
}

TEST(StrictTable, TableNameBuiltToInjectSqlStopsStartUpWithExitCode2) {
  REQUIRE_TEST_DATABASE();
  const std::string sentinel = "t_strict_inject_sentinel";
  PgConnPtr conn = ConnectOrFail();
  ASSERT_EQ(Command(conn.get(), "CREATE TABLE IF NOT EXISTS " + sentinel + " (id int)"), "");
  const std::vector<std::string> names = {
      "x\"; DROP TABLE " + sentinel + "; --",
      "buckets; drop table " + sentinel,
      "public.x\"; drop table " + sentinel + "; --",
      "x\" (key bytea); drop table " + sentinel + "; create table \"y",
      "buckets' ; drop table " + sentinel + "; --",
      "a.b.c",
      "x\"y",
  };
  for (const std::string& name : names) {
    TempDir dir;
    Env env = StrictEnv(name, "strict_inject");
    env["RATE_LIMIT_SOCKET"] = dir.File("rl.sock");
    ProcessResult run = RunProcess({kSidecarBin}, env);
    EXPECT_EQ(run.exit_code, 2) << name << "\n" << run.err;
    const std::vector<std::string> lines = Lines(run.err);
    ASSERT_EQ(lines.size(), 1u) << name << "\n" << run.err;
    EXPECT_NE(lines[0].find("RATE_LIMIT_PG_TABLE"), std::string::npos) << lines[0];
  }
  EXPECT_EQ(QueryValue(conn.get(), "SELECT to_regclass($1) IS NOT NULL", {sentinel}), "t");
}

// One hand-written row: SQL expressions for its columns.
struct MalformedRow {
  const char* name;  // Also the API key.
  const char* tokens;
  const char* updated_at;
  const char* capacity;
  const char* window_ms;
  const char* problem;  // What the sidecar's log must say about it.
};

TEST(StrictTable, MalformedRowsAreRepairedLoggedAndTheirKeysKeepWorking) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_malformed";
  DropTable(table);
  // 10 tokens a second: an emptied key is allowed again within about 100 ms.
  std::unique_ptr<SidecarProcess> sidecar = StartReadySidecar(
      StrictEnv(table, "strict_malformed",
                {{"RATE_LIMIT_MAX_REQUESTS", "10"}, {"RATE_LIMIT_WINDOW_MS", "1000"}}));
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  {
    Result<CheckResult> r = client.Check({.key = "malformed-setup"});
    ASSERT_TRUE(r.ok() && r->allowed) << r.status().ToString();
  }
  const char* kNow = "clock_timestamp()";
  const std::vector<MalformedRow> rows = {
      {"null-tokens", "NULL", kNow, "10", "1000", "tokens missing or not a number"},
      {"nan-tokens", "'NaN'", kNow, "10", "1000", "tokens missing or not a number"},
      {"infinite-tokens", "'Infinity'", kNow, "10", "1000", "tokens missing or not a number"},
      {"a-debt-beyond-any", "-1025", kNow, "10", "1000",
       "a debt beyond any sidecars' unconfirmed admissions"},
      {"tokens-above-capacity", "1e9", kNow, "10", "1000", "tokens above capacity"},
      {"zero-capacity", "3", kNow, "0", "1000", "capacity or window missing or out of range"},
      {"null-capacity", "3", kNow, "NULL", "1000", "capacity or window missing or out of range"},
      {"huge-capacity", "3", kNow, "1000000000000", "1000",
       "capacity or window missing or out of range"},
      {"negative-window", "3", kNow, "10", "-1", "capacity or window missing or out of range"},
      // Empty and stamped in the future: unrepaired, this key would refill nothing until then.
      {"future-updated-at", "0", "'3000-01-01 00:00:00+00'", "10", "1000",
       "updated_at in the future"},
      {"null-updated-at", "0", "NULL", "10", "1000", "updated_at missing"},
  };
  PgConnPtr conn = ConnectOrFail();
  for (const MalformedRow& row : rows) {
    ASSERT_EQ(Command(conn.get(),
                      "INSERT INTO " + table +
                          " (key, tokens, updated_at, capacity, window_ms) VALUES "
                          "(sha256(convert_to($1, 'UTF8')), " +
                          row.tokens + ", " + row.updated_at + ", " + row.capacity + ", " +
                          row.window_ms + ")",
                      {row.name}),
              "")
        << row.name;
  }

  // Repairs are logged, but like every warning, at most a burst of lines of one message per
  // interval (sidecar/log/log.h): rows beyond the burst are repaired without a line.
  const size_t kLoggedRepairs = RepeatLimiter::Options{}.burst;
  ASSERT_LT(kLoggedRepairs, rows.size()) << "the test means to show both";
  for (size_t index = 0; index < rows.size(); ++index) {
    const MalformedRow& row = rows[index];
    SCOPED_TRACE(row.name);
    // Every check is decided; the key is allowed again within a few refills at most.
    bool allowed = false;
    for (int i = 0; i < 40 && !allowed; ++i) {
      Result<CheckResult> r = client.Check({.key = row.name});
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ASSERT_EQ(r->status, CheckStatus::kOk) << CheckStatusName(r->status);
      EXPECT_EQ(r->source, Source::kDatabase);
      allowed = r->allowed;
      if (!allowed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(allowed);
    // The row is well formed now.
    EXPECT_EQ(QueryValue(conn.get(),
                         "SELECT tokens IS NOT NULL AND tokens <> 'NaN'::float8 AND tokens >= 0"
                         " AND tokens <= capacity AND capacity BETWEEN 1 AND 4294967295"
                         " AND window_ms BETWEEN 1 AND 4294967295 AND updated_at IS NOT NULL"
                         " AND updated_at <= clock_timestamp() FROM " +
                             table + " WHERE key = sha256(convert_to($1, 'UTF8'))",
                         {row.name}),
              "t");
    // And the repair was logged, naming the row by its digest's prefix, while the burst lasts.
    const std::string prefix = QueryValue(
        conn.get(), "SELECT substr(encode(sha256(convert_to($1, 'UTF8')), 'hex'), 1, 16)",
        {row.name});
    const std::vector<std::string> logged =
        LinesContaining(sidecar->Stderr(), {"\"msg\":\"repaired a malformed rate limit row\"",
                                            prefix, row.problem, "\"level\":\"warn\""});
    EXPECT_EQ(logged.size(), index < kLoggedRepairs ? 1u : 0u) << sidecar->Stderr();
  }
  EXPECT_EQ(sidecar->WaitExit(0), -1) << "the sidecar exited: " << sidecar->Stderr();
}

// An updated_at that int8 microseconds cannot hold ('infinity', the end of the timestamptz
// range) must reach RepairRow as missing, not fail the transaction and lock the key out.
TEST(StrictTable, RowWithUpdatedAtOutsideTheInt8RangeIsRepairedNotLockedOut) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_infinite_time";
  DropTable(table);
  // Debug level: failed transactions are logged there, with the server's error.
  std::unique_ptr<SidecarProcess> sidecar = StartReadySidecar(
      StrictEnv(table, "strict_infinite_time", {{"RATE_LIMIT_LOG_LEVEL", "debug"}}));
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  {
    Result<CheckResult> r = client.Check({.key = "infinite-setup"});
    ASSERT_TRUE(r.ok() && r->allowed) << r.status().ToString();
  }
  PgConnPtr conn = ConnectOrFail();
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"infinite-future", "'infinity'"},
      {"infinite-past", "'-infinity'"},
      {"end-of-time", "'294276-12-31 23:59:59+00'"},
  };
  for (const auto& [key, updated_at] : rows) {
    ASSERT_EQ(Command(conn.get(),
                      "INSERT INTO " + table +
                          " (key, tokens, updated_at, capacity, window_ms) VALUES "
                          "(sha256(convert_to($1, 'UTF8')), 5, " +
                          updated_at + ", 100, 60000)",
                      {key}),
              "")
        << key;
  }
  for (const auto& [key, updated_at] : rows) {
    Result<CheckResult> r = client.Check({.key = key});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, CheckStatus::kOk)
        << key << " (updated_at " << updated_at << "): " << CheckStatusName(r->status) << "\n"
        << LastLineContaining(sidecar->Stderr(), "transaction failed");
    EXPECT_EQ(QueryValue(conn.get(),
                         "SELECT isfinite(updated_at) FROM " + table +
                             " WHERE key = sha256(convert_to($1, 'UTF8'))",
                         {key}),
              "t")
        << key;
  }
}

// One unreadable row must not fail the other keys batched into its transaction. Shown with
// one database session, so that checks arriving while the first transaction runs share the next.
TEST(StrictTable, UnreadableRowDoesNotFailTheOtherKeysOfItsBatch) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_batch_blast";
  DropTable(table);
  std::unique_ptr<SidecarProcess> sidecar = StartReadySidecar(
      StrictEnv(table, "strict_batch_blast", {{"RATE_LIMIT_PG_CONNECTIONS", "1"}}));
  ASSERT_TRUE(sidecar);
  PgConnPtr conn = ConnectOrFail();
  ASSERT_TRUE(WaitUntil([&] {
    return QueryValue(conn.get(), "SELECT to_regclass($1) IS NOT NULL", {table}) == "t";
  }));
  ASSERT_EQ(Command(conn.get(), "INSERT INTO " + table +
                                    " (key, tokens, updated_at, capacity, window_ms) VALUES "
                                    "(sha256(convert_to('unreadable', 'UTF8')), 5, 'infinity',"
                                    " 100, 60000)"),
            "");
  Result<std::unique_ptr<Pipeline>> pipeline =
      Pipeline::Connect({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().ToString();
  const std::vector<std::string> keys = {"healthy-0", "unreadable", "healthy-1", "healthy-2"};
  for (size_t id = 0; id < keys.size(); ++id) {
    ASSERT_TRUE((*pipeline)->QueueCheck(id, {.key = keys[id]}).ok());
  }
  ASSERT_TRUE((*pipeline)->Flush().ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    Result<Reply> reply = (*pipeline)->Receive();
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_LT(reply->id, keys.size());
    if (keys[reply->id] == "unreadable") continue;  // Its own fate is the test above.
    EXPECT_EQ(reply->check.status, CheckStatus::kOk)
        << keys[reply->id] << ": " << CheckStatusName(reply->check.status);
    EXPECT_TRUE(reply->check.allowed) << keys[reply->id];
  }
}

TEST(StrictTable, KeysAreStoredAsSha256DigestsNeverAsPlaintext) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_key_digest";
  const std::string key = "plaintext-canary-7f3a";
  DropTable(table);
  std::unique_ptr<SidecarProcess> sidecar = StartReadySidecar(StrictEnv(table, "strict_digest"));
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  for (int i = 0; i < 3; ++i) {
    Result<CheckResult> r = client.Check({.key = key});
    ASSERT_TRUE(r.ok() && r->allowed) << r.status().ToString();
  }
  PgConnPtr conn = ConnectOrFail();
  EXPECT_EQ(QueryValue(conn.get(), "SELECT count(*) FROM " + table), "1");
  EXPECT_EQ(QueryValue(conn.get(),
                       "SELECT count(*) FROM " + table +
                           " WHERE position(convert_to($1, 'UTF8') IN key) > 0",
                       {key}),
            "0");
  EXPECT_EQ(QueryValue(conn.get(),
                       "SELECT count(*) FROM " + table +
                           " WHERE key = sha256(convert_to($1, 'UTF8')) AND octet_length(key) = 32",
                       {key}),
            "1");
}

TEST(StrictTable, KeyHashNoneStoresTheKeyBytes) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_key_plain";
  const std::string key = "plain-key-\xc3\xa9-01";  // Not ASCII: bytes, not text, are stored.
  DropTable(table);
  std::unique_ptr<SidecarProcess> sidecar =
      StartReadySidecar(StrictEnv(table, "strict_key_plain", {{"RATE_LIMIT_PG_KEY_HASH", "none"}}));
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  Result<CheckResult> r = client.Check({.key = key});
  ASSERT_TRUE(r.ok() && r->allowed) << r.status().ToString();
  PgConnPtr conn = ConnectOrFail();
  EXPECT_EQ(QueryValue(conn.get(), "SELECT count(*) FROM " + table), "1");
  EXPECT_EQ(
      QueryValue(conn.get(),
                 "SELECT count(*) FROM " + table + " WHERE key = convert_to($1, 'UTF8')", {key}),
      "1");
}

TEST(StrictTable, WithoutCreateTableAMissingTableKeepsTheSidecarUnreadyUntilSomeoneCreatesIt) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_no_create";
  DropTable(table);
  Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(
      StrictEnv(table, "strict_no_create", {{"RATE_LIMIT_PG_CREATE_TABLE", "false"}}));
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  SidecarProcess& sidecar = **started;
  Client client({.socket_path = sidecar.socket_path(), .timeout_ms = 5000});

  const std::string names_table = "\"table\":\"" + table + "\"";
  ASSERT_TRUE(WaitUntil([&] {
    return !LinesContaining(sidecar.Stderr(), {"\"level\":\"error\"", names_table}).empty();
  })) << sidecar.Stderr();
  Result<PingResult> ping = client.Ping();
  ASSERT_TRUE(ping.ok()) << ping.status().ToString();
  EXPECT_FALSE(ping->ready);
  Result<CheckResult> refused = client.Check({.key = "no-create"});
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  ExpectFallbackDenial(*refused);

  PgConnPtr conn = ConnectOrFail();
  ASSERT_EQ(Command(conn.get(), TableDdl(table)), "");
  EXPECT_TRUE(WaitUntil([&] { return PingsReady(sidecar.socket_path()); }, 10000));
  Result<CheckResult> r = client.Check({.key = "no-create"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, CheckStatus::kOk);
  EXPECT_TRUE(r->allowed);
  EXPECT_EQ(r->source, Source::kDatabase);
}

// A table that cannot be used (missing with RATE_LIMIT_PG_CREATE_TABLE=false, or in a schema
// that does not exist) is retried with backoff, not in a tight loop of failing statements.
TEST(StrictTable, TableThatCannotBeUsedIsRetriedWithBackoffAndLoggedOnce) {
  REQUIRE_TEST_DATABASE();
  DropTable("t_strict_retry_backoff");
  struct Case {
    const char* table;
    const char* create_table;
    const char* error;
  };
  const std::vector<Case> cases = {
      {"t_strict_retry_backoff", "false", "the rate limit table is not usable"},
      {"no_such_schema_strict.t_retry", "true", "cannot create or use the rate limit table"},
  };
  std::vector<std::unique_ptr<SidecarProcess>> sidecars;
  for (const Case& c : cases) {
    Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(StrictEnv(
        c.table, "strict_retry_backoff",
        {{"RATE_LIMIT_PG_CREATE_TABLE", c.create_table}, {"RATE_LIMIT_LOG_LEVEL", "debug"}}));
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    sidecars.push_back(std::move(*started));
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].table);
    EXPECT_FALSE(PingsReady(sidecars[i]->socket_path()));
    const std::string err = sidecars[i]->Stderr();
    // The error is logged once per change of state, not once per attempt.
    EXPECT_EQ(LinesContaining(err, {cases[i].error}).size(), 1u) << err.substr(0, 1500);
    // Each attempt is a debug line. Backing off from 100 ms doubling to 1 s: about 5 attempts
    // in 2 s; 40 leaves room for a slow machine, and is far from a loop.
    const size_t attempts = LinesContaining(err, {"rate limit table check failed"}).size();
    EXPECT_GE(attempts, 2u) << "retried, not given up";
    EXPECT_LE(attempts, 40u) << "first lines:\n" << err.substr(0, 1500);
  }
}

}  // namespace
}  // namespace ratelimit
