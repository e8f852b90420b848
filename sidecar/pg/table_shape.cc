// TableShape: whether an existing table has the columns schema/postgres.sql gives the table.
#include "sidecar/pg/table_shape.h"

#include <algorithm>
#include <span>

namespace ratelimit {
namespace {

void Append(std::string& problems, const std::string& problem) {
  if (!problems.empty()) problems += "; ";
  problems += problem;
}

// "a", "a, b", ...
std::string List(const std::vector<std::string>& names) {
  std::string list;
  for (const std::string& name : names) list += (list.empty() ? "" : ", ") + name;
  return list;
}

const ColumnFact* Find(const std::vector<ColumnFact>& columns, std::string_view name) {
  auto found = std::find_if(columns.begin(), columns.end(),
                            [name](const ColumnFact& c) { return c.name == name; });
  return found == columns.end() ? nullptr : &*found;
}

bool Required(std::string_view name) {
  return std::any_of(std::begin(kRequiredColumns), std::end(kRequiredColumns),
                     [name](const RequiredColumn& c) { return c.name == name; });
}

// Appends to `problems` the columns of `expected` that `columns` has with another type; returns
// the names of those it lacks.
std::vector<std::string> CheckTypes(const std::vector<ColumnFact>& columns,
                                    std::span<const RequiredColumn> expected,
                                    std::string& problems) {
  std::vector<std::string> missing;
  for (const RequiredColumn& required : expected) {
    const ColumnFact* column = Find(columns, required.name);
    if (column == nullptr) {
      missing.emplace_back(required.name);
    } else if (column->type != required.type) {
      Append(problems, "column " + column->name + " is " + column->type + ", not " +
                           std::string(required.type));
    }
  }
  return missing;
}

}  // namespace

std::vector<std::string> MissingAddedColumns(const std::vector<ColumnFact>& columns) {
  std::string ignored;
  return CheckTypes(columns, kAddedColumns, ignored);
}

std::string TableShapeProblems(const std::vector<ColumnFact>& columns) {
  std::string problems;
  const std::vector<std::string> missing = CheckTypes(columns, kRequiredColumns, problems);
  if (!missing.empty()) {
    problems.insert(0, (missing.size() == 1 ? "missing column " : "missing columns ") +
                           List(missing) + (problems.empty() ? "" : "; "));
  }
  const ColumnFact* key = Find(columns, "key");
  if (key != nullptr && !key->unique_alone) {
    Append(problems, "no primary key or unique index on key alone");
  }
  CheckTypes(columns, kAddedColumns, problems);  // Missing ones are added, not refused.
  std::vector<std::string> need_values;
  for (const ColumnFact& column : columns) {
    if (column.needs_value && !Required(column.name)) need_values.push_back(column.name);
  }
  if (!need_values.empty()) {
    Append(problems, (need_values.size() == 1 ? "column " : "columns ") + List(need_values) +
                         " NOT NULL without a default, which the sidecar never fills");
  }
  return problems;
}

}  // namespace ratelimit
