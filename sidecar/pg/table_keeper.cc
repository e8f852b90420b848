// TableKeeper: the shared table's lifecycle: checked, created when allowed, checked again if lost.
#include "sidecar/pg/table_keeper.h"

#include <utility>

#include "sidecar/log/log.h"
#include "sidecar/pg/table_shape.h"
#include "sidecar/pg/table_sql.h"

namespace ratelimit {

TableKeeper::TableKeeper(uv_loop_t* loop, SessionPool& pool, Options options,
                         Counter& collected_rows, std::function<void()> on_ready)
    : pool_(pool),
      options_(std::move(options)),
      table_sql_(options_.table.Quoted()),
      on_ready_(on_ready),
      gc_(
          loop, pool, table_sql_, collected_rows, [this] { return ready(); }, std::move(on_ready),
          options_.gc_interval_ms) {}

void TableKeeper::Start() { gc_.Start(); }

void TableKeeper::Close(std::function<void()> done) { gc_.Close(std::move(done)); }

void TableKeeper::TransitionTo(State next) {
  state_ = next;
  if (next != State::kReady) return;  // Callers log failures: they know why.
  logged_problem_.clear();
  Log(LogLevel::kInfo, "database ready").Str("table", options_.table.Plain());
  on_ready_();
}

// SQLSTATEs of a transaction that say the table itself is not usable any more: dropped
// (undefined_table, or its schema: invalid_schema_name), replaced by another shape
// (undefined_column, datatype_mismatch, or no unique index for ON CONFLICT:
// invalid_column_reference), or no longer ours to use (insufficient_privilege). Worth checking,
// and creating, the table again rather than failing every transaction until an operator looks.
bool TableKeeper::TableUnusable(std::string_view sqlstate) {
  return sqlstate == "42P01" || sqlstate == "3F000" || sqlstate == "42703" || sqlstate == "42804" ||
         sqlstate == "42P10" || sqlstate == "42501";
}

void TableKeeper::OnTransactionFailed(std::string_view sqlstate, const Status& status) {
  if (state_ != State::kReady || !TableUnusable(sqlstate)) return;
  TransitionTo(State::kUnknown);  // Not ready: checks go to the fallback until the table is back.
  Log(LogLevel::kWarn, "the rate limit table is not usable any more; checking it again")
      .Str("table", options_.table.Plain())
      .Str("error", status.message());
}

void TableKeeper::Ensure(SessionPool::Slot& slot) {
  switch (state_) {
    case State::kUnknown:
      TransitionTo(State::kChecking);
      break;
    case State::kFailed:
      TransitionTo(State::kRechecking);  // Its failure stays logged once.
      break;
    default:
      return;  // Ready, or being checked.
  }
  Check(slot, /*created=*/false);
}

namespace {

// The table check's columns: one row per column of the table, or, when there is no table, one
// row of NULLs.
enum CheckColumn { kUsable, kColumnName, kColumnType, kNeedsValue, kUniqueAlone, kCheckColumns };

// kUsable: NULL when there is no such table, else whether this role may do what checks do
// (CREATE TABLE IF NOT EXISTS alone would not tell: it needs CREATE on the schema even when the
// table exists). Then each column, found by the table's OID, for TableShapeProblems.
constexpr std::string_view kCheckSql =
    "SELECT CASE WHEN t.oid IS NULL THEN NULL ELSE has_table_privilege(t.oid, 'SELECT') AND"
    " has_table_privilege(t.oid, 'INSERT') AND has_table_privilege(t.oid, 'UPDATE') END,"
    " a.attname, format_type(a.atttypid, a.atttypmod),"
    " a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '',"
    " EXISTS (SELECT FROM pg_index i WHERE i.indrelid = t.oid AND i.indisunique"
    " AND i.indimmediate AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL"
    " AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum)"
    " FROM (SELECT to_regclass($1)::oid AS oid) AS t"
    " LEFT JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " ORDER BY a.attnum";

std::vector<ColumnFact> ReadColumns(PGresult* r) {
  std::vector<ColumnFact> columns;
  for (int row = 0; row < PQntuples(r); ++row) {
    if (PQgetisnull(r, row, kColumnName)) continue;  // A table without columns.
    columns.push_back(ColumnFact{PQgetvalue(r, row, kColumnName), PQgetvalue(r, row, kColumnType),
                                 std::string_view(PQgetvalue(r, row, kNeedsValue)) == "t",
                                 std::string_view(PQgetvalue(r, row, kUniqueAlone)) == "t"});
  }
  return columns;
}

}  // namespace

void TableKeeper::Check(SessionPool::Slot& slot, bool created) {
  RunWork(slot, {{std::string(kCheckSql), {table_sql_}}},
          [this, &slot, created](std::vector<PgResultPtr> results) {
            OnChecked(slot, created, results[0].get());
          });
}

void TableKeeper::OnChecked(SessionPool::Slot& slot, bool created, PGresult* r) {
  if (PQntuples(r) < 1 || PQnfields(r) != kCheckColumns) {
    return Failed(slot, "the table check returned no row", Finding::kNoAnswer);
  }
  if (PQgetisnull(r, 0, kUsable)) {
    if (!options_.create_table || created) {
      return Failed(slot, "the table does not exist and RATE_LIMIT_PG_CREATE_TABLE=false",
                    Finding::kTableProblem);
    }
    return Create(slot);
  }
  if (std::string_view(PQgetvalue(r, 0, kUsable)) != "t") {
    return Failed(slot, "the database role lacks SELECT, INSERT or UPDATE on the table",
                  Finding::kTableProblem);
  }
  // A table of another shape is refused, never altered: it may be someone else's.
  const std::vector<ColumnFact> columns = ReadColumns(r);
  if (const std::string problems = TableShapeProblems(columns); !problems.empty()) {
    return Failed(slot,
                  "the table does not have the columns of schema/postgres.sql (" + problems +
                      "); the sidecar never alters or drops an existing table",
                  Finding::kTableProblem);
  }
  // Our table of an older version: the columns added since are added, when DDL is allowed.
  if (const std::vector<std::string> missing = MissingAddedColumns(columns); !missing.empty()) {
    if (!options_.create_table || created) {
      return Failed(slot, AddColumnsAdvice(missing), Finding::kTableProblem);
    }
    return AddColumns(slot, missing);
  }
  TransitionTo(State::kReady);
}

std::string TableKeeper::AddColumnsAdvice(const std::vector<std::string>& missing) const {
  std::string advice = "the table lacks column " + missing.front() +
                       " (added by this version); as a role that may alter it, run: ";
  for (size_t i = 0; i < missing.size(); ++i) {
    advice += (i > 0 ? "; " : "") + AddColumnSql(options_.table, missing[i]);
  }
  return advice;
}

void TableKeeper::AddColumns(SessionPool::Slot& slot, const std::vector<std::string>& missing) {
  // Under the lock of table creation: sidecars that start together alter the table one at a
  // time, and IF NOT EXISTS makes the later ones do nothing. Adding a column with a constant
  // default rewrites no row (PostgreSQL 11 and later).
  std::vector<PgQuery> queries = {
      {"BEGIN", {}},
      {"SELECT pg_advisory_xact_lock(hashtext($1))", {"ratelimit:" + options_.table.Plain()}},
  };
  for (const std::string& column : missing) {
    queries.push_back({AddColumnSql(options_.table, column), {}});
  }
  queries.push_back({"COMMIT", {}});
  Log(LogLevel::kInfo, "adding columns to the rate limit table")
      .Str("table", options_.table.Plain())
      .Str("column", missing.front());
  RunWork(
      slot, std::move(queries),
      [this, &slot](std::vector<PgResultPtr>) { Check(slot, /*created=*/true); },
      AddColumnsAdvice(missing));
}

void TableKeeper::Create(SessionPool::Slot& slot) {
  // The advisory lock serializes the DDL of sidecars that start together: CREATE TABLE IF NOT
  // EXISTS alone can still fail on a concurrent creation of the same name.
  RunWork(
      slot,
      {
          {"BEGIN", {}},
          {"SELECT pg_advisory_xact_lock(hashtext($1))", {"ratelimit:" + options_.table.Plain()}},
          {CreateTableSql(options_.table), {}},
          {"COMMIT", {}},
      },
      [this, &slot](std::vector<PgResultPtr>) { Check(slot, /*created=*/true); });
}

void TableKeeper::RunWork(SessionPool::Slot& slot, std::vector<PgQuery> queries,
                          std::function<void(std::vector<PgResultPtr>)> next, std::string advice) {
  pool_.Lend(slot, SessionPool::Work::kBackground);
  slot.session().Run(
      std::move(queries), [this, &slot, next = std::move(next),
                           advice = std::move(advice)](Result<std::vector<PgResultPtr>> r) {
        pool_.Return(slot);
        if (!r.ok()) {
          // A failed BEGIN ... COMMIT leaves the transaction aborted on a live session: end it.
          if (slot.free()) {
            pool_.Lend(slot, SessionPool::Work::kBackground);
            slot.session().Run({{"ROLLBACK", {}}}, [this, &slot](Result<std::vector<PgResultPtr>>) {
              pool_.Return(slot);
            });
          }
          if (advice.empty()) return Failed(slot, r.status().message(), Finding::kNoAnswer);
          Failed(slot, r.status().message() + "; " + advice, Finding::kTableProblem);
          return;
        }
        next(std::move(*r));
      });
}

void TableKeeper::Failed(SessionPool::Slot& slot, const std::string& why, Finding finding) {
  Log(LogLevel::kDebug, "rate limit table check failed; retrying").Str("error", why);
  // Once until the table is usable again, not once per retry: the first failure of a check,
  // then only a table problem other than the one last logged (it changed, e.g. the operator
  // fixed one column of two). Failures to get an answer at all are the pool's to report.
  const bool first = state_ == State::kChecking;
  if (first || (finding == Finding::kTableProblem && why != logged_problem_)) {
    Log(LogLevel::kError, options_.create_table ? "cannot create or use the rate limit table"
                                                : "the rate limit table is not usable")
        .Str("table", options_.table.Plain())
        .Str("error", why);
    logged_problem_ = why;
  }
  TransitionTo(State::kFailed);
  // A broken session retries when it is connected again (the pool's on_connected): only a live
  // session needs a retry of its own.
  if (slot.state() != SessionPool::Slot::State::kDown) {
    pool_.RetryAfterBackoff(slot, [this](SessionPool::Slot& s) { Retry(s); });
  }
}

void TableKeeper::Retry(SessionPool::Slot& slot) {
  if (ready()) return;
  if (slot.free()) {
    Ensure(slot);
  } else if (slot.state() == SessionPool::Slot::State::kLent) {
    pool_.RetryAfterBackoff(slot, [this](SessionPool::Slot& s) { Retry(s); });  // Busy for now.
  }
}

}  // namespace ratelimit
