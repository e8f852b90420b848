// The vocabulary of one limit check: policy, query and result, shared by sidecar and client.
#ifndef RATELIMIT_SCHEMA_CHECK_H_
#define RATELIMIT_SCHEMA_CHECK_H_

#include <cstdint>
#include <string_view>

namespace ratelimit {

// Outcome of a check. Values equal those of ratelimit.wire.Status (checked in schema/).
enum class CheckStatus : uint8_t {
  kOk = 0,                // Decided; see CheckResult::allowed.
  kInvalidRequest = 1,    // Malformed query (key length, half-given policy). Nothing taken.
  kCostExceedsLimit = 2,  // cost > limit: can never be allowed. Nothing taken.
  kStoreUnavailable = 3,  // The store could not decide.
  kOverloaded = 4,        // The sidecar refused the work to protect itself.
  kShuttingDown = 5,      // The sidecar is stopping.
};

// Who decided. Values equal those of ratelimit.wire.Source.
enum class Source : uint8_t {
  kMemory = 0,
  kLease = 1,
  kDatabase = 2,
  kFallback = 3,
};

const char* CheckStatusName(CheckStatus status);  // "ok", "invalid_request", ...
const char* SourceName(Source source);            // "memory", "lease", ...

// Keys are 1 to kMaxKeyBytes bytes of arbitrary content.
inline constexpr size_t kMaxKeyBytes = 512;

// A bucket's shape: `limit` tokens of capacity, refilled over `window_ms` (token bucket) or reset
// every `window_ms` (fixed window). Both are at least 1 once resolved.
struct Policy {
  uint32_t limit = 0;
  uint32_t window_ms = 0;

  friend bool operator==(const Policy&, const Policy&) = default;
};

// What a client asks, before validation. limit/window_ms of 0 select the default policy; cost 0
// only reads the bucket. `key` is borrowed from the caller.
struct CheckArgs {
  std::string_view key;
  uint32_t cost = 1;
  uint32_t limit = 0;
  uint32_t window_ms = 0;
};

// A validated query: the key is non-empty and at most kMaxKeyBytes, the policy resolved.
// `key` is borrowed: it is only valid for the duration of the call that receives it.
struct CheckQuery {
  std::string_view key;
  uint32_t cost = 1;
  Policy policy;
};

struct CheckResult {
  bool allowed = false;
  CheckStatus status = CheckStatus::kOk;
  uint32_t limit = 0;
  uint32_t remaining = 0;       // Whole tokens left after this check.
  uint32_t retry_after_ms = 0;  // Until `cost` tokens are there; 0 when allowed.
  uint32_t reset_after_ms = 0;  // Until the bucket is full again.
  Source source = Source::kMemory;

  friend bool operator==(const CheckResult&, const CheckResult&) = default;
};

// A result that carries only a status: nothing was decided, nothing taken.
inline CheckResult Refusal(CheckStatus status, uint32_t limit, Source source) {
  CheckResult r;
  r.status = status;
  r.limit = limit;
  r.source = source;
  return r;
}

}  // namespace ratelimit

#endif  // RATELIMIT_SCHEMA_CHECK_H_
