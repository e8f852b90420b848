// Fixed window arithmetic, reproducing the older Node gateway's limiter exactly.
#include "sidecar/core/fixed_window.h"

#include <algorithm>

namespace ratelimit {
namespace {

// Milliseconds of the current window still to run, within [0, window_ms].
uint32_t MillisLeft(const FixedWindow::State& state, int64_t now_ms) {
  const int64_t left = state.policy.window_ms - (now_ms - state.window_start_ms);
  return static_cast<uint32_t>(std::clamp<int64_t>(left, 0, state.policy.window_ms));
}

}  // namespace

int64_t FixedWindow::FloorMillis(int64_t us) { return us >= 0 ? us / 1000 : -((-us + 999) / 1000); }

FixedWindow::State FixedWindow::Fresh(const Policy& policy, int64_t now_us) {
  return State{FloorMillis(now_us), policy.limit, policy, now_us};
}

CheckResult FixedWindow::Decide(State& state, const Policy& policy, uint32_t cost, int64_t now_us) {
  const int64_t now_ms = FloorMillis(now_us);
  state.used_us = now_us;
  if (IsOver(state, policy, now_us)) {
    // The window is over, by its own length or by the policy's: the same as no state, which the
    // memory store's sweep may already have made it. A window opens now, as for a new key
    // (under a new policy too, rather than extending one that has ended).
    state = Fresh(policy, now_us);
  } else if (!(state.policy == policy)) {
    state.tokens = std::min(state.tokens, policy.limit);
    state.policy = policy;
  }

  CheckResult result;
  result.limit = policy.limit;
  if (state.tokens < cost) {
    result.retry_after_ms = MillisLeft(state, now_ms);
  } else {
    state.tokens -= cost;
    result.allowed = true;
  }
  result.remaining = state.tokens;
  result.reset_after_ms = state.tokens == policy.limit ? 0 : MillisLeft(state, now_ms);
  return result;
}

bool FixedWindow::IsFull(const State& state, int64_t now_us) {
  return FloorMillis(now_us) - state.window_start_ms >= state.policy.window_ms;
}

double FixedWindow::ForgetCost(const State& state, int64_t now_us) {
  if (IsFull(state, now_us)) return 0;
  const uint32_t spent = state.policy.limit - std::min(state.tokens, state.policy.limit);
  return static_cast<double>(spent) / static_cast<double>(state.policy.limit);
}

}  // namespace ratelimit
