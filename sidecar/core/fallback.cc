// Fallback: what a check gets, by a stated policy, when the shared store cannot decide it.
#include "sidecar/core/fallback.h"

#include <algorithm>

namespace ratelimit {

Fallback::Fallback(FallbackPolicy policy, std::unique_ptr<MemoryEngine> local,
                   uint32_t expected_replicas)
    : policy_(policy),
      local_(std::move(local)),
      expected_replicas_(std::max<uint32_t>(1, expected_replicas)) {}

CheckResult Fallback::Resolve(const CheckQuery& query, const CheckResult& store_answer) {
  if (store_answer.status != CheckStatus::kStoreUnavailable) return store_answer;
  metrics_.fallbacks.Add();
  return Decide(query);
}

CheckResult Fallback::Decide(const CheckQuery& query) {
  CheckResult r;
  r.limit = query.policy.limit;
  r.source = Source::kFallback;
  switch (policy_) {
    case FallbackPolicy::kAllow:
      r.allowed = true;
      r.remaining = query.policy.limit;
      return r;
    case FallbackPolicy::kDeny:
      r.retry_after_ms = kDenyRetryMs;
      r.reset_after_ms = kDenyRetryMs;
      return r;
    case FallbackPolicy::kLocal:
      break;
  }
  // This pod's share of the bucket, refilled at its share of the rate.
  const Policy share{std::max<uint32_t>(1, query.policy.limit / expected_replicas_),
                     query.policy.window_ms};
  // A cost above the share can never pass here: the bucket is only read, to report it.
  const bool never = query.cost > share.limit;
  r = local_->Decide(CheckQuery{query.key, never ? 0 : query.cost, share});
  r.source = Source::kFallback;  // limit, remaining and reset_after_ms are the share's.
  if (never) {
    r.allowed = false;
    r.retry_after_ms = query.policy.window_ms;
  }
  return r;
}

}  // namespace ratelimit
