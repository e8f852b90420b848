// TableKeeper: the shared table's lifecycle: checked, created when allowed, checked again if lost.
#include "sidecar/pg/table_keeper.h"

#include <utility>

#include "sidecar/log/log.h"
#include "sidecar/pg/table_sql.h"

namespace ratelimit {

TableKeeper::TableKeeper(uv_loop_t* loop, SessionPool& pool, Options options,
                         Counter& collected_rows, std::function<void()> on_ready)
    : pool_(pool),
      options_(std::move(options)),
      table_sql_(options_.table.Quoted()),
      on_ready_(on_ready),
      gc_(
          loop, pool, table_sql_, collected_rows, [this] { return ready(); }, std::move(on_ready)) {
}

void TableKeeper::Start() { gc_.Start(); }

void TableKeeper::Close(std::function<void()> done) { gc_.Close(std::move(done)); }

void TableKeeper::TransitionTo(State next) {
  state_ = next;
  if (next != State::kReady) return;  // Callers log failures: they know why.
  Log(LogLevel::kInfo, "database ready").Str("table", options_.table.Plain());
  on_ready_();
}

// SQLSTATEs of a transaction that say the table itself is not usable any more: dropped
// (undefined_table, or its schema: invalid_schema_name), replaced by another shape
// (undefined_column), or no longer ours to use (insufficient_privilege). Worth checking, and
// creating, the table again rather than failing every transaction until an operator looks.
bool TableKeeper::TableUnusable(std::string_view sqlstate) {
  return sqlstate == "42P01" || sqlstate == "3F000" || sqlstate == "42703" || sqlstate == "42501";
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

void TableKeeper::Check(SessionPool::Slot& slot, bool created) {
  // NULL: no such table. Otherwise whether this role may do what checks do. (CREATE TABLE IF
  // NOT EXISTS alone would not do: it needs CREATE on the schema even when the table exists.)
  const std::string privileges =
      "has_table_privilege($1, 'SELECT') AND has_table_privilege($1, 'INSERT') AND "
      "has_table_privilege($1, 'UPDATE')";
  RunWork(slot,
          {{"SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE " + privileges + " END",
            {table_sql_}}},
          [this, &slot, created](std::vector<PgResultPtr> results) {
            OnChecked(slot, created, results[0].get());
          });
}

void TableKeeper::OnChecked(SessionPool::Slot& slot, bool created, PGresult* r) {
  if (PQntuples(r) != 1) return Failed(slot, "the table check returned no row");
  if (PQgetisnull(r, 0, 0)) {
    if (!options_.create_table || created) {
      return Failed(slot, "the table does not exist and RATE_LIMIT_PG_CREATE_TABLE=false");
    }
    return Create(slot);
  }
  if (std::string_view(PQgetvalue(r, 0, 0)) != "t") {
    return Failed(slot, "the database role lacks SELECT, INSERT or UPDATE on the table");
  }
  TransitionTo(State::kReady);
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
                          std::function<void(std::vector<PgResultPtr>)> next) {
  pool_.Lend(slot, SessionPool::Work::kBackground);
  slot.session().Run(std::move(queries), [this, &slot, next = std::move(next)](
                                             Result<std::vector<PgResultPtr>> r) {
    pool_.Return(slot);
    if (!r.ok()) {
      // A failed BEGIN ... COMMIT leaves the transaction aborted on a live session: end it.
      if (slot.free()) {
        pool_.Lend(slot, SessionPool::Work::kBackground);
        slot.session().Run({{"ROLLBACK", {}}},
                           [this, &slot](Result<std::vector<PgResultPtr>>) { pool_.Return(slot); });
      }
      Failed(slot, r.status().message());
      return;
    }
    next(std::move(*r));
  });
}

void TableKeeper::Failed(SessionPool::Slot& slot, const std::string& why) {
  Log(LogLevel::kDebug, "rate limit table check failed; retrying").Str("error", why);
  if (state_ == State::kChecking) {  // Once until the table is usable again, not once per retry.
    Log(LogLevel::kError, options_.create_table ? "cannot create or use the rate limit table"
                                                : "the rate limit table is not usable")
        .Str("table", options_.table.Plain())
        .Str("error", why);
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
