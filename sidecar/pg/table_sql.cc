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

}  // namespace ratelimit
