// TableShape: whether an existing table has the columns schema/postgres.sql gives the table.
#ifndef RATELIMIT_SIDECAR_PG_TABLE_SHAPE_H_
#define RATELIMIT_SIDECAR_PG_TABLE_SHAPE_H_

#include <string>
#include <string_view>
#include <vector>

namespace ratelimit {

// One column of a table, as PostgreSQL's catalog describes it.
struct ColumnFact {
  std::string name;
  std::string type;           // As format_type() spells it: "bigint", "double precision", ...
  bool needs_value = false;   // NOT NULL with no default: every INSERT would have to name it.
  bool unique_alone = false;  // A unique index on this column alone that ON CONFLICT can use:
                              // immediate, valid, not partial (a PRIMARY KEY or UNIQUE).
};

// The columns every check reads and writes, with the types of schema/postgres.sql (the
// contract for operators who create the table themselves).
struct RequiredColumn {
  std::string_view name;
  std::string_view type;
};
inline constexpr RequiredColumn kRequiredColumns[] = {
    {"key", "bytea"},
    {"tokens", "double precision"},
    {"updated_at", "timestamp with time zone"},
    {"capacity", "bigint"},
    {"window_ms", "bigint"},
};

// Columns added to the table after its first version, which a table of an older version lacks:
// the table keeper adds them (TableKeeper), with schema/postgres.sql's definition. One that is
// there must have its type.
inline constexpr RequiredColumn kAddedColumns[] = {
    {"algorithm", "smallint"},
};

// The names of the kAddedColumns that `columns` lacks, in kAddedColumns' order.
std::vector<std::string> MissingAddedColumns(const std::vector<ColumnFact>& columns);

// What keeps the sidecar from using a table of `columns`, as one line for the log: required
// columns missing or of another type, no unique index on key alone, and columns of the
// operator's that an INSERT would have to fill, and added columns of another type. Empty when
// the table fits (an added column missing is not a problem here: it is added). Other columns are
// fine as long as they may stay NULL or default.
std::string TableShapeProblems(const std::vector<ColumnFact>& columns);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_TABLE_SHAPE_H_
