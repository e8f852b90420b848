// LeaseEngine: answers checks from memory, out of leases of tokens debited from shared buckets.
#include "sidecar/core/lease_engine.h"

#include <algorithm>
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

// Whole milliseconds, rounded up, for `tokens` to refill at `policy`'s rate.
uint32_t MillisToRefill(const Policy& policy, uint32_t tokens) {
  return TokenBucket::MillisToGain(uint128_t{tokens} * policy.window_ms * 1000, policy);
}

}  // namespace

LeaseEngine::LeaseEngine(SharedStore& store, Clock& clock, const HashKey& hash_key,
                         const LeaseOptions& options, Fallback* fallback)
    : batcher_(store, options.algorithm),
      clock_(clock),
      ttl_us_(static_cast<int64_t>(options.ttl_ms) * 1000),
      refresh_us_(std::max<int64_t>(1, ttl_us_ / 4)),
      jitter_denials_(options.jitter_denials),
      fixed_window_(options.algorithm == Algorithm::kFixedWindow),
      rng_(static_cast<std::minstd_rand::result_type>(options.jitter_seed)),
      keys_(hash_key, options.max_keys),
      max_key_bytes_(options.max_key_bytes),
      new_key_rate_{options.new_keys_per_sec, 1000},
      new_key_budget_(TokenBucket::Fresh(new_key_rate_, clock.NowMicros())),
      unconfirmed_per_key_(options.unconfirmed_per_key),
      unconfirmed_max_(std::min<size_t>(options.unconfirmed_max,
                                        std::max<size_t>(1, options.max_keys / kUnconfirmedShare))),
      fallback_(fallback) {
  metrics_.max_keys.Set(static_cast<int64_t>(keys_.max_keys()));
}

void LeaseEngine::Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) {
  if (returning_all_) {
    done.OnCheckDone(tag, Refusal(CheckStatus::kShuttingDown, query.policy.limit, Source::kLease));
    return;
  }
  const int64_t now = clock_.NowMicros();
  const KeyDigest digest = keys_.DigestOf(query.key);  // Once per check.
  KeyState* found = keys_.Find(digest);
  if (found == nullptr && now < flood_until_us_) {
    AnswerDuringFlood(query, digest, now, tag, done);
    return;
  }
  if (query.cost == 0) {
    Read(query, found, now, tag, done);
    return;
  }
  KeyState* const known = found != nullptr && found->policy == query.policy
                              ? found
                              : StateOf(query.key, digest, query.policy, now);
  if (known == nullptr) {  // No room to hold the key: the store decides this check alone.
    CheckInStore(batcher_, query, tag, done, fallback_);
    return;
  }
  KeyState& state = *known;
  state.last_asked_us = now;
  state.demand.Ask(query.cost);
  ExpireLeases(query.key, state, now);
  if (state.flood_born && !state.row.answered && now < flood_until_us_) {
    // Its background lease has not landed (or it got nothing): waiting for it would make a
    // flood's check wait for a row insert at the database's tail.
    AnswerFlooded(query, tag, done);
    return;
  }
  if (state.waiters.empty()) {
    if (state.ledger.held() >= query.cost) {
      state.ledger.Spend(query.cost);
      metrics_.lease_allowed.Add();
      done.OnCheckDone(tag, Allowed(state, now));
      MaybePrefetch(query.key, state, now);
      return;
    }
    if (state.denial.Denies(now)) {
      metrics_.cache_denied.Add();
      done.OnCheckDone(tag, Denied(state, now));
      return;
    }
    if (MayAdmitUnconfirmed(state, query.cost, now) &&
        AdmitUnconfirmed(query.key, state, query.cost, now)) {
      metrics_.unconfirmed_allowed.Add();
      done.OnCheckDone(tag, Allowed(state, now));
      return;
    }
  }
  metrics_.waited.Add();
  state.waiters.push_back(Waiter{tag, &done, query.cost, query.policy});
  if (!state.ledger.fetching()) StartFetch(query.key, state, query.cost, now);
}

void LeaseEngine::Read(const CheckQuery& query, KeyState* found, int64_t now, uint64_t tag,
                       CheckCallback& done) {
  // A read changes nothing: it neither rescales the row, nor makes this sidecar give its
  // leases back, nor fetches any. It is answered here only while this sidecar holds tokens of
  // the key under the same policy; otherwise the row has the answer.
  const bool same = found != nullptr && found->policy == query.policy;
  if (same) ExpireLeases(query.key, *found, now);
  if (same && found->ledger.held() > 0 && found->row.answered) {
    metrics_.lease_allowed.Add();
    done.OnCheckDone(tag, Allowed(*found, now));
  } else {
    CheckInStore(batcher_, query, tag, done, fallback_);
  }
}

LeaseEngine::KeyState* LeaseEngine::StateOf(std::string_view key, const KeyDigest& digest,
                                            const Policy& policy, int64_t now) {
  KeyState* state = keys_.Find(digest);
  if (state == nullptr) {
    if (!MakeRoom(KeyBytes(key), now)) return nullptr;
    KeyState fresh;
    fresh.key = std::string(key);
    fresh.policy = policy;
    state = &keys_.Insert(digest, fresh);
    key_bytes_ += KeyBytes(key);
    metrics_.keys.Set(static_cast<int64_t>(keys_.size()));
    ScheduleRevisit(key, *state, now + ttl_us_);
    return state;
  }
  // A new policy for the key: what is held was leased under the old one. Give it back, forget
  // the old denial, and lease afresh; the store rescales the row on the next fetch. A fetch in
  // flight for the old policy has its grant given back when it lands (see OnFetched).
  ExpireLeases(key, *state, kForever);
  state->policy = policy;
  state->denial.Forget();
  state->row.remaining = 0;
  state->ledger.ForgetScarcity();
  return state;
}

bool LeaseEngine::MakeRoom(size_t key_bytes, int64_t now) {
  while (keys_.full() || key_bytes_ + key_bytes > max_key_bytes_) {
    const bool evicted = keys_.EvictOne(
        [](const KeyState& state) { return state.last_asked_us; },
        [now](const KeyState& state) {
          // A key waiting for a fetch is in use; any other costs one return to forget. A key
          // with tokens admitted unconfirmed, or a debt, holds what keeps its bound: kept too.
          const bool busy = state.ledger.fetching() || !state.waiters.empty() ||
                            state.unconfirmed > 0 || state.debt_until_us > now;
          return busy ? BucketTable<KeyState>::kNeverEvict : 0.0;
        },
        [this](KeyState& state) {
          ExpireLeases(state.key, state, kForever);  // Back to the row, as on expiry.
          key_bytes_ -= KeyBytes(state.key);
        });
    if (!evicted) return false;
    metrics_.evictions.Add();
    metrics_.keys.Set(static_cast<int64_t>(keys_.size()));
    if (keys_.size() == 0) return key_bytes_ + key_bytes <= max_key_bytes_;
  }
  return true;
}

void LeaseEngine::AnswerDuringFlood(const CheckQuery& query, const KeyDigest& digest, int64_t now,
                                    uint64_t tag, CheckCallback& done) {
  if (query.cost > 0 && TokenBucket::Decide(new_key_budget_, new_key_rate_, 1, now).allowed) {
    // One of the store's new rows per second: a lease for this key's next checks, fetched in
    // the background. This check does not wait for it.
    if (KeyState* state = StateOf(query.key, digest, query.policy, now); state != nullptr) {
      state->flood_born = true;
      state->last_asked_us = now;
      state->demand.Ask(query.cost);
      StartFetch(query.key, *state, query.cost, now);
    }
  } else {
    // New keys still arrive faster than the store takes them: the flood goes on. (The keys let
    // through get rows, not deferrals, so the store alone would never say so again.)
    flood_until_us_ = now + kFloodHoldUs;
  }
  AnswerFlooded(query, tag, done);
}

void LeaseEngine::AnswerFlooded(const CheckQuery& query, uint64_t tag, CheckCallback& done) {
  metrics_.new_keys_deferred.Add();
  const CheckResult refusal =
      StoreRefusal(Status::Unavailable("a flood of new keys"), query.policy.limit);
  done.OnCheckDone(tag, ResolveWith(fallback_, query, refusal));
}

void LeaseEngine::Forget(const KeyDigest& digest, const KeyState& state) {
  key_bytes_ -= KeyBytes(state.key);
  keys_.Erase(digest);
  metrics_.keys.Set(static_cast<int64_t>(keys_.size()));
}

bool LeaseEngine::StartFetch(std::string_view key, KeyState& state, uint32_t need, int64_t now) {
  state.demand.OnFetch(now, refresh_us_);
  const Algorithm algorithm = fixed_window_ ? Algorithm::kFixedWindow : Algorithm::kTokenBucket;
  FetchSize size;  // With `need` 0 while giving everything back: only what it carries.
  if (need > 0) {
    size = SizeFetch(state.policy, state.demand.per_us(), refresh_us_, need,
                     state.waiters.total_cost(), algorithm);
  } else if (!returning_all_) {
    size = SizeUnconfirmedFetch(state.policy, state.demand.per_us(), refresh_us_, algorithm);
  }
  Fetch fetch{std::string(key), state.policy, now, size, state.unconfirmed};
  StoreOp op{fetch.key, fetch.size.min_grant, fetch.policy, StoreOp::Kind::kLease, fetch.size.want};
  op.owed = fetch.owed;
  // In flight before Submit: a store may answer (fail) the fetch before Submit returns.
  state.ledger.set_fetching(true);
  ++fetches_in_flight_;
  Status sent = batcher_.Submit(std::move(op), [this, fetch = std::move(fetch)](
                                                   std::string_view, Result<StoreAnswer> answer) {
    OnFetched(fetch, std::move(answer));
  });
  if (sent.ok()) {
    metrics_.fetches.Add();
    return true;
  }
  state.ledger.set_fetching(false);
  --fetches_in_flight_;
  FailWaiters(key, state, sent);
  return false;
}

bool LeaseEngine::MayAdmitUnconfirmed(const KeyState& state, uint32_t cost, int64_t now) const {
  // Only a key this sidecar has had no answer for (first seen here, or forgotten since its
  // leases went back): one it has heard of within ttl waits for what the database says, as
  // before, so that a key in use (hot, scarce, denied, or a window spent) is decided exactly.
  // A database that has confirmed nothing for R while tokens wait (locked, stalled) is treated
  // as one that cannot be reached.
  const bool confirming = unconfirmed_total_ == 0 || now - last_confirmed_us_ <= refresh_us_;
  return state.unconfirmed + uint64_t{cost} <= unconfirmed_per_key_ &&
         unconfirmed_total_ + cost <= unconfirmed_max_ && !state.ledger.fetching() &&
         now >= state.debt_until_us && !state.row.answered && confirming &&
         batcher_.store().ready();
}

bool LeaseEngine::AdmitUnconfirmed(std::string_view key, KeyState& state, uint32_t cost,
                                   int64_t now) {
  if (unconfirmed_total_ == 0) last_confirmed_us_ = now;  // Waiting for confirmations from now.
  state.unconfirmed += cost;
  unconfirmed_total_ += cost;
  if (!StartFetch(key, state, 0, now)) {
    SettleUnconfirmed(&state, cost);  // Not admitted after all.
    return false;
  }
  metrics_.unconfirmed.Set(static_cast<int64_t>(unconfirmed_total_));
  return true;
}

void LeaseEngine::SettleUnconfirmed(KeyState* state, uint32_t tokens) {
  if (tokens == 0) return;
  unconfirmed_total_ -= tokens;
  if (state != nullptr) state->unconfirmed -= tokens;
  metrics_.unconfirmed.Set(static_cast<int64_t>(unconfirmed_total_));
}

void LeaseEngine::OnFetched(const Fetch& fetch, Result<StoreAnswer> answer) {
  --fetches_in_flight_;
  if (answer.ok() && answer->new_key_deferred && new_key_rate_.limit > 0) {
    flood_until_us_ = clock_.NowMicros() + kFloodHoldUs;
  }
  KeyState* found = keys_.Find(fetch.key);  // A key with a fetch in flight is never forgotten.
  if (found == nullptr) {
    SettleUnconfirmed(nullptr, fetch.owed);
    MaybeFinishReturnAll();
    return;
  }
  KeyState& state = *found;
  state.ledger.set_fetching(false);
  const int64_t now = clock_.NowMicros();
  if (!answer.ok() || answer->check.status != CheckStatus::kOk) {
    // The store could not decide (a failed transaction, or a row that vanished under it): no
    // lease and no denial to cache; the waiting checks are refused and the next check asks again.
    FailWaiters(fetch.key, state,
                answer.ok() ? Status::Unavailable("store could not decide") : answer.status());
    // A key that got nothing (a flood's new key past the store's bound, say) is forgotten at
    // the next Tick, if it is still idle then, rather than held for a ttl. Tokens it admitted
    // unconfirmed stay on it, and go again with its next fetch, or from Tick after ttl.
    if (KeyState* still = keys_.Find(fetch.key); still != nullptr) {
      ScheduleRevisit(fetch.key, *still, still->unconfirmed > 0 ? now + ttl_us_ : now);
    }
    MaybeFinishReturnAll();
    return;
  }
  // What a landing sends (returns, the checks the lease does not cover, a prefetch) goes in
  // one transaction: no check waits for more than the next one.
  const StoreBatcher::Hold together(batcher_);
  SettleUnconfirmed(&state, fetch.owed);  // Taken by the row, there or not.
  if (fetch.owed > 0) last_confirmed_us_ = now;
  if (answer->in_debt) {
    // The row owes (what this sidecar or others admitted unconfirmed): nothing is admitted
    // unconfirmed here until refill has repaid it, under any policy.
    metrics_.debts.Add();
    state.debt_until_us = now + int64_t{std::max<uint32_t>(1, answer->check.retry_after_ms)} * 1000;
  }
  if (returning_all_ || !(fetch.policy == state.policy)) {
    // Leased under a policy the key no longer has, or while giving everything back.
    if (answer->granted > 0) {
      SendReturn(fetch.key, fetch.policy, answer->granted, DebitOf(*answer));
    }
  } else {
    Record(fetch, state, *answer, now);
  }
  // A lease spent only until ttl after its fetch was sent: a grant that landed later than that,
  // or an older lease that expired since the last check or Tick, goes back before serving.
  ExpireLeases(fetch.key, state, now);
  Serve(fetch.key, state, now);
  MaybeFinishReturnAll();
}

void LeaseEngine::Record(const Fetch& fetch, KeyState& state, const StoreAnswer& answer,
                         int64_t now) {
  const CheckResult& row = answer.check;
  state.row = RowView{true, row.remaining, now + int64_t{row.reset_after_ms} * 1000};
  if (answer.granted > 0) {
    metrics_.tokens_leased.Add(answer.granted);
    int64_t expires = fetch.sent_us + ttl_us_;
    if (fixed_window_) {
      // Never past its window: the rest of the window at the debit, counted from before the
      // fetch was sent.
      expires = std::min(expires, fetch.sent_us + (answer.window_end_us - answer.now_us));
    }
    state.ledger.Add(answer.granted, fetch.size.want, expires, DebitOf(answer));
    state.denial.OnGranted();
    ScheduleRevisit(fetch.key, state, expires);
  } else if (fetch.size.want == 0 && !answer.in_debt) {
    state.denial.OnGranted();  // Only a debit, which the row could pay: it had tokens.
  } else {
    state.denial.OnDenied(
        now + std::max<int64_t>(1, row.retry_after_ms) * 1000 +
        DrawJitter(fetch.policy, fetch.size.min_grant, state.denial.granted_last()));
  }
}

int64_t LeaseEngine::DebitOf(const StoreAnswer& answer) const {
  return fixed_window_ ? answer.window_start_us : answer.now_us;
}

int64_t LeaseEngine::DrawJitter(const Policy& policy, uint32_t min_grant, bool granted_last) {
  // A fixed window is denied until its end exactly: the next window is all there at once.
  if (!jitter_denials_ || fixed_window_) return 0;
  const JitterRange range = DenialJitter(policy, min_grant, refresh_us_, granted_last);
  if (range.span == 0) return 0;
  return static_cast<int64_t>(rng_() % (range.span + 1) + range.low);
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
    } else if (state.ledger.held() >= w.cost) {
      state.ledger.Spend(w.cost);
      w.done->OnCheckDone(w.tag, Allowed(state, now));
    } else if (state.denial.Denies(now)) {
      w.done->OnCheckDone(w.tag, Denied(state, now));
    } else {
      // The fetch that landed does not cover this check (nor, then, those behind it): they
      // have waited through one transaction of the key already. Another lease, which the row
      // may cut to half of what it holds, could start a chain of fetches; instead each is
      // decided in the store as in strict mode, all in the key's next transaction.
      DecideWaitersInStore(key, state);
      break;
    }
    state.waiters.pop_front();
  }
  MaybePrefetch(key, state, now);
}

void LeaseEngine::DecideWaitersInStore(std::string_view key, KeyState& state) {
  // Moved out first: an answer (a refusal resolved at once) may start the next check of this
  // key. Sent before any prefetch, which then leases only what they leave.
  // The policy is copied: once its waiters are gone the key may be evicted by a check that an
  // answer starts.
  WaiterQueue waiters = std::move(state.waiters);
  state.waiters.clear();
  const Policy policy = state.policy;
  for (; !waiters.empty(); waiters.pop_front()) {
    const Waiter& w = waiters.front();
    if (w.cost > policy.limit) {  // As in Serve: asked under an older, larger policy.
      w.done->OnCheckDone(w.tag,
                          Refusal(CheckStatus::kCostExceedsLimit, policy.limit, Source::kLease));
      continue;
    }
    metrics_.decided_in_store.Add();
    // Source Lease: as if leased exactly its cost and spent at once, which is what it is.
    CheckInStore(batcher_, CheckQuery{key, w.cost, policy}, w.tag, *w.done, fallback_,
                 Source::kLease);
  }
}

void LeaseEngine::FailWaiters(std::string_view key, KeyState& state, const Status& why) {
  // Moved out first: an answer may start the next check of this key.
  WaiterQueue waiters = std::move(state.waiters);
  state.waiters.clear();
  const CheckResult refusal = StoreRefusal(why, state.policy.limit);
  for (; !waiters.empty(); waiters.pop_front()) {
    const Waiter& w = waiters.front();
    w.done->OnCheckDone(w.tag, ResolveWith(fallback_, CheckQuery{key, w.cost, w.policy}, refusal));
  }
}

void LeaseEngine::MaybePrefetch(std::string_view key, KeyState& state, int64_t now) {
  if (returning_all_) return;
  // The pure test first: it rules out most hits (a fetch in flight, a scarce or denied key),
  // which then never ask the store (a virtual call that walks its sessions).
  if (!ShouldPrefetch(state.policy, state.ledger, state.demand, state.denial, now, refresh_us_)) {
    return;
  }
  // A store that cannot decide gets no prefetch: a check that needs a lease says so itself.
  if (batcher_.store().ready()) StartFetch(key, state, 1, now);
}

void LeaseEngine::ExpireLeases(std::string_view key, KeyState& state, int64_t now) {
  state.ledger.Expire(now, [&](const LeaseLedger::Lease& lease) {
    if (now != kForever) metrics_.tokens_expired.Add(lease.tokens);  // Not a policy change or stop.
    if (lease.tokens > 0) SendReturn(key, state.policy, lease.tokens, lease.debit_us);
  });
}

void LeaseEngine::SendReturn(std::string_view key, const Policy& policy, uint32_t tokens,
                             int64_t debit_us) {
  metrics_.returns.Add();
  ++returns_in_flight_;
  StoreOp op{std::string(key), tokens, policy, StoreOp::Kind::kReturn, 0, debit_us};
  Status sent =
      batcher_.Submit(std::move(op), [this](std::string_view, Result<StoreAnswer> answer) {
        --returns_in_flight_;
        // A failed return loses those tokens until the row refills: fewer admitted, never more.
        if (answer.ok()) metrics_.tokens_returned.Add(answer->granted);
        MaybeFinishReturnAll();
      });
  if (!sent.ok()) --returns_in_flight_;
}

void LeaseEngine::ScheduleRevisit(std::string_view key, KeyState& state, int64_t at_us) {
  if (state.visit.ticket != 0 && state.visit.at_us <= at_us) return;  // Visited by then anyway.
  // One live entry per key: an earlier visit makes the later entry stale (its ticket no longer
  // matches), so the queue holds about one entry per key however often it is rescheduled.
  state.visit = Visit{++last_ticket_, at_us};
  revisits_.push(Revisit{at_us, state.visit.ticket, keys_.DigestOf(key)});
}

void LeaseEngine::Tick() {
  const int64_t now = clock_.NowMicros();
  while (!revisits_.empty() && revisits_.top().at_us <= now) {
    const Revisit visit = revisits_.top();
    revisits_.pop();
    KeyState* state = keys_.Find(visit.key);
    if (state == nullptr || state->visit.ticket != visit.ticket) continue;  // Stale.
    state->visit.ticket = 0;
    ExpireLeases(state->key, *state, now);
    if (state->unconfirmed > 0 && !state->ledger.fetching() && batcher_.store().ready()) {
      StartFetch(state->key, *state, 0, now);  // What the store did not confirm, again.
    }
    const bool idle = state->ledger.empty() && state->waiters.empty() &&
                      !state->ledger.fetching() && !state->denial.Denies(now) &&
                      state->unconfirmed == 0 && state->debt_until_us <= now;
    if (idle) {
      Forget(visit.key, *state);
    } else if (state->unconfirmed > 0) {
      ScheduleRevisit(state->key, *state, now + ttl_us_);
    } else {
      // Leases expire in order, all within ttl; anything else is looked at again after ttl.
      ScheduleRevisit(state->key, *state,
                      state->ledger.empty() ? now + ttl_us_ : state->ledger.oldest_expiry_us());
    }
  }
}

void LeaseEngine::ReturnAll(std::function<void()> done) {
  returning_all_ = true;
  on_returned_all_ = std::move(done);
  // A store may fail a return before Submit returns: finishing is held off until every lease
  // has been sent, so that no key is skipped.
  sending_all_ = true;
  const int64_t now = clock_.NowMicros();
  keys_.ForEach([this, now](KeyState& state) {
    ExpireLeases(state.key, state, kForever);
    // Tokens admitted unconfirmed go to the store before the end (lost if it is down).
    if (state.unconfirmed > 0 && !state.ledger.fetching()) StartFetch(state.key, state, 0, now);
  });
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
  // A key this sidecar has no answer for yet (admitted unconfirmed) is taken to be full, as its
  // admission assumed; tokens admitted unconfirmed are counted out.
  CheckResult r;
  r.allowed = true;
  r.limit = state.policy.limit;
  const uint64_t row_left = state.row.answered ? state.row.remaining : state.policy.limit;
  const uint64_t left = state.ledger.held() + row_left;
  r.remaining = static_cast<uint32_t>(
      std::min<uint64_t>(state.policy.limit, left - std::min<uint64_t>(left, state.unconfirmed)));
  if (state.row.answered) {
    r.reset_after_ms = MillisUntil(state.row.full_at_us, now);
  } else {  // A window opens with its first check.
    r.reset_after_ms =
        fixed_window_ ? state.policy.window_ms : MillisToRefill(state.policy, state.unconfirmed);
  }
  r.source = Source::kLease;
  return r;
}

CheckResult LeaseEngine::Denied(const KeyState& state, int64_t now) const {
  CheckResult r;
  r.limit = state.policy.limit;
  r.remaining = static_cast<uint32_t>(std::min<uint64_t>(state.policy.limit, state.ledger.held()));
  r.retry_after_ms = std::max<uint32_t>(1, MillisUntil(state.denial.until_us(), now));
  r.reset_after_ms = std::max(r.retry_after_ms, MillisUntil(state.row.full_at_us, now));
  r.source = Source::kLease;
  return r;
}

}  // namespace ratelimit
