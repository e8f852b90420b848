// CircuitBreaker: stops sending work to a store that keeps failing, and probes it back.
#include "sidecar/core/circuit_breaker.h"

#include <algorithm>

namespace ratelimit {

bool CircuitBreaker::Admits(uint64_t now_ms) const {
  switch (state_) {
    case State::kClosed:
      return true;
    case State::kOpen:
      return now_ms >= open_until_ms_;
    case State::kHalfOpen:
      return false;  // The probe is in flight.
  }
  return false;
}

void CircuitBreaker::OnStart(uint64_t now_ms) {
  if (state_ == State::kOpen && now_ms >= open_until_ms_) state_ = State::kHalfOpen;
}

bool CircuitBreaker::OnSuccess() {
  const bool changed = state_ != State::kClosed;
  state_ = State::kClosed;
  failures_ = 0;
  open_ms_ = kMinOpenMs;
  return changed;
}

bool CircuitBreaker::OnFailure(uint64_t now_ms) {
  switch (state_) {
    case State::kClosed:
      if (++failures_ < kFailureThreshold) return false;
      Open(now_ms);
      return true;
    case State::kHalfOpen:
      open_ms_ = std::min(open_ms_ * 2, kMaxOpenMs);
      Open(now_ms);
      return false;
    case State::kOpen:
      // A request that started before the breaker opened: the open period stands.
      return false;
  }
  return false;
}

void CircuitBreaker::Open(uint64_t now_ms) {
  state_ = State::kOpen;
  failures_ = 0;
  open_until_ms_ = now_ms + open_ms_;
}

}  // namespace ratelimit
