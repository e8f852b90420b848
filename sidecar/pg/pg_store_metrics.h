// PgStoreMetrics: what the PostgreSQL store counts, for /metrics.
#ifndef RATELIMIT_SIDECAR_PG_PG_STORE_METRICS_H_
#define RATELIMIT_SIDECAR_PG_PG_STORE_METRICS_H_

#include <cstdint>
#include <iterator>

#include "sidecar/metrics/metrics.h"

namespace ratelimit {

// Upper bounds of the histograms below: operations per transaction (StoreBatcher::kMaxBatch is
// the largest), and a transaction's duration in nanoseconds, from 100 us to 1 s.
inline constexpr uint64_t kBatchSizeBounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
inline constexpr uint64_t kTransactionBoundsNs[] = {
    100'000,    250'000,    500'000,     1'000'000,   2'500'000,   5'000'000,    10'000'000,
    25'000'000, 50'000'000, 100'000'000, 250'000'000, 500'000'000, 1'000'000'000};

// Written by the loop thread only (see metrics/metrics.h), read from any thread. Owned by
// PgStore; its pieces write the series of their concern.
struct PgStoreMetrics {
  Counter transactions;         // Check, lease and return transactions started.
  Counter failed_transactions;  // Failed or timed out; each is also one of `transactions`.
  Counter repaired_rows;        // Malformed rows repaired (and logged).
  Counter switched_rows;        // Rows of the other algorithm converted (and logged).
  Counter collected_rows;       // Full buckets deleted by garbage collection.
  Counter new_keys;             // Rows inserted (committed) for keys that had none.
  Counter new_keys_deferred;    // Operations on new keys refused beyond the insert bound.
  Counter rows_written;         // Rows updated or inserted by committed transactions.
  Histogram batch_size{{std::begin(kBatchSizeBounds), std::end(kBatchSizeBounds)}};
  // From sending BEGIN to the COMMIT's (or failure's) answer.
  Histogram duration{{std::begin(kTransactionBoundsNs), std::end(kTransactionBoundsNs)}};
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_PG_STORE_METRICS_H_
