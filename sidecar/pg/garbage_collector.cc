// GarbageCollector: deletes the shared table's rows whose buckets have refilled to full.
#include "sidecar/pg/garbage_collector.h"

#include <cstdlib>
#include <utility>

#include "sidecar/core/shared_bucket.h"
#include "sidecar/log/log.h"

namespace ratelimit {
namespace {

void Tick(uv_timer_t* timer) { static_cast<GarbageCollector*>(timer->data)->Collect(); }

}  // namespace

GarbageCollector::GarbageCollector(uv_loop_t* loop, SessionPool& pool, std::string table_sql,
                                   Counter& collected_rows, std::function<bool()> may_collect,
                                   std::function<void()> on_capacity, uint64_t interval_ms)
    : pool_(pool),
      table_sql_(std::move(table_sql)),
      collected_rows_(collected_rows),
      may_collect_(std::move(may_collect)),
      on_capacity_(std::move(on_capacity)),
      interval_ms_(interval_ms) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
}

void GarbageCollector::TransitionTo(State next) { state_ = next; }

void GarbageCollector::Start() {
  TransitionTo(State::kWaiting);
  uv_timer_start(&timer_, &Tick, interval_ms_, interval_ms_);
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
  // Full at clock_timestamp(): the refill since updated_at covers what was missing. Untouched
  // for at least a second, so that a busy key's row is never deleted between a check's INSERT
  // and its SELECT (see the class comment), and for its window up to kKeepMs: a key that comes
  // back within that long finds its row instead of inserting it again (an insert counts against
  // RATE_LIMIT_PG_NEW_KEYS_PER_SEC), while a flood's rows of a long window go once full rather
  // than after a whole window. Malformed rows are left to RepairRow when next used. A fixed
  // window's row (algorithm 1) goes once its window has ended, a second ago: updated_at is the
  // window's start, and any check taking from the key since would have opened a new window.
  // A row in debt (negative tokens) is full once the refill has repaid the debt and filled it.
  return {
      "DELETE FROM " + table_sql + " WHERE key IN (SELECT key FROM " + table_sql +
          " WHERE capacity > 0 AND window_ms > 0 AND tokens >= -greatest(capacity, " +
          std::to_string(kMaxDebtTokens) +
          ")"
          " AND updated_at <= clock_timestamp()"
          "   - greatest(least(window_ms, " +
          std::to_string(kKeepMs) +
          "), 1000) * interval '1 millisecond'"
          " AND CASE WHEN algorithm = 1"
          " THEN updated_at <= clock_timestamp() - (window_ms + 1000) * interval '1 millisecond'"
          " ELSE tokens + extract(epoch FROM clock_timestamp() - updated_at) * 1000"
          " * capacity / window_ms >= capacity END"
          " LIMIT " +
          std::to_string(kBatch) + " FOR UPDATE SKIP LOCKED)",
      {}};
}

void GarbageCollector::Collect() {
  if (state_ != State::kWaiting && state_ != State::kDue) return;
  if (!may_collect_() || pool_.closing()) return;
  SessionPool::Slot* slot = pool_.FreeSlot(SessionPool::End::kLast);
  if (slot == nullptr) {  // Busy with checks: the next session one of them gives back.
    TransitionTo(State::kDue);
    return;
  }
  CollectOn(*slot);
}

void GarbageCollector::OnSessionReturned(SessionPool::Slot& slot) {
  if (state_ != State::kDue || !slot.free() || !may_collect_() || pool_.closing()) return;
  CollectOn(slot);
}

void GarbageCollector::CollectOn(SessionPool::Slot& slot) {
  TransitionTo(State::kCollecting);
  pool_.Lend(slot, SessionPool::Work::kBackground);
  slot.session().Run({DeleteQuery(table_sql_)}, [this, &slot](Result<std::vector<PgResultPtr>> r) {
    OnCollected(slot, std::move(r));
  });
}

void GarbageCollector::OnCollected(SessionPool::Slot& slot,
                                   Result<std::vector<PgResultPtr>> result) {
  pool_.Return(slot);
  uint64_t deleted = 0;
  if (result.ok()) {
    deleted = std::strtoull(PQcmdTuples((*result)[0].get()), nullptr, 10);
    collected_rows_.Add(deleted);
  } else {
    Log(LogLevel::kDebug, "garbage collection failed").Str("error", result.status().message());
  }
  const bool more = deleted == static_cast<uint64_t>(kBatch);
  if (state_ == State::kCollecting) TransitionTo(more ? State::kDue : State::kWaiting);
  // A full batch: more rows wait. Again at once if a session is still free after the checks
  // waiting for one (told next) took theirs; else on the next one given back.
  if (more && state_ == State::kDue) uv_timer_start(&timer_, &Tick, 0, interval_ms_);
  on_capacity_();
}

}  // namespace ratelimit
