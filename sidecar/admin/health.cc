// Health: what /healthz and /readyz answer, published by the loop thread for the admin thread.
#include "sidecar/admin/health.h"

namespace ratelimit {

Health::Health(std::string store, bool fallback_serves)
    : store_(std::move(store)), fallback_serves_(fallback_serves) {}

Health::Answer Health::Liveness(uint64_t now_ms) const {
  const uint64_t last = last_beat_ms_.load(std::memory_order_relaxed);
  // Before the first beat the loop is starting: alive (a startup probe covers slow starts).
  if (last == 0 || now_ms <= last || now_ms - last < kStallMs) return {true, "ok\n"};
  return {false, "event loop stalled: no turn for " + std::to_string(now_ms - last) + " ms\n"};
}

Health::Answer Health::Readiness() const {
  if (stopping_.load(std::memory_order_relaxed)) return {false, "not ready: shutting down\n"};
  if (!listening_.load(std::memory_order_relaxed)) {
    return {false, "not ready: the socket is not listening yet\n"};
  }
  if (store_ready_.load(std::memory_order_relaxed)) return {true, "ready\n"};
  if (fallback_serves_) {
    return {true, "ready: the " + store_ + " store is not ready; the fallback answers\n"};
  }
  return {false, "not ready: the " + store_ + " store is not ready and RATE_LIMIT_FALLBACK=deny\n"};
}

}  // namespace ratelimit
