// RequestStream: the request side of one connection: bytes in, checks to the limiter, answers out.
#ifndef RATELIMIT_SIDECAR_SERVER_REQUEST_STREAM_H_
#define RATELIMIT_SIDECAR_SERVER_REQUEST_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "schema/check.h"
#include "schema/frame_codec.h"
#include "schema/frame_reader.h"
#include "sidecar/core/limiter.h"
#include "sidecar/server/server_metrics.h"

namespace ratelimit {

// Where a RequestStream's frames go: the transport of its connection. The stream only ever
// hands frames forward; it never asks the sink for anything.
class FrameSink {
 public:
  // Queues one complete frame for the peer; the bytes are copied before returning. A sink that
  // can no longer send (its connection is closing) drops them.
  virtual void Queue(std::span<const uint8_t> frame) = 0;
  // What is queued may go now. Called once at the end of every Feed, and after every answer
  // that arrives outside a Feed (an engine deciding later).
  virtual void Send() = 0;

 protected:
  ~FrameSink() = default;
};

// Reads a monotonic clock in nanoseconds: uv_hrtime in production, a fake in tests.
using NowNs = uint64_t (*)();

// What every RequestStream of a server shares. Owned by the server, which outlives its streams.
// One verifier and one encoder serve every stream of the loop: a frame is verified and served,
// or encoded and copied into a sink, before the next one is touched.
struct RequestShared {
  Limiter& limiter;
  ServerMetrics& metrics;  // Checks by decision, latency, bad frames.
  uint32_t max_frame_bytes;
  NowNs now_ns;
  FrameVerifier verifier{};
  FrameEncoder encoder{};
};

// The request side of one connection, with no socket in sight. Feed cuts the peer's bytes into
// frames (FrameReader), verifies each (FrameVerifier) and serves it: a PingRequest is answered
// at once, a CheckRequest goes to the limiter and its answer is encoded when the decision comes,
// during the Feed or later. Every answer goes forward to the sink, in the order decided.
//
// A frame that cannot be served (a length of 0 or over max_frame_bytes, failed verification, a
// body that is not a request) refuses the stream, here and nowhere else: it is logged, counted
// in metrics.bad_frames and answered with an ErrorResponse (carrying the frame's id when it was
// verified, else 0), and nothing after it is served. Checks read before it are still answered.
//
// A check in flight holds a slot, reused by later checks, so the steady state allocates
// nothing; the slot's index is the tag the limiter hands back. Each answered check is counted
// (ServerMetrics::CountCheck) and its latency observed: from the start of the Feed that read it
// to its answer being handed to the sink. Checks answered during that Feed share one
// measurement, taken just before the Feed's Send, since their answers leave together; so every
// series counts a check before its answer can reach the client.
//
// Thread-safety: the loop thread only. `shared` and `sink` must outlive the stream, and the
// stream must outlive its checks in flight (pending() == 0 when it is destroyed).
class RequestStream final : public CheckCallback {
 public:
  RequestStream(RequestShared& shared, FrameSink& sink);
  RequestStream(const RequestStream&) = delete;
  RequestStream& operator=(const RequestStream&) = delete;
  ~RequestStream() = default;

  // Serves the next bytes the peer sent, then calls sink.Send() once. Returns false when the
  // stream is refused (by these bytes or earlier): the caller reads nothing more and closes
  // once what was queued is written and nothing is pending.
  [[nodiscard]] bool Feed(std::span<const uint8_t> bytes);

  // Refuses the whole connection before anything was read from it (it is over a cap, say):
  // queues an ErrorResponse with id 0. Not a bad frame, so not counted as one. The caller then
  // closes once it is written.
  void Refuse(CheckStatus status, std::string_view message);

  // Checks handed to the limiter and not yet answered.
  size_t pending() const { return pending_; }
  // Whether the peer's bytes end inside a frame.
  bool inside_frame() const { return reader_.has_partial(); }

  // CheckCallback: the decision for the check in slot `tag`.
  void OnCheckDone(uint64_t tag, const CheckResult& result) override;

 private:
  // A check handed to the limiter. A free slot holds the index of the next free one, so taking
  // and freeing a slot is two moves.
  struct InFlight {
    uint64_t id = 0;          // The request's id, echoed in the answer.
    uint64_t started_ns = 0;  // The start of the Feed that read it.
    uint32_t next_free = 0;
  };
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  // Serves one frame; returns false once the stream is refused.
  bool Serve(std::span<const uint8_t> frame);
  // The one place a bad frame is handled. Returns false, for Serve to return.
  bool RefuseFrame(uint64_t id, std::string_view message);
  uint32_t TakeSlot(uint64_t id);
  InFlight FreeSlot(uint64_t tag);

  RequestShared& shared_;
  FrameSink& sink_;
  FrameReader reader_;
  bool refused_ = false;
  bool in_feed_ = false;             // Inside Feed, which sends once for all it answers.
  uint64_t feed_started_ns_ = 0;     // When the current (or last) Feed began.
  uint64_t answered_in_feed_ = 0;    // Checks of the current Feed answered during it.
  size_t pending_ = 0;               // Slots in use.
  std::vector<InFlight> in_flight_;  // Slots, live or free.
  uint32_t free_slot_ = kNoSlot;     // The first free slot, or kNoSlot.
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_REQUEST_STREAM_H_
