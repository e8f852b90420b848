// Sidecar: one running sidecar, its engines, server, admin server and the loop's other handles.
#include "sidecar/sidecar.h"

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "sidecar/log/log.h"

namespace ratelimit {
namespace {

// Housekeeping runs every kSweepIntervalMs, or kLeaseTickMs in lease mode: how often expired
// leases are given back and idle keys forgotten (leases are never spent past their expiry
// whatever this is; it only sets how soon unused tokens go back).
constexpr uint64_t kSweepIntervalMs = 100;
constexpr uint64_t kLeaseTickMs = 20;
// Forgetting full buckets in memory (the memory store, or the local fallback): every tick visits
// enough hash slots to cover the table in about kSweepPassMs, so idle keys leave memory within
// seconds at any table size.
constexpr uint64_t kSweepPassMs = 5000;
constexpr size_t kMinSweepSlots = 1024;

}  // namespace

Sidecar::Sidecar(uv_loop_t* loop, const Config& config, const EngineSecrets& secrets)
    : loop_(loop),
      shutdown_grace_ms_(config.shutdown_grace_ms),
      admin_addr_(config.admin_addr),
      health_(config.store == StoreKind::kPostgres ? "postgres" : "memory",
              config.store == StoreKind::kPostgres && config.fallback != FallbackPolicy::kDeny),
      test_clock_(config.test_clock == TestClock::kManual
                      ? std::make_unique<ManualClock>(clock_.NowMicros())
                      : nullptr),
      engine_clock_(test_clock_ != nullptr ? static_cast<Clock&>(*test_clock_) : clock_),
      engines_(BuildEngines(loop, config, engine_clock_, secrets)),
      limiter_(config.default_policy, *engines_.engine),
      server_(
          loop,
          ServerOptions{config.socket_path, config.socket_mode, config.allowed_uids,
                        config.max_connections, config.max_frame_bytes, config.shutdown_grace_ms},
          limiter_) {
  for (uv_signal_t& signal : signals_) {
    uv_signal_init(loop_, &signal);
    signal.data = this;
  }
  uv_timer_init(loop_, &sweep_timer_);
  sweep_timer_.data = this;
  uv_timer_init(loop_, &return_deadline_);
  return_deadline_.data = this;
  uv_timer_init(loop_, &status_timer_);
  status_timer_.data = this;
  RegisterSidecarMetrics(registry_, server_.metrics(), status_metrics_, engines_);
  if (engines_.memory != nullptr) {
    const MemoryEngineMetrics& m = engines_.memory->metrics();
    eviction_watches_.push_back({"memory", &m.evictions, &m.max_keys});
  }
  if (engines_.lease != nullptr) {
    const LeaseMetrics& m = engines_.lease->metrics();
    eviction_watches_.push_back({"lease", &m.evictions, &m.max_keys});
  }
  if (engines_.fallback != nullptr && engines_.fallback->local() != nullptr) {
    const MemoryEngineMetrics& m = engines_.fallback->local()->metrics();
    eviction_watches_.push_back({"fallback", &m.evictions, &m.max_keys});
  }
}

Status Sidecar::Start() {
  uv_signal_start(&signals_[0], &SignalTrampoline, SIGTERM);
  uv_signal_start(&signals_[1], &SignalTrampoline, SIGINT);
  if (engines_.swept() != nullptr || engines_.lease != nullptr) {
    const uint64_t interval = engines_.lease != nullptr ? kLeaseTickMs : kSweepIntervalMs;
    uv_timer_start(&sweep_timer_, &HousekeepingTrampoline, interval, interval);
  }
  if (engines_.pg_store != nullptr) engines_.pg_store->Start();  // Connects in the background.
  if (Status started = server_.Start(); !started.ok()) return started;
  WarnOfTestClock();
  if (admin_addr_.has_value()) {
    admin_ = std::make_unique<AdminServer>(registry_, health_);
    AdminServerOptions options{admin_addr_->host, admin_addr_->port, &AppendProcessMetrics};
    if (test_clock_ != nullptr) {
      options.advance_test_clock = [clock = test_clock_.get()](int64_t ms) {
        clock->AdvanceMicros(ms * 1000);
      };
    }
    Status started = admin_->Start(options);
    if (!started.ok()) return started;
    Log(LogLevel::kInfo, "admin server listening")
        .Str("host", admin_addr_->host)
        .Int("port", admin_->port());
  }
  OnStatusTick();  // Ready as soon as the socket listens, not one tick later.
  uv_timer_start(&status_timer_, &StatusTrampoline, Health::kBeatIntervalMs,
                 Health::kBeatIntervalMs);
  return Status::Ok();
}

void Sidecar::WarnOfTestClock() const {
  if (test_clock_ == nullptr) return;
  Log(LogLevel::kWarn,
      "RATE_LIMIT_TEST_CLOCK=manual: buckets and windows follow a test clock that moves only "
      "when told (POST /test/clock/advance?ms=N on the admin server); never run this in "
      "production")
      .Str("admin_server", admin_addr_.has_value() ? "on" : "off: the clock never moves");
}

void Sidecar::StopAdmin() {
  if (admin_ != nullptr) admin_->Stop();
}

void Sidecar::Stop() {
  TransitionTo(State::kStopping);
  health_.SetStopping();
  stop_started_ms_ = uv_now(loop_);
  server_.Shutdown([this] { ReturnLeasesThenStopStore(); }, [this] { StopStore(); });
}

void Sidecar::ReturnLeasesThenStopStore() {
  if (engines_.lease == nullptr || state_ == State::kStoppingStore) {
    StopStore();
    return;
  }
  const uint64_t spent_ms = uv_now(loop_) - stop_started_ms_;
  uv_timer_start(
      &return_deadline_,
      [](uv_timer_t* t) {
        Log(LogLevel::kWarn, "grace period over before every lease was given back; stopping");
        static_cast<Sidecar*>(t->data)->StopStore();
      },
      shutdown_grace_ms_ > spent_ms ? shutdown_grace_ms_ - spent_ms : 0, 0);
  engines_.lease->ReturnAll([this] {
    if (state_ == State::kStoppingStore)
      return;  // The deadline came first; the returns left were failed.
    const LeaseMetrics& stats = engines_.lease->metrics();
    Log(LogLevel::kInfo, "leases given back")
        .Int("returns", stats.returns.value())
        .Int("tokens_returned", stats.tokens_returned.value());
    StopStore();
  });
}

void Sidecar::StopStore() {
  if (state_ == State::kStoppingStore) return;
  TransitionTo(State::kStoppingStore);
  auto close_rest = [this] {
    for (uv_signal_t& signal : signals_) {
      uv_close(reinterpret_cast<uv_handle_t*>(&signal), nullptr);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&return_deadline_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&status_timer_), nullptr);
  };
  if (engines_.pg_store != nullptr) {
    engines_.pg_store->Shutdown(close_rest);
  } else {
    close_rest();
  }
}

void Sidecar::OnStatusTick() {
  health_.Beat(uv_hrtime() / 1000000);
  health_.SetListening(server_.listening());
  const bool ready = engines_.engine->ready();
  health_.SetStoreReady(ready);
  status_metrics_.store_ready.Set(ready ? 1 : 0);
  WarnOfEvictions();
  LogReportSuppressed();
}

void Sidecar::WarnOfEvictions() {
  for (EvictionWatch& watch : eviction_watches_) {
    const uint64_t evictions = watch.evictions->value();
    if (evictions > watch.seen && watch.seen == watch.previous) {
      Log(LogLevel::kWarn,
          "key table full: each new key now evicts a less recently used key, the closest to "
          "full of a sample; raise RATE_LIMIT_MAX_KEYS if this is normal traffic, not a flood")
          .Str("store", watch.store)
          .Int("max_keys", watch.max_keys->value())
          .Int("evictions", static_cast<int64_t>(evictions - watch.seen));
    }
    watch.previous = watch.seen;
    watch.seen = evictions;
  }
}

void Sidecar::StatusTrampoline(uv_timer_t* timer) {
  static_cast<Sidecar*>(timer->data)->OnStatusTick();
}

void Sidecar::SignalTrampoline(uv_signal_t* signal, int signum) {
  Sidecar* self = static_cast<Sidecar*>(signal->data);
  if (self->state_ != State::kRunning) {
    // An operator who signals twice wants out now: the socket file is already gone (the
    // first signal removed it), and leases not yet given back are lost until their rows
    // refill, which never over-admits.
    Log(LogLevel::kWarn, "second signal: exiting now").Str("signal", strsignal(signum));
    std::_Exit(1);
  }
  Log(LogLevel::kInfo, "signal received").Str("signal", strsignal(signum));
  self->Stop();
}

void Sidecar::HousekeepingTrampoline(uv_timer_t* timer) {
  Sidecar* self = static_cast<Sidecar*>(timer->data);
  if (self->engines_.lease != nullptr) self->engines_.lease->Tick();
  if (MemoryEngine* memory = self->engines_.swept(); memory != nullptr) {
    const uint64_t passes = kSweepPassMs / uv_timer_get_repeat(timer);
    memory->Sweep(std::max(kMinSweepSlots, memory->slot_count() / passes));
  }
}

}  // namespace ratelimit
