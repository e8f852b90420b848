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

// A row whose bucket has refilled to full means the same as no row. Every kIntervalMs, while
// the table is ready, one free session (the pool's last, checks taking the first) deletes up to
// kBatch such rows untouched for a window (and at least a second), skipping rows that checks
// hold locked (FOR UPDATE SKIP LOCKED), and goes again at once while batches come back full.
// Busy sessions are left to checks: they come first, and collection waits for the next tick.
//
// States: kStopped -> kWaiting (Start) <-> kCollecting; any -> kClosed (Close).
// Thread-safety: the loop thread only. Owned by the TableKeeper; borrows sessions from `pool`,
// which must outlive it. Close() must complete before destruction.
class GarbageCollector {
 public:
  enum class State { kStopped, kWaiting, kCollecting, kClosed };

  static constexpr uint64_t kIntervalMs = 5000;
  static constexpr int kBatch = 500;

  // `table_sql` is the quoted table name; `may_collect` says whether the table is ready;
  // `on_capacity` runs when a collection gave its session back.
  GarbageCollector(uv_loop_t* loop, SessionPool& pool, std::string table_sql,
                   Counter& collected_rows, std::function<bool()> may_collect,
                   std::function<void()> on_capacity);
  GarbageCollector(const GarbageCollector&) = delete;
  GarbageCollector& operator=(const GarbageCollector&) = delete;

  void Start();
  // Releases the timer, then calls `done`.
  void Close(std::function<void()> done);
  // One collection now, when the table is ready and a session free. Also what the timer runs.
  void Collect();

  State state() const { return state_; }

  // The statement: deletes up to kBatch collectable rows of `table_sql`.
  static PgQuery DeleteQuery(const std::string& table_sql);

 private:
  void TransitionTo(State next);
  void OnCollected(SessionPool::Slot& slot, Result<std::vector<PgResultPtr>> result);

  SessionPool& pool_;
  const std::string table_sql_;
  Counter& collected_rows_;
  std::function<bool()> may_collect_;
  std::function<void()> on_capacity_;
  State state_ = State::kStopped;
  uv_timer_t timer_;
  std::function<void()> on_closed_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_GARBAGE_COLLECTOR_H_
