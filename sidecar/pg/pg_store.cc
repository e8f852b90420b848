// PgStore: shared buckets in one PostgreSQL table, decided in batched FOR UPDATE transactions.
#include "sidecar/pg/pg_store.h"

#include <memory>
#include <utility>

#include "sidecar/pg/pg_session.h"

namespace ratelimit {

PgStore::PgStore(uv_loop_t* loop, PgStoreOptions options)
    : PgStore(loop, std::move(options), [loop, this](DbSession::StateListener on_state) {
        // Called while the pool is built, once options_ is.
        return std::make_unique<PgSession>(loop, options_.conninfo, statements_.mode(),
                                           std::move(on_state));
      }) {}

PgStore::PgStore(uv_loop_t* loop, PgStoreOptions options, const DbSessionFactory& make_session)
    : options_(std::move(options)),
      new_keys_(options_.new_keys_per_sec),
      statements_(options_.statements, options_.adapt_statements),
      pool_(
          loop,
          SessionPoolOptions{options_.connections, options_.timeout_ms, options_.table.Plain(), {}},
          make_session, [this](SessionPool::Slot& slot) { OnConnected(slot); },
          [this] { NotifyCapacity(); }),
      keeper_(loop, pool_,
              TableKeeper::Options{options_.table, options_.create_table, options_.gc_interval_ms},
              metrics_.collected_rows, [this] { NotifyCapacity(); }),
      transaction_context_{
          pool_, metrics_, new_keys_, options_.table.Quoted(), options_.timeout_ms,
          options_.key_hashing,
          [this](std::string_view sqlstate, const Status& status) {
            OnTransactionFailed(sqlstate, status);
          },
          // After a failed transaction (one that may have found the table unusable): check the
          // table again on its session, unless it is known to be usable.
          [this](SessionPool::Slot& slot) {
            if (!keeper_.ready() && !pool_.closing() && slot.free()) keeper_.Ensure(slot);
          }} {}

PgStore::~PgStore() = default;

void PgStore::Start() {
  pool_.Start();
  keeper_.Start();
}

void PgStore::OnConnected(SessionPool::Slot& slot) {
  if (!keeper_.ready()) keeper_.Ensure(slot);
}

void PgStore::OnTransactionFailed(std::string_view sqlstate, const Status& status) {
  keeper_.OnTransactionFailed(sqlstate, status);
  // Not ready any more after a statement pooler: the failed Take's answer, which follows, makes
  // the checks still queued look at readiness again.
  statements_.OnTransactionFailed(sqlstate, status.message());
}

size_t PgStore::free_slots() const { return ready_for_takes() ? pool_.free_slots() : 0; }

bool PgStore::ready() const { return ready_for_takes() && pool_.serving(); }

void PgStore::Take(std::vector<StoreOp> batch, TakeDone done) {
  SessionPool::Slot* slot = pool_.FreeSlot(SessionPool::End::kFirst);
  if (slot == nullptr || !ready_for_takes()) {  // A broken contract: answer rather than crash.
    done(Status::Unavailable("no free database session"));
    return;
  }
  // The session goes back to the pool before `done`; a due garbage collection takes it before
  // `done` lets the batcher start another Take, so that collection keeps up under load.
  BatchTransaction::Start(transaction_context_, *slot, std::move(batch),
                          [this, slot, done = std::move(done)](Result<std::vector<StoreAnswer>> r) {
                            keeper_.OnSessionReturned(*slot);
                            done(std::move(r));
                          });
}

void PgStore::Shutdown(std::function<void()> done) {
  if (pool_.closing()) return;
  on_shutdown_ = std::move(done);
  keeper_.Close([this] { OnPieceClosed(); });
  pool_.Shutdown([this] { OnPieceClosed(); });
  NotifyCapacity();  // Not ready any more: checks still queued are answered now.
}

void PgStore::OnPieceClosed() {
  if (--open_pieces_ > 0) return;
  if (on_shutdown_) std::exchange(on_shutdown_, nullptr)();
}

}  // namespace ratelimit
