// Fuzz target: client bytes through framing, verification and dispatch, as a connection sees them.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "schema/frame_codec.h"
#include "schema/frame_reader.h"
#include "sidecar/core/limiter.h"
#include "sidecar/core/memory_engine.h"
#include "sidecar/server/request_handler.h"
#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

// Answers checks like a connection does and insists every frame the sidecar writes verifies.
class CheckingContext final : public RequestContext {
 public:
  explicit CheckingContext(RequestHandler& handler) : handler_(handler) {}

  void Write(std::span<const uint8_t> frame) override {
    if (!verifier_.Verify(frame).ok()) std::abort();  // The sidecar wrote an invalid frame.
  }
  uint64_t CheckStarted(uint64_t id) override {
    ++pending_;
    return id;
  }
  void OnCheckDone(uint64_t tag, const CheckResult& result) override {
    if (pending_-- == 0) std::abort();  // An answer nobody asked for.
    handler_.AnswerCheck(tag, result, *this);
  }
  size_t pending() const { return pending_; }

 private:
  RequestHandler& handler_;
  FrameVerifier verifier_;
  size_t pending_ = 0;
};

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
  std::unique_ptr<MemoryEngine> engine = NewMemoryEngine(
      (data[0] & 1) != 0 ? Algorithm::kFixedWindow : Algorithm::kTokenBucket, clock, HashKey{1, 2});
  Limiter limiter(Policy{10, 1000}, *engine);
  RequestHandler handler(limiter);
  CheckingContext context(handler);
  FrameReader reader(4096);

  bool open = true;
  while (open && !rest.empty()) {
    const std::span<const uint8_t> piece = rest.first(std::min(chunk, rest.size()));
    rest = rest.subspan(piece.size());
    const Status fed = reader.Feed(piece, [&](std::span<const uint8_t> frame) {
      open = handler.HandleFrame(frame, context).ok();
      return open;
    });
    open = open && fed.ok();
    clock.AdvanceMicros(137);
    engine->Sweep(64);
  }
  if (context.pending() != 0) std::abort();  // The memory engine answers every check at once.
  return 0;
}
