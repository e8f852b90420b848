// StatementStrategy: how the store sends its SQL, and what failed transactions say of a pooler.
#ifndef RATELIMIT_SIDECAR_PG_STATEMENT_STRATEGY_H_
#define RATELIMIT_SIDECAR_PG_STATEMENT_STRATEGY_H_

#include <string_view>

#include "sidecar/pg/db_session.h"

namespace ratelimit {

// What a failed transaction's SQLSTATE and error text say about a pooler between the store and
// PostgreSQL:
//   kPreparedStatementsLost  one of the store's prepared statements ("rl_...") already exists
//                            (42P05) or does not exist (26000) on the server connection: a
//                            pooler in transaction mode handed the transaction to a server
//                            connection other than the one that prepared them;
//   kStatementPooling        PgBouncer in statement pooling mode refused a transaction that
//                            stays open across a Sync ("transaction blocks not allowed in
//                            statement pooling mode", 08P01, then it closes the connection).
enum class PoolerSign { kNone, kPreparedStatementsLost, kStatementPooling };
PoolerSign PoolerSignOf(std::string_view sqlstate, std::string_view error);

// Holds the StatementMode the store's sessions read at every pipeline, and acts on the pooler
// signs of failed transactions, each logged once as one error line that names the cause and
// the fix:
//   - prepared statements lost: under RATE_LIMIT_PG_STATEMENTS=auto (`adapt`) mode() becomes
//     kUnnamed from then on (the transactions that failed until then were answered by the
//     fallback); under an explicit `prepared` it stays, as configured.
//   - statement pooling: refusing() becomes true and stays so: the store is not ready, checks go
//     to the fallback, and nothing is retried (each try would make the pooler close a
//     connection), until the sidecar is restarted with the pooler in transaction or session
//     mode.
//
// States: kTrusting -> kPreparedLost (explicit prepared, logged) or kSwitched (auto, now
// unnamed); any -> kRefusing (statement pooling), which is final.
// Thread-safety: the loop thread only. Owned by the PgStore; mode() is referenced by its
// sessions, which it outlives.
class StatementStrategy {
 public:
  enum class State { kTrusting, kPreparedLost, kSwitched, kRefusing };

  // `mode` is the resolved RATE_LIMIT_PG_STATEMENTS; `adapt` says it was `auto`.
  StatementStrategy(StatementMode mode, bool adapt) : mode_(mode), adapt_(adapt) {}
  StatementStrategy(const StatementStrategy&) = delete;
  StatementStrategy& operator=(const StatementStrategy&) = delete;

  // What sessions send with; changes only from kPrepared to kUnnamed.
  const StatementMode& mode() const { return mode_; }
  // A statement pooler was detected: the store must not be used.
  bool refusing() const { return state_ == State::kRefusing; }
  State state() const { return state_; }

  // Hears every failed transaction.
  void OnTransactionFailed(std::string_view sqlstate, std::string_view error);

 private:
  void TransitionTo(State next, std::string_view error);

  StatementMode mode_;
  const bool adapt_;
  State state_ = State::kTrusting;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_STATEMENT_STRATEGY_H_
