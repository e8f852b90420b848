// StoreBatcher: sends operations on shared buckets to the store in batches that follow the load.
#include "sidecar/core/store_batcher.h"

#include <algorithm>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "sidecar/core/fallback.h"

namespace ratelimit {

StoreBatcher::StoreBatcher(SharedStore& store, Algorithm algorithm)
    : store_(store), algorithm_(algorithm) {
  store_.set_on_capacity([this] { Pump(); });
}

StoreBatcher::~StoreBatcher() { store_.set_on_capacity(nullptr); }

Status StoreBatcher::Submit(StoreOp op, OpDone done) {
  if (!store_.ready()) return Status::Unavailable("store not ready");
  if (queue_.size() >= kMaxQueued) return Status::Overloaded("too many operations waiting");
  op.algorithm = algorithm_;
  queue_.push_back(std::move(op));
  waiting_.push_back(std::move(done));
  if (holds_ == 0) Pump();
  return Status::Ok();
}

void StoreBatcher::FailQueued() {
  // Moved out first: an answer may submit again (and be refused, the store not being ready).
  std::deque<StoreOp> ops = std::move(queue_);
  std::deque<OpDone> stranded = std::move(waiting_);
  queue_.clear();
  waiting_.clear();
  for (size_t i = 0; i < ops.size(); ++i) {
    stranded[i](ops[i].key, Status::Unavailable("store not ready"));
  }
}

void StoreBatcher::Pump() {
  while (true) {
    // The store went away while operations waited, or stopped admitting more after the last
    // Take (a circuit breaker's probe): answer them now rather than queue behind it.
    if (!store_.ready()) {
      FailQueued();
      return;
    }
    if (queue_.empty() || store_.free_slots() == 0) return;
    // Take every waiting operation whose key no transaction of ours holds, in arrival order.
    // Operations on a key in flight stay queued, together and in order, for the transaction
    // after it: two sessions of one sidecar never queue on the same row lock.
    std::vector<StoreOp> batch;
    batch.reserve(std::min(queue_.size(), kMaxBatch));  // Never moves: batch_keys views it.
    std::vector<OpDone> dones;
    std::vector<std::string> keys;  // Each key of the batch once, owned past the Take.
    std::vector<size_t> key_of;     // Parallel to dones: the operation's index in keys.
    std::unordered_map<std::string_view, size_t> batch_keys;  // Views of keys in `batch`.
    std::deque<StoreOp> kept_ops;
    std::deque<OpDone> kept_dones;
    for (size_t i = 0; i < queue_.size(); ++i) {
      StoreOp& op = queue_[i];
      const bool busy = in_flight_keys_.count(op.key) > 0;
      if (busy || batch.size() >= kMaxBatch) {
        kept_ops.push_back(std::move(op));
        kept_dones.push_back(std::move(waiting_[i]));
        continue;
      }
      batch.push_back(std::move(op));
      const auto [it, added] = batch_keys.emplace(batch.back().key, keys.size());
      if (added) keys.push_back(batch.back().key);
      key_of.push_back(it->second);
      dones.push_back(std::move(waiting_[i]));
    }
    queue_ = std::move(kept_ops);
    waiting_ = std::move(kept_dones);
    if (batch.empty()) return;  // Everything waiting is for keys in flight.
    for (const std::string& key : keys) in_flight_keys_.insert(key);
    store_.Take(
        std::move(batch), [this, dones = std::move(dones), keys = std::move(keys),
                           key_of = std::move(key_of)](Result<std::vector<StoreAnswer>> answers) {
          for (const std::string& key : keys) in_flight_keys_.erase(key);
          const bool decided = answers.ok() && answers->size() == dones.size();
          const Status failed = decided        ? Status::Ok()
                                : answers.ok() ? Status::IoError("store answered the wrong count")
                                               : answers.status();
          for (size_t i = 0; i < dones.size(); ++i) {
            if (decided) {
              dones[i](keys[key_of[i]], (*answers)[i]);
            } else {
              dones[i](keys[key_of[i]], failed);
            }
          }
          Pump();
        });
  }
}

CheckResult StoreRefusal(const Status& why, uint32_t limit) {
  return Refusal(why.code() == Status::Code::kOverloaded ? CheckStatus::kOverloaded
                                                         : CheckStatus::kStoreUnavailable,
                 limit, Source::kDatabase);
}

void CheckInStore(StoreBatcher& batcher, const CheckQuery& query, uint64_t tag, CheckCallback& done,
                  Fallback* fallback, Source source) {
  const uint32_t cost = query.cost;
  const Policy policy = query.policy;
  Status queued = batcher.Submit(
      StoreOp{std::string(query.key), cost, policy},
      [tag, &done, cost, policy, fallback, source](std::string_view key,
                                                   Result<StoreAnswer> answer) {
        CheckResult result =
            answer.ok() ? answer->check : StoreRefusal(answer.status(), policy.limit);
        result.source = source;
        done.OnCheckDone(tag, ResolveWith(fallback, CheckQuery{key, cost, policy}, result));
      });
  if (!queued.ok()) {
    done.OnCheckDone(tag, ResolveWith(fallback, query, StoreRefusal(queued, policy.limit)));
  }
}

}  // namespace ratelimit
