// LeasePlan: the pure arithmetic of lease mode: how much to fetch, whether to fetch now, and
// the range of a denial's random extra.
#include "sidecar/core/lease_plan.h"

#include <algorithm>
#include <cmath>

namespace ratelimit {
namespace {

uint32_t CeilToTokens(double tokens, uint32_t limit) {
  if (!(tokens > 0)) return 0;
  return static_cast<uint32_t>(std::min<double>(std::ceil(tokens), limit));
}

// `want` of SizeFetch, for a `need` already clamped to [1, limit].
uint32_t Want(const Policy& policy, double demand_per_us, int64_t refresh_us, uint32_t need,
              uint64_t waiting) {
  const uint32_t cap =
      std::max(need, CeilToTokens(double(policy.limit) / kLeaseShare, policy.limit));
  const double demand_tokens = demand_per_us * static_cast<double>(refresh_us);
  const uint64_t wanted = uint64_t{CeilToTokens(demand_tokens, policy.limit)} + waiting;
  return static_cast<uint32_t>(std::clamp<uint64_t>(wanted, need, cap));
}

}  // namespace

FetchSize SizeFetch(const Policy& policy, double demand_per_us, int64_t refresh_us, uint32_t need,
                    uint64_t waiting, Algorithm algorithm) {
  need = std::clamp<uint32_t>(need, 1, policy.limit);
  const uint32_t want = Want(policy, demand_per_us, refresh_us, need, waiting);
  if (algorithm == Algorithm::kFixedWindow) return FetchSize{need, want};
  const double refill_per_refresh =
      double(policy.limit) * static_cast<double>(refresh_us) / (double(policy.window_ms) * 1000);
  return FetchSize{std::max(need, std::min(want, CeilToTokens(refill_per_refresh, policy.limit))),
                   want};
}

FetchSize SizeUnconfirmedFetch(const Policy& policy, double demand_per_us, int64_t refresh_us,
                               Algorithm algorithm) {
  if (!(demand_per_us * static_cast<double>(refresh_us) >= 0.5)) return FetchSize{};
  return SizeFetch(policy, demand_per_us, refresh_us, 1, 0, algorithm);
}

bool ShouldPrefetch(const Policy& policy, const LeaseLedger& ledger, const DemandEstimate& demand,
                    const DenialCache& denial, int64_t now, int64_t refresh_us) {
  if (ledger.fetching() || ledger.scarce() || denial.Denies(now)) return false;
  if (demand.per_us() <= 0) return false;
  return ledger.held() * 2 < Want(policy, demand.per_us(), refresh_us, 1, 0);
}

JitterRange DenialJitter(const Policy& policy, uint32_t min_grant, int64_t refresh_us,
                         bool granted_last) {
  const int64_t refill_us = static_cast<int64_t>(
      std::min<double>(static_cast<double>(refresh_us),
                       double(min_grant) * double(policy.window_ms) * 1000 / double(policy.limit)));
  const uint64_t half = static_cast<uint64_t>(refill_us / 2);
  return JitterRange{granted_last ? half : 0, half};
}

}  // namespace ratelimit
