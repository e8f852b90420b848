// GarbageCollector: deletes the shared table's rows whose buckets have refilled to full.
#include "sidecar/pg/garbage_collector.h"

#include <cstdlib>
#include <utility>

#include "sidecar/log/log.h"

namespace ratelimit {
namespace {

void Tick(uv_timer_t* timer) { static_cast<GarbageCollector*>(timer->data)->Collect(); }

}  // namespace

GarbageCollector::GarbageCollector(uv_loop_t* loop, SessionPool& pool, std::string table_sql,
                                   Counter& collected_rows, std::function<bool()> may_collect,
                                   std::function<void()> on_capacity)
    : pool_(pool),
      table_sql_(std::move(table_sql)),
      collected_rows_(collected_rows),
      may_collect_(std::move(may_collect)),
      on_capacity_(std::move(on_capacity)) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
}

void GarbageCollector::TransitionTo(State next) { state_ = next; }

void GarbageCollector::Start() {
  TransitionTo(State::kWaiting);
  uv_timer_start(&timer_, &Tick, kIntervalMs, kIntervalMs);
}

void GarbageCollector::Close(std::function<void()> done) {
  TransitionTo(State::kClosed);
  on_closed_ = std::move(done);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* handle) {
    auto* self = static_cast<GarbageCollector*>(handle->data);
    if (self->on_closed_) std::exchange(self->on_closed_, nullptr)();
  });
}

PgQuery GarbageCollector::DeleteQuery(const std::string& table_sql) {
  // Full at clock_timestamp(): the refill since updated_at covers what was missing. Only rows
  // untouched for a whole window (and at least a second): a busy key with a large limit is
  // full again within microseconds, and deleting its row between a check's INSERT and its
  // SELECT would fail that check. Malformed rows are left to RepairRow when next used.
  return {"DELETE FROM " + table_sql + " WHERE key IN (SELECT key FROM " + table_sql +
              " WHERE capacity > 0 AND window_ms > 0 AND tokens >= 0"
              " AND updated_at <= clock_timestamp()"
              "   - greatest(window_ms, 1000) * interval '1 millisecond'"
              " AND tokens + extract(epoch FROM clock_timestamp() - updated_at) * 1000"
              " * capacity / window_ms >= capacity"
              " LIMIT " +
              std::to_string(kBatch) + " FOR UPDATE SKIP LOCKED)",
          {}};
}

void GarbageCollector::Collect() {
  if (state_ != State::kWaiting || !may_collect_() || pool_.closing()) return;
  SessionPool::Slot* slot = pool_.FreeSlot(SessionPool::End::kLast);
  if (slot == nullptr) return;  // Busy with checks: they come first; try again next tick.
  TransitionTo(State::kCollecting);
  pool_.Lend(*slot, SessionPool::Work::kBackground);
  slot->session().Run({DeleteQuery(table_sql_)}, [this, slot](Result<std::vector<PgResultPtr>> r) {
    OnCollected(*slot, std::move(r));
  });
}

void GarbageCollector::OnCollected(SessionPool::Slot& slot,
                                   Result<std::vector<PgResultPtr>> result) {
  pool_.Return(slot);
  if (state_ == State::kCollecting) TransitionTo(State::kWaiting);
  on_capacity_();
  if (!result.ok()) {
    Log(LogLevel::kDebug, "garbage collection failed").Str("error", result.status().message());
    return;
  }
  const uint64_t deleted = std::strtoull(PQcmdTuples((*result)[0].get()), nullptr, 10);
  collected_rows_.Add(deleted);
  if (deleted == static_cast<uint64_t>(kBatch) && state_ == State::kWaiting) {
    uv_timer_start(&timer_, &Tick, 0, kIntervalMs);
  }
}

}  // namespace ratelimit
