// LeaseLedger: the leases of tokens one key holds, and whether a fetch for more is in flight.
#ifndef RATELIMIT_SIDECAR_CORE_LEASE_LEDGER_H_
#define RATELIMIT_SIDECAR_CORE_LEASE_LEDGER_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ratelimit {

// One key's leases, oldest first: tokens debited from the key's shared row and spent here.
//
// Expiry: a lease is spent only until ttl after its fetch was sent (so at most ttl after its
// debit); then its unused tokens go back, dated by its debit so that the store subtracts what
// the row has refilled since. Fetches of a key are sent one at a time, so expiry times grow from
// the oldest lease to the newest.
//
// A grant smaller than asked for means the row is scarce (or was halved for the next sidecar):
// the ledger remembers it, and no prefetch follows until a check needs more (see
// ShouldPrefetch), so that this sidecar does not take the rest right away.
//
// Thread-safety: the loop thread only; a value owned by the engine's state of its key.
class LeaseLedger {
 public:
  struct Lease {
    uint32_t tokens;
    int64_t expires_us;  // Local clock.
    int64_t debit_us;    // Database clock (a fixed window's: its window's start).
  };

  // Tokens in all leases.
  uint64_t held() const { return held_; }
  bool empty() const { return leases_.empty(); }
  // When the oldest lease expires. REQUIRES: !empty().
  int64_t oldest_expiry_us() const { return leases_.front().expires_us; }

  // Whether a fetch of this key is in flight (at most one is).
  bool fetching() const { return fetching_; }
  void set_fetching(bool fetching) { fetching_ = fetching; }

  // Whether the last grant was less than asked for.
  bool scarce() const { return scarce_; }
  // A new policy: what the row said under the old one no longer holds.
  void ForgetScarcity() { scarce_ = false; }

  // Adds a lease of `granted` tokens (of `wanted` asked for), spent until `expires_us`. Leases
  // held that would expire later expire with it instead: expiry times stay in order, and no
  // lease lasts longer than it was given. (Only a fixed window's lease, cut to the rest of its
  // window, can expire before an older one.) REQUIRES: granted > 0.
  void Add(uint32_t granted, uint32_t wanted, int64_t expires_us, int64_t debit_us) {
    for (Lease& lease : leases_) lease.expires_us = std::min(lease.expires_us, expires_us);
    leases_.push_back(Lease{granted, expires_us, debit_us});
    held_ += granted;
    scarce_ = granted < wanted;
  }

  // Takes `cost` tokens, from the oldest leases first. REQUIRES: held() >= cost.
  void Spend(uint32_t cost);

  // Removes every lease that expires by `now` (every lease with now = INT64_MAX), oldest first,
  // calling give_back(lease) for each before it goes.
  template <typename GiveBack>
  void Expire(int64_t now, GiveBack&& give_back) {
    size_t expired = 0;
    for (const Lease& lease : leases_) {
      if (lease.expires_us > now) break;  // Oldest first: expiry times only grow.
      give_back(lease);
      held_ -= lease.tokens;
      ++expired;
    }
    if (expired > 0) leases_.erase(leases_.begin(), leases_.begin() + expired);
  }

 private:
  std::vector<Lease> leases_;  // Oldest first.
  uint64_t held_ = 0;          // Tokens in leases_.
  bool fetching_ = false;
  bool scarce_ = false;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_LEASE_LEDGER_H_
