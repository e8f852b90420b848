// CircuitBreaker: stops sending work to a store that keeps failing, and probes it back.
#ifndef RATELIMIT_SIDECAR_CORE_CIRCUIT_BREAKER_H_
#define RATELIMIT_SIDECAR_CORE_CIRCUIT_BREAKER_H_

#include <cstdint>

namespace ratelimit {

// A database that accepts connections but fails or times out every transaction (a table locked
// for seconds, a dropped table, a revoked permission, a frozen server) would otherwise cost each
// check up to a whole timeout while it waits behind transactions that are bound to fail. The
// breaker turns "known to be failing" into "not ready", which the engines answer at once by the
// fallback:
//
//   kClosed   --kFailureThreshold failures in a row-->   kOpen (for open_ms)
//   kOpen     --open_ms passed, one request starts-->    kHalfOpen (that request is the probe)
//   kHalfOpen --the probe succeeds-->                    kClosed
//   kHalfOpen --the probe fails-->                       kOpen, open_ms doubled up to kMaxOpenMs
//
// While open, and while the probe is in flight, Admits() is false: nothing queues behind the
// probe. A success of any request closes the breaker (the database answered). Times are
// milliseconds of one monotonic clock, passed in: the breaker reads no clock itself.
// Thread-safety: not thread-safe; one owner (the store, on the loop thread).
class CircuitBreaker {
 public:
  enum class State { kClosed, kOpen, kHalfOpen };

  static constexpr uint32_t kFailureThreshold = 2;
  static constexpr uint64_t kMinOpenMs = 200;
  static constexpr uint64_t kMaxOpenMs = 1000;

  // Whether a request may start at `now_ms`.
  bool Admits(uint64_t now_ms) const;

  // A request starts. REQUIRES: Admits(now_ms). When the open period is over, this request
  // becomes the probe.
  void OnStart(uint64_t now_ms);

  // A request ended. Returns true when this changed the state between closed and not closed
  // (worth one log line).
  bool OnSuccess();
  bool OnFailure(uint64_t now_ms);

  State state() const { return state_; }

 private:
  void Open(uint64_t now_ms);

  State state_ = State::kClosed;
  uint32_t failures_ = 0;  // In a row, while closed.
  uint64_t open_ms_ = kMinOpenMs;
  uint64_t open_until_ms_ = 0;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_CIRCUIT_BREAKER_H_
