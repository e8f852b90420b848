// Server: the Unix-socket listener and the set of client connections it serves.
#ifndef RATELIMIT_SIDECAR_SERVER_SERVER_H_
#define RATELIMIT_SIDECAR_SERVER_SERVER_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "schema/status.h"
#include "sidecar/core/limiter.h"
#include "sidecar/server/connection.h"
#include "sidecar/server/read_scheduler.h"
#include "sidecar/server/request_stream.h"
#include "sidecar/server/server_metrics.h"

namespace ratelimit {

struct ServerOptions {
  std::string socket_path;
  uint32_t socket_mode = 0660;
  std::vector<uint32_t> allowed_uids;  // Empty: any peer the file mode lets in.
  uint32_t max_connections = 1024;
  uint32_t max_frame_bytes = 65536;
  uint32_t shutdown_grace_ms = 5000;
};

// Listens on a Unix socket and owns every accepted Connection. Connections past
// max_connections, or from a uid not in allowed_uids, get an ErrorResponse and are closed.
// Reading is shared between connections turn by turn (see ReadScheduler), so a flood on some
// connections delays the others by a few milliseconds at most. Each connection is given what it
// shares with the others when it is made (ConnectionShared, RequestShared) and calls nothing of
// the server's but ConnectionOwner::Finished; a finished connection is freed at the start of
// the next loop turn.
// Thread-safety: the loop thread only. The loop and limiter must outlive the server; the server
// must be shut down (and its on_stopped called) before it is destroyed.
class Server final : private ConnectionOwner {
 public:
  Server(uv_loop_t* loop, ServerOptions options, Limiter& limiter);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Prepares the socket path (see PrepareSocketPath), binds with the configured mode, listens.
  Status Start();

  // Stops accepting and removes the socket file, then lets every connection answer what it has
  // read and flush it. When shutdown_grace_ms is over, calls `on_grace_over` (the owner then
  // stops a store whose answers connections may still be waiting for) and closes the
  // connections still open. Calls `on_stopped` once every handle of the server is closed and
  // every pending check has been answered. Idempotent.
  void Shutdown(std::function<void()> on_stopped, std::function<void()> on_grace_over = nullptr);

  // Whether the socket is listening: started, and not shutting down.
  bool listening() const { return state_ == State::kListening; }
  const ServerMetrics& metrics() const { return metrics_; }

 private:
  // The server's life, one way:
  //   kCreated   -> kListening   Start succeeded
  //   kCreated/kListening -> kDraining   Shutdown: the listener closes, the socket file goes,
  //                                      connections answer what they read; grace timer runs
  //   kDraining  -> kStopping    no connection left: the turn handle and grace timer close
  //   kStopping  -> kStopped     every handle of the server closed; on_stopped is called
  enum class State { kCreated, kListening, kDraining, kStopping, kStopped };

  void TransitionTo(State next);
  // Moves on from kDraining or kStopping once what they wait for is done.
  void StopIfDone();
  void CloseHandle(uv_handle_t* handle);
  void OnConnection(int status);
  // Whether `connection` may be served; if not, refuses it (an ErrorResponse, then the close).
  bool Admit(Connection& connection, size_t admitted);
  bool PeerAllowed(Connection& connection);
  // ConnectionOwner: queues `connection` to be freed in the next loop turn.
  void Finished(Connection& connection) override;
  // Starts a loop turn: frees the connections finished since the last one, begins the turn's
  // reading (ReadScheduler::StartTurn).
  void OnTurn();
  // Connections not finished with: the ones that count against max_connections.
  size_t open_connections() const { return connections_.size() - finished_.size(); }

  static void ListenTrampoline(uv_stream_t* server, int status);
  static void GraceTrampoline(uv_timer_t* timer);
  static void TurnTrampoline(uv_prepare_t* prepare);
  static void HandleClosedTrampoline(uv_handle_t* handle);

  uv_loop_t* loop_;
  const ServerOptions options_;
  State state_ = State::kCreated;
  // The server's own handles, initialized with it and closed by Shutdown: the listener in
  // kDraining, the others in kStopping.
  uv_pipe_t listener_;
  uv_timer_t grace_timer_;
  uv_prepare_t turn_handle_;  // Starts each loop turn: see OnTurn.
  int handles_open_ = 0;      // Of those three: closed when their close callback ran.
  bool bound_ = false;        // The socket file at socket_path is ours.
  std::function<void()> on_stopped_;
  std::function<void()> on_grace_over_;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  std::vector<Connection*> finished_;  // In connections_ still, freed by the next OnTurn.
  ServerMetrics metrics_;
  ReadScheduler reads_;
  // One read buffer for all connections (see Connection::NextReadBuffer). 8-byte words keep
  // frames aligned.
  std::unique_ptr<uint64_t[]> read_buffer_;
  RequestShared request_shared_;
  const ConnectionShared connection_shared_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_SERVER_H_
