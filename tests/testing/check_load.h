// CheckLoad: client threads that check against sidecars continuously and record every answer.
#ifndef RATELIMIT_TESTS_TESTING_CHECK_LOAD_H_
#define RATELIMIT_TESTS_TESTING_CHECK_LOAD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "schema/check.h"

namespace ratelimit {

// One check a load thread is to send; `kind` is the caller's label for it (hot key, fresh
// key, ...), recorded with the answer.
struct LoadRequest {
  std::string key;
  uint32_t cost = 1;
  uint32_t limit = 0;
  uint32_t window_ms = 0;
  int kind = 0;
};

// What one check got. Times are the steady clock in nanoseconds (comparable across threads).
struct LoadAnswer {
  int target = 0;  // Index into CheckLoadOptions::socket_paths.
  int thread = 0;  // 0 .. threads_per_target - 1, within the target.
  int kind = 0;
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  bool answered = false;  // False: the client gave up (timeout, connection lost).
  std::string error;      // Why, when !answered.
  CheckResult result;     // When answered.

  double latency_ms() const { return static_cast<double>(end_ns - start_ns) / 1e6; }
};

struct CheckLoadOptions {
  std::vector<std::string> socket_paths;  // One target per sidecar.
  int threads_per_target = 2;
  // The client's timeout: a check it gives up on is a check that hung. Keep it well above the
  // sidecar's RATE_LIMIT_PG_TIMEOUT_MS.
  int client_timeout_ms = 3000;
  int pause_us = 0;  // Between one thread's checks; 0 checks back to back.
  // The i-th check (0, 1, ...) of `thread` on `target`. Called on that load thread.
  std::function<LoadRequest(int target, int thread, uint64_t i)> next;
};

// Starts threads_per_target threads per socket path at construction, each with a Client of its
// own, each checking one request after another until Stop(). Every answer is recorded.
// Thread-safety: Snapshot() and Count() may be called while the load runs, from any thread;
// Stop() from one thread. The destructor stops the load.
class CheckLoad {
 public:
  explicit CheckLoad(CheckLoadOptions options);
  ~CheckLoad();
  CheckLoad(const CheckLoad&) = delete;
  CheckLoad& operator=(const CheckLoad&) = delete;

  // Tells every thread to stop after its current check, and joins them. Idempotent.
  void Stop();
  // Every answer recorded so far, ordered by start time.
  std::vector<LoadAnswer> Snapshot() const;
  uint64_t Count() const { return count_.load(); }

 private:
  struct Worker {
    std::mutex mu;
    std::vector<LoadAnswer> answers;  // Guarded by mu.
    std::thread thread;
  };
  void Run(Worker& worker, int target, int thread);

  const CheckLoadOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> count_{0};
  std::vector<std::unique_ptr<Worker>> workers_;
};

// What one Ping got.
struct PingAnswer {
  int target = 0;
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  bool answered = false;
  bool ready = false;
};

// One thread that pings every socket path every `interval_ms` until Stop(), recording whether
// each sidecar said it was ready. Thread-safety: as CheckLoad.
class ReadinessProbe {
 public:
  ReadinessProbe(std::vector<std::string> socket_paths, int interval_ms = 50,
                 int client_timeout_ms = 3000);
  ~ReadinessProbe();
  ReadinessProbe(const ReadinessProbe&) = delete;
  ReadinessProbe& operator=(const ReadinessProbe&) = delete;

  void Stop();  // Idempotent.
  std::vector<PingAnswer> Snapshot() const;

 private:
  void Run();

  const std::vector<std::string> socket_paths_;
  const int interval_ms_;
  const int client_timeout_ms_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<PingAnswer> answers_;  // Guarded by mu_.
  std::thread thread_;
};

// Latencies of a set of answers, in milliseconds.
struct LatencySummary {
  size_t count = 0;
  double median_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};
LatencySummary SummarizeLatency(const std::vector<LoadAnswer>& answers,
                                const std::function<bool(const LoadAnswer&)>& which);

// Recovery of `target` after `since_ns`: the end time of the first answer, among those matching
// `which` that started at or after since_ns, from which on every later-started one is answered
// from `decided`. nullopt when the last such answer is not from `decided` (not recovered), or
// there is none.
std::optional<int64_t> RecoveredAtNs(const std::vector<LoadAnswer>& answers, int target,
                                     int64_t since_ns, Source decided,
                                     const std::function<bool(const LoadAnswer&)>& which);

// Polls `load` until every target (0 .. targets - 1) has recovered after `since_ns` (see
// RecoveredAtNs: answers matching `which` from `decided(target)`) and stayed so for `stable_ms`,
// or until `wait_ms` after since_ns. Returns whether all recovered.
bool WaitForRecovery(const CheckLoad& load, int targets, int64_t since_ns,
                     const std::function<Source(int target)>& decided,
                     const std::function<bool(const LoadAnswer&)>& which, int64_t wait_ms,
                     int64_t stable_ms);

// The most of `sorted` (nanoseconds, ascending) that lie in one closed interval of length
// `length_ns`: admissions per interval, for the bound capacity + rate * (T + ...).
size_t MaxInAnyInterval(const std::vector<int64_t>& sorted, int64_t length_ns);

// A one-line description of an answer for failure messages.
std::string Describe(const LoadAnswer& a, int64_t origin_ns);

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_CHECK_LOAD_H_
