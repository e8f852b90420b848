// PgStore: shared buckets in one PostgreSQL table, decided in batched FOR UPDATE transactions.
#ifndef RATELIMIT_SIDECAR_PG_PG_STORE_H_
#define RATELIMIT_SIDECAR_PG_PG_STORE_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "sidecar/core/shared_store.h"
#include "sidecar/pg/batch_transaction.h"
#include "sidecar/pg/db_session.h"
#include "sidecar/pg/garbage_collector.h"
#include "sidecar/pg/key_digest.h"
#include "sidecar/pg/new_key_budget.h"
#include "sidecar/pg/pg_store_metrics.h"
#include "sidecar/pg/session_pool.h"
#include "sidecar/pg/statement_strategy.h"
#include "sidecar/pg/table_keeper.h"
#include "sidecar/pg/table_name.h"

namespace ratelimit {

struct PgStoreOptions {
  std::string conninfo;      // DATABASE_URL; empty lets libpq's PG* variables decide.
  TableName table;           // RATE_LIMIT_PG_TABLE.
  bool create_table = true;  // RATE_LIMIT_PG_CREATE_TABLE.
  KeyHashing key_hashing = KeyHashing::kSha256;  // RATE_LIMIT_PG_KEY_HASH.
  size_t connections = 2;                        // RATE_LIMIT_PG_CONNECTIONS.
  uint32_t timeout_ms = 250;                     // RATE_LIMIT_PG_TIMEOUT_MS.
  // RATE_LIMIT_PG_STATEMENTS as resolved at start-up (see StatementStrategy); with
  // adapt_statements (it said `auto`) kPrepared turns kUnnamed when a pooler loses them.
  StatementMode statements = StatementMode::kPrepared;
  bool adapt_statements = false;
  uint32_t new_keys_per_sec = 1000;  // RATE_LIMIT_PG_NEW_KEYS_PER_SEC; 0: no bound.
  // How often garbage collection looks for full rows when it is not due sooner (tests shorten
  // it; not a variable).
  uint64_t gc_interval_ms = GarbageCollector::kIntervalMs;
};

// A SharedStore on `connections` PgSessions, composed of three pieces, each stating its part of
// the contract in its own header:
//   - SessionPool (session_pool.h): sessions connect in the background and reconnect with
//     jittered exponential backoff; deadlines abandon a session that does not answer (a
//     transaction within timeout_ms); the circuit breaker turns a database known to fail into
//     "not ready" after a few failed transactions, and probes it back.
//   - TableKeeper (table_keeper.h): the table is checked, created when missing and allowed, and
//     checked again when a transaction finds it gone or unusable; its GarbageCollector
//     (garbage_collector.h) deletes rows whose buckets refilled to full, on every other
//     session a transaction gives back while it is due (Take's `done` is wrapped for that).
//   - BatchTransaction (batch_transaction.h): a Take is one transaction of two pipelines:
//     BEGIN, INSERT the missing rows, SELECT all its rows ORDER BY key FOR UPDATE, read
//     clock_timestamp() -- the checks then decided here, on database time, with the memory
//     store's arithmetic (sidecar/core/shared_bucket.h) -- then UPDATE the rows that changed and
//     COMMIT, or ROLLBACK when nothing was taken. Keys at rest are SHA-256 digests unless
//     key_hashing is kNone. Rows inserted for new keys are bounded by a NewKeyBudget
//     (new_key_budget.h) of new_keys_per_sec shared by every session: beyond it a new key's
//     check is refused (StoreUnavailable), so the engine's fallback answers it.
//   - StatementStrategy (statement_strategy.h): statements prepared or unnamed, and what a
//     failed transaction says of a pooler in between (a statement pooler makes the store refuse
//     to run; a transaction pooler losing prepared statements is logged, and under `auto`
//     answered by switching to unnamed statements).
// ready() is true while a session is connected, the table is usable, no statement pooler was
// detected and the breaker admits transactions; free_slots() counts the sessions a Take may use
// now. A Take in flight when its session fails or times out fails at once, and the engine above
// answers by its fallback.
//
// Thread-safety: the loop thread only. Owns its pieces; Shutdown() must complete before
// destruction.
class PgStore final : public SharedStore {
 public:
  PgStore(uv_loop_t* loop, PgStoreOptions options);
  // With sessions made by `make_session` instead of PgSessions on options.conninfo: the seam
  // that lets tests run the store on fake sessions.
  PgStore(uv_loop_t* loop, PgStoreOptions options, const DbSessionFactory& make_session);
  ~PgStore() override;

  void Start();
  // Closes every session (failing Takes in flight) and timer, then calls `done`.
  void Shutdown(std::function<void()> done);

  void Take(std::vector<StoreOp> batch, TakeDone done) override;
  size_t free_slots() const override;
  bool ready() const override;
  std::string_view name() const override { return "postgres"; }

  const PgStoreMetrics& metrics() const { return metrics_; }
  // How statements are sent now: options.statements, until `auto` switched it to kUnnamed.
  StatementMode statement_mode() const { return statements_.mode(); }

 private:
  void OnConnected(SessionPool::Slot& slot);
  void OnPieceClosed();

  void OnTransactionFailed(std::string_view sqlstate, const Status& status);
  bool ready_for_takes() const { return keeper_.ready() && !statements_.refusing(); }

  const PgStoreOptions options_;
  PgStoreMetrics metrics_;
  NewKeyBudget new_keys_;
  StatementStrategy statements_;  // Before the pool: its sessions refer to statements_.mode().

  SessionPool pool_;
  TableKeeper keeper_;
  const BatchTransaction::Context transaction_context_;
  int open_pieces_ = 2;  // The pool and the keeper, until Shutdown released them.
  std::function<void()> on_shutdown_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_PG_STORE_H_
