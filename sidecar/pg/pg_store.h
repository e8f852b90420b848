// PgStore: shared buckets in one PostgreSQL table, decided in batched FOR UPDATE transactions.
#ifndef RATELIMIT_SIDECAR_PG_PG_STORE_H_
#define RATELIMIT_SIDECAR_PG_PG_STORE_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "sidecar/core/circuit_breaker.h"
#include "sidecar/core/shared_store.h"
#include "sidecar/metrics/metrics.h"
#include "sidecar/pg/key_digest.h"
#include "sidecar/pg/pg_session.h"
#include "sidecar/pg/table_name.h"

namespace ratelimit {

struct PgStoreOptions {
  std::string conninfo;      // DATABASE_URL; empty lets libpq's PG* variables decide.
  TableName table;           // RATE_LIMIT_PG_TABLE.
  bool create_table = true;  // RATE_LIMIT_PG_CREATE_TABLE.
  KeyHashing key_hashing = KeyHashing::kSha256;  // RATE_LIMIT_PG_KEY_HASH.
  size_t connections = 2;                        // RATE_LIMIT_PG_CONNECTIONS.
  uint32_t timeout_ms = 250;                     // RATE_LIMIT_PG_TIMEOUT_MS.
};

// Upper bounds of the histograms below: operations per transaction (StoreBatcher::kMaxBatch is
// the largest), and a transaction's duration in nanoseconds, from 100 us to 1 s.
inline constexpr uint64_t kBatchSizeBounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
inline constexpr uint64_t kTransactionBoundsNs[] = {
    100'000,    250'000,    500'000,     1'000'000,   2'500'000,   5'000'000,    10'000'000,
    25'000'000, 50'000'000, 100'000'000, 250'000'000, 500'000'000, 1'000'000'000};

// What the store counts, for /metrics: written by the loop thread only (see admin/metrics.h),
// read from any thread.
struct PgStoreMetrics {
  Counter transactions;         // Check, lease and return transactions started.
  Counter failed_transactions;  // Failed or timed out; each is also one of `transactions`.
  Counter repaired_rows;        // Malformed rows repaired (and logged).
  Counter collected_rows;       // Full buckets deleted by garbage collection.
  Histogram batch_size{{std::begin(kBatchSizeBounds), std::end(kBatchSizeBounds)}};
  // From sending BEGIN to the COMMIT's (or failure's) answer.
  Histogram duration{{std::begin(kTransactionBoundsNs), std::end(kTransactionBoundsNs)}};
};

// A SharedStore on `connections` PgSessions. A Take is one transaction of two pipelines:
//   1. BEGIN; INSERT the batch's missing rows (full buckets) ON CONFLICT DO NOTHING, in key
//      order; SELECT all its rows ORDER BY key FOR UPDATE; read clock_timestamp() -- then the
//      checks are decided here, on database time, with the memory store's arithmetic;
//   2. UPDATE the rows that changed; COMMIT -- or ROLLBACK when nothing was taken.
// Locking every row of a transaction in one statement, in key order, is what keeps sidecars
// from deadlocking. Keys at rest are SHA-256 digests unless key_hashing is kNone.
//
// Garbage collection: a row whose bucket has refilled to full means the same as no row. Every
// kGcIntervalMs one idle session deletes up to kGcBatch such rows untouched for a window (and at
// least a second), skipping rows
// that checks hold locked (FOR UPDATE SKIP LOCKED), and goes again at once while batches come back
// full.
//
// Start-up never blocks: sessions connect in the background, and a broken session reconnects
// with jittered exponential backoff (100 ms doubling to at most 1 s, +-25%), so that a database
// back from an outage is used again within about a second. Until one session is connected and
// the table exists and may be read and written by this role, ready() is false. A transaction
// failing because the table is gone or no longer usable (dropped, its schema dropped, a column
// missing, a privilege revoked) makes ready() false and the table is checked -- and, when
// allowed, created -- again, with the same backoff.
//
// Circuit breaker: after CircuitBreaker::kFailureThreshold failed transactions in a row, ready()
// is false for an open period (200 ms doubling to 1 s while probes fail); then one transaction
// probes the database, and only its success lets checks through again. So a database that is
// known to fail costs checks nothing: they are answered by the fallback at once instead of each
// waiting up to a timeout.
//
// Timeout: a database that accepts connections but stops answering (frozen, locks held, a
// network that drops packets) must not hold checks. The server is asked to give up a
// transaction's lock waits and statements at 4/5 of timeout_ms (lock_timeout and
// statement_timeout, local to the transaction), which fails it cleanly on a live session. A
// transaction not answered within timeout_ms all the same, a connection attempt not done within
// max(timeout_ms, kMinConnectTimeoutMs), or background work (garbage collection, the table)
// not done within max(timeout_ms, kBackgroundTimeoutMs) abandons its session: what was in
// flight fails at once (the engine above answers by its fallback), and the session reconnects
// with the backoff, which starts over only once a transaction succeeds.
// Thread-safety: the loop thread only. Shutdown() must complete before destruction.
class PgStore final : public SharedStore {
 public:
  static constexpr uint64_t kGcIntervalMs = 5000;
  static constexpr int kGcBatch = 500;
  static constexpr uint64_t kMinConnectTimeoutMs = 1000;
  static constexpr uint64_t kBackgroundTimeoutMs = 10000;  // Garbage collection, the table.

  PgStore(uv_loop_t* loop, PgStoreOptions options);
  ~PgStore() override;

  void Start();
  // Closes every session (failing Takes in flight) and timer, then calls `done`.
  void Shutdown(std::function<void()> done);

  void Take(std::vector<StoreOp> batch, TakeDone done) override;
  size_t free_slots() const override;
  bool ready() const override;
  std::string_view name() const override { return "postgres"; }

  const PgStoreMetrics& metrics() const { return metrics_; }

 private:
  struct Slot;
  struct Transaction;

  void OnSessionState(Slot& slot);
  void ScheduleReconnect(Slot& slot);
  void Connect(Slot& slot);
  // Abandons the slot's session unless StopDeadline is called within `ms`.
  void StartDeadline(Slot& slot, uint64_t ms);
  static void StopDeadline(Slot& slot);
  void ScheduleRetryOfTable(Slot& slot);
  // The table: checked (exists, and this role may use it), created when missing and allowed,
  // then checked again; a failure is logged once and retried with the backoff.
  void EnsureTable(Slot& slot);
  void CheckTable(Slot& slot, bool created);
  void CreateTable(Slot& slot);
  void RunTableWork(Slot& slot, std::vector<PgQuery> queries,
                    std::function<void(std::vector<PgResultPtr>)> next);
  void TableFailed(Slot& slot, const std::string& why);
  void OnLocked(Slot& slot, std::shared_ptr<Transaction> tx,
                Result<std::vector<PgResultPtr>> results);
  void Complete(Slot& slot, std::shared_ptr<Transaction> tx, Result<std::vector<StoreAnswer>>);
  size_t free_or_busy_sessions() const;
  void MaybeShutdownDone();
  void CollectGarbage();
  static void GcTrampoline(uv_timer_t* timer);

  uv_loop_t* loop_;
  const PgStoreOptions options_;
  const std::string table_sql_;  // The quoted table name.
  std::vector<std::unique_ptr<Slot>> slots_;
  bool table_ready_ = false;
  bool creating_table_ = false;
  bool collecting_ = false;
  bool shutting_down_ = false;
  bool transactions_failing_ = false;  // Since the last transaction that succeeded.
  bool table_problem_logged_ = false;  // Since the table was last usable.
  CircuitBreaker breaker_;
  size_t open_timers_ = 0;
  uv_timer_t gc_timer_;
  std::function<void()> on_shutdown_;
  PgStoreMetrics metrics_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_PG_STORE_H_
