// Clock: the one seam through which pure logic learns the time.
#ifndef RATELIMIT_SIDECAR_CORE_CLOCK_H_
#define RATELIMIT_SIDECAR_CORE_CLOCK_H_

#include <cstdint>

namespace ratelimit {

// A monotonic clock in microseconds since an arbitrary origin. It never goes backwards within
// one process; logic must still tolerate a reading equal to or below an earlier one.
// Thread-safety: implementations are called from the loop thread only.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMicros() = 0;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_CLOCK_H_
