// TableShapeProblems (sidecar/pg/table_shape): which tables the sidecar may use, and the one
// line that says why another is refused.
#include "sidecar/pg/table_shape.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sidecar/pg/table_sql.h"
#include "tests/testing/canned_table_check.h"

namespace ratelimit {
namespace {

TEST(TableShapeTest, TheTableOfSchemaPostgresSqlFits) {
  EXPECT_EQ(TableShapeProblems(SchemaTableColumns()), "");
}

TEST(TableShapeTest, ExtraColumnsThatMayStayNullOrDefaultFit) {
  std::vector<ColumnFact> columns = SchemaTableColumns();
  columns.push_back({"note", "text", false, false});
  columns.push_back({"created_at", "timestamp with time zone", false, false});
  EXPECT_EQ(TableShapeProblems(columns), "");
}

TEST(TableShapeTest, TheOlderGatewaysBucketTableIsRefusedNamingEveryProblem) {
  EXPECT_EQ(TableShapeProblems(OlderGatewayColumns()),
            "missing columns key, updated_at, capacity, window_ms; column tokens is integer, "
            "not double precision; column bucket_key NOT NULL without a default, which the "
            "sidecar never fills");
}

struct ShapeCase {
  const char* name;
  std::vector<ColumnFact> columns;
  const char* problems;
};

TEST(TableShapeTest, EachProblemIsNamed) {
  std::vector<ColumnFact> missing = SchemaTableColumns();
  missing.pop_back();
  std::vector<ColumnFact> mistyped = SchemaTableColumns();
  mistyped[3].type = "integer";
  std::vector<ColumnFact> not_unique = SchemaTableColumns();
  not_unique[0].unique_alone = false;
  std::vector<ColumnFact> required_extra = SchemaTableColumns();
  required_extra.push_back({"tenant", "text", true, false});
  const std::vector<ShapeCase> cases = {
      {"a missing column", missing, "missing column window_ms"},
      {"a mistyped column", mistyped, "column capacity is integer, not bigint"},
      {"a key without a unique index", not_unique, "no primary key or unique index on key alone"},
      {"a column to fill", required_extra,
       "column tenant NOT NULL without a default, which the sidecar never fills"},
      {"no columns at all", {}, "missing columns key, tokens, updated_at, capacity, window_ms"},
  };
  for (const ShapeCase& c : cases) EXPECT_EQ(TableShapeProblems(c.columns), c.problems) << c.name;
}

// The check and schema/postgres.sql name the same columns (their types are checked against a
// real PostgreSQL: a sidecar creating the table from that file must find it fits).
TEST(TableShapeTest, EveryRequiredColumnIsInSchemaPostgresSql) {
  const std::string ddl = CreateTableSql(TableName{"", "t"});
  for (const RequiredColumn& column : kRequiredColumns) {
    EXPECT_NE(ddl.find("\n  " + std::string(column.name) + " "), std::string::npos) << column.name;
  }
}

}  // namespace
}  // namespace ratelimit
