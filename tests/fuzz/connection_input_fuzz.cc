// Fuzz target: client bytes through the request side of a connection, as the socket delivers them.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "schema/frame_codec.h"
#include "sidecar/core/limiter.h"
#include "sidecar/core/memory_engine.h"
#include "sidecar/server/request_stream.h"
#include "sidecar/server/server_metrics.h"
#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

// Stands in for the connection: insists every frame the sidecar writes verifies, and that once
// the stream refused a frame the last thing it wrote is an ErrorResponse and nothing follows.
class CheckingSink final : public FrameSink {
 public:
  void Queue(std::span<const uint8_t> frame) override {
    Result<const wire::Frame*> root = verifier_.Verify(frame);
    if (!root.ok()) std::abort();  // The sidecar wrote an invalid frame.
    last_type_ = (*root)->body_type();
    ++queued_;
  }
  void Send() override {}

  size_t queued() const { return queued_; }
  wire::Body last_type() const { return last_type_; }

 private:
  FrameVerifier verifier_;
  size_t queued_ = 0;
  wire::Body last_type_ = wire::Body::NONE;
};

uint64_t now_ns = 0;
uint64_t TickingNow() { return now_ns += 1000; }

}  // namespace
}  // namespace ratelimit

// The first byte chooses how the rest is cut into reads (1 to 256 bytes each), so the fuzzer
// explores frames split at every boundary as well as frame contents.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ratelimit;
  if (size == 0) return 0;
  const size_t chunk = static_cast<size_t>(data[0]) + 1;
  std::span<const uint8_t> rest(data + 1, size - 1);

  FakeClock clock;
  std::unique_ptr<MemoryEngine> engine =
      NewMemoryEngine((data[0] & 1) != 0 ? Algorithm::kFixedWindow : Algorithm::kTokenBucket, clock,
                      HashKey{1, 2}, 1000);
  Limiter limiter(Policy{10, 1000}, *engine);
  ServerMetrics metrics;
  RequestShared shared{limiter, metrics, 4096, &TickingNow};
  CheckingSink sink;
  RequestStream stream(shared, sink);

  bool open = true;
  while (open && !rest.empty()) {
    const std::span<const uint8_t> piece = rest.first(std::min(chunk, rest.size()));
    rest = rest.subspan(piece.size());
    open = stream.Feed(piece);
    clock.AdvanceMicros(137);
    engine->Sweep(64);
  }
  if (stream.pending() != 0) std::abort();  // The memory engine answers every check at once.
  // A refused stream said why, last, and counted one bad frame; an open one counted none.
  if (metrics.bad_frames.value() != (open ? 0u : 1u)) std::abort();
  if (!open && sink.last_type() != wire::Body::ErrorResponse) std::abort();
  const size_t queued = sink.queued();
  if (!open && (stream.Feed({data + 1, size - 1}) || sink.queued() != queued)) {
    std::abort();  // A refused stream serves nothing more.
  }
  return 0;
}
