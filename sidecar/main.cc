// ratelimit-sidecar: reads its configuration from the environment and serves until signalled.
#include <signal.h>
#include <sys/random.h>
#include <uv.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>

#include "sidecar/admin/admin_server.h"
#include "sidecar/admin/health.h"
#include "sidecar/config/config.h"
#include "sidecar/config/config_docs.h"
#include "sidecar/core/fallback.h"
#include "sidecar/core/lease_engine.h"
#include "sidecar/core/limiter.h"
#include "sidecar/core/memory_engine.h"
#include "sidecar/core/strict_engine.h"
#include "sidecar/log/log.h"
#include "sidecar/metrics/prometheus.h"
#include "sidecar/pg/conninfo.h"
#include "sidecar/pg/pg_store.h"
#include "sidecar/server/fd_limit.h"
#include "sidecar/server/server.h"
#include "sidecar/server/steady_clock.h"
#include "sidecar/sidecar_metrics.h"

extern char** environ;

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

void PrintHelp() {
  std::printf(
      "ratelimit-sidecar: answers rate-limit checks over a Unix socket.\n"
      "Configured by environment variables only:\n\n%s\n"
      "--config-markdown prints the same as README.md's configuration table.\n",
      ConfigHelp().c_str());
}

// The command line: --help and --config-markdown print and exit 0, anything else is refused
// with exit code 2. nullopt when there is no argument: the sidecar starts.
std::optional<int> RunArguments(int argc, char** argv) {
  if (argc <= 1) return std::nullopt;
  if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    PrintHelp();
    return 0;
  }
  if (std::strcmp(argv[1], "--config-markdown") == 0) {
    std::fputs(ConfigMarkdownTable().c_str(), stdout);
    return 0;
  }
  std::fprintf(stderr,
               "ratelimit-sidecar takes no arguments (configure it with environment "
               "variables; see --help), got: %s\n",
               argv[1]);
  return 2;
}

// Randomness drawn once per process: the key of the bucket tables' hash, which must stay
// secret from clients (see KeyedHash), and an independent seed for lease mode's jitter, whose
// draws clients can observe in retry_after_ms.
struct Secrets {
  HashKey hash_key;
  uint64_t jitter_seed = 0;
};

Result<Secrets> RandomSecrets() {
  Secrets secrets;
  if (getrandom(&secrets, sizeof(secrets), 0) != static_cast<ssize_t>(sizeof(secrets))) {
    return Status::IoError(std::string("getrandom: ") + std::strerror(errno));
  }
  return secrets;
}

const char* ModeName(const Config& config) {
  if (config.store != StoreKind::kPostgres) return "memory";
  return config.mode == StoreMode::kLease ? "lease" : "strict";
}

// Raises the open file limit (see RaiseFdLimit) and warns when the connection cap cannot fit in
// it: connections past the limit would be dropped without an answer.
void RaiseFdLimitForConnections(const Config& config) {
  Result<FdLimit> limit = RaiseFdLimit();
  if (!limit.ok()) {
    Log(LogLevel::kWarn, "cannot raise the open file limit").Str("error", limit.status().message());
    return;
  }
  Log(LogLevel::kInfo, limit->soft > limit->old_soft ? "raised the open file limit"
                                                     : "open file limit already at its maximum")
      .Int("old_soft", static_cast<int64_t>(limit->old_soft))
      .Int("new_soft", static_cast<int64_t>(limit->soft))
      .Int("hard", static_cast<int64_t>(limit->hard));
  const uint64_t needed =
      uint64_t{config.max_connections} + kFdsBesidesConnections +
      (config.store == StoreKind::kPostgres ? uint64_t{config.pg_connections} : 0);
  if (needed > limit->soft) {
    Log(LogLevel::kWarn,
        "RATE_LIMIT_MAX_CONNECTIONS does not fit in the open file limit; connections past the "
        "limit will be dropped without an answer")
        .Int("max_connections", config.max_connections)
        .Int("fds_needed", static_cast<int64_t>(needed))
        .Int("open_file_limit", static_cast<int64_t>(limit->soft));
  }
}

// Owns the store, the engine over it, the server, the admin server, and the loop's other
// long-lived handles: signals, the housekeeping timer (the memory store's sweep, lease mode's
// expiry), the status timer (health, metrics, suppressed log lines) and the deadline for
// giving leases back at shutdown.
class Sidecar {
 public:
  Sidecar(uv_loop_t* loop, const Config& config, const Secrets& secrets)
      : loop_(loop),
        shutdown_grace_ms_(config.shutdown_grace_ms),
        admin_addr_(config.admin_addr),
        health_(config.store == StoreKind::kPostgres ? "postgres" : "memory",
                config.store == StoreKind::kPostgres && config.fallback != FallbackPolicy::kDeny),
        engine_(MakeEngine(loop, config, secrets)),
        limiter_(config.default_policy, *engine_),
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
  }

  Status Start() {
    uv_signal_start(&signals_[0], &SignalTrampoline, SIGTERM);
    uv_signal_start(&signals_[1], &SignalTrampoline, SIGINT);
    if (memory_ != nullptr || lease_ != nullptr) {
      const uint64_t interval = lease_ != nullptr ? kLeaseTickMs : kSweepIntervalMs;
      uv_timer_start(&sweep_timer_, &HousekeepingTrampoline, interval, interval);
    }
    if (pg_store_ != nullptr) pg_store_->Start();  // Connects in the background.
    if (Status started = server_.Start(); !started.ok()) return started;
    if (admin_addr_.has_value()) {
      admin_ = std::make_unique<AdminServer>(registry_, health_);
      Status started = admin_->Start(
          AdminServerOptions{admin_addr_->host, admin_addr_->port, &AppendProcessMetrics});
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

  // Stops the admin server's thread. REQUIRES: the loop has stopped running.
  void StopAdmin() {
    if (admin_ != nullptr) admin_->Stop();
  }

  // Shuts the server down (answering what it has read), gives leases back, then stops the
  // store, then closes every other handle so that uv_run returns. The store stops at the latest
  // when the grace period ends: connections with checks waiting on a stuck database get their
  // answers (failures) from it, and only then can the server finish. Giving leases back gets
  // what is left of the same grace period, for a database that stops answering.
  void Stop() {
    stopping_ = true;
    health_.SetStopping();
    stop_started_ms_ = uv_now(loop_);
    server_.Shutdown([this] { ReturnLeasesThenStopStore(); }, [this] { StopStore(); });
  }

 private:
  void ReturnLeasesThenStopStore() {
    if (lease_ == nullptr || store_stopping_) {
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
    lease_->ReturnAll([this] {
      if (store_stopping_) return;  // The deadline came first; the returns left were failed.
      const LeaseMetrics& stats = lease_->metrics();
      Log(LogLevel::kInfo, "leases given back")
          .Int("returns", stats.returns.value())
          .Int("tokens_returned", stats.tokens_returned.value());
      StopStore();
    });
  }

  void StopStore() {
    if (store_stopping_) return;
    store_stopping_ = true;
    auto close_rest = [this] {
      for (uv_signal_t& signal : signals_) {
        uv_close(reinterpret_cast<uv_handle_t*>(&signal), nullptr);
      }
      uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&return_deadline_), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&status_timer_), nullptr);
    };
    if (pg_store_ != nullptr) {
      pg_store_->Shutdown(close_rest);
    } else {
      close_rest();
    }
  }

  std::unique_ptr<Engine> MakeEngine(uv_loop_t* loop, const Config& config,
                                     const Secrets& secrets) {
    if (config.store == StoreKind::kPostgres) {
      pg_store_ = std::make_unique<PgStore>(
          loop, PgStoreOptions{config.database_url, config.pg_table, config.pg_create_table,
                               config.pg_key_hash, config.pg_connections, config.pg_timeout_ms});
      fallback_ = std::make_unique<Fallback>(
          config.fallback,
          config.fallback == FallbackPolicy::kLocal
              ? NewMemoryEngine(Algorithm::kTokenBucket, clock_, secrets.hash_key)
              : nullptr,
          config.expected_replicas);
      memory_ = fallback_->local();
      engines_.local = memory_;
      engines_.fallback = fallback_.get();
      engines_.pg_store = pg_store_.get();
      if (config.mode == StoreMode::kStrict) {
        return std::make_unique<StrictEngine>(*pg_store_, fallback_.get());
      }
      auto lease = std::make_unique<LeaseEngine>(
          *pg_store_, clock_, secrets.hash_key,
          LeaseOptions{.ttl_ms = config.lease_ttl_ms, .jitter_seed = secrets.jitter_seed},
          fallback_.get());
      lease_ = lease.get();
      engines_.lease = lease_;
      return lease;
    }
    auto memory = NewMemoryEngine(config.algorithm, clock_, secrets.hash_key);
    memory_ = memory.get();
    engines_.memory = memory_;
    return memory;
  }

  // Every Health::kBeatIntervalMs: the loop is alive, what readiness depends on, the store's
  // readiness for /metrics, and log lines suppressed as repeats.
  void OnStatusTick() {
    health_.Beat(uv_hrtime() / 1000000);
    health_.SetListening(server_.listening());
    health_.SetStoreReady(engine_->ready());
    status_metrics_.store_ready.Set(engine_->ready() ? 1 : 0);
    LogReportSuppressed();
  }

  static void StatusTrampoline(uv_timer_t* timer) {
    static_cast<Sidecar*>(timer->data)->OnStatusTick();
  }

  static void SignalTrampoline(uv_signal_t* signal, int signum) {
    Sidecar* self = static_cast<Sidecar*>(signal->data);
    if (self->stopping_) {
      // An operator who signals twice wants out now: the socket file is already gone (the
      // first signal removed it), and leases not yet given back are lost until their rows
      // refill, which never over-admits.
      Log(LogLevel::kWarn, "second signal: exiting now").Str("signal", strsignal(signum));
      std::_Exit(1);
    }
    Log(LogLevel::kInfo, "signal received").Str("signal", strsignal(signum));
    self->Stop();
  }

  static void HousekeepingTrampoline(uv_timer_t* timer) {
    Sidecar* self = static_cast<Sidecar*>(timer->data);
    if (self->lease_ != nullptr) self->lease_->Tick();
    if (MemoryEngine* memory = self->memory_; memory != nullptr) {
      const uint64_t passes = kSweepPassMs / uv_timer_get_repeat(timer);
      memory->Sweep(std::max(kMinSweepSlots, memory->slot_count() / passes));
    }
  }

  uv_loop_t* loop_;
  const uint32_t shutdown_grace_ms_;
  const std::optional<AdminAddress> admin_addr_;
  Health health_;
  SteadyClock clock_;
  std::unique_ptr<PgStore> pg_store_;  // Declared before the engines that use it.
  // What the postgres store's engine (strict or lease) answers when the store cannot decide.
  std::unique_ptr<Fallback> fallback_;
  MemoryEngine* memory_ = nullptr;  // The memory store's engine, or the local fallback's.
  LeaseEngine* lease_ = nullptr;    // The shared engine, in lease mode.
  SidecarEngines engines_;          // Views of every engine, for metrics; set by MakeEngine.
  std::unique_ptr<Engine> engine_;
  Limiter limiter_;
  Server server_;
  SidecarStatusMetrics status_metrics_;
  MetricsRegistry registry_;
  std::unique_ptr<AdminServer> admin_;  // Declared last: its thread reads everything above.
  uv_signal_t signals_[2];
  uv_timer_t sweep_timer_;
  uv_timer_t return_deadline_;
  uv_timer_t status_timer_;
  bool store_stopping_ = false;
  bool stopping_ = false;
  uint64_t stop_started_ms_ = 0;
};

int Main(int argc, char** argv) {
  if (const std::optional<int> exit_code = RunArguments(argc, argv)) return *exit_code;
  Result<Config> config = LoadConfig([](const char* name) { return std::getenv(name); });
  if (!config.ok()) {
    Log(LogLevel::kError, "invalid configuration").Str("error", config.status().message());
    return 2;
  }
  if (config->store == StoreKind::kPostgres) {
    if (Status url = ValidateConninfo(config->database_url); !url.ok()) {
      Log(LogLevel::kError, "invalid configuration").Str("error", url.message());
      return 2;
    }
  }
  SetLogLevel(config->log_level);
  LogEffectiveConfig(*config, RedactConninfo(config->database_url));
  for (const std::string& name : UnknownRateLimitVariables(environ)) {
    Log(LogLevel::kWarn, "ignoring unknown variable").Str("variable", name);
  }
  RaiseFdLimitForConnections(*config);
  Result<Secrets> secrets = RandomSecrets();
  if (!secrets.ok()) {
    Log(LogLevel::kError, "cannot start").Str("error", secrets.status().message());
    return 1;
  }
  // A client that disconnects mid-write must cost an EPIPE, not the process.
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  uv_loop_init(&loop);
  int exit_code = 0;
  {
    Sidecar sidecar(&loop, *config, *secrets);
    if (Status started = sidecar.Start(); started.ok()) {
      // The rest of the configuration is in the "effective configuration" line.
      Log(LogLevel::kInfo, "listening")
          .Str("socket", config->socket_path)
          .Str("store", config->store == StoreKind::kPostgres ? "postgres" : "memory")
          .Str("mode", ModeName(*config));
    } else {
      Log(LogLevel::kError, "cannot start").Str("error", started.message());
      exit_code = 1;
      sidecar.Stop();
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    sidecar.StopAdmin();
  }
  if (const int rc = uv_loop_close(&loop); rc != 0) {
    Log(LogLevel::kError, "event loop closed with handles still open")
        .Str("error", uv_strerror(rc));
    exit_code = exit_code == 0 ? 1 : exit_code;
  }
  LogFlushSuppressed();
  if (exit_code == 0) Log(LogLevel::kInfo, "stopped");
  return exit_code;
}

}  // namespace
}  // namespace ratelimit

int main(int argc, char** argv) { return ratelimit::Main(argc, argv); }
