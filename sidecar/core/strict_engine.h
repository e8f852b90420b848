// StrictEngine: every check decided by the shared store, in batches that follow the load.
#ifndef RATELIMIT_SIDECAR_CORE_STRICT_ENGINE_H_
#define RATELIMIT_SIDECAR_CORE_STRICT_ENGINE_H_

#include <cstdint>

#include "sidecar/core/engine.h"
#include "sidecar/core/fallback.h"
#include "sidecar/core/shared_store.h"
#include "sidecar/core/store_batcher.h"

namespace ratelimit {

// Each check is one kCheck operation sent through a StoreBatcher (see there for how checks are
// batched), so the global bucket is exact: a token bucket, or a fixed window of at most `limit`
// admissions, across all sidecars. Refusals without touching the store:
// StoreUnavailable while the store is not ready (checks never queue behind a database that is
// down), Overloaded past StoreBatcher::kMaxQueued waiting checks. Answers carry source Database,
// except that every StoreUnavailable answer is the fallback's, when there is one.
//
// Thread-safety: the loop thread only. The store and the fallback (may be null) must outlive
// the engine; the store must finish (or fail) every Take before either is destroyed.
class StrictEngine final : public Engine {
 public:
  // `algorithm`: RATE_LIMIT_ALGORITHM, which every row this engine changes then records.
  explicit StrictEngine(SharedStore& store, Fallback* fallback = nullptr,
                        Algorithm algorithm = Algorithm::kTokenBucket)
      : batcher_(store, algorithm), fallback_(fallback) {}

  void Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) override;
  std::string_view store_name() const override { return batcher_.store().name(); }
  bool ready() const override { return batcher_.store().ready(); }

  size_t queued() const { return batcher_.queued(); }

 private:
  StoreBatcher batcher_;
  Fallback* const fallback_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_STRICT_ENGINE_H_
