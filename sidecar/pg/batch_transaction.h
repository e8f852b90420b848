// BatchTransaction: one Take as one FOR UPDATE transaction of two pipelines on a lent session.
#ifndef RATELIMIT_SIDECAR_PG_BATCH_TRANSACTION_H_
#define RATELIMIT_SIDECAR_PG_BATCH_TRANSACTION_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"
#include "sidecar/core/shared_store.h"
#include "sidecar/pg/db_session.h"
#include "sidecar/pg/key_digest.h"
#include "sidecar/pg/new_key_budget.h"
#include "sidecar/pg/pg_store_metrics.h"
#include "sidecar/pg/session_pool.h"

namespace ratelimit {

// A batch in locking order: its distinct row keys (hex digests, or hex text with kNone),
// sorted, and for each the positions of its operations in the batch, in batch order.
// `new_keys` is how many rows the transaction may insert (its NewKeyBudget reservation): at
// least keys.size() inserts every missing row; fewer bounds the INSERT (see LockQueries).
struct TransactionPlan {
  std::vector<StoreOp> batch;
  std::vector<std::string> keys;
  std::vector<std::vector<size_t>> positions;  // One list per key.
  size_t new_keys = 0;                         // PlanTransaction sets keys.size().

  bool insert_bounded() const { return new_keys < keys.size(); }
};

TransactionPlan PlanTransaction(std::vector<StoreOp> batch, KeyHashing key_hashing);

// The first pipeline, which locks the batch's rows and reads them with the database's time:
//   BEGIN; the transaction's timeouts; INSERT the missing rows (full buckets, with the policy of
//   the key's first operation) ON CONFLICT DO NOTHING, in key order; SELECT all the rows ORDER
//   BY key FOR UPDATE; read clock_timestamp() once the locks are held.
// A batch asks for one algorithm (its batcher's): a fixed window's missing row is inserted
// full with its window already ended, so that its first check opens the window at the time it
// is decided (kClock), not at the INSERT, which may run long before the locks are granted.
// With plan.insert_bounded(), the INSERT is bounded instead: only keys that have no row, at most
// plan.new_keys of them (none for 0), in key order; the pipeline keeps its shape either way.
// Locking every row of a transaction in one statement, in key order, is what keeps sidecars
// from deadlocking. Each statement's place, which is also the place of its result, is named
// here; LockQueries builds the list by these names.
struct LockPipeline {
  enum Statement : size_t { kBegin, kTimeouts, kInsert, kLock, kClock, kStatements };
  // Columns of kLock's rows.
  enum LockColumn : int { kKey, kTokens, kUpdatedUs, kCapacity, kWindowMs, kAlgorithm };
};

// The server is asked to give up the transaction's lock waits and statements at 4/5 of
// `timeout_ms`, so a transaction fails cleanly on a live session before its deadline.
std::vector<PgQuery> LockQueries(const TransactionPlan& plan, const std::string& table_sql,
                                 uint32_t timeout_ms);

// The checks decided on the locked rows: one answer per operation, and the rows to write back
// (as the UPDATE's array columns, in the order of its parameters), only those changed or
// repaired.
struct TransactionDecision {
  std::vector<StoreAnswer> answers;
  std::vector<std::string> keys, tokens, updated_us, capacities, windows;
  std::vector<Algorithm> algorithms;  // What each row written records.
  size_t repaired_rows = 0;           // Malformed rows repaired (and logged).
  // Rows that recorded the other algorithm than their operations', converted (see ApplyOnRow).
  size_t switched_rows = 0;
  size_t deferred = 0;  // Operations refused because the bounded INSERT left their key out.
};

// Decides each key's operations in batch order on its locked row (RepairRow, then ApplyOnRow of
// sidecar/core/shared_bucket.h), at the database time read by kClock. A key whose row is missing
// (collected between the INSERT and the SELECT) is refused, rarely; so is, and counted as
// deferred, one the bounded INSERT of plan.insert_bounded() left out. Fails only when the
// database returned no time. REQUIRES: `lock_results` has one result per LockPipeline statement.
Result<TransactionDecision> Decide(const TransactionPlan& plan,
                                   std::span<const PgResultPtr> lock_results);

// The second pipeline: UPDATE the rows that changed, then COMMIT; or just ROLLBACK when nothing
// changed (denials and reads write nothing). The rows' algorithm is written as a constant of the
// statement when they all record one (always, but for a repaired row of the other algorithm),
// else as one more array.
struct FinishPipeline {
  enum Statement : size_t { kUpdate, kCommit, kStatements };
};
std::vector<PgQuery> FinishQueries(const TransactionDecision& decision,
                                   const std::string& table_sql);

// Runs one Take on a slot the caller found free: lends it for a transaction (its deadline covers
// both pipelines and a ROLLBACK after a failure), runs LockQueries, Decide, FinishQueries, and
// returns the slot before calling `done` once with the answers or the failure.
//
// Before it starts, it reserves up to one insert per key of its batch from `new_keys`; once it
// has ended, what its INSERT did not insert (all of it unless the transaction committed, or
// may have: a failure after the COMMIT was sent counts as committed) goes back, so the budget
// counts rows actually added to the table.
//
// Its outcome is counted by the pool (the breaker, the backoff). On failure, before the
// ROLLBACK (which clears it), `on_failed` hears the failing statement's SQLSTATE (the table
// keeper checks whether the table is lost); a transaction left aborted on a live session is
// rolled back before `done`. After the `done` of a failed transaction, `after_failure` runs
// with the slot, which may be free again (so the table is checked again on that session, as
// soon as the failure's ROLLBACK has ended; a transaction that succeeded triggers nothing).
//
// States: kLocking -> kWriting -> kDone; kLocking or kWriting -> kRollingBack -> kDone.
// Thread-safety: the loop thread only. Kept alive by the callback of its pipeline in flight,
// which the session always calls (Close fails it), so it never outlives the shutdown of the
// pool; `context` and the pool belong to the store and outlive it.
class BatchTransaction : public std::enable_shared_from_this<BatchTransaction> {
 public:
  enum class State { kLocking, kWriting, kRollingBack, kDone };

  struct Context {
    SessionPool& pool;
    PgStoreMetrics& metrics;
    NewKeyBudget& new_keys;  // Shared by every transaction of the store.
    std::string table_sql;   // The quoted table name.
    uint32_t timeout_ms;
    KeyHashing key_hashing;
    std::function<void(std::string_view sqlstate, const Status& status)> on_failed;
    std::function<void(SessionPool::Slot& slot)> after_failure;
  };

  // REQUIRES: slot.free(), pool.free_slots() > 0; batch is not empty.
  static void Start(const Context& context, SessionPool::Slot& slot, std::vector<StoreOp> batch,
                    TakeDone done);

  BatchTransaction(const Context& context, SessionPool::Slot& slot, TransactionPlan plan,
                   TakeDone done);

 private:
  void TransitionTo(State next);
  void Lock();
  void OnLocked(Result<std::vector<PgResultPtr>> results);
  void Fail(const Status& status);
  void Succeed(std::vector<StoreAnswer> answers);
  void Finish(Result<std::vector<StoreAnswer>> result);
  // Gives back what the INSERT did not use, and counts the rows it added.
  void SettleNewKeys(bool committed);

  const Context& context_;
  SessionPool::Slot& slot_;
  const TransactionPlan plan_;
  TakeDone done_;
  State state_ = State::kLocking;
  uint64_t started_ns_ = 0;  // uv_hrtime() at BEGIN.
  size_t inserted_ = 0;      // Rows the INSERT added, once its result is read.
  bool commits_ = false;     // The second pipeline ends in COMMIT (not ROLLBACK).
  size_t rows_written_ = 0;  // Rows the transaction writes when it commits.
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_BATCH_TRANSACTION_H_
