// Shared buckets: one key's row of the shared table, its repair, and the checks decided on it.
#include "sidecar/core/shared_bucket.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "sidecar/core/fixed_window.h"
#include "sidecar/core/token_bucket.h"

namespace ratelimit {
namespace {

constexpr int64_t kMaxU32 = std::numeric_limits<uint32_t>::max();

bool InRange(const std::optional<int64_t>& v) { return v && *v >= 1 && *v <= kMaxU32; }

void Note(std::string& problems, const char* what) {
  if (!problems.empty()) problems += "; ";
  problems += what;
}

double WindowMicros(const SharedRow& row) { return static_cast<double>(row.window_ms) * 1000.0; }

// The most a database clock is taken to step back (a failover to a server whose clock is
// behind): servers kept by NTP differ by milliseconds, a badly kept one by minutes. A row's
// window cannot bound it, since the window may be damaged too while still in range (4e9 ms, 46
// days), and neither can the largest window a request may set (2^32-1 ms, 49.7 days): a key
// would stay locked that long.
constexpr int64_t kMaxClockStepUs = int64_t{3600} * 1'000'000;

// A token bucket row in the memory store's fixed point: tokens * window_us < 2^32 * 2^42 fits
// in 128 bits. Whole tokens convert exactly; only the fraction goes through double precision,
// so that a full row of a huge capacity * window (beyond 2^53 units) reads as exactly full.
TokenBucket::State BucketOf(const SharedRow& row) {
  TokenBucket::State state;
  state.policy = Policy{row.capacity, row.window_ms};
  const uint128_t window_us = static_cast<uint128_t>(row.window_ms) * 1000;
  const double whole = std::floor(row.tokens);
  state.level = std::min(
      static_cast<uint128_t>(row.capacity) * window_us,
      static_cast<uint128_t>(whole) * window_us +
          static_cast<uint128_t>(std::nearbyint((row.tokens - whole) * WindowMicros(row))));
  state.updated_us = row.updated_us;
  return state;
}

void StoreBucket(const TokenBucket::State& state, SharedRow& row) {
  row.capacity = state.policy.limit;
  row.window_ms = state.policy.window_ms;
  const uint128_t window_us = static_cast<uint128_t>(row.window_ms) * 1000;
  row.tokens = static_cast<double>(static_cast<uint64_t>(uint128_t{state.level} / window_us)) +
               static_cast<double>(static_cast<uint64_t>(uint128_t{state.level} % window_us)) /
                   WindowMicros(row);
  row.updated_us = state.updated_us;
}

// A fixed window row as FixedWindow's state: the window started at updated_us, in the gateway's
// whole milliseconds.
FixedWindow::State WindowOf(const SharedRow& row) {
  FixedWindow::State state;
  state.window_start_ms = FixedWindow::FloorMillis(row.updated_us);
  state.tokens = static_cast<uint32_t>(
      std::floor(std::clamp(row.tokens, 0.0, static_cast<double>(row.capacity))));
  state.policy = Policy{row.capacity, row.window_ms};
  state.used_us = row.updated_us;
  return state;
}

void StoreWindow(const FixedWindow::State& state, SharedRow& row) {
  row.capacity = state.policy.limit;
  row.window_ms = state.policy.window_ms;
  row.tokens = state.tokens;
  row.updated_us = state.window_start_ms * 1000;
}

// `row` read with the other algorithm's arithmetic at `now_us` (see ApplyOnRow).
SharedRow Converted(const SharedRow& row, Algorithm to, int64_t now_us) {
  SharedRow out = row;
  out.algorithm = to;
  out.updated_us = now_us;
  if (to == Algorithm::kFixedWindow) {
    TokenBucket::State bucket = BucketOf(row);
    const Policy policy = bucket.policy;  // A copy: Decide writes the state it reads it from.
    out.tokens = TokenBucket::Decide(bucket, policy, 0, now_us).remaining;
  } else if (FixedWindow::IsFull(WindowOf(row), now_us)) {
    out.tokens = row.capacity;
  }
  return out;
}

// What differs between the two arithmetics in ApplyOps: a kReturn, and what answers say of the
// window.
struct BucketRules {
  using Algo = TokenBucket;
  static uint32_t GiveBack(TokenBucket::State& state, const StoreOp& op, int64_t now_us,
                           bool& changed) {
    if (now_us < op.debit_us) return 0;
    TokenBucket::Decide(state, state.policy, 0, now_us);  // Refill first: not a change.
    const uint128_t before = state.level;
    const uint32_t granted =
        TokenBucket::Refund(state, op.cost, static_cast<uint64_t>(now_us - op.debit_us), now_us);
    // Written whenever the level moved: a refund of less than one whole token counts.
    changed |= uint128_t{state.level} != before;
    return granted;
  }
  static void NoteWindow(const TokenBucket::State&, StoreAnswer&) {}
};

struct WindowRules {
  using Algo = FixedWindow;
  static uint32_t GiveBack(FixedWindow::State& state, const StoreOp& op, int64_t now_us,
                           bool& changed) {
    // Only to the window the lease was debited from, while it holds: its leases were spent
    // only until its end, and another window owes them nothing.
    if (FixedWindow::IsFull(state, now_us) ||
        FixedWindow::FloorMillis(op.debit_us) != state.window_start_ms) {
      return 0;
    }
    const uint32_t spent = state.policy.limit - std::min(state.tokens, state.policy.limit);
    const uint32_t back = std::min(op.cost, spent);
    state.tokens += back;
    changed |= back > 0;
    return back;
  }
  static void NoteWindow(const FixedWindow::State& state, StoreAnswer& answer) {
    answer.window_start_us = state.window_start_ms * 1000;
    answer.window_end_us = FixedWindow::WindowEndUs(state);
  }
};

// Applies `ops` to `state` with Rules' arithmetic (see ApplyOnRow); returns whether it changed.
template <typename Rules>
bool ApplyOps(typename Rules::Algo::State& state, std::span<const StoreOp* const> ops,
              int64_t now_us, std::vector<StoreAnswer>& answers) {
  using Algo = typename Rules::Algo;
  bool changed = false;
  for (const StoreOp* op : ops) {
    StoreAnswer answer;
    answer.now_us = now_us;
    switch (op->kind) {
      case StoreOp::Kind::kCheck: {
        // Decided on a copy, kept only when tokens were taken: a read (cost 0) answers under the
        // policy it names without rescaling the row, and a denial leaves the row as it was, so
        // a batch leaves the row as the same checks one transaction each would.
        typename Algo::State decided = state;
        answer.check = Algo::Decide(decided, op->policy, op->cost, now_us);
        Rules::NoteWindow(decided, answer);
        if (answer.check.allowed && op->cost > 0) {
          state = decided;
          changed = true;
        }
        break;
      }
      case StoreOp::Kind::kLease: {
        // Probed on a copy, so that a lease granting nothing rescales nothing (as a denial).
        typename Algo::State probe = state;
        const CheckResult there = Algo::Decide(probe, op->policy, 0, now_us);
        // What is wanted, but no more than half of what is there unless `cost` needs more:
        // several sidecars asking for a scarce bucket each leave some for the next.
        const uint32_t take =
            std::min({op->want, there.remaining, std::max(op->cost, there.remaining / 2)});
        if (take >= op->cost && take > 0) {
          answer.check = Algo::Decide(state, op->policy, take, now_us);
          answer.granted = take;
          Rules::NoteWindow(state, answer);
          changed = true;
        } else {
          // Nothing granted, and nothing taken: the time until `cost` tokens is read from the
          // copy, since Decide would take them if they were there (a lease wanting less than its
          // cost).
          answer.check = Algo::Decide(probe, op->policy, std::max<uint32_t>(op->cost, 1), now_us);
          answer.check.allowed = false;
          Rules::NoteWindow(probe, answer);
        }
        break;
      }
      case StoreOp::Kind::kReturn:
        answer.granted = Rules::GiveBack(state, *op, now_us, changed);
        answer.check.allowed = true;
        answer.check.limit = state.policy.limit;
        break;
    }
    answer.check.source = Source::kDatabase;
    answers.push_back(answer);
  }
  return changed;
}

}  // namespace

std::string RepairRow(const RawRow& raw, const Policy& policy, int64_t now_us, SharedRow& row,
                      Algorithm algorithm) {
  std::string problems;
  if (raw.algorithm && (*raw.algorithm == static_cast<int64_t>(Algorithm::kTokenBucket) ||
                        *raw.algorithm == static_cast<int64_t>(Algorithm::kFixedWindow))) {
    algorithm = static_cast<Algorithm>(*raw.algorithm);
  } else {
    Note(problems, "algorithm missing or unknown");
  }
  if (InRange(raw.capacity) && InRange(raw.window_ms)) {
    row.capacity = static_cast<uint32_t>(*raw.capacity);
    row.window_ms = static_cast<uint32_t>(*raw.window_ms);
  } else {
    Note(problems, "capacity or window missing or out of range");
    row.capacity = policy.limit;
    row.window_ms = policy.window_ms;
  }
  if (!raw.tokens || !std::isfinite(*raw.tokens)) {
    Note(problems, "tokens missing or not a number");
    row.tokens = row.capacity;
  } else if (*raw.tokens < 0) {
    Note(problems, "negative tokens");
    row.tokens = 0;
  } else if (*raw.tokens > row.capacity) {
    Note(problems, "tokens above capacity");
    row.tokens = row.capacity;
  } else {
    row.tokens = *raw.tokens;
  }
  if (!raw.updated_us) {
    Note(problems, "updated_at missing");
    row.updated_us = now_us;
  } else if (*raw.updated_us > now_us + kMaxClockStepUs) {
    // No clock steps back that far: damage, which would stall refill for as long, and the rest
    // of the row is not to be trusted either. A full bucket of the policy, as for the others.
    Note(problems, "updated_at in the future, beyond any clock step");
    row = SharedRow{static_cast<double>(policy.limit), now_us, policy.limit, policy.window_ms};
  } else if (*raw.updated_us > now_us + static_cast<int64_t>(row.window_ms) * 1000) {
    // Ahead by less than a window is a clock that stepped back (a failover): keeping it only
    // delays refill, the safe side. Further ahead would stall refill longer than an empty
    // bucket takes to fill: the time is now, the tokens are kept.
    Note(problems, "updated_at in the future");
    row.updated_us = now_us;
  } else {
    row.updated_us = *raw.updated_us;
  }
  row.algorithm = algorithm;
  if (algorithm == Algorithm::kFixedWindow && row.tokens != std::floor(row.tokens)) {
    Note(problems, "fractional admissions in a fixed window");
    row.tokens = std::floor(row.tokens);
  }
  return problems;
}

bool ApplyOnRow(SharedRow& row, std::span<const StoreOp* const> ops, int64_t now_us,
                std::vector<StoreAnswer>& answers) {
  const Algorithm wanted = ops.empty() ? row.algorithm : ops.front()->algorithm;
  const SharedRow work = row.algorithm == wanted ? row : Converted(row, wanted, now_us);
  if (wanted == Algorithm::kFixedWindow) {
    FixedWindow::State state = WindowOf(work);
    if (!ApplyOps<WindowRules>(state, ops, now_us, answers)) return false;
    row = work;
    StoreWindow(state, row);
    return true;
  }
  TokenBucket::State state = BucketOf(work);
  if (!ApplyOps<BucketRules>(state, ops, now_us, answers)) return false;
  row = work;
  StoreBucket(state, row);
  return true;
}

}  // namespace ratelimit
