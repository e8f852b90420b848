// PgSession: one non-blocking libpq connection driven by the libuv loop, in pipeline mode.
#include "sidecar/pg/pg_session.h"

#include <utility>

#include "sidecar/log/log.h"
#include "sidecar/pg/conninfo.h"

namespace ratelimit {
namespace {

std::string ConnError(PGconn* conn) {
  std::string message = conn != nullptr ? PQerrorMessage(conn) : "out of memory";
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return message;
}

}  // namespace

std::vector<PipelineEntry> PlanPipeline(std::span<const PgQuery> queries, StatementMode mode,
                                        const std::unordered_set<std::string>& prepared) {
  using Kind = PipelineEntry::Kind;
  std::vector<PipelineEntry> entries;
  std::unordered_set<std::string> preparing;  // Prepared by this pipeline.
  for (size_t q = 0; q < queries.size(); ++q) {
    const std::string& name = queries[q].name;
    if (name.empty() || mode == StatementMode::kUnnamed) {
      entries.push_back({Kind::kExecuteUnnamed, q});
      continue;
    }
    if (!prepared.count(name) && preparing.insert(name).second) {
      entries.push_back({Kind::kPrepare, q});
    }
    entries.push_back({Kind::kExecutePrepared, q});
  }
  return entries;
}

PgSession::PgSession(uv_loop_t* loop, std::string conninfo, const StatementMode& statements,
                     StateListener on_state)
    : loop_(loop),
      conninfo_(WithKeepalives(conninfo)),
      password_(ConninfoPassword(conninfo_)),
      params_(ParseConnParams(conninfo_)),
      statements_(statements),
      on_state_(std::move(on_state)) {}

PgSession::~PgSession() { Close(); }

void PgSession::TransitionTo(State next) {
  if (state_ == next) return;
  state_ = next;
  if (on_state_) on_state_();
}

void PgSession::Connect() {
  prepared_.clear();  // Prepared statements belong to a connection.
  if (params_.host_to_resolve.empty()) {
    StartConnecting("");
    return;
  }
  // Resolve the name here, off the loop's thread, then hand libpq the address (hostaddr) next
  // to the name (host, still used for TLS and authentication).
  TransitionTo(State::kConnecting);
  auto* request = new uv_getaddrinfo_t;
  request->data = this;
  resolving_ = request;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const int rc = uv_getaddrinfo(loop_, request, &ResolvedTrampoline,
                                params_.host_to_resolve.c_str(), nullptr, &hints);
  if (rc != 0) {
    resolving_ = nullptr;
    delete request;
    Fail("cannot resolve " + params_.host_to_resolve + ": " + uv_strerror(rc));
  }
}

void PgSession::ResolvedTrampoline(uv_getaddrinfo_t* request, int status, addrinfo* result) {
  auto* self = static_cast<PgSession*>(request->data);
  std::string address;
  if (status == 0 && result != nullptr) {
    char text[INET6_ADDRSTRLEN] = {};
    if (uv_ip_name(result->ai_addr, text, sizeof(text)) == 0) address = text;
  }
  uv_freeaddrinfo(result);
  delete request;
  if (self == nullptr) return;  // The session closed while the name was being resolved.
  self->resolving_ = nullptr;
  if (address.empty()) {
    self->Fail(std::string("cannot resolve the database host: ") +
               (status != 0 ? uv_strerror(status) : "no address"));
    return;
  }
  self->StartConnecting(address);
}

void PgSession::StartConnecting(const std::string& hostaddr) {
  std::vector<const char*> keywords;
  std::vector<const char*> values;
  for (size_t i = 0; i < params_.keywords.size(); ++i) {
    keywords.push_back(params_.keywords[i].c_str());
    values.push_back(params_.values[i].c_str());
  }
  if (!hostaddr.empty()) {
    keywords.push_back("hostaddr");
    values.push_back(hostaddr.c_str());
  }
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  conn_.reset(PQconnectStartParams(keywords.data(), values.data(), /*expand_dbname=*/0));
  if (conn_ == nullptr || PQstatus(conn_.get()) == CONNECTION_BAD) {
    // Failed at once (no such socket file, an unresolvable name): still a state change for the
    // owner, which schedules the next attempt, even when the session was already broken.
    state_ = State::kConnecting;
    Fail(ConnError(conn_.get()));
    return;
  }
  // Messages without DETAIL, HINT or CONTEXT: those quote row values ("Failing row contains
  // (...)", a bind parameter's text), and so may quote an API key, and every message here may
  // end up in the log. The SQLSTATE is kept apart (last_sqlstate) and added to the text.
  PQsetErrorVerbosity(conn_.get(), PQERRORS_TERSE);
  // Server notices ("relation already exists, skipping") would otherwise go to stderr as plain
  // text, breaking the JSON-lines log; they are of interest only when debugging.
  PQsetNoticeProcessor(
      conn_.get(),
      [](void*, const char* message) {
        std::string text = message;
        while (!text.empty() && text.back() == '\n') text.pop_back();
        Log(LogLevel::kDebug, "database notice").Str("notice", text);
      },
      nullptr);
  TransitionTo(State::kConnecting);
  PollConnect();
}

void PgSession::PollConnect() {
  switch (PQconnectPoll(conn_.get())) {
    case PGRES_POLLING_READING:
      WatchSocket(UV_READABLE);
      return;
    case PGRES_POLLING_WRITING:
      WatchSocket(UV_WRITABLE);
      return;
    case PGRES_POLLING_OK:
      if (PQsetnonblocking(conn_.get(), 1) != 0 || PQenterPipelineMode(conn_.get()) != 1) {
        Fail(ConnError(conn_.get()));
        return;
      }
      last_error_.clear();
      WatchSocket(UV_READABLE);  // Notices and a server closing the connection arrive here.
      TransitionTo(State::kIdle);
      return;
    case PGRES_POLLING_FAILED:
    default:
      Fail(ConnError(conn_.get()));
      return;
  }
}

void PgSession::WatchSocket(int events) {
  const int fd = PQsocket(conn_.get());
  if (fd < 0) {
    Fail("connection has no socket");
    return;
  }
  if (poll_ != nullptr && fd != watched_fd_) StopWatching();  // libpq moved to a new socket.
  if (poll_ == nullptr) {
    poll_ = new uv_poll_t;
    if (uv_poll_init(loop_, poll_, fd) != 0) {
      delete poll_;
      poll_ = nullptr;
      Fail("cannot watch the database socket");
      return;
    }
    poll_->data = this;
    watched_fd_ = fd;
    watched_events_ = 0;
  }
  if (events != watched_events_) {
    uv_poll_start(poll_, events, &PollTrampoline);
    watched_events_ = events;
  }
}

void PgSession::StopWatching() {
  if (poll_ == nullptr) return;
  uv_poll_stop(poll_);
  poll_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(poll_),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
  poll_ = nullptr;
  watched_fd_ = -1;
  watched_events_ = 0;
}

void PgSession::PollTrampoline(uv_poll_t* handle, int status, int events) {
  if (handle->data != nullptr) static_cast<PgSession*>(handle->data)->OnSocketEvent(status, events);
}

void PgSession::OnSocketEvent(int status, int events) {
  if (status < 0 && state_ != State::kConnecting) {
    // libuv reports any error on the socket (POLLERR, a reset) as a status such as UV_EBADF,
    // which says nothing to an operator; libpq reading the socket tells what happened ("server
    // closed the connection unexpectedly").
    const bool libpq_knows = PQconsumeInput(conn_.get()) == 0;
    Fail(libpq_knows ? ConnError(conn_.get())
                     : std::string("database socket error: ") + uv_strerror(status));
    return;
  }  // While connecting, libpq reads the socket error itself and may try the next address.
  switch (state_) {
    case State::kConnecting:
      PollConnect();
      return;
    case State::kBusy:
      if (events & UV_WRITABLE) Flush();
      if (state_ == State::kBusy && (events & UV_READABLE)) ReadResults();
      return;
    case State::kIdle:
      // Nothing is expected: a notice, or the server going away.
      if (PQconsumeInput(conn_.get()) == 0 || PQstatus(conn_.get()) == CONNECTION_BAD) {
        Fail(ConnError(conn_.get()));
      }
      return;
    default:
      return;
  }
}

void PgSession::Run(std::vector<PgQuery> queries, PipelineDone done) {
  done_ = std::move(done);
  queries_ = std::move(queries);
  entries_ = PlanPipeline(queries_, statements_, prepared_);
  results_.clear();
  results_.resize(entries_.size());
  index_ = 0;
  awaiting_end_of_statement_ = false;
  statement_error_.clear();
  statement_sqlstate_.clear();
  TransitionTo(State::kBusy);
  for (const PipelineEntry& entry : entries_) {
    if (!Send(entry)) {
      Fail(ConnError(conn_.get()));
      return;
    }
  }
  if (PQpipelineSync(conn_.get()) != 1) {
    Fail(ConnError(conn_.get()));
    return;
  }
  Flush();
}

bool PgSession::Send(const PipelineEntry& entry) {
  const PgQuery& query = queries_[entry.statement];
  std::vector<const char*> values;
  values.reserve(query.params.size());
  for (const std::string& p : query.params) values.push_back(p.c_str());
  const int n = static_cast<int>(values.size());
  switch (entry.kind) {
    case PipelineEntry::Kind::kPrepare:
      return PQsendPrepare(conn_.get(), query.name.c_str(), query.sql.c_str(), n, nullptr) == 1;
    case PipelineEntry::Kind::kExecutePrepared:
      return PQsendQueryPrepared(conn_.get(), query.name.c_str(), n, values.data(), nullptr,
                                 nullptr, 0) == 1;
    case PipelineEntry::Kind::kExecuteUnnamed:
    default:
      return PQsendQueryParams(conn_.get(), query.sql.c_str(), n, nullptr, values.data(), nullptr,
                               nullptr, 0) == 1;
  }
}

void PgSession::Flush() {
  const int rc = PQflush(conn_.get());
  if (rc < 0) {
    Fail(ConnError(conn_.get()));
  } else {
    WatchSocket(rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
  }
}

void PgSession::ReadResults() {
  if (PQconsumeInput(conn_.get()) == 0) {
    Fail(ConnError(conn_.get()));
    return;
  }
  while (state_ == State::kBusy && !PQisBusy(conn_.get())) {
    PgResultPtr result(PQgetResult(conn_.get()));
    if (result == nullptr) {
      if (!awaiting_end_of_statement_) return;  // Nothing more has arrived yet.
      awaiting_end_of_statement_ = false;
      ++index_;
      continue;
    }
    const ExecStatusType status = PQresultStatus(result.get());
    if (status == PGRES_PIPELINE_SYNC) {
      // Remember what got prepared, even in a pipeline that failed later on.
      std::vector<PgResultPtr> statements;
      for (size_t i = 0; i < results_.size(); ++i) {
        if (entries_[i].kind != PipelineEntry::Kind::kPrepare) {
          statements.push_back(std::move(results_[i]));
        } else if (results_[i] != nullptr &&
                   PQresultStatus(results_[i].get()) == PGRES_COMMAND_OK) {
          prepared_.insert(queries_[entries_[i].statement].name);
        }
      }
      if (!statement_error_.empty()) {
        Finish(Status::IoError(Redacted(statement_error_)));
      } else if (index_ != entries_.size()) {
        Finish(Status::IoError("database answered " + std::to_string(index_) + " of " +
                               std::to_string(entries_.size()) + " statements"));
      } else {
        Finish(std::move(statements));
      }
      return;
    }
    awaiting_end_of_statement_ = true;
    if (status == PGRES_FATAL_ERROR && statement_error_.empty()) {
      statement_error_ = PQresultErrorMessage(result.get());
      while (!statement_error_.empty() && statement_error_.back() == '\n') {
        statement_error_.pop_back();
      }
      const char* sqlstate = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
      statement_sqlstate_ = sqlstate != nullptr ? sqlstate : "";
      if (!statement_sqlstate_.empty())
        statement_error_ += " (SQLSTATE " + statement_sqlstate_ + ")";
      last_error_ = Redacted(statement_error_);
    }
    if (index_ < results_.size() && results_[index_] == nullptr)
      results_[index_] = std::move(result);
  }
}

void PgSession::Finish(Result<std::vector<PgResultPtr>> results) {
  PipelineDone done = std::move(done_);
  done_ = nullptr;
  results_.clear();
  if (state_ == State::kBusy) TransitionTo(State::kIdle);
  if (done) done(std::move(results));
}

std::string PgSession::Redacted(std::string message) const {
  if (password_.empty()) return message;
  for (size_t at = message.find(password_); at != std::string::npos;
       at = message.find(password_, at + 3)) {
    message.replace(at, password_.size(), "***");
  }
  return message;
}

void PgSession::Fail(const std::string& message) {
  // An error answered to the pipeline in flight just before the connection went away is most
  // often why it went away (a pooler refusing the transaction, pg_terminate_backend), while
  // libpq only says that the server closed the connection: keep it in front.
  const bool explained = state_ == State::kBusy && !statement_error_.empty();
  last_error_ = Redacted(explained ? statement_error_ + "; then " + message : message);
  StopWatching();
  conn_.reset();
  PipelineDone done = std::move(done_);
  done_ = nullptr;
  results_.clear();
  TransitionTo(State::kBroken);
  // The owner logs this status: it gets the masked text, like last_error().
  if (done) done(Status::Unavailable("database connection lost: " + last_error_));
}

void PgSession::Abandon(const std::string& why) {
  if (state_ == State::kBroken || state_ == State::kClosed || state_ == State::kNew) return;
  if (resolving_ != nullptr) {
    resolving_->data = nullptr;  // Its callback still runs (cancelled) and frees it.
    uv_cancel(reinterpret_cast<uv_req_t*>(resolving_));
    resolving_ = nullptr;
  }
  Fail(why);
}

void PgSession::Close() {
  if (state_ == State::kClosed) return;
  if (resolving_ != nullptr) {
    resolving_->data = nullptr;  // Its callback still runs (cancelled) and frees it.
    uv_cancel(reinterpret_cast<uv_req_t*>(resolving_));
    resolving_ = nullptr;
  }
  StopWatching();
  conn_.reset();
  PipelineDone done = std::move(done_);
  done_ = nullptr;
  on_state_ = nullptr;  // The owner is going away; tell it nothing more.
  state_ = State::kClosed;
  if (done) done(Status::Unavailable("database session closed"));
}

}  // namespace ratelimit
