// FallbackEngine: answers by a stated policy whatever the shared store could not decide.
#ifndef RATELIMIT_SIDECAR_CORE_FALLBACK_ENGINE_H_
#define RATELIMIT_SIDECAR_CORE_FALLBACK_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sidecar/core/engine.h"
#include "sidecar/core/memory_engine.h"

namespace ratelimit {

// RATE_LIMIT_FALLBACK: what a check gets while the database cannot decide it.
enum class FallbackPolicy {
  kLocal,  // A bucket in this pod's memory, of limit / expected_replicas (at least 1).
  kAllow,  // Allowed.
  kDeny,   // Denied, retry_after_ms = kDenyRetryMs.
};

// Wraps the engine of a shared store (strict or lease). Every answer of the inner engine with
// status StoreUnavailable (database down, erroring, not ready) is replaced by the fallback
// policy's answer, with source Fallback; every other answer passes through untouched. A rate
// limiter must not become the outage: while the database is gone, checks are still answered at
// once, by a policy the operator chose.
//
// The local policy keeps its own memory engine: a pod's share of each key's bucket, so that
// expected_replicas pods together admit about one bucket's worth while they cannot coordinate.
// Its answers report the share (limit, remaining, reset_after_ms). A check costing more than
// the share is denied while degraded (retry_after_ms = the window).
//
// Thread-safety: the loop thread only. The inner engine must outlive this one.
class FallbackEngine final : public Engine, private CheckCallback {
 public:
  static constexpr uint32_t kDenyRetryMs = 1000;

  // `local` is used by kLocal only (it may be null otherwise). REQUIRES: expected_replicas >= 1.
  FallbackEngine(Engine& inner, FallbackPolicy policy, std::unique_ptr<MemoryEngine> local,
                 uint32_t expected_replicas);

  void Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) override;
  std::string_view store_name() const override { return inner_.store_name(); }
  bool ready() const override { return inner_.ready(); }

  // The local buckets (kLocal), for the owner's periodic Sweep; null for other policies.
  MemoryEngine* local() { return local_.get(); }

  uint64_t fallbacks() const { return fallbacks_; }

 private:
  // One check in the inner engine: what the fallback needs if the store cannot decide it. The
  // key is copied because the inner engine may answer after the caller's buffer is gone.
  // Records are reused (free list), so the steady state allocates nothing.
  struct Pending {
    uint64_t tag = 0;
    CheckCallback* done = nullptr;
    std::string key;
    uint32_t cost = 0;
    Policy policy;
  };

  void OnCheckDone(uint64_t tag, const CheckResult& result) override;
  CheckResult Decide(const Pending& check);

  Engine& inner_;
  const FallbackPolicy policy_;
  std::unique_ptr<MemoryEngine> local_;
  const uint32_t expected_replicas_;
  std::vector<std::unique_ptr<Pending>> records_;  // Every record, live or free.
  std::vector<Pending*> free_;
  uint64_t fallbacks_ = 0;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_FALLBACK_ENGINE_H_
