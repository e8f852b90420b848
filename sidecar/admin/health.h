// Health: what /healthz and /readyz answer, published by the loop thread for the admin thread.
#ifndef RATELIMIT_SIDECAR_ADMIN_HEALTH_H_
#define RATELIMIT_SIDECAR_ADMIN_HEALTH_H_

#include <atomic>
#include <cstdint>
#include <string>

namespace ratelimit {

// Liveness: the process is alive and its event loop turns. The loop thread calls Beat()
// every kBeatIntervalMs; a loop that has not beaten for kStallMs is stuck (a bug, or a
// blocking call that should never be there), and /healthz then fails so that the kubelet
// restarts the container instead of leaving a pod whose checks hang.
//
// Readiness: the socket is listening, and checks get real answers: the store can decide them,
// or the fallback policy answers for it (local or allow; deny refuses everything, so a pod
// whose store is down under deny is not ready). Not ready before the socket listens and from
// the moment shutdown begins.
//
// Thread-safety: the Set*/Beat calls on one thread (the loop thread); Liveness and Readiness
// on any thread. Times are CLOCK_MONOTONIC milliseconds, given by the caller.
class Health {
 public:
  static constexpr uint64_t kBeatIntervalMs = 250;
  static constexpr uint64_t kStallMs = 5000;

  // `store` names the store for the answers ("memory", "postgres"); `fallback_serves`: the
  // fallback policy answers checks while the store cannot (false for the memory store, which
  // is never not ready, and for deny).
  Health(std::string store, bool fallback_serves);

  void Beat(uint64_t now_ms) { last_beat_ms_.store(now_ms, std::memory_order_relaxed); }
  void SetListening(bool listening) { listening_.store(listening, std::memory_order_relaxed); }
  void SetStoreReady(bool ready) { store_ready_.store(ready, std::memory_order_relaxed); }
  void SetStopping() { stopping_.store(true, std::memory_order_relaxed); }

  struct Answer {
    bool ok = false;   // 200 when true, 503 otherwise.
    std::string body;  // One line for a human, ending in a newline.
  };
  Answer Liveness(uint64_t now_ms) const;
  Answer Readiness() const;

 private:
  const std::string store_;
  const bool fallback_serves_;
  std::atomic<uint64_t> last_beat_ms_{0};  // 0: the loop has not started yet.
  std::atomic<bool> listening_{false};
  std::atomic<bool> store_ready_{false};
  std::atomic<bool> stopping_{false};
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_ADMIN_HEALTH_H_
