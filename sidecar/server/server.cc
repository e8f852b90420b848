// Server: the Unix-socket listener and the set of client connections it serves.
#include "sidecar/server/server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "sidecar/log/log.h"
#include "sidecar/server/connection.h"
#include "sidecar/server/socket_path.h"

namespace ratelimit {
namespace {

constexpr size_t kReadBufferBytes = 64 * 1024;
constexpr int kListenBacklog = 511;

Status UvError(const std::string& what, int rc) {
  return Status::IoError(what + ": " + uv_strerror(rc));
}

}  // namespace

Server::Server(uv_loop_t* loop, ServerOptions options, Limiter& limiter)
    : loop_(loop),
      options_(std::move(options)),
      reads_(kReadBufferBytes),
      read_buffer_(new uint64_t[kReadBufferBytes / sizeof(uint64_t)]),
      request_shared_{limiter, metrics_, options_.max_frame_bytes, &uv_hrtime},
      connection_shared_{
          loop, reads_,
          std::span<uint8_t>(reinterpret_cast<uint8_t*>(read_buffer_.get()), kReadBufferBytes),
          request_shared_, *this} {
  uv_pipe_init(loop_, &listener_, 0);
  uv_timer_init(loop_, &grace_timer_);
  uv_prepare_init(loop_, &turn_handle_);
  handles_open_ = 3;
  listener_.data = this;
  grace_timer_.data = this;
  turn_handle_.data = this;
}

Server::~Server() = default;

Status Server::Start() {
  uv_prepare_start(&turn_handle_, &TurnTrampoline);
  if (Status s = PrepareSocketPath(options_.socket_path); !s.ok()) return s;
  // Create the file with the final mode from the start, so it is never briefly more open.
  const mode_t old_mask = umask(~options_.socket_mode & 0777);
  int rc = uv_pipe_bind(&listener_, options_.socket_path.c_str());
  umask(old_mask);
  if (rc != 0) return UvError("cannot bind " + options_.socket_path, rc);
  bound_ = true;
  if (chmod(options_.socket_path.c_str(), options_.socket_mode) != 0) {
    return Status::IoError("cannot chmod " + options_.socket_path);
  }
  rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), kListenBacklog, &ListenTrampoline);
  if (rc != 0) return UvError("cannot listen on " + options_.socket_path, rc);
  TransitionTo(State::kListening);
  return Status::Ok();
}

void Server::TransitionTo(State next) {
  state_ = next;
  switch (next) {
    case State::kCreated:
    case State::kListening:
      break;
    case State::kDraining:
      CloseHandle(reinterpret_cast<uv_handle_t*>(&listener_));
      if (bound_ && unlink(options_.socket_path.c_str()) != 0 && errno != ENOENT) {
        Log(LogLevel::kWarn, "cannot remove socket file").Str("path", options_.socket_path);
      }
      uv_timer_start(&grace_timer_, &GraceTrampoline, options_.shutdown_grace_ms, 0);
      // Connections are freed only in OnTurn, so nothing here changes connections_.
      for (auto& [ptr, connection] : connections_) connection->Drain();
      break;
    case State::kStopping:
      CloseHandle(reinterpret_cast<uv_handle_t*>(&turn_handle_));
      CloseHandle(reinterpret_cast<uv_handle_t*>(&grace_timer_));
      break;
    case State::kStopped:
      if (on_stopped_) on_stopped_();
      break;
  }
}

void Server::StopIfDone() {
  if (state_ == State::kDraining && connections_.empty()) TransitionTo(State::kStopping);
  if (state_ == State::kStopping && handles_open_ == 0) TransitionTo(State::kStopped);
}

void Server::CloseHandle(uv_handle_t* handle) { uv_close(handle, &HandleClosedTrampoline); }

void Server::OnConnection(int status) {
  if (status != 0) {
    Log(LogLevel::kWarn, "accept failed").Str("error", uv_strerror(status));
    return;
  }
  auto owned = std::make_unique<Connection>(connection_shared_);
  Connection* connection = owned.get();
  const size_t admitted = open_connections();
  connections_.emplace(connection, std::move(owned));
  metrics_.connections_open.Set(static_cast<int64_t>(open_connections()));
  if (Status accepted = connection->Accept(reinterpret_cast<uv_stream_t*>(&listener_));
      !accepted.ok()) {
    Log(LogLevel::kWarn, "accept failed").Str("error", accepted.message());
    connection->Close();
    return;
  }
  if (Admit(*connection, admitted)) {
    metrics_.connections_accepted.Add();
    connection->Start();
  }
}

bool Server::Admit(Connection& connection, size_t admitted) {
  auto refuse = [&](CheckStatus status, std::string_view message) {
    metrics_.connections_refused.Add();
    connection.Refuse(status, message);
    return false;
  };
  if (state_ != State::kListening) {
    return refuse(CheckStatus::kShuttingDown, "the sidecar is shutting down");
  }
  if (admitted >= options_.max_connections) {
    Log(LogLevel::kWarn, "connection refused: too many connections")
        .Int("max_connections", options_.max_connections);
    return refuse(CheckStatus::kOverloaded, "too many connections (RATE_LIMIT_MAX_CONNECTIONS=" +
                                                std::to_string(options_.max_connections) + ")");
  }
  if (!PeerAllowed(connection)) {
    return refuse(CheckStatus::kInvalidRequest, "peer uid is not in RATE_LIMIT_ALLOWED_UIDS");
  }
  return true;
}

bool Server::PeerAllowed(Connection& connection) {
  if (options_.allowed_uids.empty()) return true;
  uv_os_fd_t fd = -1;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(connection.stream()), &fd) != 0 ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    Log(LogLevel::kWarn, "connection refused: cannot read peer credentials");
    return false;
  }
  const auto& allowed = options_.allowed_uids;
  if (std::find(allowed.begin(), allowed.end(), cred.uid) != allowed.end()) return true;
  Log(LogLevel::kWarn, "connection refused: uid not allowed").Int("uid", cred.uid);
  return false;
}

void Server::Finished(Connection& connection) {
  finished_.push_back(&connection);
  metrics_.connections_open.Set(static_cast<int64_t>(open_connections()));
}

void Server::OnTurn() {
  if (!finished_.empty()) {
    for (Connection* connection : finished_) connections_.erase(connection);
    finished_.clear();
    StopIfDone();
  }
  reads_.StartTurn();
}

void Server::Shutdown(std::function<void()> on_stopped, std::function<void()> on_grace_over) {
  if (state_ != State::kCreated && state_ != State::kListening) return;
  on_stopped_ = std::move(on_stopped);
  on_grace_over_ = std::move(on_grace_over);
  Log(LogLevel::kInfo, "shutting down").Int("connections", open_connections());
  TransitionTo(State::kDraining);
  StopIfDone();
}

void Server::ListenTrampoline(uv_stream_t* server, int status) {
  static_cast<Server*>(server->data)->OnConnection(status);
}

void Server::TurnTrampoline(uv_prepare_t* prepare) {
  static_cast<Server*>(prepare->data)->OnTurn();
}

void Server::GraceTrampoline(uv_timer_t* timer) {
  auto* self = static_cast<Server*>(timer->data);
  Log(LogLevel::kWarn, "shutdown grace period over; closing connections")
      .Int("connections", self->open_connections());
  if (self->on_grace_over_) self->on_grace_over_();
  for (auto& [ptr, connection] : self->connections_) connection->Close();
}

void Server::HandleClosedTrampoline(uv_handle_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  --self->handles_open_;
  self->StopIfDone();
}

}  // namespace ratelimit
