// Limiter: validates a check, resolves its policy, and hands it to the engine.
#include "sidecar/core/limiter.h"

namespace ratelimit {

void Limiter::Check(const CheckArgs& args, uint64_t tag, CheckCallback& done) {
  const bool has_limit = args.limit != 0;
  const bool has_window = args.window_ms != 0;
  if (args.key.empty() || args.key.size() > kMaxKeyBytes || has_limit != has_window) {
    done.OnCheckDone(tag, Refusal(CheckStatus::kInvalidRequest, args.limit, Source::kMemory));
    return;
  }
  const Policy policy = has_limit ? Policy{args.limit, args.window_ms} : default_policy_;
  if (args.cost > policy.limit) {
    done.OnCheckDone(tag, Refusal(CheckStatus::kCostExceedsLimit, policy.limit, Source::kMemory));
    return;
  }
  engine_.Check(CheckQuery{args.key, args.cost, policy}, tag, done);
}

}  // namespace ratelimit
