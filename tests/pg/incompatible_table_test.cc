// Tables of another shape under RATE_LIMIT_PG_TABLE, on a real PostgreSQL: refused in one line,
// never altered, the checks answered by the fallback, and used once the operator fixes them.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "sidecar/pg/table_sql.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::ExpectFallbackDenial;
using pg_test::LinesContaining;
using pg_test::PingsReady;
using pg_test::QueryValue;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

struct Shape {
  const char* table;
  const char* columns;  // The operator's CREATE TABLE, after the name.
  const char* problem;  // What the error line must say.
};

// The table's columns and types, in order, as the catalog has them.
std::string ColumnsOf(PGconn* conn, const std::string& table) {
  return QueryValue(conn,
                    "SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable, ', '"
                    " ORDER BY ordinal_position) FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = $1",
                    {table});
}

// With RATE_LIMIT_PG_CREATE_TABLE left at true: the sidecar may create a missing table, never
// change one that exists.
TEST(IncompatibleTable, IsRefusedInOneLineLeftUntouchedAndUsedOnceFixed) {
  REQUIRE_TEST_DATABASE();
  const std::vector<Shape> shapes = {
      {"t_incompatible_gateway",
       "(bucket_key text PRIMARY KEY, tokens int, window_start timestamptz)",
       "missing columns key, updated_at, capacity, window_ms; column tokens is integer, not "
       "double precision"},
      {"t_incompatible_missing",
       "(key bytea PRIMARY KEY, tokens double precision, updated_at timestamptz, capacity bigint)",
       "missing column window_ms"},
      {"t_incompatible_mistyped",
       "(key bytea PRIMARY KEY, tokens double precision, updated_at timestamptz,"
       " capacity integer, window_ms bigint)",
       "column capacity is integer, not bigint"},
  };
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  std::vector<std::string> columns_before;
  std::vector<std::unique_ptr<SidecarProcess>> sidecars;
  for (const Shape& shape : shapes) {
    DropTable(shape.table);
    ASSERT_EQ(Command(conn.get(), std::string("CREATE TABLE ") + shape.table + " " + shape.columns),
              "");
    columns_before.push_back(ColumnsOf(conn.get(), shape.table));
    Result<std::unique_ptr<SidecarProcess>> started =
        SidecarProcess::Start(StrictEnv(shape.table, "incompatible_table"));
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    sidecars.push_back(std::move(*started));
  }
  // Several retries' worth of backoff (100 ms doubling to 1 s).
  std::this_thread::sleep_for(std::chrono::seconds(3));
  for (size_t i = 0; i < shapes.size(); ++i) {
    SCOPED_TRACE(shapes[i].table);
    SidecarProcess& sidecar = *sidecars[i];
    EXPECT_FALSE(PingsReady(sidecar.socket_path()));
    Client client({.socket_path = sidecar.socket_path(), .timeout_ms = 5000});
    Result<CheckResult> r = client.Check({.key = "incompatible"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ExpectFallbackDenial(*r);
    const std::string err = sidecar.Stderr();
    const std::vector<std::string> errors = LinesContaining(err, {"\"level\":\"error\""});
    ASSERT_EQ(errors.size(), 1u) << err.substr(0, 3000);
    EXPECT_NE(errors[0].find(std::string("\"table\":\"") + shapes[i].table + "\""),
              std::string::npos)
        << errors[0];
    EXPECT_NE(errors[0].find(shapes[i].problem), std::string::npos) << errors[0];
    EXPECT_EQ(LinesContaining(err, {"database ready"}).size(), 0u) << err.substr(0, 3000);
    EXPECT_EQ(ColumnsOf(conn.get(), shapes[i].table), columns_before[i]) << "left untouched";
  }

  // The operator recreates each table as schema/postgres.sql has it.
  for (const Shape& shape : shapes) {
    ASSERT_EQ(Command(conn.get(), std::string("DROP TABLE ") + shape.table), "");
    ASSERT_EQ(Command(conn.get(), CreateTableSql(TableName{"", shape.table})), "");
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    SCOPED_TRACE(shapes[i].table);
    SidecarProcess& sidecar = *sidecars[i];
    EXPECT_TRUE(WaitUntil([&] { return PingsReady(sidecar.socket_path()); }, 5000))
        << sidecar.Stderr().substr(0, 3000);
    Client client({.socket_path = sidecar.socket_path(), .timeout_ms = 5000});
    Result<CheckResult> r = client.Check({.key = "incompatible"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->source, Source::kDatabase);
    EXPECT_TRUE(r->allowed);
    EXPECT_EQ(LinesContaining(sidecar.Stderr(), {"\"level\":\"error\""}).size(), 1u);
  }
}

}  // namespace
}  // namespace ratelimit
