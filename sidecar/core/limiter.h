// Limiter: validates a check, resolves its policy, and hands it to the engine.
#ifndef RATELIMIT_SIDECAR_CORE_LIMITER_H_
#define RATELIMIT_SIDECAR_CORE_LIMITER_H_

#include <cstdint>
#include <string_view>

#include "schema/check.h"
#include "sidecar/core/engine.h"

namespace ratelimit {

// The front of every check, whatever the store:
//   - key empty or over kMaxKeyBytes, or only one of limit/window_ms given: InvalidRequest;
//   - cost above the resolved limit: CostExceedsLimit, without consulting the store (so
//     remaining, retry_after_ms and reset_after_ms are 0 in that answer);
//   - otherwise the engine decides.
// Nothing is taken from any bucket unless the engine allows the check.
// Thread-safety: the loop thread only. The engine must outlive the limiter.
class Limiter {
 public:
  // REQUIRES: default_policy.limit >= 1 and default_policy.window_ms >= 1.
  Limiter(const Policy& default_policy, Engine& engine)
      : default_policy_(default_policy), engine_(engine) {}

  // Calls done.OnCheckDone(tag, result) exactly once, maybe before returning.
  void Check(const CheckArgs& args, uint64_t tag, CheckCallback& done);

  const Policy& default_policy() const { return default_policy_; }
  Engine& engine() { return engine_; }

 private:
  const Policy default_policy_;
  Engine& engine_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_LIMITER_H_
