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
#include "sidecar/server/read_scheduler.h"
#include "sidecar/server/request_handler.h"
#include "sidecar/server/server_metrics.h"

namespace ratelimit {

class Connection;

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
// connections delays the others by a few milliseconds at most.
// Thread-safety: the loop thread only. The loop and limiter must outlive the server; the server
// must be shut down (and its on_stopped called) before it is destroyed.
class Server {
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
  bool listening() const { return listening_ && !shutting_down_; }
  const ServerMetrics& metrics() const { return metrics_; }

  // For Connection.
  ServerMetrics& metrics() { return metrics_; }
  RequestHandler& handler() { return handler_; }
  // The shared read buffer, its first `bytes` (at most its size). REQUIRES: bytes > 0.
  uv_buf_t ReadBuffer(size_t bytes);
  // How much each connection may read in this loop turn.
  ReadScheduler& reads() { return reads_; }
  void Release(Connection* connection);

 private:
  void OnConnection(int status);
  bool PeerAllowed(Connection& connection);
  void MaybeStopped();

  static void ListenTrampoline(uv_stream_t* server, int status);
  static void ListenerClosedTrampoline(uv_handle_t* handle);
  static void GraceTrampoline(uv_timer_t* timer);
  static void GraceClosedTrampoline(uv_handle_t* handle);
  static void TurnTrampoline(uv_prepare_t* prepare);
  static void TurnClosedTrampoline(uv_handle_t* handle);

  uv_loop_t* loop_;
  const ServerOptions options_;
  RequestHandler handler_;
  uv_pipe_t listener_;
  uv_timer_t grace_timer_;
  uv_prepare_t turn_handle_;  // Starts each loop turn of reads_.
  bool listener_open_ = false;
  bool turn_handle_open_ = false;
  bool bound_ = false;  // The socket file at socket_path is ours.
  bool listening_ = false;
  bool grace_timer_open_ = false;
  bool shutting_down_ = false;
  std::function<void()> on_stopped_;
  std::function<void()> on_grace_over_;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  ReadScheduler reads_;
  ServerMetrics metrics_;
  // One read buffer for all connections: libuv calls alloc and read back to back on one stream,
  // and frames are consumed before the read callback returns. 8-byte words keep frames aligned.
  std::unique_ptr<uint64_t[]> read_buffer_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_SERVER_H_
