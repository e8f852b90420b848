// StrictEngine: every check decided by the shared store, in batches that follow the load.
#ifndef RATELIMIT_SIDECAR_CORE_STRICT_ENGINE_H_
#define RATELIMIT_SIDECAR_CORE_STRICT_ENGINE_H_

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_set>
#include <vector>

#include "sidecar/core/engine.h"
#include "sidecar/core/shared_store.h"

namespace ratelimit {

// Batching: a check goes to the store at once when a store session is free; otherwise it waits
// in a queue, and the next transaction to start takes the whole queue (up to kMaxBatch). Light
// load thus costs one transaction per check and no added latency; heavy load costs one
// transaction per queue-full, so the database's work grows far slower than the check rate.
// A key is in at most one transaction of this engine at a time: checks of a key in flight wait
// for the next one, so a sidecar's own sessions never contend for a hot row's lock (which
// would split its batches and serialize them behind each other).
//
// Refusals without touching the store: StoreUnavailable while the store is not ready (checks
// never queue behind a database that is down), Overloaded past kMaxQueued waiting checks.
// Answers carry source Database.
//
// Thread-safety: the loop thread only. The store must outlive the engine and must finish (or
// fail) every Take before either is destroyed.
class StrictEngine final : public Engine {
 public:
  static constexpr size_t kMaxBatch = 1024;
  static constexpr size_t kMaxQueued = 65536;

  explicit StrictEngine(SharedStore& store) : store_(store) {
    store_.set_on_capacity([this] { Pump(); });
  }
  ~StrictEngine() override { store_.set_on_capacity(nullptr); }

  void Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) override;
  std::string_view store_name() const override { return store_.name(); }
  bool ready() const override { return store_.ready(); }

  size_t queued() const { return queue_.size(); }

 private:
  struct Waiter {
    uint64_t tag;
    CheckCallback* done;
    uint32_t limit;
  };

  // Starts transactions while the store has free sessions and checks are waiting.
  void Pump();
  void Deliver(const std::vector<Waiter>& waiters, Result<std::vector<CheckResult>> results);

  SharedStore& store_;
  std::deque<StoreCheck> queue_;
  std::deque<Waiter> waiters_;  // Parallel to queue_.
  // Keys in some Take of this engine that has not completed.
  std::unordered_set<std::string> in_flight_keys_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_STRICT_ENGINE_H_
