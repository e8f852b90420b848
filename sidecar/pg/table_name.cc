// TableName: RATE_LIMIT_PG_TABLE validated into identifiers that are safe to quote into SQL.
#include "sidecar/pg/table_name.h"

namespace ratelimit {
namespace {

constexpr size_t kMaxIdentifierBytes = 63;

}  // namespace

bool IsTableNamePart(std::string_view part) {
  if (part.empty() || part.size() > kMaxIdentifierBytes) return false;
  if ((part[0] >= '0' && part[0] <= '9') || part[0] == '$') return false;
  for (const char c : part) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
    if (!ok) return false;
  }
  return true;
}

std::string TableName::Quoted() const {
  // ParseTableName admits no '"', so wrapping each part in quotes is all the escaping needed.
  std::string sql;
  if (!schema.empty()) sql += "\"" + schema + "\".";
  return sql + "\"" + table + "\"";
}

std::string TableName::Plain() const { return schema.empty() ? table : schema + "." + table; }

Result<TableName> ParseTableName(std::string_view text) {
  TableName name;
  const size_t dot = text.find('.');
  if (dot == std::string_view::npos) {
    name.table = std::string(text);
  } else {
    name.schema = std::string(text.substr(0, dot));
    name.table = std::string(text.substr(dot + 1));
  }
  if ((dot != std::string_view::npos && !IsTableNamePart(name.schema)) ||
      !IsTableNamePart(name.table)) {
    return Status::InvalidArgument(
        "a table name or schema.table, each part 1 to 63 bytes of a-z, 0-9, _ and $, not "
        "starting with a digit or $");
  }
  return name;
}

}  // namespace ratelimit
