// SessionPool: the store's database sessions, their reconnect backoff, deadlines and breaker.
#include "sidecar/pg/session_pool.h"

#include <algorithm>
#include <random>
#include <utility>

#include "sidecar/log/log.h"

namespace ratelimit {
namespace {

uint64_t RandomNumber() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

}  // namespace

SessionPool::SessionPool(uv_loop_t* loop, SessionPoolOptions options,
                         const DbSessionFactory& make_session,
                         std::function<void(Slot&)> on_connected, std::function<void()> on_capacity)
    : loop_(loop),
      options_(std::move(options)),
      on_connected_(std::move(on_connected)),
      on_capacity_(std::move(on_capacity)) {
  for (size_t i = 0; i < std::max<size_t>(1, options_.connections); ++i) {
    auto slot = std::make_unique<Slot>();
    Slot* raw = slot.get();
    raw->pool_ = this;
    raw->session_ = make_session([this, raw] { OnSessionState(*raw); });
    for (uv_timer_t* timer : {&raw->timer_, &raw->deadline_}) {
      uv_timer_init(loop_, timer);
      timer->data = raw;
      ++open_timers_;
    }
    slots_.push_back(std::move(slot));
  }
}

SessionPool::~SessionPool() = default;

void SessionPool::TransitionTo(State next) { state_ = next; }  // Callers log what changed.

void SessionPool::TransitionTo(Slot& slot, Slot::State next) {
  const Slot::State previous = slot.state_;
  slot.state_ = next;
  switch (next) {
    case Slot::State::kFree:  // Connected in time, or a lend ended.
      uv_timer_stop(&slot.deadline_);
      if (previous == Slot::State::kReconnecting) {
        Log(LogLevel::kInfo, "database connection restored");
      }
      return;
    case Slot::State::kDown:
      uv_timer_stop(&slot.deadline_);
      if (previous != Slot::State::kReconnecting) {  // Once per outage, not once per attempt.
        Log(LogLevel::kWarn, "database connection failed")
            .Str("table", options_.table)
            .Str("error", slot.session_->last_error());
      }
      return;
    default:
      return;
  }
}

void SessionPool::Start() {
  TransitionTo(State::kServing);
  for (auto& slot : slots_) Connect(*slot);
}

void SessionPool::Connect(Slot& slot) {
  // Set first: a connection that fails at once reports kBroken before Connect returns.
  TransitionTo(slot, slot.state_ == Slot::State::kDown ? Slot::State::kReconnecting
                                                       : Slot::State::kConnecting);
  StartDeadline(slot, std::max<uint64_t>(options_.timeout_ms, kMinConnectTimeoutMs));
  slot.session_->Connect();
}

void SessionPool::OnSessionState(Slot& slot) {
  if (closing()) return;
  switch (slot.session_->state()) {
    case DbSession::State::kIdle:
      // A session turns idle after every pipeline; only a fresh connection is news.
      if (slot.state_ == Slot::State::kConnecting || slot.state_ == Slot::State::kReconnecting) {
        OnConnected(slot);
      }
      return;
    case DbSession::State::kBroken:
      OnBroken(slot);
      return;
    default:
      return;
  }
}

void SessionPool::OnConnected(Slot& slot) {
  TransitionTo(slot, Slot::State::kFree);
  on_connected_(slot);
  on_capacity_();
}

void SessionPool::OnBroken(Slot& slot) {
  TransitionTo(slot, Slot::State::kDown);
  on_capacity_();  // Readiness may have changed: waiting checks must not wait on it.
  slot.backoff_ms_ = NextBackoffMs(slot.backoff_ms_);
  const uint64_t random = options_.random ? options_.random() : RandomNumber();
  StartTimer(slot, JitteredMs(slot.backoff_ms_, random), [this](Slot& s) { Connect(s); });
}

uint64_t SessionPool::NextBackoffMs(uint64_t backoff_ms) {
  return std::clamp(backoff_ms * 2, kMinBackoffMs, kMaxBackoffMs);
}

uint64_t SessionPool::JitteredMs(uint64_t backoff_ms, uint64_t random) {
  return backoff_ms * 3 / 4 + random % std::max<uint64_t>(1, backoff_ms / 2);
}

void SessionPool::RetryAfterBackoff(Slot& slot, std::function<void(Slot&)> retry) {
  slot.backoff_ms_ = NextBackoffMs(slot.backoff_ms_);
  StartTimer(slot, slot.backoff_ms_, std::move(retry));
}

void SessionPool::StartTimer(Slot& slot, uint64_t ms, std::function<void(Slot&)> next) {
  // One timer per slot: a reconnect replaces a retry of background work, which the session
  // does again once connected.
  slot.retry_ = std::move(next);
  uv_timer_start(
      &slot.timer_,
      [](uv_timer_t* timer) {
        auto* s = static_cast<Slot*>(timer->data);
        // Taken out first: what it runs may start the timer again with something new.
        std::function<void(Slot&)> retry = std::exchange(s->retry_, nullptr);
        if (!s->pool_->closing()) retry(*s);
      },
      ms, 0);
}

void SessionPool::StartDeadline(Slot& slot, uint64_t ms) {
  slot.deadline_ms_ = ms;
  uv_timer_start(
      &slot.deadline_,
      [](uv_timer_t* timer) {
        auto* s = static_cast<Slot*>(timer->data);
        if (s->pool_->closing()) return;
        s->session_->Abandon("no answer within " + std::to_string(s->deadline_ms_) +
                             " ms (RATE_LIMIT_PG_TIMEOUT_MS)");
      },
      ms, 0);
}

SessionPool::Slot* SessionPool::FreeSlot(End end) {
  if (end == End::kLast) {
    for (auto it = slots_.rbegin(); it != slots_.rend(); ++it) {
      if ((*it)->free()) return it->get();
    }
    return nullptr;
  }
  for (auto& slot : slots_) {
    if (slot->free()) return slot.get();
  }
  return nullptr;
}

void SessionPool::Lend(Slot& slot, Work work) {
  TransitionTo(slot, Slot::State::kLent);
  if (work == Work::kTransaction) {
    breaker_.OnStart(uv_now(loop_));
    StartDeadline(slot, options_.timeout_ms);  // For the whole transaction, to its end.
  } else {
    // Background work scans the whole table (no index on what every check updates): a
    // deadline of its own rather than the checks'.
    StartDeadline(slot, std::max<uint64_t>(options_.timeout_ms, kBackgroundTimeoutMs));
  }
}

void SessionPool::Return(Slot& slot) {
  DropIfReadOnly(slot);
  // A session that broke or closed meanwhile stays so; its deadline is already stopped.
  if (slot.state_ == Slot::State::kLent) TransitionTo(slot, Slot::State::kFree);
}

void SessionPool::EndTransaction(Slot& slot, const Status& outcome) {
  if (outcome.ok()) {
    breaker_.OnSuccess();
    slot.backoff_ms_ = 0;
    read_only_logged_ = false;
    if (state_ == State::kFailing) {
      Log(LogLevel::kInfo, "database transactions succeed again").Str("table", options_.table);
      TransitionTo(State::kServing);
    }
    return;
  }
  if (breaker_.OnFailure(uv_now(loop_))) {
    Log(LogLevel::kWarn,
        "circuit breaker open: checks go to the fallback at once while the database is probed")
        .Int("max_probe_interval_ms", CircuitBreaker::kMaxOpenMs);
  }
  if (state_ == State::kServing) {  // Once per change of state, not once per transaction.
    Log(LogLevel::kWarn, "database transactions failing; checks answered by the fallback")
        .Str("table", options_.table)
        .Str("error", outcome.message());
    TransitionTo(State::kFailing);
  }
  DropIfReadOnly(slot);
}

bool SessionPool::ServerReadOnly(std::string_view sqlstate) { return sqlstate == "25006"; }

void SessionPool::DropIfReadOnly(Slot& slot) {
  if (slot.state_ != Slot::State::kLent || !ServerReadOnly(slot.session_->last_sqlstate())) return;
  if (!read_only_logged_) {
    read_only_logged_ = true;
    Log(LogLevel::kWarn, "the database server is read-only; reconnecting to find the primary")
        .Str("table", options_.table)
        .Str("hint", "list every server in DATABASE_URL with target_session_attrs=read-write");
  }
  // Broken, the slot reconnects with its backoff; a pipeline of the lend is no longer in flight.
  slot.session_->Abandon("the server is read-only (SQLSTATE 25006)");
}

size_t SessionPool::free_slots() const {
  if (closing()) return 0;
  size_t n = 0;
  for (const auto& slot : slots_) n += slot->free() ? 1 : 0;
  if (breaker_.state() == CircuitBreaker::State::kClosed) return n;
  return breaker_.Admits(uv_now(loop_)) ? std::min<size_t>(n, 1) : 0;  // One probe.
}

bool SessionPool::serving() const {
  const bool connected = std::any_of(slots_.begin(), slots_.end(), [](const auto& slot) {
    return slot->state_ == Slot::State::kFree || slot->state_ == Slot::State::kLent;
  });
  return connected && breaker_.Admits(uv_now(loop_));
}

void SessionPool::Shutdown(std::function<void()> done) {
  if (closing()) return;
  TransitionTo(State::kClosing);
  on_closed_ = std::move(done);
  for (auto& slot : slots_) {
    TransitionTo(*slot, Slot::State::kClosed);
    slot->session_->Close();  // Fails the work in flight, whose borrower Returns the slot.
    for (uv_timer_t* timer : {&slot->timer_, &slot->deadline_}) {
      uv_close(reinterpret_cast<uv_handle_t*>(timer), [](uv_handle_t* handle) {
        static_cast<Slot*>(handle->data)->pool_->OnTimerClosed();
      });
    }
  }
}

void SessionPool::OnTimerClosed() {
  if (--open_timers_ > 0) return;
  TransitionTo(State::kClosed);
  if (on_closed_) std::exchange(on_closed_, nullptr)();
}

}  // namespace ratelimit
