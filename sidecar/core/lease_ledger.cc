// LeaseLedger: the leases of tokens one key holds, and whether a fetch for more is in flight.
#include "sidecar/core/lease_ledger.h"

#include <algorithm>

namespace ratelimit {

void LeaseLedger::Spend(uint32_t cost) {
  held_ -= cost;
  size_t used = 0;
  while (cost > 0) {
    Lease& lease = leases_[used];
    const uint32_t take = std::min(lease.tokens, cost);
    lease.tokens -= take;
    cost -= take;
    if (lease.tokens == 0) ++used;
  }
  leases_.erase(leases_.begin(), leases_.begin() + used);
}

}  // namespace ratelimit
