// StrictEngine: every check decided by the shared store, in batches that follow the load.
#include "sidecar/core/strict_engine.h"

namespace ratelimit {

void StrictEngine::Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) {
  CheckInStore(batcher_, query, tag, done, fallback_);
}

}  // namespace ratelimit
