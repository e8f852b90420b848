// LeaseEngine: answers checks from memory, out of leases of tokens debited from shared buckets.
#ifndef RATELIMIT_SIDECAR_CORE_LEASE_ENGINE_H_
#define RATELIMIT_SIDECAR_CORE_LEASE_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sidecar/core/bucket_table.h"
#include "sidecar/core/clock.h"
#include "sidecar/core/engine.h"
#include "sidecar/core/keyed_hash.h"
#include "sidecar/core/shared_store.h"
#include "sidecar/core/store_batcher.h"

namespace ratelimit {

struct LeaseOptions {
  // RATE_LIMIT_LEASE_TTL_MS: a lease is spent within this long of being asked for, then its
  // unused tokens go back. The pods' bound grows by rate * ttl.
  uint32_t ttl_ms = 1000;
  // Whether a denial lasts a random extra, up to the time min_grant tokens take to refill (at
  // most R). Off only in tests that check exact times.
  bool jitter_denials = true;
  // Seeds the jitter's generator. Draw it at start-up: the extra wait is visible to clients.
  uint64_t jitter_seed = 0;
};

// Counters an operator may want; read on the loop thread.
struct LeaseStats {
  uint64_t lease_allowed = 0;  // Checks allowed from a lease, in memory.
  uint64_t cache_denied = 0;   // Checks denied from the denial cache, in memory.
  uint64_t waited = 0;         // Checks that waited for a lease fetch.
  uint64_t fetches = 0;        // kLease operations sent.
  uint64_t tokens_leased = 0;
  uint64_t returns = 0;          // kReturn operations sent.
  uint64_t tokens_returned = 0;  // Whole tokens the store put back.
  uint64_t tokens_expired = 0;   // Tokens unspent when their lease expired (then sent back).
};

// Each key this sidecar sees holds up to a few leases: tokens debited from the key's shared row
// (kLease, in the same batched transactions as strict mode) and spent here, in microseconds,
// with source Lease.
//
// Sizing, with R = ttl / 4 the refresh interval and d the key's local demand (tokens asked per
// microsecond, denied ones included, smoothed over about one R):
//   want      = clamp(ceil(d * R) + tokens waiting checks need,  need,  cap)
//   cap       = max(need, ceil(limit / kLeaseShare))
//   min_grant = max(need, min(want, ceil(rate * R)))      rate = limit / window
// The store grants min(want, whole tokens in the row) when that is at least min_grant, else
// nothing. So a lease lasts about R at the local demand; no pod takes more than an eighth of a
// bucket at once, so pods share a scarce bucket; and a drained hot bucket is taken in chunks of
// up to R's refill, not token by token, which keeps the database's work per key to a few
// transactions per R however many checks arrive.
//
// Prefetch: after a check is served, when fewer than half a lease, min(ceil(d * R), cap) / 2,
// are held and no fetch is in flight, the next lease is fetched; steady traffic never waits, and
// a sidecar holds at most about one and a half leases of a key. No prefetch after a grant cut
// short (the row is scarce), nor while the store is not ready. A check waits only while
// its key holds too few tokens and a fetch is in flight; waiting checks are served in order.
//
// Denial cache: when the store grants nothing, the key is "denied until" the time the store
// says min_grant tokens will be there, plus a random extra of up to the time min_grant takes to
// refill (at most R); until then checks are denied here, with retry_after_ms counting down to
// it. Without the extra, every sidecar denied on a hot key would come back at the same moment,
// and whichever answer travels fastest would win every round; with it, who asks first is a
// fair draw; and a sidecar granted tokens last time draws from the upper half of the range,
// one denied from the lower, so that the losers of a round ask first in the next. So a denial
// lasts at most about 2R longer than `cost` tokens alone would take.
//
// Expiry: a lease is spent only until ttl after its fetch was sent (so at most ttl after its
// debit); then, and on a policy change or ReturnAll, its unused tokens go back (kReturn).
// Together: in any interval of length T the pods admit at most capacity + rate * (T + ttl).
//
// Thread-safety: the loop thread only. The store and clock must outlive the engine; the store
// must finish (or fail) every Take before either is destroyed.
class LeaseEngine final : public Engine {
 public:
  static constexpr uint32_t kLeaseShare = 8;

  LeaseEngine(SharedStore& store, Clock& clock, const HashKey& hash_key,
              const LeaseOptions& options);

  void Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) override;
  std::string_view store_name() const override { return batcher_.store().name(); }
  bool ready() const override { return batcher_.store().ready(); }

  // Returns the unused tokens of leases that have expired and forgets keys that hold nothing
  // (giving the table's slots back after a burst of keys).
  // Call it periodically (every few tens of milliseconds).
  void Tick();

  // Gives every lease's unused tokens back, and calls `done` once the store has answered every
  // return and every fetch in flight (whose grants go straight back too), or failed them. Checks
  // after this are refused with ShuttingDown. `done` may run before ReturnAll returns.
  void ReturnAll(std::function<void()> done);

  const LeaseStats& stats() const { return stats_; }
  size_t key_count() const { return keys_.size(); }
  // Entries in the queue of keys to look at again (about one per key).
  size_t scheduled_visits() const { return revisits_.size(); }

 private:
  struct Lease {
    uint32_t tokens;
    int64_t expires_us;  // Local clock.
    int64_t debit_us;    // Database clock.
  };
  struct Waiter {
    uint64_t tag;
    CheckCallback* done;
    uint32_t cost;
  };
  struct KeyState {
    Policy policy;
    std::vector<Lease> leases;   // Oldest first.
    uint64_t held = 0;           // Tokens in `leases`.
    std::deque<Waiter> waiters;  // Non-empty only while a fetch is in flight.
    bool fetching = false;
    int64_t denied_until_us = 0;
    int64_t full_at_us = 0;      // When the row would be full, as of the last answer.
    uint32_t row_remaining = 0;  // Whole tokens the row kept at the last answer.
    double demand_per_us = 0;
    uint64_t requested = 0;  // Tokens asked for since last_fetch_us.
    int64_t last_fetch_us = 0;
    bool fetched_before = false;   // Some fetch was sent: last_fetch_us is meaningful.
    bool answered_before = false;  // Some fetch was decided: row_remaining is meaningful.
    bool granted_last = false;     // The last decided fetch was granted tokens.
    bool scarce = false;           // The last grant was less than wanted: no prefetch.
    uint64_t visit_ticket = 0;     // The live entry of this key in revisits_; 0 when none.
    int64_t visit_at_us = 0;
  };
  // When Tick looks at a key again: to give expired leases back, or to forget it.
  struct Revisit {
    int64_t at_us;  // Local clock.
    uint64_t ticket;
    std::string key;
    bool operator>(const Revisit& o) const { return at_us > o.at_us; }
  };

  KeyState& StateOf(std::string_view key, const Policy& policy, int64_t now);
  void Serve(std::string_view key, KeyState& state, int64_t now);
  // The size of the next lease (`want` in the class comment).
  uint32_t LeaseWant(const KeyState& state, uint32_t need, uint64_t waiting) const;
  void StartFetch(std::string_view key, KeyState& state, uint32_t need, int64_t now);
  void OnFetched(const std::string& key, const Policy& policy, int64_t sent_us, uint32_t min_grant,
                 uint32_t want, Result<StoreAnswer> answer);
  int64_t DenialJitter(const Policy& policy, uint32_t min_grant, bool granted_last);
  void MaybePrefetch(std::string_view key, KeyState& state, int64_t now);
  void Spend(KeyState& state, uint32_t cost);
  // Gives back the leases that expire by `now` (all of them with `now` = INT64_MAX).
  void ExpireLeases(std::string_view key, KeyState& state, int64_t now);
  void SendReturn(std::string_view key, const Policy& policy, uint32_t tokens, int64_t debit_us);
  void ScheduleRevisit(std::string_view key, KeyState& state, int64_t at_us);
  void MaybeFinishReturnAll();
  CheckResult Allowed(const KeyState& state, int64_t now) const;
  CheckResult Denied(const KeyState& state, int64_t now) const;

  StoreBatcher batcher_;
  Clock& clock_;
  const int64_t ttl_us_;
  const int64_t refresh_us_;  // R = ttl / 4.
  const bool jitter_denials_;
  std::minstd_rand rng_;
  BucketTable<KeyState> keys_;
  std::priority_queue<Revisit, std::vector<Revisit>, std::greater<>> revisits_;
  size_t fetches_in_flight_ = 0;
  size_t returns_in_flight_ = 0;
  bool returning_all_ = false;
  bool sending_all_ = false;  // ReturnAll is sending every lease back.
  uint64_t last_ticket_ = 0;
  std::function<void()> on_returned_all_;
  LeaseStats stats_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_LEASE_ENGINE_H_
