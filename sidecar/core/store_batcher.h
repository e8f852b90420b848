// StoreBatcher: sends operations on shared buckets to the store in batches that follow the load.
#ifndef RATELIMIT_SIDECAR_CORE_STORE_BATCHER_H_
#define RATELIMIT_SIDECAR_CORE_STORE_BATCHER_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "schema/status.h"
#include "sidecar/core/engine.h"
#include "sidecar/core/shared_store.h"

namespace ratelimit {

class Fallback;

// Batching: an operation goes to the store at once when a store session is free; otherwise it
// waits in a queue, and the next transaction to start takes the whole queue (up to kMaxBatch).
// Light load thus costs one transaction per operation and no added latency; heavy load costs
// one transaction per queue-full, so the database's work grows far slower than the load.
// A key is in at most one transaction of this batcher at a time: operations on a key in flight
// wait for the next one, so a sidecar's own sessions never contend for a hot row's lock (which
// would split its batches and serialize them behind each other).
//
// Thread-safety: the loop thread only. The store must outlive the batcher and must finish (or
// fail) every Take before either is destroyed.
class StoreBatcher {
 public:
  static constexpr size_t kMaxBatch = 1024;
  static constexpr size_t kMaxQueued = 65536;

  // Called exactly once per submitted operation, with the store's answer or why there is none,
  // and the operation's key (valid during the call: the batcher owns it, not the caller).
  using OpDone = std::function<void(std::string_view key, Result<StoreAnswer> answer)>;

  // Every operation submitted asks for `algorithm` (StoreOp::algorithm): a sidecar has one.
  explicit StoreBatcher(SharedStore& store, Algorithm algorithm = Algorithm::kTokenBucket);
  ~StoreBatcher();

  // Queues `op`; `done` runs later, on the loop thread. Refuses, without calling `done`:
  // Unavailable while the store is not ready (work never queues behind a database that is
  // down), Overloaded when kMaxQueued operations are waiting.
  [[nodiscard]] Status Submit(StoreOp op, OpDone done);

  // While a Hold lives, Submit only queues: the operations submitted under it start together,
  // in one transaction, when the last Hold ends (a first one would otherwise go alone).
  class Hold {
   public:
    explicit Hold(StoreBatcher& batcher) : batcher_(batcher) { ++batcher_.holds_; }
    ~Hold() {
      if (--batcher_.holds_ == 0) batcher_.Pump();
    }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    StoreBatcher& batcher_;
  };

  const SharedStore& store() const { return store_; }
  size_t queued() const { return queue_.size(); }

 private:
  // Starts transactions while the store has free sessions and operations are waiting.
  void Pump();
  // Answers every queued operation Unavailable.
  void FailQueued();

  SharedStore& store_;
  const Algorithm algorithm_;
  std::deque<StoreOp> queue_;
  std::deque<OpDone> waiting_;  // Parallel to queue_.
  // Keys in some Take of this batcher that has not completed.
  std::unordered_set<std::string> in_flight_keys_;
  int holds_ = 0;  // Live Holds.
};

// The answer to a check that the store could not decide: StoreUnavailable, or Overloaded when
// `why` says so; source Database.
CheckResult StoreRefusal(const Status& why, uint32_t limit);

// Sends `query` to the store as one kCheck and answers done.OnCheckDone(tag, ...) with the
// store's decision (source `source`: Database, or Lease for a lease engine's check) or a
// StoreRefusal, resolved by `fallback` (when not null) where the store could not decide.
// REQUIRES: as Engine::Check.
void CheckInStore(StoreBatcher& batcher, const CheckQuery& query, uint64_t tag, CheckCallback& done,
                  Fallback* fallback, Source source = Source::kDatabase);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_STORE_BATCHER_H_
