// RequestHandler: turns one verified frame into a limiter call or a reply; no sockets involved.
#ifndef RATELIMIT_SIDECAR_SERVER_REQUEST_HANDLER_H_
#define RATELIMIT_SIDECAR_SERVER_REQUEST_HANDLER_H_

#include <cstdint>
#include <span>

#include "schema/frame_codec.h"
#include "schema/status.h"
#include "sidecar/core/limiter.h"

namespace ratelimit {

// The connection side of a request: where reply frames go. Check decisions come back through
// the CheckCallback side, with the request's id as the tag; the implementation then calls
// RequestHandler::AnswerCheck.
class RequestContext : public CheckCallback {
 public:
  // Queues a complete frame for the peer; the bytes are copied before returning.
  virtual void Write(std::span<const uint8_t> frame) = 0;
  // Called just before the check of request `id` goes to the limiter. Returns the tag that
  // its OnCheckDone will carry, now or later (the request id itself, or a slot of the
  // context's own, which then answers with RequestHandler::AnswerCheck(id, ...)).
  virtual uint64_t CheckStarted(uint64_t id) = 0;

 protected:
  ~RequestContext() = default;
};

// Dispatches frames by body type: CheckRequest to the limiter, PingRequest answered at once,
// anything else refused with an ErrorResponse. Shared by every connection of a server, so that
// the transport (libuv today, a fuzzer or benchmark harness elsewhere) stays apart from protocol.
// Thread-safety: the loop thread only. The limiter must outlive the handler.
class RequestHandler {
 public:
  explicit RequestHandler(Limiter& limiter) : limiter_(limiter) {}

  // Handles one complete frame (prefix included). Returns OK, or ProtocolError after writing an
  // ErrorResponse to `context`: the caller must then stop reading and close the connection.
  Status HandleFrame(std::span<const uint8_t> frame, RequestContext& context);

  // Writes a CheckResponse for request `id`.
  void AnswerCheck(uint64_t id, const CheckResult& result, RequestContext& context);

  // Writes an ErrorResponse: for framing errors, refused connections and the like.
  void WriteError(uint64_t id, CheckStatus status, std::string_view message,
                  RequestContext& context);

 private:
  Limiter& limiter_;
  FrameVerifier verifier_;
  FrameEncoder encoder_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_REQUEST_HANDLER_H_
