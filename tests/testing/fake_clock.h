// FakeClock: a Clock that tests move by hand, in microseconds.
#ifndef RATELIMIT_TESTS_TESTING_FAKE_CLOCK_H_
#define RATELIMIT_TESTS_TESTING_FAKE_CLOCK_H_

#include <cstdint>

#include "sidecar/core/clock.h"

namespace ratelimit {

// Starts at `start_us` and moves only when told. Setting it backwards is allowed, to test logic
// that must tolerate clocks that step back.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 1'000'000) : now_us_(start_us) {}

  int64_t NowMicros() override { return now_us_; }
  void AdvanceMicros(int64_t us) { now_us_ += us; }
  void AdvanceMillis(int64_t ms) { now_us_ += ms * 1000; }
  void SetMicros(int64_t us) { now_us_ = us; }

 private:
  int64_t now_us_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_FAKE_CLOCK_H_
