// DbSession: the session pool's view of one database connection, so tests can stand in for it.
#ifndef RATELIMIT_SIDECAR_PG_DB_SESSION_H_
#define RATELIMIT_SIDECAR_PG_DB_SESSION_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "schema/status.h"
#include "sidecar/pg/pg_ptr.h"

namespace ratelimit {

// How a session sends the statements that have a name (RATE_LIMIT_PG_STATEMENTS, resolved):
//   kPrepared  prepared once per connection (parsed and planned once, inside the same pipeline
//              as its first use) and executed by name afterwards;
//   kUnnamed   parsed, bound and executed as the unnamed statement every time, inside the
//              pipeline that uses it: nothing outlives the transaction, which is what a
//              transaction-pooling pooler (PgBouncer before 1.21) needs, since it hands each
//              transaction to whichever server connection is free.
// A statement without a name is always sent as in kUnnamed.
enum class StatementMode { kPrepared, kUnnamed };

// One statement of a pipeline: SQL with $n placeholders and its parameters as text. The `name`
// of a statement is its prepared statement's name under StatementMode::kPrepared; the same name
// must always carry the same SQL.
struct PgQuery {
  std::string sql;
  std::vector<std::string> params = {};
  std::string name = {};
};

// One connection that runs pipelines: a list of statements sent at once and answered together.
// PgSession is the real one (libpq on the loop); tests use a fake that answers from canned
// results. The SessionPool owns its sessions and is their only listener.
//
// States: kNew -> kConnecting -> kIdle <-> kBusy; any -> kBroken on a connection error (the
// owner decides when to Connect again); Close() -> kClosed, without telling the listener.
// Thread-safety: the loop thread only.
class DbSession {
 public:
  enum class State { kNew, kConnecting, kIdle, kBusy, kBroken, kClosed };

  // Each result of a pipeline, in statement order; an error names the failing statement.
  using PipelineDone = std::function<void(Result<std::vector<PgResultPtr>> results)>;
  // Called after every state change but the one to kClosed.
  using StateListener = std::function<void()>;

  virtual ~DbSession() = default;

  // Starts connecting. REQUIRES: state is kNew or kBroken.
  virtual void Connect() = 0;

  // Sends `queries` in one pipeline. `done` runs once, later: with one result per statement, or
  // with an error when a statement failed (the others' results are dropped) or the connection
  // broke. REQUIRES: state() == kIdle; queries is not empty.
  virtual void Run(std::vector<PgQuery> queries, PipelineDone done) = 0;

  // Drops the connection because the database is not answering (a connection attempt or a
  // pipeline took too long): a pipeline in flight fails with Unavailable and the session is
  // kBroken, for the owner to Connect again. Nothing happens when already kBroken or kClosed.
  virtual void Abandon(const std::string& why) = 0;

  // Drops the connection; a pipeline in flight fails with Unavailable. Idempotent.
  virtual void Close() = 0;

  virtual State state() const = 0;
  // The last connection or statement error, with the connection's password masked ("***").
  virtual const std::string& last_error() const = 0;
  // The SQLSTATE of the statement that failed the last pipeline ("42P01": no such table, ...),
  // or "" when the last pipeline did not fail on a statement. Valid until the next Run.
  virtual const std::string& last_sqlstate() const = 0;
};

// Makes the session of one pool slot, telling `on_state` of its state changes.
using DbSessionFactory =
    std::function<std::unique_ptr<DbSession>(DbSession::StateListener on_state)>;

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_DB_SESSION_H_
