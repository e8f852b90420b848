// StrictEngine: every check decided by the shared store, in batches that follow the load.
#include "sidecar/core/strict_engine.h"

#include <algorithm>
#include <utility>

namespace ratelimit {

void StrictEngine::Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) {
  if (!store_.ready()) {
    done.OnCheckDone(
        tag, Refusal(CheckStatus::kStoreUnavailable, query.policy.limit, Source::kDatabase));
    return;
  }
  if (queue_.size() >= kMaxQueued) {
    done.OnCheckDone(tag, Refusal(CheckStatus::kOverloaded, query.policy.limit, Source::kDatabase));
    return;
  }
  queue_.push_back(StoreCheck{std::string(query.key), query.cost, query.policy});
  waiters_.push_back(Waiter{tag, &done, query.policy.limit});
  Pump();
}

void StrictEngine::Pump() {
  if (!store_.ready()) {  // The store went away while checks waited: answer them now.
    std::vector<Waiter> stranded(waiters_.begin(), waiters_.end());
    queue_.clear();
    waiters_.clear();
    Deliver(stranded, Status::Unavailable("store not ready"));
    return;
  }
  while (!queue_.empty() && store_.free_slots() > 0) {
    // Take every waiting check whose key no transaction of ours holds, in arrival order. Checks
    // of a key in flight stay queued, together and in order, for the transaction after it: two
    // sessions of one sidecar never queue on the same row lock.
    std::vector<StoreCheck> batch;
    std::vector<Waiter> waiters;
    std::vector<std::string> keys;
    std::deque<StoreCheck> kept_checks;
    std::deque<Waiter> kept_waiters;
    for (size_t i = 0; i < queue_.size(); ++i) {
      StoreCheck& check = queue_[i];
      const bool busy = in_flight_keys_.count(check.key) > 0;
      if (busy || batch.size() >= kMaxBatch) {
        kept_checks.push_back(std::move(check));
        kept_waiters.push_back(waiters_[i]);
        continue;
      }
      if (std::find(keys.begin(), keys.end(), check.key) == keys.end()) keys.push_back(check.key);
      batch.push_back(std::move(check));
      waiters.push_back(waiters_[i]);
    }
    queue_ = std::move(kept_checks);
    waiters_ = std::move(kept_waiters);
    if (batch.empty()) return;  // Everything waiting is for keys in flight.
    for (const std::string& key : keys) in_flight_keys_.insert(key);
    store_.Take(std::move(batch), [this, waiters = std::move(waiters), keys = std::move(keys)](
                                      Result<std::vector<CheckResult>> results) {
      for (const std::string& key : keys) in_flight_keys_.erase(key);
      Deliver(waiters, std::move(results));
      Pump();
    });
  }
}

void StrictEngine::Deliver(const std::vector<Waiter>& waiters,
                           Result<std::vector<CheckResult>> results) {
  const bool decided = results.ok() && results->size() == waiters.size();
  for (size_t i = 0; i < waiters.size(); ++i) {
    CheckResult result =
        decided ? (*results)[i]
                : Refusal(CheckStatus::kStoreUnavailable, waiters[i].limit, Source::kDatabase);
    result.source = Source::kDatabase;
    waiters[i].done->OnCheckDone(waiters[i].tag, result);
  }
}

}  // namespace ratelimit
