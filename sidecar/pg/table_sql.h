// TableSql: the DDL of the shared table, from schema/postgres.sql, for any configured name.
#ifndef RATELIMIT_SIDECAR_PG_TABLE_SQL_H_
#define RATELIMIT_SIDECAR_PG_TABLE_SQL_H_

#include <string>
#include <string_view>

#include "sidecar/pg/table_name.h"

namespace ratelimit {

// schema/postgres.sql's CREATE TABLE IF NOT EXISTS, naming `table` (quoted) instead of the
// default rate_limit_buckets. The file is embedded at build time, so what operators apply and
// what the sidecar creates cannot drift apart.
std::string CreateTableSql(const TableName& table);

// ALTER TABLE `table` ADD COLUMN IF NOT EXISTS `column` with its definition in
// schema/postgres.sql: how a table of an older version gets a column added since. REQUIRES:
// `column` is defined there (one of kAddedColumns).
std::string AddColumnSql(const TableName& table, std::string_view column);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_TABLE_SQL_H_
