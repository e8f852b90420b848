// Token bucket arithmetic: continuous refill, exact to the microsecond, no floating point.
#ifndef RATELIMIT_SIDECAR_CORE_TOKEN_BUCKET_H_
#define RATELIMIT_SIDECAR_CORE_TOKEN_BUCKET_H_

#include <cstdint>

#include "schema/check.h"

namespace ratelimit {

__extension__ typedef unsigned __int128 uint128_t;

// A uint128_t stored as two 64-bit halves: 8-byte aligned instead of 16, which keeps a bucket
// 16 bytes smaller in the memory store's hash table nodes (about 15 MB per million keys).
struct PackedUint128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  PackedUint128() = default;
  PackedUint128(uint128_t v)  // NOLINT: implicit by design, it is the same number.
      : lo(static_cast<uint64_t>(v)), hi(static_cast<uint64_t>(v >> 64)) {}
  operator uint128_t() const { return static_cast<uint128_t>(hi) << 64 | lo; }
};

// A bucket of capacity `limit` that refills continuously at limit / window_ms tokens per ms.
//
// The level is kept in fixed point: one token is `window_us` units and the bucket gains `limit`
// units per microsecond, so refill is an exact integer product and fractional tokens are never
// rounded away. The largest level, limit * window_us < 2^32 * 2^42, and the largest refill
// product, elapsed_us * limit < 2^63 * 2^32, both fit in 128 bits.
//
// Pure functions on a value type; the caller owns the state and supplies the time.
struct TokenBucket {
  struct State {
    PackedUint128 level;     // Tokens times window_us.
    int64_t updated_us = 0;  // Time the level was last brought up to date.
    Policy policy;
  };

  // A bucket first seen at `now_us`: full.
  static State Fresh(const Policy& policy, int64_t now_us);

  // Refills, rescales to `policy` if it differs from the bucket's, then takes `cost` tokens if
  // they are there. A denial takes nothing. Time that does not move forward refills nothing.
  // REQUIRES: policy.limit >= 1, policy.window_ms >= 1, cost <= policy.limit.
  static CheckResult Decide(State& state, const Policy& policy, uint32_t cost, int64_t now_us);

  // Refills, then gives back `tokens` that were taken `age_us` ago, less what the bucket has
  // refilled in that time (`age_us` times the rate), never above capacity. Returns the whole
  // tokens given back. The bucket keeps its own policy.
  static uint32_t Refund(State& state, uint32_t tokens, uint64_t age_us, int64_t now_us);

  // True when the bucket would be full at `now_us`: it then means the same as no state at all.
  static bool IsFull(const State& state, int64_t now_us);

  // What forgetting the bucket at `now_us` can over-admit (forgetting treats it as full): the
  // tokens it is missing, as a fraction of its capacity, in [0, 1]; 0 when full.
  static double ForgetCost(const State& state, int64_t now_us);

  // Milliseconds, rounded up, until `units` (tokens times window_us) have flowed in at
  // `policy`'s rate.
  static uint32_t MillisToGain(uint128_t units, const Policy& policy);

  // When a check last changed the bucket.
  static int64_t LastUsedUs(const State& state) { return state.updated_us; }
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_TOKEN_BUCKET_H_
