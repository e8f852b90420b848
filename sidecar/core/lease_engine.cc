// LeaseEngine: answers checks from memory, out of leases of tokens debited from shared buckets.
#include "sidecar/core/lease_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ratelimit {
namespace {

constexpr int64_t kForever = std::numeric_limits<int64_t>::max();

// Whole milliseconds from `now` until `at`, rounded up; 0 when `at` has passed.
uint32_t MillisUntil(int64_t at, int64_t now) {
  if (at <= now) return 0;
  const int64_t ms = (at - now + 999) / 1000;
  return static_cast<uint32_t>(std::min<int64_t>(ms, std::numeric_limits<uint32_t>::max()));
}

uint32_t CeilToTokens(double tokens, uint32_t limit) {
  if (!(tokens > 0)) return 0;
  return static_cast<uint32_t>(std::min<double>(std::ceil(tokens), limit));
}

}  // namespace

LeaseEngine::LeaseEngine(SharedStore& store, Clock& clock, const HashKey& hash_key,
                         const LeaseOptions& options)
    : batcher_(store),
      clock_(clock),
      ttl_us_(static_cast<int64_t>(options.ttl_ms) * 1000),
      refresh_us_(std::max<int64_t>(1, ttl_us_ / 4)),
      jitter_denials_(options.jitter_denials),
      rng_(static_cast<std::minstd_rand::result_type>(options.jitter_seed)),
      keys_(hash_key) {}

void LeaseEngine::Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) {
  if (returning_all_) {
    done.OnCheckDone(tag, Refusal(CheckStatus::kShuttingDown, query.policy.limit, Source::kLease));
    return;
  }
  const int64_t now = clock_.NowMicros();
  KeyState* found = keys_.Find(query.key);
  if (query.cost == 0) {
    // A read changes nothing: it neither rescales the row, nor makes this sidecar give its
    // leases back, nor fetches any. It is answered here only while this sidecar holds tokens of
    // the key under the same policy; otherwise the row has the answer.
    const bool same = found != nullptr && found->policy == query.policy;
    if (same) ExpireLeases(query.key, *found, now);
    if (same && found->held > 0 && found->answered_before) {
      ++stats_.lease_allowed;
      done.OnCheckDone(tag, Allowed(*found, now));
    } else {
      CheckInStore(batcher_, query, tag, done);
    }
    return;
  }
  KeyState& state = found != nullptr && found->policy == query.policy
                        ? *found
                        : StateOf(query.key, query.policy, now);
  state.requested += query.cost;
  ExpireLeases(query.key, state, now);
  if (state.waiters.empty()) {
    if (state.held >= query.cost) {
      Spend(state, query.cost);
      ++stats_.lease_allowed;
      done.OnCheckDone(tag, Allowed(state, now));
      MaybePrefetch(query.key, state, now);
      return;
    }
    if (state.denied_until_us > now) {
      ++stats_.cache_denied;
      done.OnCheckDone(tag, Denied(state, now));
      return;
    }
  }
  ++stats_.waited;
  state.waiters.push_back(Waiter{tag, &done, query.cost});
  if (!state.fetching) StartFetch(query.key, state, query.cost, now);
}

LeaseEngine::KeyState& LeaseEngine::StateOf(std::string_view key, const Policy& policy,
                                            int64_t now) {
  KeyState* state = keys_.Find(key);
  if (state == nullptr) {
    KeyState fresh;
    fresh.policy = policy;
    keys_.Insert(key, fresh);
    state = keys_.Find(key);
    ScheduleRevisit(key, *state, now + ttl_us_);
    return *state;
  }
  // A new policy for the key: what is held was leased under the old one. Give it back, forget
  // the old denial, and lease afresh; the store rescales the row on the next fetch. A fetch in
  // flight for the old policy has its grant given back when it lands (see OnFetched).
  ExpireLeases(key, *state, kForever);
  state->policy = policy;
  state->denied_until_us = 0;
  state->row_remaining = 0;
  state->scarce = false;
  return *state;
}

void LeaseEngine::Spend(KeyState& state, uint32_t cost) {
  state.held -= cost;
  size_t used = 0;
  while (cost > 0) {
    Lease& lease = state.leases[used];
    const uint32_t take = std::min(lease.tokens, cost);
    lease.tokens -= take;
    cost -= take;
    if (lease.tokens == 0) ++used;
  }
  state.leases.erase(state.leases.begin(), state.leases.begin() + used);
}

uint32_t LeaseEngine::LeaseWant(const KeyState& state, uint32_t need, uint64_t waiting) const {
  const Policy& policy = state.policy;
  const uint32_t cap =
      std::max(need, CeilToTokens(double(policy.limit) / kLeaseShare, policy.limit));
  const double demand_tokens = state.demand_per_us * static_cast<double>(refresh_us_);
  const uint64_t wanted = uint64_t{CeilToTokens(demand_tokens, policy.limit)} + waiting;
  return static_cast<uint32_t>(std::clamp<uint64_t>(wanted, need, cap));
}

void LeaseEngine::StartFetch(std::string_view key, KeyState& state, uint32_t need, int64_t now) {
  const Policy policy = state.policy;
  if (state.fetched_before && now > state.last_fetch_us) {
    // Demand since the last fetch, blended with the estimate so far: at least half new, and
    // all new once a whole refresh interval has passed, so a ramp is followed within a fetch.
    const double elapsed = static_cast<double>(now - state.last_fetch_us);
    const double sample = static_cast<double>(state.requested) / elapsed;
    const double alpha = std::clamp(elapsed / static_cast<double>(refresh_us_), 0.5, 1.0);
    state.demand_per_us = state.demand_per_us * (1 - alpha) + sample * alpha;
  }
  state.requested = 0;
  state.last_fetch_us = now;
  state.fetched_before = true;

  uint64_t waiting = 0;
  for (const Waiter& w : state.waiters) waiting += w.cost;
  need = std::clamp<uint32_t>(need, 1, policy.limit);
  const uint32_t want = LeaseWant(state, need, waiting);
  const double refill_per_refresh =
      double(policy.limit) * static_cast<double>(refresh_us_) / (double(policy.window_ms) * 1000);
  const uint32_t min_grant =
      std::max(need, std::min(want, CeilToTokens(refill_per_refresh, policy.limit)));

  StoreOp op{std::string(key), min_grant, policy, StoreOp::Kind::kLease, want};
  // In flight before Submit: a store may answer (fail) the fetch before Submit returns.
  state.fetching = true;
  ++fetches_in_flight_;
  Status sent = batcher_.Submit(std::move(op), [this, key = std::string(key), policy, now,
                                                min_grant, want](Result<StoreAnswer> answer) {
    OnFetched(key, policy, now, min_grant, want, std::move(answer));
  });
  if (sent.ok()) {
    ++stats_.fetches;
  } else {
    state.fetching = false;
    --fetches_in_flight_;
    std::deque<Waiter> waiters = std::move(state.waiters);
    state.waiters.clear();
    for (const Waiter& w : waiters) w.done->OnCheckDone(w.tag, StoreRefusal(sent, policy.limit));
  }
}

void LeaseEngine::OnFetched(const std::string& key, const Policy& policy, int64_t sent_us,
                            uint32_t min_grant, uint32_t want, Result<StoreAnswer> answer) {
  --fetches_in_flight_;
  KeyState* found = keys_.Find(key);  // A key with a fetch in flight is never forgotten.
  if (found == nullptr) {
    MaybeFinishReturnAll();
    return;
  }
  KeyState& state = *found;
  state.fetching = false;
  const int64_t now = clock_.NowMicros();
  if (!answer.ok() || answer->check.status != CheckStatus::kOk) {
    // The store could not decide (a failed transaction, or a row that vanished under it): no
    // lease and no denial to cache; the waiting checks are refused and the next check asks again.
    const Status why =
        answer.ok() ? Status::Unavailable("store could not decide") : answer.status();
    std::deque<Waiter> waiters = std::move(state.waiters);
    state.waiters.clear();
    for (const Waiter& w : waiters)
      w.done->OnCheckDone(w.tag, StoreRefusal(why, state.policy.limit));
    MaybeFinishReturnAll();
    return;
  }
  if (returning_all_ || !(policy == state.policy)) {
    // Leased under a policy the key no longer has, or while giving everything back.
    if (answer->granted > 0) SendReturn(key, policy, answer->granted, answer->now_us);
  } else {
    const CheckResult& row = answer->check;
    state.answered_before = true;
    state.row_remaining = row.remaining;
    state.full_at_us = now + int64_t{row.reset_after_ms} * 1000;
    if (answer->granted > 0) {
      stats_.tokens_leased += answer->granted;
      const int64_t expires = sent_us + ttl_us_;
      state.leases.push_back(Lease{answer->granted, expires, answer->now_us});
      state.held += answer->granted;
      state.denied_until_us = 0;
      state.granted_last = true;
      // Less than wanted: the row is scarce (or was halved for the next sidecar). No prefetch
      // until a check needs more, so that this sidecar does not take the rest right away.
      state.scarce = answer->granted < want;
      ScheduleRevisit(key, state, expires);
    } else {
      state.denied_until_us = now + std::max<int64_t>(1, row.retry_after_ms) * 1000 +
                              DenialJitter(policy, min_grant, state.granted_last);
      state.granted_last = false;
    }
  }
  // A lease spent only until ttl after its fetch was sent: a grant that landed later than that,
  // or an older lease that expired since the last check or Tick, goes back before serving.
  ExpireLeases(key, state, now);
  Serve(key, state, now);
  MaybeFinishReturnAll();
}

int64_t LeaseEngine::DenialJitter(const Policy& policy, uint32_t min_grant, bool granted_last) {
  if (!jitter_denials_) return 0;
  // Up to the time the bucket takes to refill min_grant (at most R): long enough that the
  // draw, not which sidecar's answer came back first, decides who asks first next time. A
  // sidecar granted tokens by its previous fetch draws from the upper half, one denied from
  // the lower: those that lost the last round ask first in the next.
  const int64_t refill_us = static_cast<int64_t>(
      std::min<double>(static_cast<double>(refresh_us_),
                       double(min_grant) * double(policy.window_ms) * 1000 / double(policy.limit)));
  const uint64_t half = static_cast<uint64_t>(refill_us / 2);
  if (half == 0) return 0;
  return static_cast<int64_t>(rng_() % (half + 1) + (granted_last ? half : 0));
}

void LeaseEngine::Serve(std::string_view key, KeyState& state, int64_t now) {
  while (!state.waiters.empty()) {
    const Waiter w = state.waiters.front();
    if (returning_all_) {
      w.done->OnCheckDone(w.tag,
                          Refusal(CheckStatus::kShuttingDown, state.policy.limit, Source::kLease));
    } else if (w.cost > state.policy.limit) {
      // Asked under a policy the key no longer has, for more than its new capacity: it can
      // never be allowed, as the Limiter would have said under the new policy.
      w.done->OnCheckDone(
          w.tag, Refusal(CheckStatus::kCostExceedsLimit, state.policy.limit, Source::kLease));
    } else if (state.held >= w.cost) {
      Spend(state, w.cost);
      w.done->OnCheckDone(w.tag, Allowed(state, now));
    } else if (state.denied_until_us > now) {
      w.done->OnCheckDone(w.tag, Denied(state, now));
    } else {
      // Granted less than the waiting checks need (or nothing yet, after a policy change):
      // ask again for the first of them; the store either grants it or says until when not.
      StartFetch(key, state, w.cost, now);
      return;
    }
    state.waiters.pop_front();
  }
  MaybePrefetch(key, state, now);
}

void LeaseEngine::MaybePrefetch(std::string_view key, KeyState& state, int64_t now) {
  if (state.fetching || returning_all_ || state.scarce || state.denied_until_us > now) return;
  if (!batcher_.store().ready()) return;  // Checks that need a lease will say so.
  // Half of the lease that would be fetched now: half of R's demand, within the cap. Measured
  // against the lease size and not the raw demand, so that a lease landing always lifts the
  // key above it, and a sidecar never chains fetches into more than the cap allows.
  if (state.demand_per_us <= 0) return;
  if (state.held * 2 < LeaseWant(state, 1, 0)) StartFetch(key, state, 1, now);
}

void LeaseEngine::ExpireLeases(std::string_view key, KeyState& state, int64_t now) {
  size_t expired = 0;
  for (const Lease& lease : state.leases) {
    if (lease.expires_us > now) break;  // Oldest first: expiry times only grow.
    if (now != kForever) stats_.tokens_expired += lease.tokens;  // Not a policy change or stop.
    if (lease.tokens > 0) SendReturn(key, state.policy, lease.tokens, lease.debit_us);
    state.held -= lease.tokens;
    ++expired;
  }
  state.leases.erase(state.leases.begin(), state.leases.begin() + expired);
}

void LeaseEngine::SendReturn(std::string_view key, const Policy& policy, uint32_t tokens,
                             int64_t debit_us) {
  ++stats_.returns;
  ++returns_in_flight_;
  StoreOp op{std::string(key), tokens, policy, StoreOp::Kind::kReturn, 0, debit_us};
  Status sent = batcher_.Submit(std::move(op), [this](Result<StoreAnswer> answer) {
    --returns_in_flight_;
    // A failed return loses those tokens until the row refills: fewer admitted, never more.
    if (answer.ok()) stats_.tokens_returned += answer->granted;
    MaybeFinishReturnAll();
  });
  if (!sent.ok()) --returns_in_flight_;
}

void LeaseEngine::ScheduleRevisit(std::string_view key, KeyState& state, int64_t at_us) {
  if (state.visit_ticket != 0 && state.visit_at_us <= at_us) return;  // Visited by then anyway.
  // One live entry per key: an earlier visit makes the later entry stale (its ticket no longer
  // matches), so the queue holds about one entry per key however often it is rescheduled.
  state.visit_ticket = ++last_ticket_;
  state.visit_at_us = at_us;
  revisits_.push(Revisit{at_us, state.visit_ticket, std::string(key)});
}

void LeaseEngine::Tick() {
  const int64_t now = clock_.NowMicros();
  keys_.ShrinkIfSparse();
  while (!revisits_.empty() && revisits_.top().at_us <= now) {
    const Revisit visit = revisits_.top();
    revisits_.pop();
    KeyState* state = keys_.Find(visit.key);
    if (state == nullptr || state->visit_ticket != visit.ticket) continue;  // Stale.
    state->visit_ticket = 0;
    ExpireLeases(visit.key, *state, now);
    const bool idle = state->leases.empty() && state->waiters.empty() && !state->fetching &&
                      state->denied_until_us <= now;
    if (idle) {
      keys_.Erase(visit.key);
    } else {
      // Leases expire in order, all within ttl; anything else is looked at again after ttl.
      ScheduleRevisit(visit.key, *state,
                      state->leases.empty() ? now + ttl_us_ : state->leases.front().expires_us);
    }
  }
}

void LeaseEngine::ReturnAll(std::function<void()> done) {
  returning_all_ = true;
  on_returned_all_ = std::move(done);
  // A store may fail a return before Submit returns: finishing is held off until every lease
  // has been sent, so that no key is skipped.
  sending_all_ = true;
  keys_.ForEach(
      [this](std::string_view key, KeyState& state) { ExpireLeases(key, state, kForever); });
  sending_all_ = false;
  MaybeFinishReturnAll();
}

void LeaseEngine::MaybeFinishReturnAll() {
  if (!returning_all_ || sending_all_ || !on_returned_all_) return;
  if (fetches_in_flight_ > 0 || returns_in_flight_ > 0) return;
  auto done = std::move(on_returned_all_);
  on_returned_all_ = nullptr;
  done();
}

CheckResult LeaseEngine::Allowed(const KeyState& state, int64_t now) const {
  // remaining and reset_after_ms are estimates: what this sidecar holds plus what the row kept
  // at the last answer.
  CheckResult r;
  r.allowed = true;
  r.limit = state.policy.limit;
  r.remaining = static_cast<uint32_t>(
      std::min<uint64_t>(state.policy.limit, state.held + state.row_remaining));
  r.reset_after_ms = MillisUntil(state.full_at_us, now);
  r.source = Source::kLease;
  return r;
}

CheckResult LeaseEngine::Denied(const KeyState& state, int64_t now) const {
  CheckResult r;
  r.limit = state.policy.limit;
  r.remaining = static_cast<uint32_t>(std::min<uint64_t>(state.policy.limit, state.held));
  r.retry_after_ms = std::max<uint32_t>(1, MillisUntil(state.denied_until_us, now));
  r.reset_after_ms = std::max(r.retry_after_ms, MillisUntil(state.full_at_us, now));
  r.source = Source::kLease;
  return r;
}

}  // namespace ratelimit
