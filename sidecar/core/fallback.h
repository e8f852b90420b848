// Fallback: what a check gets, by a stated policy, when the shared store cannot decide it.
#ifndef RATELIMIT_SIDECAR_CORE_FALLBACK_H_
#define RATELIMIT_SIDECAR_CORE_FALLBACK_H_

#include <cstdint>
#include <memory>

#include "schema/check.h"
#include "sidecar/core/memory_engine.h"
#include "sidecar/metrics/metrics.h"

namespace ratelimit {

// RATE_LIMIT_FALLBACK: what a check gets while the database cannot decide it.
enum class FallbackPolicy {
  kLocal,  // A bucket in this pod's memory, of limit / expected_replicas (at least 1).
  kAllow,  // Allowed.
  kDeny,   // Denied, retry_after_ms = Fallback::kDenyRetryMs.
};

// What the fallback counts, for /metrics.
struct FallbackMetrics {
  Counter fallbacks;  // Checks the store could not decide, answered by the policy.
};

// The policy the engines of a shared store (strict, lease) consult, where they hold the check's
// key, for every answer they would give with status StoreUnavailable (database down, erroring,
// not ready): that answer is replaced by the policy's, with source Fallback; every other answer
// is the engine's own. A rate limiter must not become the outage: while the database is gone,
// checks are still answered at once, by a policy the operator chose.
//
// The local policy keeps its own memory engine: a pod's share of each key's bucket, so that
// expected_replicas pods together admit about one bucket's worth while they cannot coordinate.
// Its answers report the share (limit, remaining, reset_after_ms). A check costing more than
// the share is denied while degraded (retry_after_ms = the window).
//
// Thread-safety: the loop thread only (metrics() may be read from any thread). The owner keeps
// it alive as long as the engines that consult it.
class Fallback {
 public:
  static constexpr uint32_t kDenyRetryMs = 1000;

  // `local` is used by kLocal only (it may be null otherwise). expected_replicas 0 counts as 1.
  Fallback(FallbackPolicy policy, std::unique_ptr<MemoryEngine> local, uint32_t expected_replicas);

  // `store_answer` when the store decided it (any status but StoreUnavailable); otherwise the
  // policy's answer to `query`, counted in metrics().fallbacks.
  CheckResult Resolve(const CheckQuery& query, const CheckResult& store_answer);

  // The local buckets (kLocal), for the owner's periodic Sweep; null for other policies.
  MemoryEngine* local() { return local_.get(); }

  const FallbackMetrics& metrics() const { return metrics_; }

 private:
  CheckResult Decide(const CheckQuery& query);

  const FallbackPolicy policy_;
  const std::unique_ptr<MemoryEngine> local_;
  const uint32_t expected_replicas_;
  FallbackMetrics metrics_;
};

// fallback->Resolve(query, store_answer), or `store_answer` when there is no fallback (null).
inline CheckResult ResolveWith(Fallback* fallback, const CheckQuery& query,
                               const CheckResult& store_answer) {
  return fallback == nullptr ? store_answer : fallback->Resolve(query, store_answer);
}

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_FALLBACK_H_
