// Frame codec: verifies incoming frames and encodes outgoing ones, for sidecar and clients alike.
#include "schema/frame_codec.h"

#include <cstdlib>
#include <cstring>

namespace ratelimit {

static_assert(static_cast<int>(CheckStatus::kOk) == static_cast<int>(wire::Status::Ok));
static_assert(static_cast<int>(CheckStatus::kInvalidRequest) ==
              static_cast<int>(wire::Status::InvalidRequest));
static_assert(static_cast<int>(CheckStatus::kCostExceedsLimit) ==
              static_cast<int>(wire::Status::CostExceedsLimit));
static_assert(static_cast<int>(CheckStatus::kStoreUnavailable) ==
              static_cast<int>(wire::Status::StoreUnavailable));
static_assert(static_cast<int>(CheckStatus::kOverloaded) ==
              static_cast<int>(wire::Status::Overloaded));
static_assert(static_cast<int>(CheckStatus::kShuttingDown) ==
              static_cast<int>(wire::Status::ShuttingDown));
static_assert(static_cast<int>(Source::kMemory) == static_cast<int>(wire::Source::Memory));
static_assert(static_cast<int>(Source::kLease) == static_cast<int>(wire::Source::Lease));
static_assert(static_cast<int>(Source::kDatabase) == static_cast<int>(wire::Source::Database));
static_assert(static_cast<int>(Source::kFallback) == static_cast<int>(wire::Source::Fallback));

namespace {

// A Frame holds one body table with at most one string or vector: depth and table counts far
// above that mean a hostile buffer.
flatbuffers::Verifier::Options TightOptions() {
  flatbuffers::Verifier::Options options;
  options.max_depth = 8;
  options.max_tables = 8;
  options.check_alignment = true;
  options.check_nested_flatbuffers = false;
  return options;
}

}  // namespace

CheckStatus StatusFromWire(wire::Status status) {
  const auto raw = static_cast<uint8_t>(status);
  return raw <= static_cast<uint8_t>(CheckStatus::kShuttingDown) ? static_cast<CheckStatus>(raw)
                                                                 : CheckStatus::kStoreUnavailable;
}

Source SourceFromWire(wire::Source source) {
  const auto raw = static_cast<uint8_t>(source);
  return raw <= static_cast<uint8_t>(Source::kFallback) ? static_cast<Source>(raw)
                                                        : Source::kFallback;
}

Result<const wire::Frame*> FrameVerifier::Verify(std::span<const uint8_t> frame) {
  if (frame.size() <= kFramePrefixBytes) {
    return Status::ProtocolError("frame of " + std::to_string(frame.size()) +
                                 " bytes is too short");
  }
  const uint8_t* bytes = frame.data();
  if (reinterpret_cast<uintptr_t>(bytes) % alignof(uint64_t) != 0) {
    scratch_.resize((frame.size() + 7) / 8);
    std::memcpy(scratch_.data(), bytes, frame.size());
    bytes = reinterpret_cast<const uint8_t*>(scratch_.data());
  }
  flatbuffers::Verifier verifier(bytes, frame.size(), TightOptions());
  if (!wire::VerifySizePrefixedFrameBuffer(verifier)) {
    return Status::ProtocolError("frame failed FlatBuffers verification");
  }
  return wire::GetSizePrefixedFrame(bytes);
}

std::span<const uint8_t> FrameEncoder::Finish(uint64_t id, wire::Body type,
                                              flatbuffers::Offset<void> body) {
  builder_.FinishSizePrefixed(wire::CreateFrame(builder_, id, type, body));
  return {builder_.GetBufferPointer(), builder_.GetSize()};
}

std::span<const uint8_t> FrameEncoder::CheckRequest(uint64_t id, const CheckArgs& args) {
  builder_.Clear();
  const auto key = builder_.CreateString(args.key.data(), args.key.size());
  const auto body = wire::CreateCheckRequest(builder_, key, args.cost, args.limit, args.window_ms);
  return Finish(id, wire::Body::CheckRequest, body.Union());
}

FrameEncoder::ResponseLayout FrameEncoder::BuildResponseLayout() {
  flatbuffers::FlatBufferBuilder builder(128);
  builder.ForceDefaults(true);  // Every field present, so every response has this layout.
  const auto body =
      wire::CreateCheckResponse(builder, false, wire::Status::Ok, 0, 0, 0, 0, wire::Source::Memory);
  builder.FinishSizePrefixed(
      wire::CreateFrame(builder, 0, wire::Body::CheckResponse, body.Union()));
  ResponseLayout layout;
  layout.bytes.assign(builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize());
  const uint8_t* base = layout.bytes.data();
  const auto* frame = reinterpret_cast<const flatbuffers::Table*>(wire::GetSizePrefixedFrame(base));
  const auto* table =
      reinterpret_cast<const flatbuffers::Table*>(wire::GetSizePrefixedFrame(base)->body());
  auto at = [base](const flatbuffers::Table* t, flatbuffers::voffset_t field) {
    const uint8_t* address = t->GetAddressOf(field);
    if (address == nullptr) abort();  // ForceDefaults wrote every field; anything else is a bug.
    return static_cast<size_t>(address - base);
  };
  layout.id = at(frame, wire::Frame::VT_ID);
  layout.allowed = at(table, wire::CheckResponse::VT_ALLOWED);
  layout.status = at(table, wire::CheckResponse::VT_STATUS);
  layout.limit = at(table, wire::CheckResponse::VT_LIMIT);
  layout.remaining = at(table, wire::CheckResponse::VT_REMAINING);
  layout.retry_after_ms = at(table, wire::CheckResponse::VT_RETRY_AFTER_MS);
  layout.reset_after_ms = at(table, wire::CheckResponse::VT_RESET_AFTER_MS);
  layout.source = at(table, wire::CheckResponse::VT_SOURCE);
  return layout;
}

std::span<const uint8_t> FrameEncoder::CheckResponse(uint64_t id, const CheckResult& result) {
  response_.assign(layout_.bytes.begin(), layout_.bytes.end());  // Capacity is kept: no alloc.
  uint8_t* p = response_.data();
  flatbuffers::WriteScalar<uint64_t>(p + layout_.id, id);
  flatbuffers::WriteScalar<uint8_t>(p + layout_.allowed, result.allowed ? 1 : 0);
  flatbuffers::WriteScalar<uint8_t>(p + layout_.status, static_cast<uint8_t>(result.status));
  flatbuffers::WriteScalar<uint32_t>(p + layout_.limit, result.limit);
  flatbuffers::WriteScalar<uint32_t>(p + layout_.remaining, result.remaining);
  flatbuffers::WriteScalar<uint32_t>(p + layout_.retry_after_ms, result.retry_after_ms);
  flatbuffers::WriteScalar<uint32_t>(p + layout_.reset_after_ms, result.reset_after_ms);
  flatbuffers::WriteScalar<uint8_t>(p + layout_.source, static_cast<uint8_t>(result.source));
  return {response_.data(), response_.size()};
}

std::span<const uint8_t> FrameEncoder::PingRequest(uint64_t id) {
  builder_.Clear();
  return Finish(id, wire::Body::PingRequest, wire::CreatePingRequest(builder_).Union());
}

std::span<const uint8_t> FrameEncoder::PingResponse(uint64_t id, uint16_t protocol_version,
                                                    std::string_view store, bool ready) {
  builder_.Clear();
  const auto name = builder_.CreateString(store.data(), store.size());
  const auto body = wire::CreatePingResponse(builder_, protocol_version, name, ready);
  return Finish(id, wire::Body::PingResponse, body.Union());
}

std::span<const uint8_t> FrameEncoder::ErrorResponse(uint64_t id, CheckStatus status,
                                                     std::string_view message) {
  builder_.Clear();
  const auto text = builder_.CreateString(message.data(), message.size());
  const auto body = wire::CreateErrorResponse(builder_, static_cast<wire::Status>(status), text);
  return Finish(id, wire::Body::ErrorResponse, body.Union());
}

CheckArgs ToCheckArgs(const wire::CheckRequest& request) {
  const flatbuffers::String* key = request.key();  // Required: the Verifier ensured it is set.
  return CheckArgs{std::string_view(key->data(), key->size()), request.cost(), request.limit(),
                   request.window_ms()};
}

CheckResult ToCheckResult(const wire::CheckResponse& response) {
  CheckResult result;
  result.allowed = response.allowed();
  result.status = StatusFromWire(response.status());
  result.limit = response.limit();
  result.remaining = response.remaining();
  result.retry_after_ms = response.retry_after_ms();
  result.reset_after_ms = response.reset_after_ms();
  result.source = SourceFromWire(response.source());
  return result;
}

}  // namespace ratelimit
