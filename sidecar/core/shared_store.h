// SharedStore: the interface of a store whose buckets are shared with other sidecars.
#ifndef RATELIMIT_SIDECAR_CORE_SHARED_STORE_H_
#define RATELIMIT_SIDECAR_CORE_SHARED_STORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/check.h"
#include "schema/status.h"
#include "sidecar/core/algorithm.h"

namespace ratelimit {

// One operation on a key's shared bucket. The key is owned: the store answers after the request
// that carried it is gone.
//   kCheck:  take `cost` tokens if they are there (strict mode; cost 0 only reads).
//   kLease:  first take `owed` tokens whether they are there or not (admissions this sidecar
//            made before asking: optimistic admission, see LeaseEngine), the row going into debt
//            for what it lacks; then take as many tokens as are there, at most `want` and at
//            most half of them (unless `cost` needs more), but only if at least `cost` are: a
//            lease this sidecar then spends from memory. `want` 0 only records `owed`.
//   kReturn: give back `cost` unused tokens of a lease debited at database time `debit_us`, less
//            what the bucket has refilled since (see ApplyOnRow), never above capacity. For a
//            fixed window, `debit_us` is the start of the lease's window instead: the tokens go
//            back only while that window is still the row's, else they are gone.
// `algorithm` is the arithmetic the operation asks for; a row that records the other one is
// converted when the operation changes it (see ApplyOnRow).
struct StoreOp {
  enum class Kind : uint8_t { kCheck, kLease, kReturn };

  std::string key;
  uint32_t cost = 1;
  Policy policy;
  Kind kind = Kind::kCheck;
  uint32_t want = 0;     // kLease only.
  int64_t debit_us = 0;  // kReturn only.
  Algorithm algorithm = Algorithm::kTokenBucket;
  uint32_t owed = 0;  // kLease only.
};

// The store's answer to one StoreOp.
struct StoreAnswer {
  // kCheck: the decision. kLease: allowed when tokens were granted; remaining is what the row
  // kept, and when denied retry_after_ms is the time until `cost` tokens are there.
  CheckResult check;
  uint32_t granted = 0;  // kLease: tokens debited for the lease. kReturn: whole tokens put back.
  int64_t now_us = 0;    // Database time the operation was decided at (a lease's debit time).
  // Refused (StoreUnavailable) only because its key has no row and the store had reached its
  // bound on new rows: a sign of a flood of new keys.
  bool new_key_deferred = false;
  // Fixed window only (0 for a token bucket): the database times at which the row's window,
  // as it stands after the operation, started and ends. A lease of it is spent at most until
  // window_end_us - now_us after its fetch was sent, and its return names window_start_us.
  int64_t window_start_us = 0;
  int64_t window_end_us = 0;
  // The row owes tokens after the operation (see ApplyOnRow): it grants nothing until
  // check.retry_after_ms (for a kLease) has repaid the debt.
  bool in_debt = false;
};

// The answers to one Take, in the order of its batch; or why the store could not decide.
using TakeDone = std::function<void(Result<std::vector<StoreAnswer>> answers)>;

// Buckets kept where every sidecar sees them (PostgreSQL), phrased in domain terms so that the
// engines above it are tested against a fake and the real store against a real database.
// Thread-safety: the loop thread only.
class SharedStore {
 public:
  virtual ~SharedStore() = default;

  // Applies `batch` atomically, in one transaction: each operation against the shared bucket of
  // its key, in batch order, so that several operations on one key are decided one after
  // another. A denial changes nothing. Calls `done` exactly once, later, on the loop thread.
  // REQUIRES: free_slots() > 0; batch is not empty.
  virtual void Take(std::vector<StoreOp> batch, TakeDone done) = 0;

  // How many more Takes may be in flight now (one per idle, connected database session).
  virtual size_t free_slots() const = 0;

  // Whether the store can decide at all (a session is connected and the table is usable).
  virtual bool ready() const = 0;

  // The store's name as reported by PingResponse.store.
  virtual std::string_view name() const = 0;

  // Registers who to tell when a slot frees up or readiness changes for a reason other than a
  // Take completing (a session connected, background work ended), so waiting work starts.
  void set_on_capacity(std::function<void()> listener) { on_capacity_ = std::move(listener); }

 protected:
  void NotifyCapacity() {
    if (on_capacity_) on_capacity_();
  }

 private:
  std::function<void()> on_capacity_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_SHARED_STORE_H_
