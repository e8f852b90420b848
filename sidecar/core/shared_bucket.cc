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

// A row's state as one algorithm's, and what it owes: tokens that sidecars admitted before
// asking (StoreOp::owed) beyond what the row held. While it owes anything the row holds nothing
// (level or tokens 0) and grants nothing.
template <typename AlgoState>
struct Owing {
  AlgoState algo;
  uint128_t debt = 0;  // A token bucket: tokens times window_us. A fixed window: admissions.
};

// A token bucket row in the memory store's fixed point: tokens * window_us < 2^32 * 2^42 fits
// in 128 bits. Whole tokens convert exactly; only the fraction goes through double precision,
// so that a full row of a huge capacity * window (beyond 2^53 units) reads as exactly full.
// Negative tokens are the debt, in the same units.
uint128_t Units(double tokens, const SharedRow& row) {
  const uint128_t window_us = static_cast<uint128_t>(row.window_ms) * 1000;
  const double whole = std::floor(tokens);
  return static_cast<uint128_t>(whole) * window_us +
         static_cast<uint128_t>(std::nearbyint((tokens - whole) * WindowMicros(row)));
}

double Tokens(uint128_t units, const SharedRow& row) {
  const uint128_t window_us = static_cast<uint128_t>(row.window_ms) * 1000;
  return static_cast<double>(static_cast<uint64_t>(units / window_us)) +
         static_cast<double>(static_cast<uint64_t>(units % window_us)) / WindowMicros(row);
}

Owing<TokenBucket::State> BucketOf(const SharedRow& row) {
  Owing<TokenBucket::State> state;
  state.algo.policy = Policy{row.capacity, row.window_ms};
  const uint128_t window_us = static_cast<uint128_t>(row.window_ms) * 1000;
  if (row.tokens < 0) {
    state.debt = Units(-row.tokens, row);
  } else {
    state.algo.level =
        std::min(static_cast<uint128_t>(row.capacity) * window_us, Units(row.tokens, row));
  }
  state.algo.updated_us = row.updated_us;
  return state;
}

void StoreBucket(const Owing<TokenBucket::State>& state, SharedRow& row) {
  row.capacity = state.algo.policy.limit;
  row.window_ms = state.algo.policy.window_ms;
  row.tokens = state.debt > 0 ? -Tokens(state.debt, row) : Tokens(state.algo.level, row);
  row.updated_us = state.algo.updated_us;
}

// A fixed window row as FixedWindow's state: the window started at updated_us, in the gateway's
// whole milliseconds.
Owing<FixedWindow::State> WindowOf(const SharedRow& row) {
  Owing<FixedWindow::State> state;
  state.algo.window_start_ms = FixedWindow::FloorMillis(row.updated_us);
  state.algo.tokens = static_cast<uint32_t>(
      std::floor(std::clamp(row.tokens, 0.0, static_cast<double>(row.capacity))));
  if (row.tokens < 0) state.debt = static_cast<uint128_t>(std::ceil(-row.tokens));
  state.algo.policy = Policy{row.capacity, row.window_ms};
  state.algo.used_us = row.updated_us;
  return state;
}

void StoreWindow(const Owing<FixedWindow::State>& state, SharedRow& row) {
  row.capacity = state.algo.policy.limit;
  row.window_ms = state.algo.policy.window_ms;
  row.tokens = state.debt > 0 ? -static_cast<double>(static_cast<uint64_t>(state.debt))
                              : static_cast<double>(state.algo.tokens);
  row.updated_us = state.algo.window_start_ms * 1000;
}

// The rules of each algorithm that ApplyOps follows: a decision, a debit of what was admitted
// before asking, a kReturn, and what answers say of the window.
struct BucketRules {
  using State = Owing<TokenBucket::State>;

  static uint128_t WindowUs(const Policy& policy) {
    return static_cast<uint128_t>(policy.window_ms) * 1000;
  }

  // Time repays the debt before it refills the bucket: the bucket refills from the moment the
  // debt was repaid (rounded up: never earlier).
  static void Settle(State& state, int64_t now_us) {
    if (state.debt == 0 || now_us <= state.algo.updated_us) return;
    const uint128_t limit = state.algo.policy.limit;
    const uint128_t gained = static_cast<uint64_t>(now_us - state.algo.updated_us) * limit;
    if (gained >= state.debt) {
      state.algo.updated_us += static_cast<int64_t>((state.debt + limit - 1) / limit);
      state.debt = 0;
    } else {
      state.debt -= gained;
      state.algo.updated_us = now_us;
    }
  }

  // Refills (repaying the debt first) and rescales to `policy`, then takes `cost` tokens if
  // they are there, as TokenBucket::Decide. In debt, nothing is there: the answer waits for the
  // debt and `cost` tokens, and the debt keeps its tokens under a new policy.
  static CheckResult Decide(State& state, const Policy& policy, uint32_t cost, int64_t now_us) {
    Settle(state, now_us);
    if (state.debt == 0) return TokenBucket::Decide(state.algo, policy, cost, now_us);
    if (!(state.algo.policy == policy)) {
      const uint128_t from = WindowUs(state.algo.policy);
      state.debt = (state.debt * WindowUs(policy) + from - 1) / from;
      state.algo.policy = policy;
    }
    CheckResult result;
    result.limit = policy.limit;
    result.allowed = cost == 0;  // A read: nothing taken, nothing there.
    if (cost > 0) {
      result.retry_after_ms =
          TokenBucket::MillisToGain(state.debt + cost * WindowUs(policy), policy);
    }
    result.reset_after_ms =
        TokenBucket::MillisToGain(state.debt + policy.limit * WindowUs(policy), policy);
    return result;
  }

  // Takes `owed` tokens admitted before the row was asked: from the level, and what it lacks
  // into the debt.
  static void Owe(State& state, const Policy& policy, uint32_t owed, int64_t now_us) {
    Decide(state, policy, 0, now_us);  // Refill, repay and rescale: not a change by itself.
    const uint128_t need = owed * WindowUs(policy);
    const uint128_t paid = std::min<uint128_t>(need, state.algo.level);
    state.algo.level = uint128_t{state.algo.level} - paid;
    state.debt += need - paid;
  }

  static uint32_t GiveBack(State& state, const StoreOp& op, int64_t now_us, bool& changed) {
    if (now_us < op.debit_us) return 0;
    Settle(state, now_us);
    if (state.debt == 0) {
      TokenBucket::Decide(state.algo, state.algo.policy, 0, now_us);  // Refill first: not a change.
      const uint128_t before = state.algo.level;
      const uint32_t granted = TokenBucket::Refund(
          state.algo, op.cost, static_cast<uint64_t>(now_us - op.debit_us), now_us);
      // Written whenever the level moved: a refund of less than one whole token counts.
      changed |= uint128_t{state.algo.level} != before;
      return granted;
    }
    // In debt: what comes back (less the refill since the debit, as in Refund) repays it first.
    const uint128_t window_us = WindowUs(state.algo.policy);
    const uint128_t owed = op.cost * window_us;
    const uint128_t refilled = static_cast<uint128_t>(static_cast<uint64_t>(now_us - op.debit_us)) *
                               state.algo.policy.limit;
    if (refilled >= owed) return 0;
    const uint128_t back = owed - refilled;
    const uint128_t repaid = std::min(back, state.debt);
    state.debt -= repaid;
    state.algo.level = std::min(state.algo.policy.limit * window_us, back - repaid);
    changed = true;
    return static_cast<uint32_t>((repaid + uint128_t{state.algo.level}) / window_us);
  }

  static void NoteWindow(const State&, StoreAnswer&) {}
};

struct WindowRules {
  using State = Owing<FixedWindow::State>;

  // As FixedWindow::Decide. A debt lasts only as long as its window: the next one opens full.
  // In debt, the window's admissions left are 0, so FixedWindow denies any cost until its end.
  static CheckResult Decide(State& state, const Policy& policy, uint32_t cost, int64_t now_us) {
    if (state.debt > 0 && FixedWindow::IsOver(state.algo, policy, now_us)) state.debt = 0;
    return FixedWindow::Decide(state.algo, policy, cost, now_us);
  }

  static void Owe(State& state, const Policy& policy, uint32_t owed, int64_t now_us) {
    Decide(state, policy, 0, now_us);  // Opens a new window if this one is over.
    const uint32_t paid = std::min(owed, state.algo.tokens);
    state.algo.tokens -= paid;
    state.debt += owed - paid;
  }

  static uint32_t GiveBack(State& state, const StoreOp& op, int64_t now_us, bool& changed) {
    // Only to the window the lease was debited from, while it holds: its leases were spent
    // only until its end, and another window owes them nothing. What the window owes is
    // repaid first.
    const FixedWindow::State& window = state.algo;
    if (FixedWindow::IsFull(window, now_us) ||
        FixedWindow::FloorMillis(op.debit_us) != window.window_start_ms) {
      return 0;
    }
    const uint128_t spent =
        window.policy.limit - std::min(window.tokens, window.policy.limit) + state.debt;
    const uint32_t back = static_cast<uint32_t>(std::min<uint128_t>(op.cost, spent));
    const uint32_t repaid = static_cast<uint32_t>(std::min<uint128_t>(back, state.debt));
    state.debt -= repaid;
    state.algo.tokens += back - repaid;
    changed |= back > 0;
    return back;
  }

  static void NoteWindow(const State& state, StoreAnswer& answer) {
    answer.window_start_us = state.algo.window_start_ms * 1000;
    answer.window_end_us = FixedWindow::WindowEndUs(state.algo);
  }
};

// `row` read with the other algorithm's arithmetic at `now_us` (see ApplyOnRow).
SharedRow Converted(const SharedRow& row, Algorithm to, int64_t now_us) {
  SharedRow out = row;
  out.algorithm = to;
  out.updated_us = now_us;
  if (to == Algorithm::kFixedWindow) {
    BucketRules::State bucket = BucketOf(row);
    const Policy policy = bucket.algo.policy;  // A copy: Decide writes the state it reads it from.
    const uint32_t remaining = BucketRules::Decide(bucket, policy, 0, now_us).remaining;
    // What it still owes stays owed, in whole admissions, by the window opening now.
    out.tokens = bucket.debt > 0 ? -std::ceil(Tokens(bucket.debt, row)) : remaining;
  } else if (FixedWindow::IsFull(WindowOf(row).algo, now_us)) {
    out.tokens = row.capacity;  // Else the admissions left, or the debt, as they are.
  }
  return out;
}

// Applies `ops` to `state` with Rules' arithmetic (see ApplyOnRow); returns whether it changed.
template <typename Rules>
bool ApplyOps(typename Rules::State& state, std::span<const StoreOp* const> ops, int64_t now_us,
              std::vector<StoreAnswer>& answers) {
  bool changed = false;
  for (const StoreOp* op : ops) {
    StoreAnswer answer;
    answer.now_us = now_us;
    switch (op->kind) {
      case StoreOp::Kind::kCheck: {
        // Decided on a copy, kept only when tokens were taken: a read (cost 0) answers under the
        // policy it names without rescaling the row, and a denial leaves the row as it was, so
        // a batch leaves the row as the same checks one transaction each would.
        typename Rules::State decided = state;
        answer.check = Rules::Decide(decided, op->policy, op->cost, now_us);
        Rules::NoteWindow(decided, answer);
        if (answer.check.allowed && op->cost > 0) {
          state = decided;
          changed = true;
        }
        break;
      }
      case StoreOp::Kind::kLease: {
        // What was admitted before asking is taken first, there or not.
        if (op->owed > 0) {
          Rules::Owe(state, op->policy, op->owed, now_us);
          changed = true;
        }
        // Probed on a copy, so that a lease granting nothing rescales nothing (as a denial).
        typename Rules::State probe = state;
        const CheckResult there = Rules::Decide(probe, op->policy, 0, now_us);
        // What is wanted, but no more than half of what is there unless `cost` needs more:
        // several sidecars asking for a scarce bucket each leave some for the next.
        const uint32_t take =
            std::min({op->want, there.remaining, std::max(op->cost, there.remaining / 2)});
        if (take >= op->cost && take > 0) {
          answer.check = Rules::Decide(state, op->policy, take, now_us);
          answer.granted = take;
          Rules::NoteWindow(state, answer);
          changed = true;
        } else {
          // Nothing granted, and nothing taken: the time until `cost` tokens is read from the
          // copy, since Decide would take them if they were there (a lease wanting less than its
          // cost).
          answer.check = Rules::Decide(probe, op->policy, std::max<uint32_t>(op->cost, 1), now_us);
          answer.check.allowed = false;
          Rules::NoteWindow(probe, answer);
        }
        answer.in_debt = state.debt > 0;
        break;
      }
      case StoreOp::Kind::kReturn:
        answer.granted = Rules::GiveBack(state, *op, now_us, changed);
        answer.check.allowed = true;
        answer.check.limit = state.algo.policy.limit;
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
  } else if (*raw.tokens < -MaxDebt(row.capacity)) {
    Note(problems, "a debt beyond any sidecars' unconfirmed admissions");
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

double MaxDebt(uint32_t capacity) {
  return static_cast<double>(std::max<uint32_t>(capacity, kMaxDebtTokens));
}

bool ApplyOnRow(SharedRow& row, std::span<const StoreOp* const> ops, int64_t now_us,
                std::vector<StoreAnswer>& answers) {
  const Algorithm wanted = ops.empty() ? row.algorithm : ops.front()->algorithm;
  const SharedRow work = row.algorithm == wanted ? row : Converted(row, wanted, now_us);
  if (wanted == Algorithm::kFixedWindow) {
    WindowRules::State state = WindowOf(work);
    if (!ApplyOps<WindowRules>(state, ops, now_us, answers)) return false;
    row = work;
    StoreWindow(state, row);
    return true;
  }
  BucketRules::State state = BucketOf(work);
  if (!ApplyOps<BucketRules>(state, ops, now_us, answers)) return false;
  row = work;
  StoreBucket(state, row);
  return true;
}

}  // namespace ratelimit
