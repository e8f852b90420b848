// PgSession: one non-blocking libpq connection driven by the libuv loop, in pipeline mode.
#ifndef RATELIMIT_SIDECAR_PG_PG_SESSION_H_
#define RATELIMIT_SIDECAR_PG_PG_SESSION_H_

#include <libpq-fe.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "schema/status.h"
#include "sidecar/pg/conninfo.h"
#include "sidecar/pg/pg_ptr.h"

namespace ratelimit {

// One statement of a pipeline: SQL with $n placeholders and its parameters as text. A statement
// with a `name` is prepared once per connection (parsed and planned once, inside the same
// pipeline as its first use) and executed by name afterwards; the same name must always carry
// the same SQL.
struct PgQuery {
  std::string sql;
  std::vector<std::string> params = {};
  std::string name = {};
};

// Connects without blocking (a host name resolved with uv_getaddrinfo, then
// PQconnectStartParams/PQconnectPoll under uv_poll), then runs pipelines:
// a list of statements sent at once, followed by one Sync, answered in one round trip. Within
// an explicit transaction (BEGIN ... COMMIT spread over several pipelines) a Sync does not end
// the transaction, so a transaction of two pipelines costs two round trips.
//
// States: kConnecting -> kIdle <-> kBusy; any -> kBroken on a connection error (the owner
// decides when to Connect again); Close() -> kClosed once libuv has released the poll handle.
// Thread-safety: the loop thread only. Owned by PgStore; its callbacks never outlive it because
// Close() fails the pipeline in flight before returning.
class PgSession {
 public:
  enum class State { kNew, kConnecting, kIdle, kBusy, kBroken, kClosed };

  // Each result of a pipeline, in statement order; an error names the failing statement.
  using PipelineDone = std::function<void(Result<std::vector<PgResultPtr>> results)>;
  // Called after every state change.
  using StateListener = std::function<void(PgSession& session)>;

  PgSession(uv_loop_t* loop, std::string conninfo, StateListener on_state);
  ~PgSession();
  PgSession(const PgSession&) = delete;
  PgSession& operator=(const PgSession&) = delete;

  // Starts connecting. REQUIRES: state is kNew or kBroken.
  void Connect();

  // Sends `queries` in one pipeline. `done` runs once, later: with one result per statement, or
  // with an error when a statement failed (the others' results are dropped) or the connection
  // broke. REQUIRES: state() == kIdle; queries is not empty.
  void Run(std::vector<PgQuery> queries, PipelineDone done);

  // Drops the connection because the database is not answering (a connection attempt or a
  // pipeline took too long): a pipeline in flight fails with Unavailable and the session is
  // kBroken, for the owner to Connect again. Nothing happens when already kBroken or kClosed.
  void Abandon(const std::string& why);

  // Drops the connection; a pipeline in flight fails with Unavailable. Idempotent.
  void Close();

  State state() const { return state_; }
  // The last connection or statement error, with the connection's password masked ("***").
  // A statement error is the server's terse text plus its SQLSTATE, without DETAIL, HINT or
  // CONTEXT, which may quote row values such as keys. The same text is in the error statuses
  // that Run passes to `done`.
  const std::string& last_error() const { return last_error_; }
  // The SQLSTATE of the statement that failed the last pipeline ("42P01": no such table, ...),
  // or "" when the last pipeline did not fail on a statement. Valid until the next Run.
  const std::string& last_sqlstate() const { return statement_sqlstate_; }

 private:
  void TransitionTo(State next);
  std::string Redacted(std::string message) const;
  void Fail(const std::string& message);
  void StartConnecting(const std::string& hostaddr);
  void PollConnect();
  void OnSocketEvent(int status, int events);
  void Flush();
  void ReadResults();
  void Finish(Result<std::vector<PgResultPtr>> results);
  void WatchSocket(int events);
  void StopWatching();

  static void PollTrampoline(uv_poll_t* handle, int status, int events);
  static void ResolvedTrampoline(uv_getaddrinfo_t* request, int status, addrinfo* result);

  uv_loop_t* loop_;
  const std::string conninfo_;
  const std::string password_;  // From conninfo_, to mask it in every message kept.
  const ConnParams params_;     // conninfo_ parsed once, for every connection attempt.
  StateListener on_state_;
  State state_ = State::kNew;
  PgConnPtr conn_;
  // The uv_poll_t watching conn_'s socket; heap-allocated because libpq may switch sockets
  // while connecting, and a handle's memory is only released in its close callback.
  uv_poll_t* poll_ = nullptr;
  int watched_fd_ = -1;
  // A host name being resolved by libuv's thread pool; its callback frees it.
  uv_getaddrinfo_t* resolving_ = nullptr;
  int watched_events_ = 0;
  std::string last_error_;

  // Statements prepared on the current connection.
  std::unordered_set<std::string> prepared_;

  // The pipeline in flight. Its entries are the statements plus a Prepare before each first use
  // of a name; entry_statement_[i] is the statement index of entry i, or -1 for a Prepare.
  PipelineDone done_;
  std::vector<PgResultPtr> results_;  // One per entry.
  std::vector<int> entry_statement_;
  std::vector<std::string> entry_prepare_;  // The name an entry prepares, else empty.
  size_t expected_ = 0;
  size_t index_ = 0;
  bool awaiting_end_of_statement_ = false;
  std::string statement_error_;
  std::string statement_sqlstate_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_PG_SESSION_H_
