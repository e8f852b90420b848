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
#include "sidecar/pg/db_session.h"
#include "sidecar/pg/pg_ptr.h"

namespace ratelimit {

// Connects without blocking (a host name resolved with uv_getaddrinfo, then
// PQconnectStartParams/PQconnectPoll under uv_poll), then runs pipelines:
// a list of statements sent at once, followed by one Sync, answered in one round trip. Within
// an explicit transaction (BEGIN ... COMMIT spread over several pipelines) a Sync does not end
// the transaction, so a transaction of two pipelines costs two round trips.
//
// The DbSession contract holds; Close() -> kClosed at once, libuv releasing the poll handle
// later. Thread-safety: the loop thread only. Owned by the SessionPool; its callbacks never
// outlive it because Close() fails the pipeline in flight before returning.
class PgSession final : public DbSession {
 public:
  PgSession(uv_loop_t* loop, std::string conninfo, StateListener on_state);
  ~PgSession() override;
  PgSession(const PgSession&) = delete;
  PgSession& operator=(const PgSession&) = delete;

  void Connect() override;
  void Run(std::vector<PgQuery> queries, PipelineDone done) override;
  void Abandon(const std::string& why) override;
  void Close() override;

  State state() const override { return state_; }
  // A statement error is the server's terse text plus its SQLSTATE, without DETAIL, HINT or
  // CONTEXT, which may quote row values such as keys. The same text is in the error statuses
  // that Run passes to `done`.
  const std::string& last_error() const override { return last_error_; }
  const std::string& last_sqlstate() const override { return statement_sqlstate_; }

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
