// RequestHandler: turns one verified frame into a limiter call or a reply; no sockets involved.
#include "sidecar/server/request_handler.h"

namespace ratelimit {

Status RequestHandler::HandleFrame(std::span<const uint8_t> frame, RequestContext& context) {
  Result<const wire::Frame*> verified = verifier_.Verify(frame);
  if (!verified.ok()) {
    WriteError(0, CheckStatus::kInvalidRequest, verified.status().message(), context);
    return verified.status();
  }
  const wire::Frame& root = **verified;
  const uint64_t id = root.id();
  // The Verifier accepts a union whose type is set but whose table is absent: check both.
  switch (root.body() == nullptr ? wire::Body::NONE : root.body_type()) {
    case wire::Body::CheckRequest:
      limiter_.Check(ToCheckArgs(*root.body_as_CheckRequest()), context.CheckStarted(id), context);
      return Status::Ok();
    case wire::Body::PingRequest: {
      Engine& engine = limiter_.engine();
      context.Write(
          encoder_.PingResponse(id, kProtocolVersion, engine.store_name(), engine.ready()));
      return Status::Ok();
    }
    case wire::Body::NONE:
    case wire::Body::CheckResponse:
    case wire::Body::PingResponse:
    case wire::Body::ErrorResponse:
      break;
  }
  // Responses sent to the sidecar, a missing body, or a union member this build does not know.
  std::string message = "frame body type " + std::to_string(static_cast<int>(root.body_type())) +
                        " is not a request this sidecar serves";
  WriteError(id, CheckStatus::kInvalidRequest, message, context);
  return Status::ProtocolError(std::move(message));
}

void RequestHandler::AnswerCheck(uint64_t id, const CheckResult& result, RequestContext& context) {
  context.Write(encoder_.CheckResponse(id, result));
}

void RequestHandler::WriteError(uint64_t id, CheckStatus status, std::string_view message,
                                RequestContext& context) {
  context.Write(encoder_.ErrorResponse(id, status, message));
}

}  // namespace ratelimit
