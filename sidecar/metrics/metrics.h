// Metrics: counters, gauges and histograms that the loop thread writes and any thread reads.
#ifndef RATELIMIT_SIDECAR_METRICS_METRICS_H_
#define RATELIMIT_SIDECAR_METRICS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace ratelimit {

// The metric types below have one writer each: the thread that owns what they count (the loop
// thread). An update is then a relaxed load and store, plain moves on x86 and no locked
// instruction, so counting costs the check path a few cycles; the admin thread reads them at
// any time, relaxed, and sees each value whole. Two threads must never write one metric.

// A count that only grows.
class Counter {
 public:
  void Add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // Copies in a total that is kept elsewhere (an engine's own statistics). REQUIRES: `total`
  // never decreases from one call to the next.
  void Set(uint64_t total) { value_.store(total, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(int64_t value) { value_.store(value, std::memory_order_relaxed); }
  void Add(int64_t delta) {
    value_.store(value_.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
  }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Counts of observed integer values (nanoseconds, batch sizes) in buckets with the given
// ascending upper bounds, plus an implicit last bucket for everything above them (+Inf).
class Histogram {
 public:
  // REQUIRES: `bounds` is strictly ascending and not empty.
  explicit Histogram(std::vector<uint64_t> bounds);

  // Records `count` observations of `value` (count > 1: several events that took as long).
  void Observe(uint64_t value, uint64_t count = 1);

  // Copies in counts kept elsewhere: per_bucket[i] observations in bucket i (not cumulative;
  // the last is the +Inf bucket) and their sum. REQUIRES: per_bucket.size() ==
  // bounds().size() + 1 and no count decreases from one call to the next.
  void Set(std::span<const uint64_t> per_bucket, uint64_t sum);

  const std::vector<uint64_t>& bounds() const { return bounds_; }

  // A reading: cumulative[i] observations at most bounds()[i]; the last entry is the total.
  // Read while the writer goes on, the buckets may be a few observations apart; cumulative
  // counts never decrease, and the total is the last bucket, so a reading is always valid.
  struct Reading {
    std::vector<uint64_t> cumulative;
    uint64_t sum = 0;
  };
  Reading Read() const;

 private:
  const std::vector<uint64_t> bounds_;
  const std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 of them.
  std::atomic<uint64_t> sum_{0};
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_METRICS_METRICS_H_
