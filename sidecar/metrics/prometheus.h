// MetricsRegistry: names metrics and renders them in the Prometheus text exposition format.
#ifndef RATELIMIT_SIDECAR_METRICS_PROMETHEUS_H_
#define RATELIMIT_SIDECAR_METRICS_PROMETHEUS_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sidecar/metrics/metrics.h"

namespace ratelimit {

struct MetricLabel {
  std::string name;
  std::string value;
};
using MetricLabels = std::vector<MetricLabel>;

// Every series the admin server exposes, by name, help, type and labels; the metrics themselves
// belong to their owners (server, engines) and must outlive the registry. Series of one family
// (one name) are rendered together under one `# HELP` and `# TYPE`, in the order the family was
// first added.
//
// Text format 0.0.4 (what Prometheus scrapes by default): names match
// [a-zA-Z_:][a-zA-Z0-9_:]*, counters end in _total, histograms expose _bucket{le=...} (le
// ascending, ending in "+Inf"), _sum and _count, and units are base units (seconds).
//
// Thread-safety: Add* while no other thread uses the registry (start-up); after that, Render
// may be called from any thread, while the metrics' writer goes on.
class MetricsRegistry {
 public:
  // REQUIRES: a valid name; a family's series all have one type and one help text.
  void AddCounter(std::string_view name, std::string_view help, const Counter& counter,
                  MetricLabels labels = {});
  void AddGauge(std::string_view name, std::string_view help, const Gauge& gauge,
                MetricLabels labels = {});
  // Observations are divided by `units_per_base_unit` when rendered: 1e9 for a histogram of
  // nanoseconds exposed in seconds, 1 for counts.
  void AddHistogram(std::string_view name, std::string_view help, const Histogram& histogram,
                    double units_per_base_unit, MetricLabels labels = {});

  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    MetricLabels labels;
    const void* metric;
    double divisor;
  };
  struct Family {
    std::string name;
    std::string help;
    Type type;
    std::vector<Series> series;
  };

  void Add(std::string_view name, std::string_view help, Type type, Series series);

  std::vector<Family> families_;
};

// Renders `value` the way Prometheus reads it: integers without a fraction, others in the
// shortest form that reads back to the same double ("0.00025", "1e-05").
std::string FormatMetricValue(double value);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_METRICS_PROMETHEUS_H_
