// PgSession: one non-blocking libpq connection driven by the libuv loop, in pipeline mode.
#ifndef RATELIMIT_SIDECAR_PG_PG_SESSION_H_
#define RATELIMIT_SIDECAR_PG_PG_SESSION_H_

#include <libpq-fe.h>
#include <uv.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "schema/status.h"
#include "sidecar/pg/conninfo.h"
#include "sidecar/pg/db_session.h"
#include "sidecar/pg/pg_ptr.h"

namespace ratelimit {

// One entry of a pipeline as PgSession sends it: the Parse of a prepared statement, or the
// execution of statement `statement` of the pipeline, by name or as the unnamed statement.
struct PipelineEntry {
  enum class Kind { kPrepare, kExecutePrepared, kExecuteUnnamed };
  Kind kind;
  size_t statement;  // Index in the pipeline's statements (the one prepared, for kPrepare).
  bool operator==(const PipelineEntry&) const = default;
};

// How `queries` are sent on a connection where the names in `prepared` are prepared already:
// under kPrepared a named statement gets a kPrepare before its first use on the connection
// (once per pipeline), then kExecutePrepared; a statement without a name, and every statement
// under kUnnamed, is kExecuteUnnamed (PQsendQueryParams: parsed in this pipeline, nothing left
// on the connection).
std::vector<PipelineEntry> PlanPipeline(std::span<const PgQuery> queries, StatementMode mode,
                                        const std::unordered_set<std::string>& prepared);

// Connects without blocking (a host name resolved with uv_getaddrinfo, then
// PQconnectStartParams/PQconnectPoll under uv_poll), then runs pipelines:
// a list of statements sent at once, followed by one Sync, answered in one round trip. Within
// an explicit transaction (BEGIN ... COMMIT spread over several pipelines) a Sync does not end
// the transaction, so a transaction of two pipelines costs two round trips. Statements are sent
// as PlanPipeline says for the StatementMode `statements` holds at each Run: the store owns it
// and may switch it to kUnnamed at run time (RATE_LIMIT_PG_STATEMENTS=auto).
//
// The DbSession contract holds; Close() -> kClosed at once, libuv releasing the poll handle
// later. Thread-safety: the loop thread only. Owned by the SessionPool; its callbacks never
// outlive it because Close() fails the pipeline in flight before returning.
class PgSession final : public DbSession {
 public:
  // `statements` must outlive the session.
  PgSession(uv_loop_t* loop, std::string conninfo, const StatementMode& statements,
            StateListener on_state);
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
  // that Run passes to `done`. A connection lost during a pipeline whose statement had failed
  // keeps that statement's error in front of libpq's ("FATAL: transaction blocks not allowed
  // in statement pooling mode (SQLSTATE 08P01); then server closed the connection ...") and
  // its SQLSTATE in last_sqlstate().
  const std::string& last_error() const override { return last_error_; }
  const std::string& last_sqlstate() const override { return statement_sqlstate_; }

 private:
  void TransitionTo(State next);
  std::string Redacted(std::string message) const;
  void Fail(const std::string& message);
  void StartConnecting(const std::string& hostaddr);
  void PollConnect();
  void OnSocketEvent(int status, int events);
  bool Send(const PipelineEntry& entry);
  void Flush();
  void ReadResults();
  void Finish(Result<std::vector<PgResultPtr>> results);
  void WatchSocket(int events);
  void StopWatching();

  static void PollTrampoline(uv_poll_t* handle, int status, int events);
  static void ResolvedTrampoline(uv_getaddrinfo_t* request, int status, addrinfo* result);

  uv_loop_t* loop_;
  const std::string conninfo_;  // With kKeepaliveDefaults added (WithKeepalives).
  const std::string password_;  // From conninfo_, to mask it in every message kept.
  const ConnParams params_;     // conninfo_ parsed once, for every connection attempt.
  const StatementMode& statements_;
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

  // The pipeline in flight: its statements, and what was sent for them (PlanPipeline).
  PipelineDone done_;
  std::vector<PgQuery> queries_;
  std::vector<PipelineEntry> entries_;
  std::vector<PgResultPtr> results_;  // One per entry.
  size_t index_ = 0;
  bool awaiting_end_of_statement_ = false;
  std::string statement_error_;
  std::string statement_sqlstate_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_PG_SESSION_H_
