// Frame codec: verifies incoming frames and encodes outgoing ones, for sidecar and clients alike.
#ifndef RATELIMIT_SCHEMA_FRAME_CODEC_H_
#define RATELIMIT_SCHEMA_FRAME_CODEC_H_

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "flatbuffers/flatbuffers.h"
#include "ratelimit_generated.h"
#include "schema/check.h"
#include "schema/frame_reader.h"
#include "schema/status.h"

namespace ratelimit {

// Version of the protocol this build speaks, reported in PingResponse.protocol_version.
inline constexpr uint16_t kProtocolVersion = 1;

// Turns a complete frame (prefix + payload, as FrameReader hands it out) into its root table,
// after the FlatBuffers Verifier has passed it with tight limits: nothing is read before that.
// A frame that is not 8-byte aligned in memory is first copied into an aligned scratch buffer.
// Thread-safety: none; one verifier per reader.
class FrameVerifier {
 public:
  // On success the returned table is valid until the next call, and as long as `frame`'s bytes.
  Result<const wire::Frame*> Verify(std::span<const uint8_t> frame);

 private:
  std::vector<uint64_t> scratch_;
};

// Builds frames in a reused FlatBufferBuilder. Every method returns the whole size-prefixed
// frame, valid until the next call on this encoder.
//
// CheckResponse, the frame sent for every check, is not assembled by the builder each time:
// with every field written (ForceDefaults) all CheckResponse frames share one layout, so the
// builder makes it once and each response is a copy with the values written at the offsets
// the FlatBuffers API reports for that layout. Assembling the table was about a third of the
// sidecar's instructions under load.
// Thread-safety: none; one encoder per thread.
class FrameEncoder {
 public:
  std::span<const uint8_t> CheckRequest(uint64_t id, const CheckArgs& args);
  std::span<const uint8_t> CheckResponse(uint64_t id, const CheckResult& result);
  std::span<const uint8_t> PingRequest(uint64_t id);
  std::span<const uint8_t> PingResponse(uint64_t id, uint16_t protocol_version,
                                        std::string_view store, bool ready);
  std::span<const uint8_t> ErrorResponse(uint64_t id, CheckStatus status, std::string_view message);

 private:
  std::span<const uint8_t> Finish(uint64_t id, wire::Body type, flatbuffers::Offset<void> body);

  // A CheckResponse frame and where each of its scalars lives in it.
  struct ResponseLayout {
    std::vector<uint8_t> bytes;
    size_t id = 0, allowed = 0, status = 0, limit = 0, remaining = 0, retry_after_ms = 0,
           reset_after_ms = 0, source = 0;
  };
  static ResponseLayout BuildResponseLayout();

  flatbuffers::FlatBufferBuilder builder_{256};
  const ResponseLayout layout_ = BuildResponseLayout();
  std::vector<uint8_t> response_;
};

// Enum values read from the wire, clamped into the range this build knows, so that a value from
// a newer peer never becomes an out-of-range C++ enum: an unknown status reads as
// StoreUnavailable (nothing was decided), an unknown source as Fallback.
CheckStatus StatusFromWire(wire::Status status);
Source SourceFromWire(wire::Source source);

// Field-by-field views of verified tables. The key view borrows the frame's bytes.
CheckArgs ToCheckArgs(const wire::CheckRequest& request);
CheckResult ToCheckResult(const wire::CheckResponse& response);

}  // namespace ratelimit

#endif  // RATELIMIT_SCHEMA_FRAME_CODEC_H_
