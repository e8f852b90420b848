// MemoryEngine: decides checks against buckets held in this process only.
#ifndef RATELIMIT_SIDECAR_CORE_MEMORY_ENGINE_H_
#define RATELIMIT_SIDECAR_CORE_MEMORY_ENGINE_H_

#include <cstddef>
#include <memory>

#include "sidecar/core/algorithm.h"
#include "sidecar/core/clock.h"
#include "sidecar/core/engine.h"
#include "sidecar/core/keyed_hash.h"
#include "sidecar/metrics/metrics.h"

namespace ratelimit {

// What a memory engine counts, for /metrics.
struct MemoryEngineMetrics {
  Gauge buckets;      // Keys held; set whenever a key is stored, evicted or swept away.
  Gauge max_keys;     // The most keys held (RATE_LIMIT_MAX_KEYS); set at construction.
  Counter evictions;  // Buckets forgotten to make room for a new key.
};

// An Engine over an in-process BucketTable. Every check is answered before Check returns, with
// source Memory. Memory follows active keys: a read (cost 0) never stores anything, and Sweep
// forgets buckets that mean the same as no bucket (refilled, or window over).
//
// At most max_keys buckets are held. A new key that finds the table full evicts one bucket of a
// sample (BucketTable::EvictOne): among the less recently used half, the one closest to full.
// Forgetting a bucket treats it as full, so an eviction over-admits at most what the evicted
// bucket had spent, if its key comes back before it would have refilled; the hot keys of the
// moment are the most recently used, and are not candidates.
// Thread-safety: the loop thread only (metrics() may be read from any thread). The clock must
// outlive the engine.
class MemoryEngine : public Engine {
 public:
  // Decides `query` at once; Check is this answer delivered to its callback.
  // REQUIRES: as Engine::Check.
  virtual CheckResult Decide(const CheckQuery& query) = 0;

  // Erases buckets that are full at the current time, visiting at most `max_slots` slots of the
  // table (see BucketTable::Sweep). Call it periodically. Returns how many were erased.
  virtual size_t Sweep(size_t max_slots) = 0;

  // Number of keys currently held.
  virtual size_t size() const = 0;

  // Hash slots a full sweep pass visits: size Sweep's budget from this, not from size(), so a
  // pass takes the same number of calls however many keys have gone idle.
  virtual size_t slot_count() const = 0;

  const MemoryEngineMetrics& metrics() const { return metrics_; }

 protected:
  MemoryEngineMetrics metrics_;  // Written by the implementation, on the loop thread.
};

// `hash_key` keys the table's hash; it must be secret from clients (draw it at start-up).
// max_keys >= 1 (RATE_LIMIT_MAX_KEYS).
std::unique_ptr<MemoryEngine> NewMemoryEngine(Algorithm algorithm, Clock& clock,
                                              const HashKey& hash_key, size_t max_keys);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_MEMORY_ENGINE_H_
