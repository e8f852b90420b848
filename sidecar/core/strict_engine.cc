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
    const size_t n = std::min(queue_.size(), kMaxBatch);
    std::vector<StoreCheck> batch(std::make_move_iterator(queue_.begin()),
                                  std::make_move_iterator(queue_.begin() + n));
    std::vector<Waiter> waiters(waiters_.begin(), waiters_.begin() + n);
    queue_.erase(queue_.begin(), queue_.begin() + n);
    waiters_.erase(waiters_.begin(), waiters_.begin() + n);
    store_.Take(std::move(batch),
                [this, waiters = std::move(waiters)](Result<std::vector<CheckResult>> results) {
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
