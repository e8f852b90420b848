// ManualClock: a Clock that stands still until told to move, for tests of a running sidecar.
#ifndef RATELIMIT_SIDECAR_CORE_MANUAL_CLOCK_H_
#define RATELIMIT_SIDECAR_CORE_MANUAL_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "sidecar/core/clock.h"

namespace ratelimit {

// Reads `start_us` (the real clock's reading when it was built, so that its times look like the
// real clock's) plus everything Advance has added; nothing else moves it. It only goes forward,
// as the Clock contract requires. This is RATE_LIMIT_TEST_CLOCK=manual: tests of a real sidecar
// process make its buckets refill and its windows end when they choose, not when the machine
// gets round to it.
// Thread-safety: NowMicros on the loop thread; Advance from any thread (the admin server's):
// a reading taken after Advance returned includes the advance.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_us) : now_us_(start_us) {}

  int64_t NowMicros() override { return now_us_.load(); }

  // REQUIRES: 0 <= us, and the sum stays within int64_t (a test advances by days, not aeons).
  void AdvanceMicros(int64_t us) { now_us_.fetch_add(us); }

 private:
  std::atomic<int64_t> now_us_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_MANUAL_CLOCK_H_
