// StrictEngine: every check decided by the shared store, in batches that follow the load.
#include "sidecar/core/strict_engine.h"

#include <string>
#include <utility>

namespace ratelimit {

CheckResult StoreRefusal(const Status& why, uint32_t limit) {
  return Refusal(why.code() == Status::Code::kOverloaded ? CheckStatus::kOverloaded
                                                         : CheckStatus::kStoreUnavailable,
                 limit, Source::kDatabase);
}

void StrictEngine::Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) {
  const uint32_t limit = query.policy.limit;
  Status queued = batcher_.Submit(
      StoreOp{std::string(query.key), query.cost, query.policy},
      [tag, &done, limit](Result<StoreAnswer> answer) {
        CheckResult result = answer.ok() ? answer->check : StoreRefusal(answer.status(), limit);
        result.source = Source::kDatabase;
        done.OnCheckDone(tag, result);
      });
  if (!queued.ok()) done.OnCheckDone(tag, StoreRefusal(queued, limit));
}

}  // namespace ratelimit
