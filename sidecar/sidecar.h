// Sidecar: one running sidecar, its engines, server, admin server and the loop's other handles.
#ifndef RATELIMIT_SIDECAR_SIDECAR_H_
#define RATELIMIT_SIDECAR_SIDECAR_H_

#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "schema/status.h"
#include "sidecar/admin/admin_server.h"
#include "sidecar/admin/health.h"
#include "sidecar/config/config.h"
#include "sidecar/core/limiter.h"
#include "sidecar/core/manual_clock.h"
#include "sidecar/engines.h"
#include "sidecar/metrics/prometheus.h"
#include "sidecar/server/server.h"
#include "sidecar/server/steady_clock.h"
#include "sidecar/sidecar_metrics.h"

namespace ratelimit {

// Owns the engines (BuildEngines), the limiter and server over them, the admin server, and the
// loop's other long-lived handles: signals, the housekeeping timer (the memory buckets' sweep,
// lease mode's expiry), the status timer (health, metrics, suppressed log lines) and the
// deadline for giving leases back at shutdown.
//
// Stopping (on SIGTERM or SIGINT, or Stop()): kRunning -> kStopping, while the server answers
// what it has read and leases go back -> kStoppingStore, while the store closes its sessions;
// then every other handle closes and uv_run returns. A second signal exits at once.
// Thread-safety: the loop thread, but for the admin server's own thread, which reads metrics
// and health. Lifetime: StopAdmin() after uv_run returns, then destroy.
class Sidecar {
 public:
  // Builds everything; nothing runs before Start(). `config` need not outlive the constructor.
  Sidecar(uv_loop_t* loop, const Config& config, const EngineSecrets& secrets);
  Sidecar(const Sidecar&) = delete;
  Sidecar& operator=(const Sidecar&) = delete;

  // Starts the store's connections, the server and the admin server. On failure the caller
  // calls Stop() and runs the loop until it returns.
  Status Start();

  // Shuts the server down (answering what it has read), gives leases back, then stops the
  // store, then closes every other handle so that uv_run returns. The store stops at the latest
  // when the grace period ends: connections with checks waiting on a stuck database get their
  // answers (failures) from it, and only then can the server finish. Giving leases back gets
  // what is left of the same grace period, for a database that stops answering.
  void Stop();

  // Stops the admin server's thread. REQUIRES: the loop has stopped running.
  void StopAdmin();

 private:
  enum class State { kRunning, kStopping, kStoppingStore };

  void TransitionTo(State next) { state_ = next; }
  void ReturnLeasesThenStopStore();
  void StopStore();
  // Every Health::kBeatIntervalMs: the loop is alive, what readiness depends on, the store's
  // readiness for /metrics, and log lines suppressed as repeats.
  void OnStatusTick();

  // Logs one warning when a key table starts evicting (full), and again only after a beat
  // without evictions.
  void WarnOfEvictions();
  // Logs one warning at start-up when RATE_LIMIT_TEST_CLOCK=manual.
  void WarnOfTestClock() const;

  static void StatusTrampoline(uv_timer_t* timer);
  static void SignalTrampoline(uv_signal_t* signal, int signum);
  static void HousekeepingTrampoline(uv_timer_t* timer);

  uv_loop_t* loop_;
  const uint32_t shutdown_grace_ms_;
  const std::optional<AdminAddress> admin_addr_;
  Health health_;
  SteadyClock clock_;
  // RATE_LIMIT_TEST_CLOCK=manual only: the engines read it instead of clock_, and the admin
  // server advances it.
  std::unique_ptr<ManualClock> test_clock_;
  Clock& engine_clock_;  // One of the two above. Declared before the engines that read it.
  Engines engines_;
  Limiter limiter_;
  Server server_;
  SidecarStatusMetrics status_metrics_;
  MetricsRegistry registry_;
  std::unique_ptr<AdminServer> admin_;  // Declared last: its thread reads everything above.
  uv_signal_t signals_[2];
  uv_timer_t sweep_timer_;
  uv_timer_t return_deadline_;
  uv_timer_t status_timer_;
  State state_ = State::kRunning;
  uint64_t stop_started_ms_ = 0;
  // A key table whose evictions the status tick watches.
  struct EvictionWatch {
    std::string_view store;
    const Counter* evictions;
    const Gauge* max_keys;
    uint64_t seen = 0;      // evictions at the previous beat,
    uint64_t previous = 0;  // and at the one before.
  };
  std::vector<EvictionWatch> eviction_watches_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SIDECAR_H_
