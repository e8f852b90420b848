// SidecarMetrics: every series /metrics exposes, named once, over the metrics their owners keep.
#ifndef RATELIMIT_SIDECAR_SIDECAR_METRICS_H_
#define RATELIMIT_SIDECAR_SIDECAR_METRICS_H_

#include <string>

#include "sidecar/engines.h"
#include "sidecar/metrics/metrics.h"
#include "sidecar/metrics/prometheus.h"
#include "sidecar/server/server_metrics.h"

namespace ratelimit {

// Series of the sidecar as a whole. The owner sets store_ready from the engine's ready() at each
// status beat (Health::kBeatIntervalMs), as readiness is reported: a store's readiness also
// changes with time alone (a circuit breaker's pause ending), so it is sampled, not counted.
struct SidecarStatusMetrics {
  SidecarStatusMetrics() { build_info.Set(1); }

  Gauge store_ready;
  Gauge build_info;  // Always 1; the version is its label.
};

// Adds every series under its Prometheus name; the store's and lease series only when the
// sidecar has them. Each engine keeps its own metrics, written where they change on the loop
// thread; the registry only reads them. `server`, `sidecar` and the engines must outlive the
// registry.
void RegisterSidecarMetrics(MetricsRegistry& registry, const ServerMetrics& server,
                            const SidecarStatusMetrics& sidecar, const Engines& engines);

// Appends process_* series (resident memory, CPU time, open files and their limit, start time)
// read from /proc/self at the moment of the scrape, on the calling thread.
void AppendProcessMetrics(std::string& out);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SIDECAR_METRICS_H_
