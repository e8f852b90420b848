// Token bucket arithmetic: continuous refill, exact to the microsecond, no floating point.
#include "sidecar/core/token_bucket.h"

#include <algorithm>
#include <limits>

namespace ratelimit {
namespace {

uint128_t WindowMicros(const Policy& policy) {
  return static_cast<uint128_t>(policy.window_ms) * 1000;
}

uint128_t Capacity(const Policy& policy) { return policy.limit * WindowMicros(policy); }

void Refill(TokenBucket::State& state, int64_t now_us) {
  if (now_us <= state.updated_us) return;  // A clock that stands still or steps back adds nothing.
  const uint128_t elapsed = static_cast<uint64_t>(now_us - state.updated_us);
  const uint128_t capacity = Capacity(state.policy);
  const uint128_t missing = capacity - state.level;
  const uint128_t gained = elapsed * state.policy.limit;
  state.level = gained >= missing ? capacity : uint128_t{state.level} + gained;
  state.updated_us = now_us;
}

// Keeps the number of tokens (fractions included) and clamps it to the new capacity.
void Rescale(TokenBucket::State& state, const Policy& policy) {
  const uint128_t tokens_scaled = uint128_t{state.level} * WindowMicros(policy);  // < 2^116
  state.level = std::min(tokens_scaled / WindowMicros(state.policy), Capacity(policy));
  state.policy = policy;
}

}  // namespace

TokenBucket::State TokenBucket::Fresh(const Policy& policy, int64_t now_us) {
  return State{Capacity(policy), now_us, policy};
}

CheckResult TokenBucket::Decide(State& state, const Policy& policy, uint32_t cost, int64_t now_us) {
  Refill(state, now_us);
  if (!(state.policy == policy)) {
    // A full bucket means the same as none, and the memory store's sweep forgets it at a time
    // of its own: it starts over full under the new policy, as a forgotten one would, so that
    // the answer never depends on whether the sweep came first.
    if (state.level == Capacity(state.policy)) {
      state = Fresh(policy, now_us);
    } else {
      Rescale(state, policy);
    }
  }

  const uint128_t window_us = WindowMicros(policy);
  const uint128_t need = cost * window_us;
  CheckResult result;
  result.limit = policy.limit;
  const uint128_t level = state.level;
  if (level >= need) {
    state.level = level - need;
    result.allowed = true;
  } else {
    result.retry_after_ms = MillisToGain(need - level, policy);
  }
  const uint128_t left = state.level;
  result.remaining = static_cast<uint32_t>(left / window_us);
  result.reset_after_ms = MillisToGain(Capacity(policy) - left, policy);
  return result;
}

uint32_t TokenBucket::Refund(State& state, uint32_t tokens, uint64_t age_us, int64_t now_us) {
  Refill(state, now_us);
  const uint128_t window_us = WindowMicros(state.policy);
  const uint128_t owed = tokens * window_us;
  const uint128_t refilled = static_cast<uint128_t>(age_us) * state.policy.limit;  // < 2^96
  if (refilled >= owed) return 0;
  const uint128_t before = state.level;
  state.level = std::min(Capacity(state.policy), before + (owed - refilled));
  return static_cast<uint32_t>((uint128_t{state.level} - before) / window_us);
}

uint32_t TokenBucket::MillisToGain(uint128_t units, const Policy& policy) {
  const uint128_t per_ms = static_cast<uint128_t>(policy.limit) * 1000;
  const uint128_t ms = (units + per_ms - 1) / per_ms;
  return static_cast<uint32_t>(std::min<uint128_t>(ms, std::numeric_limits<uint32_t>::max()));
}

bool TokenBucket::IsFull(const State& state, int64_t now_us) {
  const uint128_t missing = Capacity(state.policy) - state.level;
  if (missing == 0) return true;
  if (now_us <= state.updated_us) return false;
  const uint128_t elapsed = static_cast<uint64_t>(now_us - state.updated_us);
  return elapsed * state.policy.limit >= missing;
}

double TokenBucket::ForgetCost(const State& state, int64_t now_us) {
  const uint128_t capacity = Capacity(state.policy);
  uint128_t missing = capacity - state.level;
  if (now_us > state.updated_us) {
    const uint128_t gained =
        static_cast<uint64_t>(now_us - state.updated_us) * uint128_t{state.policy.limit};
    missing = gained >= missing ? 0 : missing - gained;
  }
  return static_cast<double>(missing) / static_cast<double>(capacity);
}

}  // namespace ratelimit
