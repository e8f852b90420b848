// Fixed window arithmetic, reproducing the older Node gateway's limiter exactly.
#ifndef RATELIMIT_SIDECAR_CORE_FIXED_WINDOW_H_
#define RATELIMIT_SIDECAR_CORE_FIXED_WINDOW_H_

#include <cstdint>

#include "schema/check.h"

namespace ratelimit {

// The older gateway kept (tokens, window_start) per key in whole milliseconds:
//   no state: tokens = limit, window_start = now
//   if now - window_start >= window_ms: tokens = limit, window_start = now
//   if tokens < cost: denied, retry_after_ms = max(window_ms - (now - window_start), 0)
//   else tokens -= cost
// A window therefore starts at the first request after the previous one expired. Time is the
// injected monotonic clock truncated to milliseconds, as the gateway truncated Date.now().
//
// Pure functions on a value type; the caller owns the state and supplies the time.
struct FixedWindow {
  struct State {
    int64_t window_start_ms = 0;
    uint32_t tokens = 0;
    Policy policy;
    int64_t used_us = 0;  // When a check last decided on this state (not part of the gateway's).
  };

  static State Fresh(const Policy& policy, int64_t now_us);

  // REQUIRES: policy.limit >= 1, policy.window_ms >= 1, cost <= policy.limit.
  static CheckResult Decide(State& state, const Policy& policy, uint32_t cost, int64_t now_us);

  // True when the next request would find the same as no state: the window has expired. (A
  // window with nothing spent is not the same: it still fixes when the next window starts.)
  static bool IsFull(const State& state, int64_t now_us);

  // True when the window is over by its own length or by `policy`'s: the next check under
  // `policy` opens a new one.
  static bool IsOver(const State& state, const Policy& policy, int64_t now_us) {
    return IsFull(state, now_us) ||
           FloorMillis(now_us) - state.window_start_ms >= int64_t{policy.window_ms};
  }

  // What forgetting the window at `now_us` can over-admit: the tokens spent in it, as a fraction
  // of the limit, in [0, 1]; 0 once it has expired.
  static double ForgetCost(const State& state, int64_t now_us);

  static int64_t LastUsedUs(const State& state) { return state.used_us; }

  // `us` in whole milliseconds, rounded down (also before the epoch): the gateway's clock.
  static int64_t FloorMillis(int64_t us);
  // The first time, in microseconds, at which a check opens the next window: until then the
  // window of `state` holds.
  static int64_t WindowEndUs(const State& state) {
    return (state.window_start_ms + int64_t{state.policy.window_ms}) * 1000;
  }
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_FIXED_WINDOW_H_
