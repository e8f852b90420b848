// TableSql: the DDL of the shared table, from schema/postgres.sql, for any configured name.
#ifndef RATELIMIT_SIDECAR_PG_TABLE_SQL_H_
#define RATELIMIT_SIDECAR_PG_TABLE_SQL_H_

#include <string>

#include "sidecar/pg/table_name.h"

namespace ratelimit {

// schema/postgres.sql's CREATE TABLE IF NOT EXISTS, naming `table` (quoted) instead of the
// default rate_limit_buckets. The file is embedded at build time, so what operators apply and
// what the sidecar creates cannot drift apart.
std::string CreateTableSql(const TableName& table);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_TABLE_SQL_H_
