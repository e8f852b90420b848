// Metrics: counters, gauges and histograms that the loop thread writes and any thread reads.
#include "sidecar/metrics/metrics.h"

#include <algorithm>

namespace ratelimit {

Histogram::Histogram(std::vector<uint64_t> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(uint64_t value, uint64_t count) {
  // A handful of bounds: a linear scan beats a binary search, and most values land early.
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  std::atomic<uint64_t>& bucket = buckets_[i];
  bucket.store(bucket.load(std::memory_order_relaxed) + count, std::memory_order_relaxed);
  sum_.store(sum_.load(std::memory_order_relaxed) + value * count, std::memory_order_relaxed);
}

void Histogram::Set(std::span<const uint64_t> per_bucket, uint64_t sum) {
  const size_t n = std::min(per_bucket.size(), bounds_.size() + 1);
  for (size_t i = 0; i < n; ++i) buckets_[i].store(per_bucket[i], std::memory_order_relaxed);
  sum_.store(sum, std::memory_order_relaxed);
}

Histogram::Reading Histogram::Read() const {
  Reading reading;
  reading.cumulative.resize(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    reading.cumulative[i] = total;
  }
  reading.sum = sum_.load(std::memory_order_relaxed);
  return reading;
}

}  // namespace ratelimit
