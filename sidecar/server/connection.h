// Connection: one client's Unix socket: reading with backpressure, writing, closing.
#ifndef RATELIMIT_SIDECAR_SERVER_CONNECTION_H_
#define RATELIMIT_SIDECAR_SERVER_CONNECTION_H_

#include <uv.h>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "schema/check.h"
#include "schema/status.h"
#include "sidecar/server/read_scheduler.h"
#include "sidecar/server/request_stream.h"

namespace ratelimit {

class Connection;

// Per-connection caps: past either, the connection stops reading until it drains below half.
// A slow or hostile client therefore costs the sidecar at most about this much memory.
inline constexpr size_t kMaxQueuedOutputBytes = 256 * 1024;
inline constexpr size_t kMaxPendingChecks = 1024;

// Who owns connections: told once when one is finished with.
class ConnectionOwner {
 public:
  // `connection` is closed, its writes are over and no check of it is pending: nothing refers
  // to it any more. Called from within the connection's own callbacks (its close callback, or
  // the engine's answer to its last check), so the owner frees it on a later loop turn, never
  // inside this call.
  virtual void Finished(Connection& connection) = 0;

 protected:
  ~ConnectionOwner() = default;
};

// What the connections of one server share, passed in at construction. Owned by the server,
// which outlives its connections.
struct ConnectionShared {
  uv_loop_t* loop;
  ReadScheduler& reads;            // How much each connection may read in a loop turn.
  std::span<uint8_t> read_buffer;  // One for every connection: see Connection::NextReadBuffer.
  RequestShared& requests;         // For each connection's RequestStream.
  ConnectionOwner& owner;
};

// A client connection: moves bytes between its socket and its RequestStream, which serves
// them. A small state machine:
//   kReading  -> kPaused    output or pending checks above their cap
//   kPaused   -> kReading   both back under half their cap
//   kReading/kPaused -> kDraining   peer sent EOF, the stream was refused (a bad frame), the
//                                   server refused the connection or shuts down: no more
//                                   reads; answer what was read, flush, then close
//   kReading/kPaused/kDraining -> kClosing   write/read error, drained, or forced; uv_close
//   kClosing  -> kClosed    the close callback ran
//   kClosed   -> kFinished  no check pending either; the owner is told (it frees the
//                           connection on a later loop turn)
// The bytes of a write are owned by the connection until the write's callback.
// Thread-safety: the loop thread only. Owned by the ConnectionOwner in `shared`.
class Connection final : private FrameSink {
 public:
  explicit Connection(const ConnectionShared& shared);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() = default;

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&pipe_); }

  // Takes the next client waiting on `listener` as this connection's socket. Whatever it
  // returns, the socket's handle exists from then on and goes only through the close (Close,
  // or Refuse/Drain, which close once flushed). REQUIRES: called once, first.
  Status Accept(uv_stream_t* listener);
  // Begins reading. REQUIRES: Accept succeeded.
  void Start();
  // Sends an ErrorResponse and closes once it is written.
  void Refuse(CheckStatus status, std::string_view message);
  // Stops reading; closes once everything read has been answered and flushed.
  void Drain();
  // Closes now, dropping unsent output. Idempotent.
  void Close();

 private:
  enum class State { kReading, kPaused, kDraining, kClosing, kClosed, kFinished };

  void TransitionTo(State next);
  void OnRead(ssize_t nread, const uv_buf_t* buf);
  void OnWriteDone(int status);
  void Flush();
  void ApplyBackpressure();
  void FinishIfDrained();
  void FinishIfClosed();
  uv_buf_t NextReadBuffer();
  bool OverCap() const;
  bool UnderLowWater() const;
  // Reading, paused or draining: not closing or closed.
  bool open() const {
    return state_ == State::kReading || state_ == State::kPaused || state_ == State::kDraining;
  }

  // FrameSink: where requests_ puts its answers.
  void Queue(std::span<const uint8_t> frame) override;
  void Send() override;

  static void AllocTrampoline(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void ReadTrampoline(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void WriteTrampoline(uv_write_t* req, int status);
  static void CloseTrampoline(uv_handle_t* handle);

  const ConnectionShared& shared_;
  uv_pipe_t pipe_;
  uv_write_t write_req_;
  State state_ = State::kReading;
  std::vector<uint8_t> out_;      // Frames queued since the last write started.
  std::vector<uint8_t> writing_;  // Bytes owned by write_req_ while a write is in flight.
  bool write_in_flight_ = false;
  ReadScheduler::Share read_share_;  // What shared_.reads granted this connection.
  RequestStream requests_;           // Last: its sink is this connection.
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_CONNECTION_H_
