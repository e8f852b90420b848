// SteadyClock: the production Clock, CLOCK_MONOTONIC in microseconds.
#ifndef RATELIMIT_SIDECAR_SERVER_STEADY_CLOCK_H_
#define RATELIMIT_SIDECAR_SERVER_STEADY_CLOCK_H_

#include <time.h>

#include "sidecar/core/clock.h"

namespace ratelimit {

// Reads CLOCK_MONOTONIC (a vDSO call, no system call) on every use. Stateless; any thread.
class SteadyClock final : public Clock {
 public:
  int64_t NowMicros() override {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
  }
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_STEADY_CLOCK_H_
