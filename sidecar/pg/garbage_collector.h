// GarbageCollector: deletes the shared table's rows whose buckets have refilled to full.
#ifndef RATELIMIT_SIDECAR_PG_GARBAGE_COLLECTOR_H_
#define RATELIMIT_SIDECAR_PG_GARBAGE_COLLECTOR_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

#include "sidecar/metrics/metrics.h"
#include "sidecar/pg/db_session.h"
#include "sidecar/pg/session_pool.h"

namespace ratelimit {

// A row whose bucket has refilled to full means the same as no row, and a flood of keys never
// seen again leaves rows that must go at about the rate they arrive, as soon as they are full
// (36 s for 1 token of 100 an hour), not a window later. Every `interval_ms` (kIntervalMs by
// default), while the table is ready, one free session (the pool's last, checks taking the
// first) deletes up to kBatch rows full now and untouched for their window, at most kKeepMs
// and at least a second, skipping rows that checks hold locked (FOR UPDATE SKIP LOCKED). The
// second is what keeps a busy key's row (a large limit is full again within microseconds) from
// being deleted between a check's INSERT and its SELECT, which would fail that check (Decide
// refuses a key whose row is gone); up to 30 s of its window keeps the row of a key that comes
// back soon from being inserted again.
//
// Collection is "due" when a batch came back full (more rows are waiting) or a tick found
// every session busy with checks. While due, it runs on the first free session: at once when
// one is free, else on the next session a transaction gives back (OnSessionReturned, called
// before the batcher starts another Take), so under load it gets about every other session
// while checks get the rest, and keeps up with rows arriving.
//
// States: kStopped -> kWaiting (Start) -> kCollecting -> kWaiting (a partial batch or a
// failure) or kDue (a full batch); kWaiting -> kDue (every session busy at a tick) ->
// kCollecting (a session free or given back); any -> kClosed (Close).
// Thread-safety: the loop thread only. Owned by the TableKeeper; borrows sessions from `pool`,
// which must outlive it. Close() must complete before destruction.
class GarbageCollector {
 public:
  enum class State { kStopped, kWaiting, kDue, kCollecting, kClosed };

  static constexpr uint64_t kIntervalMs = 5000;
  static constexpr int kBatch = 500;
  // The longest a full row is kept after its last check (its window, when shorter; at least 1 s).
  static constexpr int64_t kKeepMs = 30000;

  // `table_sql` is the quoted table name; `may_collect` says whether the table is ready;
  // `on_capacity` runs when a collection gave its session back.
  GarbageCollector(uv_loop_t* loop, SessionPool& pool, std::string table_sql,
                   Counter& collected_rows, std::function<bool()> may_collect,
                   std::function<void()> on_capacity, uint64_t interval_ms = kIntervalMs);
  GarbageCollector(const GarbageCollector&) = delete;
  GarbageCollector& operator=(const GarbageCollector&) = delete;

  void Start();
  // Releases the timer, then calls `done`.
  void Close(std::function<void()> done);
  // One collection now, when the table is ready and a session free; due when none is. Also what
  // the timer runs.
  void Collect();
  // A transaction gave `slot` back: a due collection takes it if it is free.
  void OnSessionReturned(SessionPool::Slot& slot);

  State state() const { return state_; }

  // The statement: deletes up to kBatch collectable rows of `table_sql`.
  static PgQuery DeleteQuery(const std::string& table_sql);

 private:
  void TransitionTo(State next);
  void CollectOn(SessionPool::Slot& slot);
  void OnCollected(SessionPool::Slot& slot, Result<std::vector<PgResultPtr>> result);

  SessionPool& pool_;
  const std::string table_sql_;
  Counter& collected_rows_;
  std::function<bool()> may_collect_;
  std::function<void()> on_capacity_;
  const uint64_t interval_ms_;
  State state_ = State::kStopped;
  uv_timer_t timer_;
  std::function<void()> on_closed_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_GARBAGE_COLLECTOR_H_
