// ServerMetrics: what the server counts about checks and connections, for /metrics.
#ifndef RATELIMIT_SIDECAR_SERVER_SERVER_METRICS_H_
#define RATELIMIT_SIDECAR_SERVER_SERVER_METRICS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "schema/check.h"
#include "sidecar/metrics/metrics.h"

namespace ratelimit {

inline constexpr size_t kSourceCount = 4;  // Source::kMemory .. Source::kFallback.
inline constexpr size_t kStatusCount = 6;  // CheckStatus::kOk .. CheckStatus::kShuttingDown.

// Upper bounds of the check latency histogram, in nanoseconds: 10 us to 1 s. Answers from
// memory land in the first buckets; database round trips from about 250 us; a transaction
// timeout (RATE_LIMIT_PG_TIMEOUT_MS, 250 ms by default) near the top.
inline constexpr uint64_t kCheckLatencyBoundsNs[] = {
    10'000,      25'000,      50'000,      100'000,      250'000,    500'000,
    1'000'000,   2'500'000,   5'000'000,   10'000'000,   25'000'000, 50'000'000,
    100'000'000, 250'000'000, 500'000'000, 1'000'000'000};

// Written by the loop thread only (see metrics.h); owned by the Server.
struct ServerMetrics {
  // Checks answered with status Ok, by decision and by the source that decided.
  Counter allowed[kSourceCount];
  Counter denied[kSourceCount];
  // Checks answered with another status, by status ([0], Ok, stays 0).
  Counter refused[kStatusCount];
  // From reading a check's frame to writing its answer to the socket. Checks answered during
  // the read that brought them share one measurement: their answers leave together.
  Histogram latency{{std::begin(kCheckLatencyBoundsNs), std::end(kCheckLatencyBoundsNs)}};
  Counter bad_frames;  // Frames refused with an ErrorResponse (the connection is then closed).
  Counter connections_accepted;
  Counter connections_refused;  // Over RATE_LIMIT_MAX_CONNECTIONS, a uid not allowed, stopping.
  Gauge connections_open;

  void CountCheck(const CheckResult& result) {
    if (result.status == CheckStatus::kOk) {
      const size_t source = std::min<size_t>(static_cast<size_t>(result.source), kSourceCount - 1);
      (result.allowed ? allowed : denied)[source].Add();
    } else {
      refused[std::min<size_t>(static_cast<size_t>(result.status), kStatusCount - 1)].Add();
    }
  }
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_SERVER_METRICS_H_
