// Connection: one client's Unix socket, its framing, output buffering and backpressure.
#ifndef RATELIMIT_SIDECAR_SERVER_CONNECTION_H_
#define RATELIMIT_SIDECAR_SERVER_CONNECTION_H_

#include <uv.h>

#include <cstdint>
#include <span>
#include <vector>

#include "schema/frame_reader.h"
#include "sidecar/server/read_scheduler.h"
#include "sidecar/server/request_handler.h"

namespace ratelimit {

class Server;

// Per-connection caps: past either, the connection stops reading until it drains below half.
// A slow or hostile client therefore costs the sidecar at most about this much memory.
inline constexpr size_t kMaxQueuedOutputBytes = 256 * 1024;
inline constexpr size_t kMaxPendingChecks = 1024;

// A client connection, a small state machine:
//   kReading  -> kPaused    output or pending checks above their cap
//   kPaused   -> kReading   both back under half their cap
//   kReading/kPaused -> kDraining   peer sent EOF, a protocol error, or the server shuts down:
//                                   no more reads; answer what was read, flush, then close
//   any       -> kClosing   write/read error, drained, or forced; uv_close issued
//   kClosing  -> kClosed    close callback ran; freed once no engine callback is pending
// Thread-safety: the loop thread only. Owned by Server, which deletes it in Release().
class Connection final : public RequestContext {
 public:
  Connection(Server& server, uv_loop_t* loop, uint32_t max_frame_bytes);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&pipe_); }

  // Begins reading. REQUIRES: the pipe was accepted.
  void Start();
  // Sends an ErrorResponse and closes once it is written.
  void Refuse(CheckStatus status, std::string_view message);
  // Stops reading; closes once everything read has been answered and flushed.
  void Drain();
  // Closes now, dropping unsent output. Idempotent.
  void Close();

  // RequestContext.
  void Write(std::span<const uint8_t> frame) override;
  uint64_t CheckStarted(uint64_t id) override;
  void OnCheckDone(uint64_t tag, const CheckResult& result) override;

 private:
  enum class State { kReading, kPaused, kDraining, kClosing, kClosed };

  // A check handed to the engine: the engine's tag is its index in in_flight_. A free slot
  // holds the index of the next free one, so taking and freeing a slot is two moves.
  struct InFlight {
    uint64_t id = 0;          // The request's id, echoed in the answer.
    uint64_t started_ns = 0;  // uv_hrtime() of the read that brought it.
    uint32_t next_free = 0;
  };
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  void TransitionTo(State next);
  void OnData(std::span<const uint8_t> data);
  void OnWriteDone(int status);
  void Flush();
  void ApplyBackpressure();
  void FinishIfDrained();
  void FreeIfDone();
  uv_buf_t NextReadBuffer();
  bool OverCap() const;
  bool UnderLowWater() const;

  static void AllocTrampoline(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void ReadTrampoline(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void WriteTrampoline(uv_write_t* req, int status);
  static void CloseTrampoline(uv_handle_t* handle);

  Server& server_;
  uv_pipe_t pipe_;
  uv_write_t write_req_;
  State state_ = State::kReading;
  FrameReader reader_;
  std::vector<uint8_t> out_;      // Frames queued since the last write started.
  std::vector<uint8_t> writing_;  // Bytes owned by write_req_ while a write is in flight.
  bool write_in_flight_ = false;
  size_t pending_checks_ = 0;        // Checks handed to the engine and not yet answered.
  std::vector<InFlight> in_flight_;  // Slots, live or free; reused, so steady state allocates
  uint32_t free_slot_ = kNoSlot;     // nothing. The first free one, or kNoSlot.
  bool in_read_ = false;             // Inside OnData, which flushes once for the whole read.
  uint64_t read_started_ns_ = 0;     // When the current (or last) read began.
  uint64_t answered_in_read_ = 0;    // Checks of the current read answered during it.
  ReadScheduler::Share read_share_;  // What Server::reads() granted this connection.
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_CONNECTION_H_
