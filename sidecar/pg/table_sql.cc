// TableSql: the DDL of the shared table, from schema/postgres.sql, for any configured name.
#include "sidecar/pg/table_sql.h"

#include <cstdlib>
#include <string_view>

#include "postgres_sql.h"

namespace ratelimit {

std::string CreateTableSql(const TableName& table) {
  constexpr std::string_view kStatement = "CREATE TABLE IF NOT EXISTS rate_limit_buckets";
  std::string sql = kPostgresSql;
  const size_t at = sql.find(kStatement);
  if (at == std::string::npos) abort();  // schema/postgres.sql lost its statement: a build bug.
  const size_t name_at = at + kStatement.size() - std::string_view("rate_limit_buckets").size();
  sql.replace(name_at, std::string_view("rate_limit_buckets").size(), table.Quoted());
  return sql;
}

std::string AddColumnSql(const TableName& table, std::string_view column) {
  const std::string_view sql = kPostgresSql;
  const std::string line_start = "\n  " + std::string(column) + " ";
  const size_t at = sql.find(line_start);
  if (at == std::string_view::npos) abort();  // Not in schema/postgres.sql: a build bug.
  const size_t begin = at + 3;                // After "\n  ".
  const size_t end = sql.find_first_of(",\n", begin);
  return "ALTER TABLE " + table.Quoted() + " ADD COLUMN IF NOT EXISTS " +
         std::string(sql.substr(begin, end - begin));
}

}  // namespace ratelimit
