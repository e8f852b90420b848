// LeaseEngine: answers checks from memory, out of leases of tokens debited from shared buckets.
#ifndef RATELIMIT_SIDECAR_CORE_LEASE_ENGINE_H_
#define RATELIMIT_SIDECAR_CORE_LEASE_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sidecar/core/algorithm.h"
#include "sidecar/core/bucket_table.h"
#include "sidecar/core/clock.h"
#include "sidecar/core/demand_estimate.h"
#include "sidecar/core/denial_cache.h"
#include "sidecar/core/engine.h"
#include "sidecar/core/fallback.h"
#include "sidecar/core/keyed_hash.h"
#include "sidecar/core/lease_ledger.h"
#include "sidecar/core/lease_plan.h"
#include "sidecar/core/shared_store.h"
#include "sidecar/core/store_batcher.h"
#include "sidecar/core/token_bucket.h"
#include "sidecar/metrics/metrics.h"

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
  // The most keys with lease state, and the most bytes of their key text (a key's text is kept
  // to send its returns; keys are up to 512 bytes). Past either, a new key evicts the least
  // recently used of a sample (see LeaseEngine).
  size_t max_keys = 125000;
  size_t max_key_bytes = 125000 * 64;
  // The store's bound on new rows per second (RATE_LIMIT_PG_NEW_KEYS_PER_SEC; 0: none). Once the
  // store defers a new key, keys this sidecar holds no state for are, for a second, fetched at
  // most at this rate; the others are answered by the fallback at once (see LeaseEngine).
  uint32_t new_keys_per_sec = 0;
  // RATE_LIMIT_ALGORITHM: what every fetch, check and return asks of the rows (see below).
  Algorithm algorithm = Algorithm::kTokenBucket;
  // RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY (u): the most tokens of a key admitted from memory
  // before the store has confirmed them (optimistic admission; 0: none, every check of a key
  // holding no lease waits for the store; the sidecar's default is 1).
  uint32_t unconfirmed_per_key = 0;
  // RATE_LIMIT_LEASE_UNCONFIRMED_MAX: the most tokens admitted unconfirmed at once, all keys
  // together. Past it, checks of keys holding no lease wait for the store.
  uint32_t unconfirmed_max = 4096;
};

// What the lease engine counts, for /metrics; written on the loop thread, read from any.
struct LeaseMetrics {
  Counter lease_allowed;  // Checks allowed from a lease, in memory.
  Counter cache_denied;   // Checks denied from the denial cache, in memory.
  Counter waited;         // Checks that waited for a lease fetch.
  Counter fetches;        // kLease operations sent.
  Counter tokens_leased;
  Counter returns;              // kReturn operations sent.
  Counter tokens_returned;      // Whole tokens the store put back.
  Counter tokens_expired;       // Tokens unspent when their lease expired (then sent back).
  Gauge keys;                   // Keys with lease state; set whenever one is added or forgotten.
  Gauge max_keys;               // LeaseOptions::max_keys; set at construction.
  Counter evictions;            // Keys forgotten to make room for a new key (leases given back).
  Counter new_keys_deferred;    // New keys answered by the fallback during a flood, unasked.
  Counter decided_in_store;     // Waiting checks the lease that landed did not cover.
  Counter unconfirmed_allowed;  // Checks allowed from the per-key allowance, unconfirmed.
  Counter debts;                // Store answers that left a row owing (see ApplyOnRow).
  Gauge unconfirmed;            // Tokens admitted and not yet confirmed by the store.
};

// Each key this sidecar sees holds up to a few leases: tokens debited from the key's shared row
// (kLease, in the same batched transactions as strict mode) and spent here, in microseconds,
// with source Lease. A key's state is a few small parts, each of which states its own rules:
//   - LeaseLedger: the leases held (tokens, expiry, debit time), whether a fetch is in flight,
//     and whether the last grant was cut short. A lease is spent only until ttl after its
//     fetch was sent; then, and on a policy change or ReturnAll, its unused tokens go back
//     (kReturn).
//   - DemandEstimate: tokens asked per microsecond, smoothed over about one R = ttl / 4.
//   - DenialCache: "denied until T" after the store granted nothing, with a random extra.
//   - what the row kept at the last answer (for remaining and reset_after_ms estimates).
// The pure functions of lease_plan.h decide from them how large a fetch is (about R's demand,
// capped at limit / kLeaseShare, at least R's refill) and whether to prefetch (when fewer than
// half a lease is held, so steady traffic never waits). A check waits only while its key holds
// too few tokens and a fetch is in flight; waiting checks are served in order when it lands,
// and those its lease does not cover are each decided in the store at once (a kCheck, as in
// strict mode; answered with source Lease, as a lease of exactly its cost spent at once), in the
// key's next transaction. So a check waits for at most two transactions of
// its key, the fetch in flight when it arrived and then its own, as a strict check queued behind
// one: never for a chain of fetches, which a slow database would stretch past the timeout. Such
// a check spends its tokens as it takes them, so it adds nothing to the bound below.
//
// Optimistic admission: a check of a key holding no lease (a cold key: first seen, or its lease
// expired and the key forgotten) need not wait for the store. While this sidecar has had no
// answer for the key (a key it has heard of within ttl waits, as before, so a key in use is
// decided exactly), no fetch of it is in flight and no debt is cached, it is admitted from a
// per-key allowance of u tokens (unconfirmed_per_key), at most unconfirmed_max tokens across all
// keys (and max_keys / kUnconfirmedShare), and the fetch it would have waited for is sent at once
// carrying them (StoreOp::owed): the store takes them whether they are there or not, the row going
// into debt for what it lacks, and grants nothing until refill has repaid it (see ApplyOnRow). That
// fetch asks for a lease only when the key's demand is at least half a token per R; otherwise it
// only records the debit. An answer that leaves the row owing is cached as a denial (and as "no
// optimistic admission", which survives a policy change) until the debt and a token are refilled:
// so each sidecar has at most u tokens of a key either unconfirmed or in a debt not yet repaid. An
// allowance the store did not confirm (a failed transaction) stays on the key, which is neither
// forgotten nor evicted, and is sent again with its next fetch, or by Tick after ttl. While the
// store is not ready (down, the breaker open), or has confirmed nothing for R while tokens wait for
// it (a locked table, a stalled server), no check is admitted unconfirmed: such checks wait or get
// the fallback, as before.
//
// Together: in any interval of length T the pods admit at most
// capacity + rate * (T + ttl) + P * u, P being the number of sidecars that checked the key
// (u = 0: capacity + rate * (T + ttl)).
//
// Fixed windows (options.algorithm): a lease is debited from its row's window, and spent only
// until min(ttl, the rest of that window) after its fetch was sent, the rest being the
// database's window_end_us - now_us at the debit. The fetch is sent before the debit, so on a
// local clock that runs no faster than the database's (see the README's proof) the lease
// expires no later than its window ends. Its return names the window's start, and the store
// gives the tokens back only to that window while it holds. Every admission then lies in one
// window whose debits, less what went back to it, are at most `limit`: at most limit admissions
// per window across the pods, exactly, with no ttl term. A denial is cached until the window's
// end, with no random extra (every sidecar may ask again at once when a window opens).
//
// When the store cannot decide (a fetch or a read refused or failed with StoreUnavailable), the
// checks concerned get the fallback's answer instead, when there is one. A key whose fetch was
// refused and that holds nothing is forgotten at the next Tick.
//
// Memory: at most max_keys keys (and max_key_bytes of key text) have lease state. A new key
// that finds the table full evicts the least recently asked of a sample of keys (see
// BucketTable::EvictOne) that have no fetch in flight: its leases go back to the row, as on
// expiry, so an eviction never over-admits. When every key sampled is waiting for a fetch, the
// new key's check is decided in the store directly, as in strict mode, and leaves no state.
//
// A flood of new keys: each costs a fetch, a database round trip, before its answer. When the
// store answers that it deferred a new key (its bound on new rows is reached), this sidecar
// knows a flood is on, until kFloodHoldUs after new keys last came faster than the store's
// own rate of new rows: meanwhile a check of a key it holds no state for is answered by the
// fallback at once, so that no check of a flood waits for the database; at that rate, such a
// key also gets state and a lease fetched in the background, for its next checks (a legitimate
// new key is served from its lease from then on; until the store has answered that lease, the
// key's checks are answered as the flood's). Other keys with state are served as always.
//
// Thread-safety: the loop thread only (metrics() may be read from any thread). The store, clock
// and fallback (may be null) must outlive the engine; the store must finish (or fail) every Take
// before either is destroyed.
class LeaseEngine final : public Engine {
 public:
  static constexpr int64_t kFloodHoldUs = 1'000'000;
  // Tokens admitted unconfirmed keep their keys from eviction: at most max_keys / this many of
  // them at once (however large unconfirmed_max), so that a flood's new keys never fill the
  // table with keys that cannot go and crowd out the ones in use.
  static constexpr size_t kUnconfirmedShare = 8;

  LeaseEngine(SharedStore& store, Clock& clock, const HashKey& hash_key,
              const LeaseOptions& options, Fallback* fallback = nullptr);

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

  const LeaseMetrics& metrics() const { return metrics_; }
  size_t key_count() const { return keys_.size(); }
  // Entries in the queue of keys to look at again (about one per key).
  size_t scheduled_visits() const { return revisits_.size(); }

 private:
  struct Waiter {
    uint64_t tag;
    CheckCallback* done;
    uint32_t cost;
    Policy policy;  // The check's, for the fallback: the key's may change while it waits.
  };
  // What the row kept at the last answer to a fetch: the estimates in allowed answers.
  struct RowView {
    bool answered = false;   // Some fetch was decided: the fields below are meaningful.
    uint32_t remaining = 0;  // Whole tokens the row kept.
    int64_t full_at_us = 0;  // When the row would be full (local clock).
  };
  // When Tick looks at a key again: to give expired leases back, or to forget it.
  struct Visit {
    uint64_t ticket = 0;  // The live entry of this key in revisits_; 0 when none.
    int64_t at_us = 0;
  };
  // Checks waiting for a fetch, in arrival order. Holds no memory while empty, which most keys
  // are most of the time.
  class WaiterQueue {
   public:
    bool empty() const { return head_ == items_.size(); }
    const Waiter& front() const { return items_[head_]; }
    void push_back(const Waiter& waiter) { items_.push_back(waiter); }
    void pop_front() {
      if (++head_ == items_.size()) clear();
    }
    void clear() {
      std::vector<Waiter>().swap(items_);
      head_ = 0;
    }
    uint64_t total_cost() const {
      uint64_t cost = 0;
      for (size_t i = head_; i < items_.size(); ++i) cost += items_[i].cost;
      return cost;
    }

   private:
    std::vector<Waiter> items_;
    size_t head_ = 0;  // items_[head_] is the front.
  };
  struct KeyState {
    std::string key;  // For the fetches and returns Tick and eviction send.
    Policy policy;
    LeaseLedger ledger;
    DemandEstimate demand;
    DenialCache denial;
    RowView row;
    WaiterQueue waiters;  // Non-empty only while a fetch is in flight.
    Visit visit;
    int64_t last_asked_us = 0;  // Local clock: the last check that took (or asked) tokens.
    // Let in by a flood's background lease (AnswerDuringFlood) and not answered by the store
    // yet: its checks are a flood's, answered at once, not made to wait for that lease.
    bool flood_born = false;
    uint32_t unconfirmed = 0;   // Tokens admitted from the allowance, not confirmed yet.
    int64_t debt_until_us = 0;  // Local clock: the row owes until then; no admission unconfirmed.
  };
  struct Revisit {
    int64_t at_us;  // Local clock.
    uint64_t ticket;
    KeyDigest key;
    bool operator>(const Revisit& o) const { return at_us > o.at_us; }
  };
  // A fetch in flight: what its answer is applied to.
  struct Fetch {
    std::string key;
    Policy policy;
    int64_t sent_us;  // Local clock.
    FetchSize size;
    uint32_t owed;  // Tokens admitted unconfirmed that it carries (StoreOp::owed).
  };

  // The key's state under `policy`; null when the table is full of keys waiting for fetches.
  // `digest` is the key's (KeyedDigest), computed once by the caller.
  KeyState* StateOf(std::string_view key, const KeyDigest& digest, const Policy& policy,
                    int64_t now);
  // Makes room for a key of `key_bytes` bytes; false when no key could be evicted.
  bool MakeRoom(size_t key_bytes, int64_t now);
  // During a flood (see the class comment): the fallback's answer to a check of a key without
  // state, and at the store's rate of new rows, a lease fetched for the key's next checks.
  void AnswerDuringFlood(const CheckQuery& query, const KeyDigest& digest, int64_t now,
                         uint64_t tag, CheckCallback& done);
  // The fallback's answer to a check the store is not asked for during a flood, counted.
  void AnswerFlooded(const CheckQuery& query, uint64_t tag, CheckCallback& done);
  // Forgets the key's state (its leases must have gone back).
  void Forget(const KeyDigest& digest, const KeyState& state);
  static size_t KeyBytes(std::string_view key) { return key.size(); }
  // Answers a read (cost 0): from memory only while this sidecar holds tokens of the key under
  // the same policy.
  void Read(const CheckQuery& query, KeyState* found, int64_t now, uint64_t tag,
            CheckCallback& done);
  void Serve(std::string_view key, KeyState& state, int64_t now);
  // Sends a fetch for the key, sized for `need` tokens and the waiting checks, or with `need` 0
  // for the key's demand alone (none: it only carries what was admitted unconfirmed). Every
  // fetch carries the key's unconfirmed tokens. Returns false when the batcher refused it.
  bool StartFetch(std::string_view key, KeyState& state, uint32_t need, int64_t now);
  // Whether a check of `cost` may be admitted unconfirmed now (see the class comment).
  bool MayAdmitUnconfirmed(const KeyState& state, uint32_t cost, int64_t now) const;
  // Admits it, and sends the fetch that carries it; false (nothing admitted) when that fetch
  // could not be sent.
  bool AdmitUnconfirmed(std::string_view key, KeyState& state, uint32_t cost, int64_t now);
  // `tokens` admitted unconfirmed are confirmed by the store, or lost with a forgotten key.
  void SettleUnconfirmed(KeyState* state, uint32_t tokens);
  void OnFetched(const Fetch& fetch, Result<StoreAnswer> answer);
  // Records a decided fetch's grant (a lease) or denial in the key's parts.
  void Record(const Fetch& fetch, KeyState& state, const StoreAnswer& answer, int64_t now);
  int64_t DrawJitter(const Policy& policy, uint32_t min_grant, bool granted_last);
  // What a grant's return is dated by (StoreOp::debit_us): its debit's database time, or for a
  // fixed window its window's start.
  int64_t DebitOf(const StoreAnswer& answer) const;
  // Answers every waiting check of the key with `why` (resolved by the fallback).
  void FailWaiters(std::string_view key, KeyState& state, const Status& why);
  // Sends every waiting check of the key to the store as a kCheck of its own (strict mode).
  void DecideWaitersInStore(std::string_view key, KeyState& state);
  void MaybePrefetch(std::string_view key, KeyState& state, int64_t now);
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
  const bool fixed_window_;  // options.algorithm is kFixedWindow.
  std::minstd_rand rng_;
  BucketTable<KeyState> keys_;
  const size_t max_key_bytes_;
  size_t key_bytes_ = 0;               // Of the keys in keys_.
  const Policy new_key_rate_;          // new_keys_per_sec per second; limit 0 when unbounded.
  TokenBucket::State new_key_budget_;  // Of new_key_rate_.
  int64_t flood_until_us_ = 0;         // Local clock; a flood is on before it.
  std::priority_queue<Revisit, std::vector<Revisit>, std::greater<>> revisits_;
  const uint32_t unconfirmed_per_key_;
  const uint32_t unconfirmed_max_;
  uint64_t unconfirmed_total_ = 0;  // Tokens admitted unconfirmed, all keys together.
  // Local clock: the store last confirmed tokens, or tokens began to wait after none did.
  int64_t last_confirmed_us_ = 0;
  size_t fetches_in_flight_ = 0;
  size_t returns_in_flight_ = 0;
  bool returning_all_ = false;
  bool sending_all_ = false;  // ReturnAll is sending every lease back.
  uint64_t last_ticket_ = 0;
  std::function<void()> on_returned_all_;
  Fallback* const fallback_;
  LeaseMetrics metrics_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_LEASE_ENGINE_H_
