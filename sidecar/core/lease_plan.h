// LeasePlan: the pure arithmetic of lease mode: how much to fetch, whether to fetch now, and
// the range of a denial's random extra.
#ifndef RATELIMIT_SIDECAR_CORE_LEASE_PLAN_H_
#define RATELIMIT_SIDECAR_CORE_LEASE_PLAN_H_

#include <cstdint>

#include "schema/check.h"
#include "sidecar/core/algorithm.h"
#include "sidecar/core/demand_estimate.h"
#include "sidecar/core/denial_cache.h"
#include "sidecar/core/lease_ledger.h"

namespace ratelimit {

// A sidecar takes at most limit / kLeaseShare tokens of a bucket at once (unless a check needs
// more), so that pods share a scarce bucket.
inline constexpr uint32_t kLeaseShare = 8;

// The two sizes of a kLease operation (StoreOp::cost and StoreOp::want).
struct FetchSize {
  uint32_t min_grant = 0;  // The least worth having.
  uint32_t want = 0;       // What to ask for.
};

// Sizing, with R = refresh_us (ttl / 4), d the key's demand (see DemandEstimate) and `need` the
// tokens the first waiting check needs (1 for a prefetch), clamped to [1, limit]:
//   want      = clamp(ceil(d * R) + waiting,  need,  cap)     waiting: tokens waiting checks need
//   cap       = max(need, ceil(limit / kLeaseShare))
//   min_grant = max(need, min(want, ceil(rate * R)))          rate = limit / window
// The store grants min(want, whole tokens in the row) when that is at least min_grant, else
// nothing. So a lease lasts about R at the local demand; no pod takes more than an eighth of a
// bucket at once; and a drained hot bucket is taken in chunks of up to R's refill, not token by
// token, which keeps the database's work per key to a few transactions per R however many
// checks arrive.
//
// A fixed window does not refill within its window: min_grant = need, so that its last tokens
// are granted (in halves, as the row cuts them) rather than stranded until the window ends.
FetchSize SizeFetch(const Policy& policy, double demand_per_us, int64_t refresh_us, uint32_t need,
                    uint64_t waiting, Algorithm algorithm = Algorithm::kTokenBucket);

// The fetch that carries a check admitted unconfirmed (see LeaseEngine): a lease sized as
// SizeFetch's for one token when the key's demand is at least half a token per R; otherwise
// none (both sizes 0), so that a sparse key's check costs its debit alone, never a lease that
// would expire unspent and go back.
FetchSize SizeUnconfirmedFetch(const Policy& policy, double demand_per_us, int64_t refresh_us,
                               Algorithm algorithm = Algorithm::kTokenBucket);

// Prefetch: after a check is served, when fewer than half a lease, min(ceil(d * R), cap) / 2,
// are held and no fetch is in flight, the next lease is fetched; steady traffic never waits, and
// a sidecar holds at most about one and a half leases of a key. Measured against the lease size
// and not the raw demand, so that a lease landing always lifts the key above it, and a sidecar
// never chains fetches into more than the cap allows. No prefetch without a measured demand,
// after a grant cut short (the row is scarce), or while the key is denied. (The engine adds:
// nor while the store is not ready or everything is being given back.)
bool ShouldPrefetch(const Policy& policy, const LeaseLedger& ledger, const DemandEstimate& demand,
                    const DenialCache& denial, int64_t now, int64_t refresh_us);

// A denial's random extra is a draw from [low, low + span] microseconds (none when span is 0):
// span is half the time the bucket takes to refill min_grant, at most R / 2, long enough that
// the draw, not which sidecar's answer came back first, decides who asks first next time; low
// is span when the previous fetch was granted (the upper half), else 0 (see DenialCache).
struct JitterRange {
  uint64_t low = 0;
  uint64_t span = 0;
};
JitterRange DenialJitter(const Policy& policy, uint32_t min_grant, int64_t refresh_us,
                         bool granted_last);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_LEASE_PLAN_H_
