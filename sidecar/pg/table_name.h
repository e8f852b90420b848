// TableName: RATE_LIMIT_PG_TABLE validated into identifiers that are safe to quote into SQL.
#ifndef RATELIMIT_SIDECAR_PG_TABLE_NAME_H_
#define RATELIMIT_SIDECAR_PG_TABLE_NAME_H_

#include <string>
#include <string_view>

#include "schema/status.h"

namespace ratelimit {

// A table name, optionally schema-qualified. Each part is 1 to 63 bytes (PostgreSQL's identifier
// limit) of lower-case letters, digits, '_' and '$', not starting with a digit or '$': exactly
// the names an operator's unquoted CREATE TABLE would produce, so the table in
// schema/postgres.sql and the sidecar's always agree.
struct TableName {
  std::string schema;  // Empty: the connection's search_path decides.
  std::string table;

  // The name as SQL: "schema"."table", each part double-quoted.
  std::string Quoted() const;
  // The name as the operator wrote it: schema.table.
  std::string Plain() const;
};

// Whether `part` may be a schema or a table of a TableName (the rules above).
bool IsTableNamePart(std::string_view part);

// Parses RATE_LIMIT_PG_TABLE's value; InvalidArgument names what is wrong.
Result<TableName> ParseTableName(std::string_view text);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_TABLE_NAME_H_
