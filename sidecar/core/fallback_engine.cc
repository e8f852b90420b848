// FallbackEngine: answers by a stated policy whatever the shared store could not decide.
#include "sidecar/core/fallback_engine.h"

#include <algorithm>

namespace ratelimit {

FallbackEngine::FallbackEngine(Engine& inner, FallbackPolicy policy,
                               std::unique_ptr<MemoryEngine> local, uint32_t expected_replicas)
    : inner_(inner),
      policy_(policy),
      local_(std::move(local)),
      expected_replicas_(std::max<uint32_t>(1, expected_replicas)) {}

void FallbackEngine::Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) {
  Pending* p;
  if (free_.empty()) {
    records_.push_back(std::make_unique<Pending>());
    p = records_.back().get();
  } else {
    p = free_.back();
    free_.pop_back();
  }
  p->tag = tag;
  p->done = &done;
  p->key.assign(query.key);
  p->cost = query.cost;
  p->policy = query.policy;
  inner_.Check(query, reinterpret_cast<uint64_t>(p), *this);
}

void FallbackEngine::OnCheckDone(uint64_t tag, const CheckResult& result) {
  Pending* p = reinterpret_cast<Pending*>(tag);
  CheckCallback* done = p->done;
  const uint64_t caller_tag = p->tag;
  CheckResult answer = result;
  if (result.status == CheckStatus::kStoreUnavailable) {
    ++fallbacks_;
    answer = Decide(*p);
  }
  free_.push_back(p);  // Back before the callback, which may start the next check.
  done->OnCheckDone(caller_tag, answer);
}

CheckResult FallbackEngine::Decide(const Pending& check) {
  CheckResult r;
  r.limit = check.policy.limit;
  r.source = Source::kFallback;
  switch (policy_) {
    case FallbackPolicy::kAllow:
      r.allowed = true;
      r.remaining = check.policy.limit;
      return r;
    case FallbackPolicy::kDeny:
      r.retry_after_ms = kDenyRetryMs;
      r.reset_after_ms = kDenyRetryMs;
      return r;
    case FallbackPolicy::kLocal:
      break;
  }
  // This pod's share of the bucket, refilled at its share of the rate.
  const Policy share{std::max<uint32_t>(1, check.policy.limit / expected_replicas_),
                     check.policy.window_ms};
  struct Capture final : CheckCallback {
    void OnCheckDone(uint64_t, const CheckResult& result) override { answer = result; }
    CheckResult answer;
  } capture;
  // A cost above the share can never pass here: the bucket is only read, to report it.
  const bool never = check.cost > share.limit;
  local_->Check(CheckQuery{check.key, never ? 0 : check.cost, share}, 0, capture);  // At once.
  r = capture.answer;  // limit, remaining and reset_after_ms are the share's, on every path.
  r.source = Source::kFallback;
  if (never) {
    r.allowed = false;
    r.retry_after_ms = check.policy.window_ms;
  }
  return r;
}

}  // namespace ratelimit
