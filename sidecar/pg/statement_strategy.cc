// StatementStrategy: how the store sends its SQL, and what failed transactions say of a pooler.
#include "sidecar/pg/statement_strategy.h"

#include "sidecar/log/log.h"

namespace ratelimit {

PoolerSign PoolerSignOf(std::string_view sqlstate, std::string_view error) {
  // PgBouncer's text, whatever reached us of it: a FATAL answer, or the connection it closed.
  if (error.find("not allowed in statement pooling mode") != std::string_view::npos) {
    return PoolerSign::kStatementPooling;
  }
  // Only the store prepares statements on its sessions, so these codes are about its own, in
  // whatever language the server writes its messages.
  if (sqlstate == "42P05" || sqlstate == "26000") return PoolerSign::kPreparedStatementsLost;
  return PoolerSign::kNone;
}

void StatementStrategy::OnTransactionFailed(std::string_view sqlstate, std::string_view error) {
  switch (PoolerSignOf(sqlstate, error)) {
    case PoolerSign::kStatementPooling:
      if (state_ != State::kRefusing) TransitionTo(State::kRefusing, error);
      return;
    case PoolerSign::kPreparedStatementsLost:
      if (state_ == State::kTrusting) {
        TransitionTo(adapt_ ? State::kSwitched : State::kPreparedLost, error);
      }
      return;
    case PoolerSign::kNone:
    default:
      return;
  }
}

void StatementStrategy::TransitionTo(State next, std::string_view error) {
  state_ = next;
  switch (next) {
    case State::kSwitched:
      mode_ = StatementMode::kUnnamed;
      Log(LogLevel::kError,
          "prepared statements lost between transactions: a pooler in transaction mode seems to "
          "be in between; switching to unnamed statements now (RATE_LIMIT_PG_STATEMENTS=auto). "
          "Set RATE_LIMIT_PG_STATEMENTS=unnamed, or pgbouncer=true in DATABASE_URL, so that no "
          "transaction fails first")
          .Str("error", error);
      return;
    case State::kPreparedLost:
      Log(LogLevel::kError,
          "prepared statements lost between transactions: a pooler in transaction mode seems to "
          "be in between, and RATE_LIMIT_PG_STATEMENTS=prepared keeps them: set "
          "RATE_LIMIT_PG_STATEMENTS=unnamed, or pgbouncer=true in DATABASE_URL")
          .Str("error", error);
      return;
    case State::kRefusing:
      Log(LogLevel::kError,
          "the database is reached through a pooler in statement pooling mode, which cannot "
          "carry a rate limit transaction: checks go to the fallback. Set pool_mode = "
          "transaction (or session) for this database in the pooler, then restart the sidecar")
          .Str("error", error);
      return;
    case State::kTrusting:
    default:
      return;
  }
}

}  // namespace ratelimit
