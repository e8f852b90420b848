// TableKeeper: the shared table's lifecycle: checked, created when allowed, checked again if lost.
#ifndef RATELIMIT_SIDECAR_PG_TABLE_KEEPER_H_
#define RATELIMIT_SIDECAR_PG_TABLE_KEEPER_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "sidecar/metrics/metrics.h"
#include "sidecar/pg/garbage_collector.h"
#include "sidecar/pg/session_pool.h"
#include "sidecar/pg/table_name.h"

namespace ratelimit {

// Until the table exists, has the columns and types of schema/postgres.sql (TableShapeProblems)
// and may be read and written by this role, ready() is false and no transaction starts: checks
// go to the fallback. The table is checked on the first session that connects, in one
// statement (existence, privileges, and its columns found by its OID in the catalog); created
// when missing and create_table allows (DDL serialized between sidecars by an advisory lock),
// then checked again. A table that exists is never altered nor dropped, whatever its shape and
// create_table: it may be someone else's. The one exception is our own table of an older
// version (all the columns of its first version, with their types) that lacks a column added
// since (kAddedColumns): when create_table allows, the column is added (ALTER TABLE ... ADD
// COLUMN IF NOT EXISTS, under the same advisory lock); otherwise, or when the ALTER fails (a
// role without the privilege), the error line gives the statement to run. A failure is logged once
// at error level, naming the table and what is wrong, and retried on that session with its backoff,
// or on the next session that connects; retries log it again only when the problem found changes,
// so a table of another shape gives one line, not one per retry, until the operator fixes it.
//
// A transaction failing because the table is gone or no longer usable (dropped, its schema
// dropped, a column missing or retyped, a privilege revoked: OnTransactionFailed) makes
// ready() false, and the table is checked -- and, when allowed, created -- again, the same way.
//
// It owns the garbage collector, which works only while the table is ready.
//
// States: kUnknown -> kChecking -> kReady or kFailed (logged); kFailed -> kRechecking ->
// kReady or kFailed (logged only when the problem changed); kReady -> kUnknown when a
// transaction finds it unusable.
// Thread-safety: the loop thread only. Borrows sessions from `pool`, which must outlive it;
// Close() must complete before destruction.
class TableKeeper {
 public:
  enum class State { kUnknown, kChecking, kFailed, kRechecking, kReady };

  struct Options {
    TableName table;
    bool create_table = true;
    uint64_t gc_interval_ms = GarbageCollector::kIntervalMs;
  };

  // `on_ready` runs when the table became ready: waiting checks may start.
  TableKeeper(uv_loop_t* loop, SessionPool& pool, Options options, Counter& collected_rows,
              std::function<void()> on_ready);
  TableKeeper(const TableKeeper&) = delete;
  TableKeeper& operator=(const TableKeeper&) = delete;

  // Starts the garbage collector's ticks.
  void Start();
  // Releases the garbage collector's timer, then calls `done`.
  void Close(std::function<void()> done);

  // Checks the table on `slot` unless it is ready or being checked. REQUIRES: slot.free().
  void Ensure(SessionPool::Slot& slot);
  // A transaction failed with `sqlstate`: when that says the table is unusable, it is not
  // ready any more and is checked again by the next Ensure.
  void OnTransactionFailed(std::string_view sqlstate, const Status& status);

  // A transaction gave `slot` back: garbage collection takes it when it is due.
  void OnSessionReturned(SessionPool::Slot& slot) { gc_.OnSessionReturned(slot); }

  bool ready() const { return state_ == State::kReady; }
  State state() const { return state_; }

  // Whether `sqlstate` says the table itself is not usable any more.
  static bool TableUnusable(std::string_view sqlstate);

 private:
  void TransitionTo(State next);
  void Check(SessionPool::Slot& slot, bool created);
  void OnChecked(SessionPool::Slot& slot, bool created, PGresult* result);
  void Create(SessionPool::Slot& slot);
  void AddColumns(SessionPool::Slot& slot, const std::vector<std::string>& missing);
  // What the error line says of `missing` added columns: the statements to run.
  std::string AddColumnsAdvice(const std::vector<std::string>& missing) const;
  // Runs `queries` on `slot`, then `next`; a failure is logged with `advice` when there is one
  // (and is then a table problem).
  void RunWork(SessionPool::Slot& slot, std::vector<PgQuery> queries,
               std::function<void(std::vector<PgResultPtr>)> next, std::string advice = "");
  // What a failed check found: no answer (a statement or the session failed), or an answer
  // that says the table cannot be used.
  enum class Finding { kNoAnswer, kTableProblem };
  void Failed(SessionPool::Slot& slot, const std::string& why, Finding finding);
  void Retry(SessionPool::Slot& slot);

  SessionPool& pool_;
  const Options options_;
  const std::string table_sql_;  // The quoted table name.
  std::function<void()> on_ready_;
  State state_ = State::kUnknown;
  std::string logged_problem_;  // The failure last logged at error level; empty once ready.
  GarbageCollector gc_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_TABLE_KEEPER_H_
