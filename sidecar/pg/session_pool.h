// SessionPool: the store's database sessions, their reconnect backoff, deadlines and breaker.
#ifndef RATELIMIT_SIDECAR_PG_SESSION_POOL_H_
#define RATELIMIT_SIDECAR_PG_SESSION_POOL_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"
#include "sidecar/core/circuit_breaker.h"
#include "sidecar/pg/db_session.h"

namespace ratelimit {

struct SessionPoolOptions {
  size_t connections = 2;  // At least one session is made.
  uint32_t timeout_ms = 250;
  std::string table;  // The table's plain name, for log lines.
  // A random number for the jitter of reconnects; empty uses a generator seeded at random.
  std::function<uint64_t()> random;
};

// `connections` sessions, each in one slot that lends it to one piece of work at a time: a
// transaction, or background work (the table's check and creation, garbage collection).
//
// Start-up never blocks: sessions connect in the background, and a broken session reconnects
// with jittered exponential backoff (kMinBackoffMs doubling to kMaxBackoffMs, +-25%), so that a
// database back from an outage is used again within about a second. The backoff starts over only
// once a transaction succeeds: a database that accepts connections but does not answer is tried
// less and less often. A slot's backoff also spaces the retries of background work on it
// (RetryAfterBackoff).
//
// Deadlines: a database that accepts connections but stops answering (frozen, locks held, a
// network that drops packets) must not hold work. A connection attempt not done within
// max(timeout_ms, kMinConnectTimeoutMs), a transaction not ended within timeout_ms (from its
// BEGIN to its COMMIT or ROLLBACK), or background work not done within max(timeout_ms,
// kBackgroundTimeoutMs) abandons its session: what was in flight fails at once and the session
// reconnects with the backoff.
//
// Circuit breaker (sidecar/core/circuit_breaker.h): transactions are counted by it, so after a
// few failures in a row free_slots() and serving() say no for an open period, then one
// transaction probes the database, and only its success lets checks through again.
//
// A server that refuses writes (SQLSTATE 25006 read_only_sql_transaction: a standby, the old
// primary back as one, a server made read-only under its sessions with
// default_transaction_read_only) can do no work of ours, and its sessions would stay on it
// forever. So a lend whose pipeline failed that way drops its session (seen at EndTransaction for
// a transaction, at Return for background work), which reconnects with the backoff: with a
// multi-host DATABASE_URL and target_session_attrs=read-write, libpq then skips read-only servers
// and finds the primary. Logged once until a transaction succeeds again.
//
// Logs once per change of state: a session's connection failing and being restored (per slot),
// transactions failing and succeeding again.
//
// Slot states: kNew -> kConnecting -> kFree <-> kLent; kConnecting, kFree or kLent -> kDown when
// the session breaks (logged), kDown -> kReconnecting -> kDown (not logged again) or kFree
// (logged: restored); any -> kClosed on Shutdown.
// Pool states: kNew -> kServing <-> kFailing (transactions failed since the last success) ->
// kClosing (Shutdown) -> kClosed (every timer released).
//
// Thread-safety: the loop thread only. The pool owns its sessions and timers; a lent slot stays
// owned by the pool, its borrower only runs pipelines on its session until it Returns it.
// Shutdown() must complete before destruction.
class SessionPool {
 public:
  static constexpr uint64_t kMinBackoffMs = 100;
  static constexpr uint64_t kMaxBackoffMs = 1000;
  static constexpr uint64_t kMinConnectTimeoutMs = 1000;
  static constexpr uint64_t kBackgroundTimeoutMs = 10000;  // Garbage collection, the table.

  enum class State { kNew, kServing, kFailing, kClosing, kClosed };
  // What a session is lent for: it decides the deadline, and whether the breaker counts it.
  enum class Work { kTransaction, kBackground };
  // Which free slot to take: transactions take the first, background work the last, so that the
  // two meet on one session as rarely as possible.
  enum class End { kFirst, kLast };

  // One session and its timers. Only the pool changes it.
  class Slot {
   public:
    enum class State { kNew, kConnecting, kFree, kLent, kDown, kReconnecting, kClosed };

    DbSession& session() { return *session_; }
    State state() const { return state_; }
    bool free() const { return state_ == State::kFree; }

   private:
    friend class SessionPool;
    SessionPool* pool_ = nullptr;
    std::unique_ptr<DbSession> session_;
    State state_ = State::kNew;
    uv_timer_t timer_;          // Reconnects and retries of background work.
    uv_timer_t deadline_;       // The deadline of what the session is doing now...
    uint64_t deadline_ms_ = 0;  // ...and its length.
    uint64_t backoff_ms_ = 0;
    std::function<void(Slot&)> retry_;  // What timer_ runs next.
  };

  // `on_connected` runs when a slot's session has (re)connected; `on_capacity` whenever a slot
  // became free or not usable for a reason other than a Return (a connection made or lost).
  SessionPool(uv_loop_t* loop, SessionPoolOptions options, const DbSessionFactory& make_session,
              std::function<void(Slot&)> on_connected, std::function<void()> on_capacity);
  ~SessionPool();
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;

  // Connects every session. REQUIRES: state() == kNew.
  void Start();
  // Closes every session (failing the work in flight) and timer, then calls `done`.
  void Shutdown(std::function<void()> done);

  // A free slot, or nullptr when there is none.
  Slot* FreeSlot(End end);
  // Lends `slot` for `work` and starts its deadline. REQUIRES: slot.free(), and for a
  // transaction free_slots() > 0 (the breaker admits it).
  void Lend(Slot& slot, Work work);
  // Ends a lend: stops the deadline and frees the slot (unless its session broke meanwhile, or
  // its last pipeline failed on a read-only server: then the session is dropped).
  void Return(Slot& slot);
  // Counts a transaction's outcome (the breaker, the backoff, the log), and drops the session
  // when it failed on a read-only server. Before its Return.
  void EndTransaction(Slot& slot, const Status& outcome);
  // Runs `retry` on `slot` after its backoff, which doubles, unless the pool closes first.
  void RetryAfterBackoff(Slot& slot, std::function<void(Slot&)> retry);

  // How many transactions may start now: free slots, or one probe while the breaker is open.
  size_t free_slots() const;
  // A session is connected and the breaker admits transactions.
  bool serving() const;
  bool closing() const { return state_ == State::kClosing || state_ == State::kClosed; }
  State state() const { return state_; }
  const CircuitBreaker& breaker() const { return breaker_; }

  // The backoff after `backoff_ms`: doubled, within [kMinBackoffMs, kMaxBackoffMs].
  static uint64_t NextBackoffMs(uint64_t backoff_ms);
  // `backoff_ms` +-25%, from `random`, so that sidecars that lost the database together do not
  // come back together.
  static uint64_t JitteredMs(uint64_t backoff_ms, uint64_t random);
  // Whether `sqlstate` says the server takes no writes (25006, read_only_sql_transaction).
  static bool ServerReadOnly(std::string_view sqlstate);

 private:
  void TransitionTo(State next);
  void TransitionTo(Slot& slot, Slot::State next);
  void OnSessionState(Slot& slot);
  void OnConnected(Slot& slot);
  void OnBroken(Slot& slot);
  void Connect(Slot& slot);
  void StartTimer(Slot& slot, uint64_t ms, std::function<void(Slot&)> next);
  void StartDeadline(Slot& slot, uint64_t ms);
  void OnTimerClosed();
  // Abandons a lent slot's session when its last pipeline failed on a read-only server.
  void DropIfReadOnly(Slot& slot);

  uv_loop_t* loop_;
  const SessionPoolOptions options_;
  std::function<void(Slot&)> on_connected_;
  std::function<void()> on_capacity_;
  std::vector<std::unique_ptr<Slot>> slots_;
  State state_ = State::kNew;
  CircuitBreaker breaker_;
  size_t open_timers_ = 0;
  bool read_only_logged_ = false;  // Since the last transaction that succeeded.
  std::function<void()> on_closed_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_SESSION_POOL_H_
