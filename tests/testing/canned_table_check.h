// Canned answers to TableKeeper's table check, for tests of the store's pieces on fake sessions.
#ifndef RATELIMIT_TESTS_TESTING_CANNED_TABLE_CHECK_H_
#define RATELIMIT_TESTS_TESTING_CANNED_TABLE_CHECK_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sidecar/pg/table_shape.h"
#include "tests/testing/fake_db_session.h"

namespace ratelimit {

// The columns of the first version of schema/postgres.sql's table (kRequiredColumns), as the
// catalog describes them.
inline std::vector<ColumnFact> SchemaTableColumns() {
  std::vector<ColumnFact> columns;
  for (const RequiredColumn& c : kRequiredColumns) {
    columns.push_back({std::string(c.name), std::string(c.type), c.name == "key", c.name == "key"});
  }
  return columns;
}

// The columns of schema/postgres.sql's table as this version creates it: the first version's,
// then the columns added since (NOT NULL with a default).
inline std::vector<ColumnFact> CurrentTableColumns() {
  std::vector<ColumnFact> columns = SchemaTableColumns();
  for (const RequiredColumn& c : kAddedColumns) {
    columns.push_back({std::string(c.name), std::string(c.type), false, false});
  }
  return columns;
}

// The older gateway's own bucket table: bucket_key text PRIMARY KEY, tokens int, window_start
// timestamptz.
inline std::vector<ColumnFact> OlderGatewayColumns() {
  return {{"bucket_key", "text", true, true},
          {"tokens", "integer", false, false},
          {"window_start", "timestamp with time zone", false, false}};
}

// The table check's answer (a pipeline of one result): one row per column, each led by `usable`
// -- std::nullopt (no such table: then one row of NULLs), "t" (usable) or "f" (a privilege
// missing) -- then the column's name, type, whether it needs a value, whether a unique index
// is on it alone.
inline std::vector<PgResultPtr> TableCheckAnswer(
    std::optional<std::string> usable,
    const std::vector<ColumnFact>& columns = CurrentTableColumns()) {
  std::vector<std::vector<std::optional<std::string>>> rows;
  if (!usable)
    rows.push_back({std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt});
  for (const ColumnFact& c : usable ? columns : std::vector<ColumnFact>{}) {
    rows.push_back({usable, c.name, c.type, c.needs_value ? "t" : "f", c.unique_alone ? "t" : "f"});
  }
  std::vector<PgResultPtr> results;
  results.push_back(CannedResult(5, rows));
  return results;
}

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_CANNED_TABLE_CHECK_H_
