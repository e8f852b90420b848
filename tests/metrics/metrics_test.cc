// Tests of Counter, Gauge and Histogram: bucketing, copied-in totals, and reads during writes.
#include "sidecar/metrics/metrics.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace ratelimit {
namespace {

using Cumulative = std::vector<uint64_t>;

TEST(CounterTest, AddsAndCopiesInTotals) {
  Counter counter;
  EXPECT_EQ(counter.value(), 0u);
  counter.Add();
  counter.Add(41);
  EXPECT_EQ(counter.value(), 42u);
  counter.Set(1000);
  EXPECT_EQ(counter.value(), 1000u);
}

TEST(GaugeTest, GoesUpAndDownBelowZero) {
  Gauge gauge;
  gauge.Set(5);
  gauge.Add(-7);
  EXPECT_EQ(gauge.value(), -2);
  gauge.Add(3);
  EXPECT_EQ(gauge.value(), 1);
  gauge.Set(0);
  EXPECT_EQ(gauge.value(), 0);
}

TEST(HistogramTest, AValueEqualToABoundCountsInThatBucketAndAboveTheLastInInf) {
  struct Case {
    uint64_t value;
    Cumulative cumulative;  // le=10, le=20, le=30, +Inf.
  };
  const Case cases[] = {
      {0, {1, 1, 1, 1}},  {9, {1, 1, 1, 1}},  {10, {1, 1, 1, 1}},
      {11, {0, 1, 1, 1}}, {20, {0, 1, 1, 1}}, {21, {0, 0, 1, 1}},
      {30, {0, 0, 1, 1}}, {31, {0, 0, 0, 1}}, {UINT64_MAX, {0, 0, 0, 1}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.value);
    Histogram histogram({10, 20, 30});
    histogram.Observe(c.value);
    const Histogram::Reading reading = histogram.Read();
    EXPECT_EQ(reading.cumulative, c.cumulative);
    EXPECT_EQ(reading.sum, c.value);
  }
}

TEST(HistogramTest, ReadIsCumulativeAndItsLastEntryIsTheTotal) {
  Histogram histogram({10, 20, 30});
  EXPECT_EQ(histogram.bounds(), (std::vector<uint64_t>{10, 20, 30}));
  EXPECT_EQ(histogram.Read().cumulative, (Cumulative{0, 0, 0, 0}));
  for (uint64_t value : {5, 10, 15, 25, 25, 100}) histogram.Observe(value);
  const Histogram::Reading reading = histogram.Read();
  EXPECT_EQ(reading.cumulative, (Cumulative{2, 3, 5, 6}));
  EXPECT_EQ(reading.sum, 180u);
}

TEST(HistogramTest, ObserveWithACountRecordsThatManyObservationsOfTheValue) {
  Histogram histogram({10, 20});
  histogram.Observe(15, 4);
  histogram.Observe(3, 1);
  histogram.Observe(50, 0);  // Nothing observed: neither a count nor a sum.
  const Histogram::Reading reading = histogram.Read();
  EXPECT_EQ(reading.cumulative, (Cumulative{1, 5, 5}));
  EXPECT_EQ(reading.sum, 63u);
}

TEST(HistogramTest, SetReplacesPerBucketCountsAndTheSum) {
  Histogram histogram({1, 2, 4});
  histogram.Observe(3, 100);  // Replaced, not added to.
  const uint64_t per_bucket[] = {5, 0, 2, 1};
  histogram.Set(per_bucket, 77);
  Histogram::Reading reading = histogram.Read();
  EXPECT_EQ(reading.cumulative, (Cumulative{5, 5, 7, 8}));
  EXPECT_EQ(reading.sum, 77u);

  const uint64_t later[] = {6, 1, 2, 3};
  histogram.Set(later, 90);
  reading = histogram.Read();
  EXPECT_EQ(reading.cumulative, (Cumulative{6, 7, 9, 12}));
  EXPECT_EQ(reading.sum, 90u);
}

TEST(HistogramTest, OneBoundMakesTwoBuckets) {
  Histogram histogram({1});
  histogram.Observe(1);
  histogram.Observe(2);
  histogram.Observe(2);
  EXPECT_EQ(histogram.Read().cumulative, (Cumulative{1, 3}));
}

// One writer (as the loop thread) and one reader (as the admin thread), at once: every reading
// is cumulative, and no bucket, total or counter ever goes down from one reading to the next.
TEST(HistogramTest, AReaderDuringWritesNeverSeesACountDecrease) {
  constexpr uint64_t kWrites = 300'000;
  constexpr int kMaxReads = 1'000'000;
  Histogram histogram({10, 100, 1000});
  Counter counter;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (uint64_t i = 0; i < kWrites; ++i) {
      histogram.Observe((i * 7919) % 2000, 1 + i % 3);
      counter.Add();
    }
    done = true;
  });
  Cumulative previous(4, 0);
  uint64_t previous_sum = 0;
  uint64_t previous_counter = 0;
  int reads = 0;
  int problems = 0;
  for (; reads < kMaxReads && problems < 10; ++reads) {
    const bool last = done.load();
    const Histogram::Reading reading = histogram.Read();
    const uint64_t count = counter.value();
    for (size_t i = 0; i < reading.cumulative.size(); ++i) {
      if (i > 0 && reading.cumulative[i] < reading.cumulative[i - 1]) {
        ADD_FAILURE() << "reading " << reads << " not cumulative at bucket " << i;
        ++problems;
      }
      if (reading.cumulative[i] < previous[i]) {
        ADD_FAILURE() << "reading " << reads << ": bucket " << i << " went from " << previous[i]
                      << " to " << reading.cumulative[i];
        ++problems;
      }
    }
    if (reading.sum < previous_sum || count < previous_counter) {
      ADD_FAILURE() << "reading " << reads << ": the sum or the counter went down";
      ++problems;
    }
    previous = reading.cumulative;
    previous_sum = reading.sum;
    previous_counter = count;
    if (last) break;  // This reading began after the last write.
  }
  writer.join();
  EXPECT_GT(reads, 0);
  const Histogram::Reading final_reading = histogram.Read();
  uint64_t expected_total = 0;
  for (uint64_t i = 0; i < kWrites; ++i) expected_total += 1 + i % 3;
  EXPECT_EQ(final_reading.cumulative.back(), expected_total);
  EXPECT_EQ(counter.value(), kWrites);
}

}  // namespace
}  // namespace ratelimit
