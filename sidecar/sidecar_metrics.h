// SidecarMetrics: every series /metrics exposes, named once, and what copies engine counters in.
#ifndef RATELIMIT_SIDECAR_SIDECAR_METRICS_H_
#define RATELIMIT_SIDECAR_SIDECAR_METRICS_H_

#include <string>

#include "sidecar/core/engine.h"
#include "sidecar/core/fallback_engine.h"
#include "sidecar/core/lease_engine.h"
#include "sidecar/core/memory_engine.h"
#include "sidecar/metrics/metrics.h"
#include "sidecar/metrics/prometheus.h"
#include "sidecar/pg/pg_store.h"
#include "sidecar/server/server_metrics.h"

namespace ratelimit {

// The engines of one sidecar, as main.cc builds them; any may be null except `engine`.
struct SidecarEngines {
  const Engine* engine = nullptr;        // What the server asks (the fallback's wrapper).
  const MemoryEngine* memory = nullptr;  // The memory store's engine.
  const MemoryEngine* local = nullptr;   // The local fallback's buckets.
  const LeaseEngine* lease = nullptr;    // Lease mode.
  const FallbackEngine* fallback = nullptr;
  const PgStore* pg_store = nullptr;
};

// The core engines keep plain counters, on the loop thread (sidecar/core includes no metrics
// library); Publish copies them into these metrics, which the admin thread may read. It runs
// every Health::kBeatIntervalMs, so those series are at most that stale; the server's and the
// store's own series are live.
class EngineMetrics {
 public:
  // Loop thread.
  void Publish(const SidecarEngines& engines);

 private:
  friend void RegisterSidecarMetrics(MetricsRegistry&, const ServerMetrics&, const EngineMetrics&,
                                     const SidecarEngines&);
  Gauge store_ready_;
  Counter fallbacks_;
  Counter lease_fetches_;
  Counter lease_tokens_fetched_;
  Counter lease_returns_;
  Counter lease_tokens_returned_;
  Counter lease_tokens_expired_;
  Counter lease_waits_;
  Gauge memory_buckets_;
  Gauge local_buckets_;
  Gauge lease_keys_;
  Gauge build_info_;
};

// Adds every series under its Prometheus name; the store's and lease series only when the
// sidecar has them. `server`, `engine_metrics` and the engines must outlive the registry.
void RegisterSidecarMetrics(MetricsRegistry& registry, const ServerMetrics& server,
                            const EngineMetrics& engine_metrics, const SidecarEngines& engines);

// Appends process_* series (resident memory, CPU time, open files and their limit, start time)
// read from /proc/self at the moment of the scrape, on the calling thread.
void AppendProcessMetrics(std::string& out);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SIDECAR_METRICS_H_
