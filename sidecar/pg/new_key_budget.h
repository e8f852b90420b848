// NewKeyBudget: a token bucket of row inserts per second, bounding the new keys one store adds.
#ifndef RATELIMIT_SIDECAR_PG_NEW_KEY_BUDGET_H_
#define RATELIMIT_SIDECAR_PG_NEW_KEY_BUDGET_H_

#include <cstddef>
#include <cstdint>

namespace ratelimit {

// A flood of unique keys would make every check a row insert, and every row lives in the shared
// table until it is full again and collected. This bounds the rows one store inserts to
// `per_sec` a second on average, with a burst of one second's worth: the bucket starts full,
// holds at most `per_sec` inserts and refills continuously.
//
// A transaction reserves what it may insert before it starts (Reserve) and gives back what its
// INSERT did not use once it has ended (GiveBack), so the bound counts rows actually inserted,
// across every session of the store, and a batch of keys that all have rows costs nothing.
// `per_sec` 0 means no bound: Reserve grants everything asked.
//
// Pure: the caller passes the time, in microseconds of a monotonic clock. Thread-safety: one
// thread (the store's loop).
class NewKeyBudget {
 public:
  explicit NewKeyBudget(uint32_t per_sec) : per_sec_(per_sec), available_(per_sec) {}

  // Takes up to `wanted` inserts from the bucket, refilled to `now_us`; how many were taken.
  size_t Reserve(size_t wanted, uint64_t now_us);
  // Returns `unused` inserts of an earlier reservation (never above the burst).
  void GiveBack(size_t unused);

  bool bounded() const { return per_sec_ > 0; }
  // Whether the bound is reached: since a Reserve granted less than it was asked, no Reserve
  // has found the bucket full again. One flood is one such episode, however its reservations
  // alternate between short and not.
  bool reached() const { return reached_; }
  uint32_t per_sec() const { return per_sec_; }

 private:
  void Refill(uint64_t now_us);

  const uint32_t per_sec_;
  double available_;
  uint64_t refilled_us_ = 0;
  bool started_ = false;  // Whether refilled_us_ is a time yet.
  bool reached_ = false;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_NEW_KEY_BUDGET_H_
