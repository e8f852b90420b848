// Shared buckets: one key's row of the shared table, its repair, and the checks decided on it.
#ifndef RATELIMIT_SIDECAR_CORE_SHARED_BUCKET_H_
#define RATELIMIT_SIDECAR_CORE_SHARED_BUCKET_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "schema/check.h"
#include "sidecar/core/algorithm.h"
#include "sidecar/core/shared_store.h"

namespace ratelimit {

// A row as read from the table: any column may be NULL or out of range, because operators and
// older versions write the table too.
struct RawRow {
  std::optional<double> tokens;
  std::optional<int64_t> updated_us;  // Database time, microseconds since the Unix epoch.
  std::optional<int64_t> capacity;
  std::optional<int64_t> window_ms;
  std::optional<int64_t> algorithm = 0;  // Algorithm's value; NULL or unknown is repaired.
};

// A well-formed row: -MaxDebt(capacity) <= tokens <= capacity, capacity and window_ms in
// [1, 2^32); negative tokens are a debt (see ApplyOnRow).
//   token bucket: tokens (fractional) at updated_us, refilling at capacity / window_ms.
//   fixed window: tokens = the admissions left in the window (whole), updated_us = when the
//                 window started; it ends window_ms later, and the next check after that opens
//                 a new one of `capacity`.
struct SharedRow {
  double tokens = 0;
  int64_t updated_us = 0;
  uint32_t capacity = 1;
  uint32_t window_ms = 1;
  Algorithm algorithm = Algorithm::kTokenBucket;

  friend bool operator==(const SharedRow&, const SharedRow&) = default;
};

// Makes `raw` well formed at database time `now_us`, so that a damaged row never crashes the
// sidecar nor locks a key out for good. Returns what was wrong (empty when nothing was):
//   capacity or window NULL, 0, negative or too large: the bucket takes `policy`;
//   tokens NULL, NaN or infinite: full; above capacity: capacity; negative: a debt (see
//   ApplyOnRow), kept down to -MaxDebt(capacity), and 0 below that;
//   updated_at NULL, or more than one window in the future: now. (Less than a window ahead is a
//   database clock that stepped back: kept, so refill waits until the clock catches up.)
//   updated_at more than an hour in the future, further than any database clock steps back,
//   whatever the row's window: a full bucket of `policy`, now.
//   algorithm NULL or unknown: `algorithm` (the operation's), the rest of the row kept.
//   a fixed window's tokens fractional: rounded down.
// The same rules hold for both algorithms: for a fixed window, updated_at is the window's start.
// A row may owe at most this many tokens, or its capacity if that is more, before RepairRow
// counts it as damage: about what a fleet's sidecars may admit unconfirmed at once for one key
// (P * u, see LeaseEngine), so that a damaged row locks its key for no longer than that takes to
// refill.
inline constexpr uint32_t kMaxDebtTokens = 1024;
double MaxDebt(uint32_t capacity);

std::string RepairRow(const RawRow& raw, const Policy& policy, int64_t now_us, SharedRow& row,
                      Algorithm algorithm = Algorithm::kTokenBucket);

// Applies `ops` of one key, in order, to `row` at database time `now_us`, with the same exact
// token bucket arithmetic as the memory store, and appends one answer per operation to
// `answers`. Returns whether the row must be written: only when tokens were taken or given
// back, so a batch of denials writes nothing. Only operations that take or give back tokens
// change the row: a read (kCheck of cost 0) is answered under the policy it names from a copy,
// and a denial or a lease granting nothing leaves the row as it was, so a batch leaves the row as
// the same operations in one transaction each would. Time that steps back (a failover to a server
// whose clock is behind) refills nothing.
//
// A kReturn gives back its unused tokens less rate * (now_us - debit_us): what the bucket has
// refilled since the lease was debited. Debiting the lease may have let the row refill where a
// full row would have stayed full; without that deduction, a return landing after the refill
// was spent would create tokens, and the pods' bound would grow by up to a whole capacity. A
// return at a time before its debit (a clock that stepped back) gives back nothing.
//
// Debt: a kLease's `owed` tokens were admitted before the row was asked (optimistic admission),
// so they are taken whether they are there or not. What the row lacks becomes its debt: the row
// is written with negative tokens, grants nothing (a check, a lease) while it owes, and the
// refill repays the debt before anything else, so the long-run rate stays exact; a kReturn to a
// row in debt repays it first. The answer says whether the row owes (StoreAnswer::in_debt), and
// a lease's retry_after_ms counts the debt in. A fixed window's debt is owed by its current
// window only: the next window opens full.
//
// A fixed window row is decided with FixedWindow's arithmetic, the memory store's, in the same
// way (a copy for reads and denials, a lease halved for the next sidecar). Answers name the
// window (StoreAnswer::window_start_us, window_end_us). A kReturn gives back its tokens only to
// the window it names (its debit_us), while that window holds, never above capacity: unused
// tokens of an ended window are gone, and a return that finds a newer window gives nothing.
//
// The algorithm is the operations' (REQUIRES: all of `ops` ask for the same one). A row that
// records the other one is converted first, and the row takes the operations' algorithm when
// they change it (so, as for a policy, the last writer's algorithm wins; a denial or a read
// leaves the row as it is). Never more to admit than the row had: a token bucket becomes a
// window opening now with the whole tokens it holds now; a fixed window becomes a bucket holding
// the admissions its window has left (full once the window has ended), refilling from now.
bool ApplyOnRow(SharedRow& row, std::span<const StoreOp* const> ops, int64_t now_us,
                std::vector<StoreAnswer>& answers);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_SHARED_BUCKET_H_
