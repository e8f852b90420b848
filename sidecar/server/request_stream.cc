// RequestStream: the request side of one connection: bytes in, checks to the limiter, answers out.
#include "sidecar/server/request_stream.h"

#include <string>

#include "sidecar/log/log.h"

namespace ratelimit {

RequestStream::RequestStream(RequestShared& shared, FrameSink& sink)
    : shared_(shared), sink_(sink), reader_(shared.max_frame_bytes) {}

bool RequestStream::Feed(std::span<const uint8_t> bytes) {
  if (refused_) return false;
  in_feed_ = true;
  feed_started_ns_ = shared_.now_ns();
  answered_in_feed_ = 0;
  const Status framed =
      reader_.Feed(bytes, [this](std::span<const uint8_t> frame) { return Serve(frame); });
  in_feed_ = false;
  if (!framed.ok()) RefuseFrame(0, framed.message());
  // One clock reading for every check this Feed answered: their answers leave together. Taken
  // as they are handed to the socket, not after, so that a client that has its answer and then
  // scrapes /metrics (another thread) finds the check in every series.
  if (answered_in_feed_ > 0) {
    shared_.metrics.latency.Observe(shared_.now_ns() - feed_started_ns_, answered_in_feed_);
  }
  sink_.Send();
  return !refused_;
}

bool RequestStream::Serve(std::span<const uint8_t> frame) {
  Result<const wire::Frame*> verified = shared_.verifier.Verify(frame);
  if (!verified.ok()) return RefuseFrame(0, verified.status().message());
  const wire::Frame& root = **verified;
  const uint64_t id = root.id();
  // The Verifier accepts a union whose type is set but whose table is absent: check both.
  switch (root.body() == nullptr ? wire::Body::NONE : root.body_type()) {
    case wire::Body::CheckRequest:
      shared_.limiter.Check(ToCheckArgs(*root.body_as_CheckRequest()), TakeSlot(id), *this);
      return true;
    case wire::Body::PingRequest: {
      Engine& engine = shared_.limiter.engine();
      sink_.Queue(
          shared_.encoder.PingResponse(id, kProtocolVersion, engine.store_name(), engine.ready()));
      return true;
    }
    case wire::Body::NONE:
    case wire::Body::CheckResponse:
    case wire::Body::PingResponse:
    case wire::Body::ErrorResponse:
      break;
  }
  // Responses sent to the sidecar, a missing body, or a union member this build does not know.
  return RefuseFrame(id, "frame body type " + std::to_string(static_cast<int>(root.body_type())) +
                             " is not a request this sidecar serves");
}

bool RequestStream::RefuseFrame(uint64_t id, std::string_view message) {
  Log(LogLevel::kDebug, "closing connection after bad frame").Str("error", message);
  shared_.metrics.bad_frames.Add();
  sink_.Queue(shared_.encoder.ErrorResponse(id, CheckStatus::kInvalidRequest, message));
  refused_ = true;
  return false;
}

void RequestStream::Refuse(CheckStatus status, std::string_view message) {
  sink_.Queue(shared_.encoder.ErrorResponse(0, status, message));
  refused_ = true;
}

void RequestStream::OnCheckDone(uint64_t tag, const CheckResult& result) {
  const InFlight check = FreeSlot(tag);
  ServerMetrics& metrics = shared_.metrics;
  metrics.CountCheck(result);  // Decided, whether or not anyone is left to hear it.
  if (in_feed_ && check.started_ns == feed_started_ns_) {
    ++answered_in_feed_;  // Measured once at the end of the Feed.
  } else {
    metrics.latency.Observe(shared_.now_ns() - check.started_ns);
  }
  sink_.Queue(shared_.encoder.CheckResponse(check.id, result));
  if (!in_feed_) sink_.Send();  // An engine answering later, outside any Feed: send it now.
}

uint32_t RequestStream::TakeSlot(uint64_t id) {
  ++pending_;
  uint32_t slot = free_slot_;
  if (slot == kNoSlot) {
    slot = static_cast<uint32_t>(in_flight_.size());
    in_flight_.emplace_back();
  } else {
    free_slot_ = in_flight_[slot].next_free;
  }
  InFlight& check = in_flight_[slot];
  check.id = id;
  check.started_ns = feed_started_ns_;
  return slot;
}

RequestStream::InFlight RequestStream::FreeSlot(uint64_t tag) {
  InFlight& slot = in_flight_[tag];
  const InFlight check = slot;
  slot.next_free = free_slot_;
  free_slot_ = static_cast<uint32_t>(tag);
  --pending_;
  return check;
}

}  // namespace ratelimit
