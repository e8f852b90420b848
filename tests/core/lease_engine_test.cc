// Tests of the LeaseEngine: leases, prefetch, sizing, expiry, the denial cache, returns, bounds.
#include "sidecar/core/lease_engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "sidecar/core/shared_bucket.h"
#include "sidecar/core/token_bucket.h"
#include "tests/testing/bucket_steps.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_store.h"
#include "tests/testing/lease_simulation.h"
#include "tests/testing/recorder.h"

namespace ratelimit {
namespace {

using Kind = StoreOp::Kind;

constexpr uint32_t kTtlMs = 1000;
constexpr int64_t kTtlUs = int64_t{kTtlMs} * 1000;
constexpr int64_t kRefreshUs = kTtlUs / 4;  // R.
constexpr int64_t kMs = 1000;
// The database's clock runs kDbOffsetUs ahead of the sidecar's: debit times are database times.
constexpr int64_t kDbOffsetUs = 1'700'000'000'000'000;
// 1000 tokens per second: R = 250 ms refills 250 tokens, a lease is at most 125 (limit / 8).
constexpr Policy kPolicy{1000, 1000};
const std::string kKey = "k";

// Every operation of every Take `store` has started, in order.
std::vector<StoreOp> AllOps(const FakeStore& store) {
  std::vector<StoreOp> out;
  for (size_t i = 0; i < store.take_count(); ++i) {
    for (const StoreOp& op : store.batch(i)) out.push_back(op);
  }
  return out;
}

std::vector<StoreOp> OpsOfKind(const FakeStore& store, Kind kind) {
  std::vector<StoreOp> out;
  for (const StoreOp& op : AllOps(store)) {
    if (op.kind == kind) out.push_back(op);
  }
  return out;
}

CheckResult Unavailable(uint32_t limit) {
  return Refusal(CheckStatus::kStoreUnavailable, limit, Source::kDatabase);
}

CheckResult ShuttingDown(uint32_t limit) {
  return Refusal(CheckStatus::kShuttingDown, limit, Source::kLease);
}

class LeaseEngineTest : public testing::Test {
 protected:
  void Check(uint64_t tag, uint32_t cost = 1, const Policy& policy = kPolicy,
             const std::string& key = kKey) {
    engine_.Check(CheckQuery{key, cost, policy}, tag, recorder_);
  }

  // Checks, expecting the answer before Check returns (from memory, or a refusal).
  CheckResult CheckAtOnce(uint32_t cost = 1, const Policy& policy = kPolicy,
                          const std::string& key = kKey) {
    return AnswerAtOnce(engine_, CheckQuery{key, cost, policy});
  }

  int64_t DbNow() { return clock_.NowMicros() + kDbOffsetUs; }

  // Answers Take `index` as the database would now.
  void Decide(size_t index) { store_.Decide(index, DbNow()); }

  // Answers every pending Take as the database would now, and those that answering starts.
  void DecideAll() {
    for (size_t index = 0; index < store_.take_count(); ++index) {
      if (!store_.answered(index)) Decide(index);
    }
  }

  // The one operation of Take `index`.
  const StoreOp& OnlyOp(size_t index) {
    EXPECT_EQ(store_.batch(index).size(), 1u) << "Take " << index;
    return store_.batch(index).front();
  }

  // Brings kKey, under `policy`, to holding a lease with tokens left over, and returns them. A
  // first check's fetch asks for its cost only, as there is no demand to size it by yet; a
  // second check 10 ms later waits for a fetch sized by that demand. The simulated database
  // answers each fetch at once. debit_us_ is the second lease's debit time.
  uint32_t WarmUp(const Policy& policy = kPolicy) {
    const size_t first = store_.take_count();
    Check(900, 1, policy);
    Decide(first);
    clock_.AdvanceMillis(10);
    Check(901, 1, policy);
    EXPECT_EQ(store_.take_count(), first + 2);
    const uint32_t leased = OnlyOp(first + 1).want;
    debit_us_ = DbNow();
    Decide(first + 1);
    EXPECT_EQ(store_.take_count(), first + 2) << "no prefetch expected right after warm-up";
    recorder_.answers.clear();
    return leased - 1;
  }

  FakeClock clock_;
  FakeStore store_;
  LeaseEngine engine_{store_, clock_, HashKey{1, 2}, LeaseOptions{kTtlMs, false}};
  Recorder recorder_;
  int64_t debit_us_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Leases

TEST_F(LeaseEngineTest, AFirstCheckWaitsForALeaseOfTheKeysPolicy) {
  const Policy kFive{5, 250};
  Check(1, 2, kFive);
  EXPECT_TRUE(recorder_.answers.empty()) << "answered before the store granted anything";
  ASSERT_EQ(store_.take_count(), 1u);
  const StoreOp& fetch = OnlyOp(0);
  EXPECT_EQ(fetch.kind, Kind::kLease);
  EXPECT_EQ(fetch.key, kKey);
  EXPECT_EQ(fetch.policy, kFive);
  EXPECT_EQ(fetch.cost, 2u) << "the least worth having is what the waiting check needs";
  EXPECT_EQ(fetch.want, 2u) << "no demand is known yet: only what the check needs";
  EXPECT_EQ(engine_.metrics().waited.value(), 1u);
  EXPECT_EQ(engine_.metrics().fetches.value(), 1u);

  Decide(0);
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{1});
  const CheckResult& r = recorder_.answers[0].result;
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.status, CheckStatus::kOk);
  EXPECT_EQ(r.source, Source::kLease);
  EXPECT_EQ(r.limit, 5u);
  EXPECT_EQ(r.remaining, 3u) << "nothing held, and the row kept 3";
  EXPECT_EQ(engine_.metrics().tokens_leased.value(), 2u);
  EXPECT_EQ(store_.rows().at(kKey).tokens, 3) << "the lease was debited from the row";
}

TEST_F(LeaseEngineTest, LaterChecksAreAnsweredFromTheLeaseWithoutATakeUntilItIsUsedUp) {
  const uint32_t held = WarmUp();
  ASSERT_EQ(held, 13u) << "demand of 1 per 10 ms, halved (no history): 13 for R plus 1 waiting";
  const size_t takes = store_.take_count();
  const uint64_t allowed_before = engine_.metrics().lease_allowed.value();

  // Every 10 ms, as the demand was. Halfway through the lease a prefetch starts; leave it
  // unanswered, to see that the lease alone answers exactly its own tokens.
  for (uint32_t i = 0; i < held; ++i) {
    SCOPED_TRACE("check " + std::to_string(i));
    clock_.AdvanceMillis(10);
    const CheckResult r = CheckAtOnce();
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.source, Source::kLease);
  }
  EXPECT_EQ(engine_.metrics().lease_allowed.value(), allowed_before + held);
  ASSERT_EQ(store_.take_count(), takes + 1) << "only the prefetch may reach the store";
  EXPECT_EQ(OnlyOp(takes).kind, Kind::kLease);

  // Used up: the next check waits for the fetch in flight, which starts no other Take.
  clock_.AdvanceMillis(10);
  Check(50);
  EXPECT_TRUE(recorder_.answers.empty()) << "answered with no token held";
  EXPECT_EQ(store_.take_count(), takes + 1);
  Decide(takes);
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{50});
  EXPECT_TRUE(recorder_.answers[0].result.allowed);
  EXPECT_EQ(recorder_.answers[0].result.source, Source::kLease);
}

// The threshold: a fetch starts when fewer than d * R / 2 tokens are held. After warm-up the
// estimated demand is 1 per 20 ms (one sample of 1 per 10 ms, blended half and half with no
// history), so d * R / 2 = 6.25: the check that leaves 6 of the 13 held sends the next fetch.
TEST_F(LeaseEngineTest, APrefetchStartsWhenFewerThanHalfOfRsDemandIsHeld) {
  ASSERT_EQ(WarmUp(), 13u);
  const size_t takes = store_.take_count();
  for (int i = 0; i < 6; ++i) {
    clock_.AdvanceMillis(10);
    ASSERT_TRUE(CheckAtOnce().allowed);
  }
  EXPECT_EQ(store_.take_count(), takes) << "prefetched with 7 held, above d * R / 2";
  clock_.AdvanceMillis(10);
  ASSERT_TRUE(CheckAtOnce().allowed);
  ASSERT_EQ(store_.take_count(), takes + 1) << "no prefetch with 6 held, below d * R / 2";
  const StoreOp& prefetch = OnlyOp(takes);
  EXPECT_EQ(prefetch.kind, Kind::kLease);
  // The estimate moves half way to the new sample of 1 per 10 ms: 18.75 tokens in R.
  EXPECT_EQ(prefetch.want, 19u);
  EXPECT_EQ(prefetch.cost, 19u) << "no waiting check, and R refills 250";
  EXPECT_EQ(engine_.metrics().waited.value(), 2u) << "only the two warm-up checks waited";
}

// ---------------------------------------------------------------------------------------------
// Simulated sidecars, and steady traffic

struct SteadyCase {
  const char* name;
  Policy policy;
  int64_t interval_us;  // Between checks.
  int64_t latency_us;   // The longest a Take waits for its answer.
};

// Once the demand is measured (the first fetch asks for one token, the second is sized by half
// a sample), a check never waits: the next lease is fetched while the last still has tokens.
TEST(LeaseEngineSteadyTest, ChecksAtASteadyRateNeverWaitOnceTheDemandIsKnown) {
  const SteadyCase kCases[] = {
      {"200 per second of 1000, store answers in 1 ms", {1000, 1000}, 5 * kMs, 1 * kMs},
      {"200 per second of 1000, store answers in up to 40 ms", {1000, 1000}, 5 * kMs, 40 * kMs},
      {"100 per second of 8000 per minute, up to 10 ms", {8000, 60'000}, 10 * kMs, 10 * kMs},
      {"40 per second of 100, up to 20 ms", {100, 1000}, 25 * kMs, 20 * kMs},
      {"one every 300 ms, longer than R, up to 20 ms", {100, 1000}, 300 * kMs, 20 * kMs},
  };
  constexpr int64_t kWarmUs = 2 * kRefreshUs;
  constexpr int64_t kRunUs = 20 * kTtlUs;
  for (const SteadyCase& c : kCases) {
    SCOPED_TRACE(c.name);
    FakeClock clock;
    std::map<std::string, SharedRow> table;
    SimulatedSidecar sidecar(clock, table, 1, 11, c.latency_us, LeaseOptions{kTtlMs, true});
    const int64_t start = clock.NowMicros();
    int64_t next_check = start;
    uint64_t waited_when_warm = ~uint64_t{0};
    uint64_t checks_when_warm = 0;
    uint64_t at_once_when_warm = 0;
    for (int64_t t = start; t < start + kRunUs; t += 100) {
      clock.SetMicros(t);
      if ((t - start) % (20 * kMs) == 0) sidecar.engine().Tick();
      sidecar.Step();
      if (t == start + kWarmUs) {
        waited_when_warm = sidecar.engine().metrics().waited.value();
        checks_when_warm = sidecar.checks();
        at_once_when_warm = sidecar.answered_at_once();
      }
      if (t >= next_check) {
        sidecar.Check("steady", 1, c.policy);
        next_check += c.interval_us;
      }
    }
    sidecar.Drain();
    ASSERT_EQ(sidecar.answered(), sidecar.checks());
    EXPECT_EQ(sidecar.engine().metrics().waited.value(), waited_when_warm) << "a warm check waited";
    EXPECT_EQ(sidecar.answered_at_once() - at_once_when_warm, sidecar.checks() - checks_when_warm);
    EXPECT_EQ(sidecar.admitted("steady").size(), sidecar.checks()) << "demand is below supply";
    // About a fetch per R / 2, however many checks that is.
    const uint64_t fetches = sidecar.engine().metrics().fetches.value();
    EXPECT_LE(fetches, std::min<uint64_t>(sidecar.checks(), 2 * kRunUs / kRefreshUs + 4))
        << fetches << " fetches for " << sidecar.checks() << " checks";
  }
}

// ---------------------------------------------------------------------------------------------
// Sizing

struct SizeCase {
  const char* name;
  Policy policy;
  int64_t interval_us;  // Between checks, so d * R = R / interval_us * cost.
  uint32_t cost;
  uint32_t want;       // Of the fetches once the demand estimate has settled.
  uint32_t min_grant;  // Their cost.
};

// With steady demand of d per microsecond answered by a store with plenty of tokens:
//   want      = min(max(ceil(d * R) + waiting, need), cap)   cap = max(need, ceil(limit / 8))
//   min_grant = max(need, min(want, ceil(rate * R)))
// With R = 250 ms.
TEST(LeaseEngineSizeTest, AFetchAsksForRsDemandCappedAtAnEighthAndAtLeastRsRefill) {
  const SizeCase kCases[] = {
      // d * R = 20, below the cap of 125; R refills 250.
      {"20 per R of 1000 per second", {1000, 1000}, 12'500, 1, 20, 20},
      // d * R = 100, below the cap of 1000; R refills only 33.3.
      {"100 per R of 8000 per minute", {8000, 60'000}, 2'500, 1, 100, 34},
      // d * R = 50, above the cap of 13 (100 / 8); R refills 25.
      {"50 per R of 100 per second", {100, 1000}, 5'000, 1, 13, 13},
      // d * R = 4, above the cap of 2 (10 / 8); R refills 0.04.
      {"4 per R of 10 per minute", {10, 60'000}, 62'500, 1, 2, 1},
      // d * R = 1000, above the cap of 125.
      {"1000 per R of 1000 per second", {1000, 1000}, 250, 1, 125, 125},
  };
  for (const SizeCase& c : kCases) {
    SCOPED_TRACE(c.name);
    FakeClock clock;
    FakeStore store;
    LeaseEngine engine(store, clock, HashKey{3, 4}, LeaseOptions{kTtlMs, false});
    Recorder done;
    size_t answered = 0;
    for (uint64_t tag = 0; clock.NowMicros() < 5 * kTtlUs; ++tag) {
      engine.Check(CheckQuery{kKey, c.cost, c.policy}, tag, done);
      for (; answered < store.take_count(); ++answered) {
        store.rows().clear();  // Plenty of tokens: every fetch finds a full row.
        store.Decide(answered, clock.NowMicros() + kDbOffsetUs);
      }
      engine.Tick();
      clock.AdvanceMicros(c.interval_us);
    }
    const std::vector<StoreOp> fetches = OpsOfKind(store, Kind::kLease);
    ASSERT_GE(fetches.size(), 10u);
    EXPECT_EQ(fetches.front().want, c.cost) << "a first fetch asks only for what it needs";
    for (size_t i = fetches.size() - 5; i < fetches.size(); ++i) {
      SCOPED_TRACE("fetch " + std::to_string(i));
      EXPECT_EQ(fetches[i].policy, c.policy);
      EXPECT_EQ(fetches[i].want, c.want);
      EXPECT_EQ(fetches[i].cost, c.min_grant);
    }
  }
}

// Checks waiting behind a fetch that covers only the first are decided in the store, each for
// what it needs and all in the next Take, however much they need together (before, they started
// a second lease, capped at limit / 8 and cut to half the row, and a third...).
TEST(LeaseEngineSizeTest, ChecksWaitingBeyondTheLeaseAreDecidedTogetherInTheNextTake) {
  struct Case {
    const char* name;
    Policy policy;
    std::vector<uint32_t> waiting;  // Costs of the checks that wait behind the first.
  };
  const Case kCases[] = {
      {"three small checks, plenty of refill", {1000, 1000}, {2, 3, 4}},
      {"three small checks, little refill", {1000, 60'000}, {2, 3, 4}},
      {"more than the cap of 125", {1000, 1000}, {100, 50, 50}},
      {"one check above the cap of 2", {10, 1000}, {7, 1}},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    FakeClock clock;
    FakeStore store;
    LeaseEngine engine(store, clock, HashKey{3, 4}, LeaseOptions{kTtlMs, false});
    Recorder done;
    engine.Check(CheckQuery{kKey, 1, c.policy}, 0, done);
    for (size_t i = 0; i < c.waiting.size(); ++i) {
      engine.Check(CheckQuery{kKey, c.waiting[i], c.policy}, i + 1, done);
    }
    ASSERT_EQ(store.take_count(), 1u) << "checks waiting behind a fetch start no other";
    store.Decide(0, kDbOffsetUs);  // Grants the first check's 1 token.
    ASSERT_EQ(store.take_count(), 2u) << "the waiting checks go to the store together";
    const std::vector<StoreOp>& batch = store.batch(1);
    ASSERT_GE(batch.size(), c.waiting.size());
    for (size_t i = 0; i < c.waiting.size(); ++i) {
      EXPECT_EQ(batch[i].kind, Kind::kCheck);
      EXPECT_EQ(batch[i].cost, c.waiting[i]);
    }
    store.Decide(1, kDbOffsetUs);
    ASSERT_EQ(done.answers.size(), c.waiting.size() + 1);
    for (size_t i = 0; i < done.answers.size(); ++i) {
      EXPECT_EQ(done.answers[i].tag, i);
      EXPECT_TRUE(done.answers[i].result.allowed) << "tag " << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Waiting checks

// Checks that the lease landing does not cover have waited through one transaction of their
// key: each is then decided in the store (a kCheck, as in strict mode), all in the next Take,
// rather than through more leases, which the row cuts to half of what it holds (issue 22: a
// chain of fetches made a burst wait several transaction times). Before, check 1 started a
// second lease and check 3 a third.
TEST_F(LeaseEngineTest, WaitingChecksAreServedInOrderAndThoseTheLeaseMissesAreDecidedInOneTake) {
  // 1000 per minute: R refills 4.2 tokens. The row has 6.5 tokens.
  const Policy kMinute{1000, 60'000};
  store_.rows()[kKey] = SharedRow{6.5, DbNow(), 1000, 60'000};
  Check(0, 1, kMinute);
  Check(1, 2, kMinute);
  Check(2, 3, kMinute);
  Check(3, 4, kMinute);
  ASSERT_EQ(store_.take_count(), 1u);
  EXPECT_EQ(engine_.metrics().waited.value(), 4u);

  Decide(0);  // Grants 1: check 0 only.
  EXPECT_EQ(recorder_.tags(), std::vector<uint64_t>{0});
  ASSERT_EQ(store_.take_count(), 2u) << "checks 1 to 3 go to the store together";
  const std::vector<StoreOp>& batch = store_.batch(1);
  ASSERT_GE(batch.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(batch[i].kind, Kind::kCheck) << "op " << i;
    EXPECT_EQ(batch[i].cost, i + 2) << "op " << i;
    EXPECT_EQ(batch[i].policy, kMinute) << "op " << i;
  }
  for (size_t i = 3; i < batch.size(); ++i) {
    EXPECT_EQ(batch[i].kind, Kind::kLease) << "only a prefetch may follow them";
  }
  EXPECT_EQ(engine_.metrics().decided_in_store.value(), 3u);

  Decide(1);  // The row has 5.5: checks 1 and 2 take 5; 0.5 is left for check 3, which needs 4.
  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{0, 1, 2, 3}));
  EXPECT_TRUE(recorder_.answers[0].result.allowed);
  EXPECT_EQ(recorder_.answers[0].result.source, Source::kLease);
  EXPECT_EQ(recorder_.answers[0].result.remaining, 5u) << "held 0, and the row kept 5";
  for (uint64_t tag = 1; tag < 3; ++tag) {
    EXPECT_TRUE(recorder_.answers[tag].result.allowed) << "tag " << tag;
    EXPECT_EQ(recorder_.answers[tag].result.source, Source::kLease) << "tag " << tag;
  }
  const CheckResult& denied = recorder_.answers[3].result;
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.status, CheckStatus::kOk);
  EXPECT_EQ(denied.retry_after_ms, 210u) << "3.5 tokens at 1 per 60 ms";
  EXPECT_EQ(denied.source, Source::kLease) << "lease mode's answer, decided in the store";
  EXPECT_EQ(store_.take_count(), 2u) << "no further transaction for these checks";
  EXPECT_EQ(engine_.metrics().tokens_leased.value(), 1u);
}

// A burst of 100 on one key of 50 per second, against a slow database (each transaction takes
// 150 ms): the first fetch and one transaction after it answer the whole burst, so no check
// waits longer than two transactions (before: a chain of fetches of at most limit / 8 each, 9
// transactions). The admissions stay within capacity + rate * (T + ttl), T the time the burst's
// transactions took: the checks beyond the lease spend their tokens as they take them.
TEST_F(LeaseEngineTest, ABurstOnASlowStoreIsAnsweredByTheFetchInFlightAndOneTransactionMore) {
  constexpr Policy kFifty{50, 1000};
  constexpr int64_t kTransactionUs = 150 * kMs;
  constexpr int kBurst = 100;
  const int64_t start = clock_.NowMicros();
  for (int i = 0; i < kBurst; ++i) Check(static_cast<uint64_t>(i), 1, kFifty);
  ASSERT_EQ(store_.take_count(), 1u);
  // The database answers one transaction at a time, each kTransactionUs after it started.
  for (size_t index = 0; index < store_.take_count(); ++index) {
    clock_.AdvanceMicros(kTransactionUs);
    Decide(index);
  }
  const int64_t took = clock_.NowMicros() - start;
  ASSERT_EQ(recorder_.answers.size(), size_t{kBurst});
  EXPECT_EQ(store_.take_count(), 2u) << "the fetch, and one transaction for the rest";
  EXPECT_LE(took, 2 * kTransactionUs);
  uint32_t admitted = 0;
  for (const Recorder::Answer& a : recorder_.answers) {
    EXPECT_EQ(a.result.status, CheckStatus::kOk);
    admitted += a.result.allowed ? 1 : 0;
  }
  // capacity + rate * (T + ttl) = 50 + 50 * (0.3 + 1) = 115. The lease took 1 of the 50; the
  // row was full again (capped at 50) when the rest were decided: 51, as strict mode would.
  EXPECT_LE(admitted, 50 + 50 * (took + kTtlUs) / 1'000'000);
  EXPECT_EQ(admitted, 51u) << "every token the row had was admitted";
  EXPECT_EQ(store_.rows().at(kKey).tokens, 0) << "and none was left behind in a lease";
}

TEST_F(LeaseEngineTest, AFailedFetchAnswersEveryWaitingCheckWithStoreUnavailable) {
  for (uint64_t tag = 0; tag < 4; ++tag) Check(tag, 1 + static_cast<uint32_t>(tag));
  ASSERT_EQ(store_.take_count(), 1u);
  store_.Fail(0, Status::Unavailable("connection lost"));
  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{0, 1, 2, 3}));
  for (const Recorder::Answer& a : recorder_.answers) {
    EXPECT_EQ(a.result, Unavailable(kPolicy.limit)) << "tag " << a.tag;
  }

  // Nothing is stuck: the next check fetches again.
  Check(4);
  ASSERT_EQ(store_.take_count(), 2u);
  Decide(1);
  ASSERT_EQ(recorder_.answers.size(), 5u);
  EXPECT_TRUE(recorder_.answers[4].result.allowed);
}

TEST_F(LeaseEngineTest, AStoreThatIsNotReadyRefusesAtOnceWithoutATake) {
  store_.set_ready(false);
  EXPECT_FALSE(engine_.ready());
  EXPECT_EQ(CheckAtOnce(0, Policy{9, 1000}), Unavailable(9)) << "a read";
  EXPECT_EQ(CheckAtOnce(1, Policy{9, 1000}), Unavailable(9));
  EXPECT_EQ(CheckAtOnce(2, Policy{9, 1000}, "other"), Unavailable(9));
  EXPECT_EQ(store_.take_count(), 0u);

  store_.set_ready(true);
  Check(1);
  EXPECT_EQ(store_.take_count(), 1u) << "the engine recovers when the store does";
}

// A fetch that was refused or failed taught the engine nothing about the row: a read of the key
// must not be answered from memory as if it had ("allowed, 0 remaining, full in 0 ms").
TEST_F(LeaseEngineTest, AReadAfterARefusedOrFailedFetchIsNotAnsweredFromNothing) {
  store_.set_ready(false);
  ASSERT_EQ(CheckAtOnce(1, Policy{9, 1000}), Unavailable(9));
  EXPECT_EQ(CheckAtOnce(0, Policy{9, 1000}), Unavailable(9)) << "a read, the store not ready";

  store_.set_ready(true);
  Check(1, 1, kPolicy, "other");
  store_.Fail(0, Status::Unavailable("connection lost"));
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{1});
  Check(2, 0, kPolicy, "other");
  EXPECT_EQ(recorder_.tags(), std::vector<uint64_t>{1}) << "a read answered from nothing";
  ASSERT_EQ(store_.take_count(), 2u) << "a read the store did not see";
  EXPECT_EQ(OnlyOp(1).kind, Kind::kCheck);
  EXPECT_EQ(OnlyOp(1).cost, 0u);
}

TEST_F(LeaseEngineTest, WaitingChecksAreAnsweredWhenTheStoreGoesAwayBeforeTheFetchStarts) {
  store_.set_slots(0);  // The fetch waits in the batcher's queue.
  Check(0);
  Check(1);
  Check(2, 1, kPolicy, "other");
  EXPECT_EQ(store_.take_count(), 0u);
  store_.set_ready(false);
  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{0, 1, 2})) << "no check is left hanging";
  for (const Recorder::Answer& a : recorder_.answers) EXPECT_EQ(a.result, Unavailable(1000));
}

TEST_F(LeaseEngineTest, AFullQueueRefusesAtOnceAsOverloaded) {
  store_.set_slots(0);
  for (uint64_t tag = 0; tag < StoreBatcher::kMaxQueued; ++tag) {
    Check(tag, 1, kPolicy, "key-" + std::to_string(tag));
  }
  ASSERT_TRUE(recorder_.answers.empty());
  EXPECT_EQ(CheckAtOnce(1, Policy{42, 1000}, "one-more"),
            Refusal(CheckStatus::kOverloaded, 42, Source::kDatabase));
  EXPECT_EQ(CheckAtOnce(0, Policy{42, 1000}, "a-read"),
            Refusal(CheckStatus::kOverloaded, 42, Source::kDatabase));
}

// ---------------------------------------------------------------------------------------------
// Expiry

TEST_F(LeaseEngineTest, ALeaseIsNotSpentOnceTtlHasPassedSinceItsFetchWasSent) {
  Check(0);
  Decide(0);
  clock_.AdvanceMillis(10);
  const int64_t sent = clock_.NowMicros();
  Check(1);
  ASSERT_EQ(store_.take_count(), 2u);
  clock_.AdvanceMillis(300);  // The store answers late: the lease still ends at sent + ttl.
  const int64_t debit = DbNow();
  Decide(1);
  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{0, 1}));
  const uint32_t held = OnlyOp(1).want - 1;
  ASSERT_EQ(held, 13u);

  clock_.SetMicros(sent + kTtlUs - 1);
  EXPECT_TRUE(CheckAtOnce().allowed) << "the lease is good until sent + ttl";
  EXPECT_EQ(store_.take_count(), 2u);

  clock_.AdvanceMicros(1);
  Check(2);
  EXPECT_EQ(recorder_.answers.size(), 2u) << "answered from an expired lease";
  const std::vector<StoreOp> returns = OpsOfKind(store_, Kind::kReturn);
  ASSERT_EQ(returns.size(), 1u);
  EXPECT_EQ(returns[0].key, kKey);
  EXPECT_EQ(returns[0].cost, held - 1) << "the tokens left unspent";
  EXPECT_EQ(returns[0].debit_us, debit);
  EXPECT_EQ(returns[0].policy, kPolicy);
  DecideAll();
  EXPECT_EQ(OpsOfKind(store_, Kind::kLease).size(), 3u) << "the check needs a new lease";
  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{0, 1, 2}));
  EXPECT_TRUE(recorder_.answers[2].result.allowed);
}

// 1 token per second, so that a return a second later still gives most of its tokens back.
constexpr Policy kSlow{100, 100'000};

TEST_F(LeaseEngineTest, TickReturnsAnExpiredLeasesUnusedTokensDatedAtItsDebit) {
  const int64_t sent = clock_.NowMicros() + 10 * kMs;
  const uint32_t held = WarmUp(kSlow);
  ASSERT_EQ(held, 12u) << "13 wanted, the cap (100 / 8 rounded up)";
  const int64_t debit = debit_us_;
  // The row: 100 - 1 at the first fetch, + 0.01 refilled in 10 ms, - 13 at the second.
  EXPECT_DOUBLE_EQ(store_.rows().at(kKey).tokens, 86.01);

  clock_.SetMicros(sent + kTtlUs - 1);
  engine_.Tick();
  EXPECT_EQ(store_.take_count(), 2u) << "returned before the lease expired";
  EXPECT_EQ(engine_.key_count(), 1u);

  clock_.AdvanceMicros(1);
  engine_.Tick();
  ASSERT_EQ(store_.take_count(), 3u);
  const StoreOp& give_back = OnlyOp(2);
  EXPECT_EQ(give_back.kind, Kind::kReturn);
  EXPECT_EQ(give_back.key, kKey);
  EXPECT_EQ(give_back.cost, held);
  EXPECT_EQ(give_back.debit_us, debit);
  EXPECT_EQ(give_back.policy, kSlow);
  EXPECT_EQ(engine_.metrics().returns.value(), 1u);
  EXPECT_EQ(engine_.metrics().tokens_expired.value(), held)
      << "every unspent token of the expired lease";

  // Answered 5 ms later by the database, 1.005 s after the debit: the row refilled 1.005 tokens
  // since, which the debit may have made room for, so 12 - 1.005 go back.
  clock_.AdvanceMillis(5);
  Decide(2);
  const SharedRow& row = store_.rows().at(kKey);
  EXPECT_DOUBLE_EQ(row.tokens, 86.01 + 1.005 + 12 - 1.005);
  EXPECT_EQ(row.updated_us, DbNow());
  EXPECT_EQ(engine_.metrics().tokens_returned.value(), 10u) << "whole tokens put back: 10.995";

  // Nothing is held any more: the next check needs a new lease.
  Check(3, 1, kSlow);
  EXPECT_TRUE(recorder_.answers.empty());
  EXPECT_EQ(OnlyOp(3).kind, Kind::kLease);
}

TEST_F(LeaseEngineTest, AReturnNeverFillsTheRowAboveCapacity) {
  const uint32_t held = WarmUp(kSlow);
  clock_.AdvanceMicros(kTtlUs);
  engine_.Tick();
  ASSERT_EQ(store_.take_count(), 3u);
  ASSERT_EQ(OnlyOp(2).kind, Kind::kReturn);
  ASSERT_EQ(OnlyOp(2).cost, held);
  store_.rows()[kKey].tokens = 95;  // Other sidecars returned their leases meanwhile.
  store_.rows()[kKey].updated_us = DbNow();
  Decide(2);
  EXPECT_EQ(store_.rows().at(kKey).tokens, 100);
  EXPECT_EQ(engine_.metrics().tokens_returned.value(), 5u);
}

// Serving waiting checks when a fetch lands must not spend tokens of an older lease that has
// expired since the last check or Tick looked.
TEST_F(LeaseEngineTest, AnExpiredLeaseIsNotSpentOnChecksServedWhenAFetchLands) {
  const int64_t sent = clock_.NowMicros() + 10 * kMs;
  ASSERT_EQ(WarmUp(), 13u);
  const int64_t first_debit = debit_us_;
  clock_.SetMicros(sent + 900 * kMs);
  Check(1, 20);  // More than the 13 held: waits for a fetch.
  ASSERT_EQ(store_.take_count(), 3u);
  ASSERT_EQ(OnlyOp(2).kind, Kind::kLease);

  clock_.SetMicros(sent + kTtlUs + 100 * kMs);  // The first lease expired 100 ms ago.
  Decide(2);
  const std::vector<StoreOp> returns = OpsOfKind(store_, Kind::kReturn);
  ASSERT_EQ(returns.size(), 1u) << "the expired lease's 13 tokens were spent instead of returned";
  EXPECT_EQ(returns[0].cost, 13u);
  EXPECT_EQ(returns[0].debit_us, first_debit);
}

// A grant that lands more than ttl after its fetch was sent is already expired.
TEST_F(LeaseEngineTest, AGrantLandingAfterTtlIsReturnedNotSpent) {
  Check(0);
  clock_.AdvanceMicros(kTtlUs + 1);
  Decide(0);
  for (const Recorder::Answer& a : recorder_.answers) {
    EXPECT_FALSE(a.result.allowed) << "allowed from a lease that expired before it landed";
  }
  const std::vector<StoreOp> returns = OpsOfKind(store_, Kind::kReturn);
  ASSERT_EQ(returns.size(), 1u) << "the late grant was not returned";
  EXPECT_EQ(returns[0].cost, 1u);
}

// ---------------------------------------------------------------------------------------------
// Denial cache

// 2 per second: a token every 500 ms, and R refills less than one, so a fetch needs 1 token.
constexpr Policy kTwo{2, 1000};

TEST_F(LeaseEngineTest, AnEmptyRowDeniesTheKeyInMemoryUntilTheStoresRetryTime) {
  store_.rows()[kKey] = SharedRow{0, DbNow(), 2, 1000};
  Check(0, 1, kTwo);
  ASSERT_EQ(store_.take_count(), 1u);
  Decide(0);
  ASSERT_EQ(recorder_.answers.size(), 1u);
  CheckResult expected;
  expected.limit = 2;
  expected.retry_after_ms = 500;
  expected.reset_after_ms = 1000;
  expected.source = Source::kLease;
  EXPECT_EQ(recorder_.answers[0].result, expected);

  struct Step {
    int64_t at_ms;  // After the denial.
    uint32_t retry_after_ms;
  };
  const int64_t start = clock_.NowMicros();
  for (const Step& step : {Step{0, 500}, Step{200, 300}, Step{499, 1}}) {
    SCOPED_TRACE("at " + std::to_string(step.at_ms) + " ms");
    clock_.SetMicros(start + step.at_ms * kMs);
    const CheckResult r = CheckAtOnce(1, kTwo);
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.status, CheckStatus::kOk);
    EXPECT_EQ(r.retry_after_ms, step.retry_after_ms);
    EXPECT_EQ(r.source, Source::kLease);
  }
  clock_.SetMicros(start + 499'999);
  EXPECT_EQ(CheckAtOnce(1, kTwo).retry_after_ms, 1u) << "a part of a millisecond rounds up";
  EXPECT_EQ(store_.take_count(), 1u);
  EXPECT_EQ(engine_.metrics().cache_denied.value(), 4u);

  clock_.SetMicros(start + 500 * kMs);
  Check(1, 1, kTwo);
  EXPECT_EQ(recorder_.answers.size(), 1u) << "still denied after the retry time";
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(OnlyOp(1).kind, Kind::kLease);
  Decide(1);  // The row has refilled its token.
  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{0, 1}));
  EXPECT_TRUE(recorder_.answers[1].result.allowed);
  EXPECT_EQ(recorder_.answers[1].result.source, Source::kLease);
}

// With jitter on (as in production), a denial lasts the store's retry time plus a random extra
// of at most the time min_grant takes to refill, itself at most R: sidecars denied together do
// not all come back together.
TEST(LeaseEngineJitterTest, ADenialLastsTheStoresRetryTimePlusARandomExtraOfAtMostR) {
  FakeClock clock;
  FakeStore store;
  LeaseEngine engine(store, clock, HashKey{5, 6}, LeaseOptions{kTtlMs, true});
  constexpr Policy kOnePerSecond{1, 1000};  // min_grant 1: a refill of 1000 ms, above R.
  const int64_t db_now = clock.NowMicros() + kDbOffsetUs;
  std::set<uint32_t> distinct;
  Recorder done;
  for (int i = 0; i < 100; ++i) {
    const std::string key = "k" + std::to_string(i);
    store.rows()[key] = SharedRow{0, db_now, 1, 1000};  // Empty: 1000 ms until a token.
    engine.Check(CheckQuery{key, 1, kOnePerSecond}, static_cast<uint64_t>(i), done);
    store.Decide(static_cast<size_t>(i), db_now);
    ASSERT_EQ(done.answers.size(), static_cast<size_t>(i + 1));
    const CheckResult& r = done.answers.back().result;
    EXPECT_FALSE(r.allowed);
    EXPECT_GE(r.retry_after_ms, 1000u);
    EXPECT_LE(r.retry_after_ms, 1000u + kTtlMs / 4);
    distinct.insert(r.retry_after_ms);
  }
  EXPECT_GT(distinct.size(), 50u) << "the extra is not spread";
  EXPECT_EQ(store.take_count(), 100u);
}

TEST_F(LeaseEngineTest, AFloodOfDeniedChecksCostsOneTakeUntilTheRetryTime) {
  // 10 per minute: a token every 6 s.
  const Policy kTen{10, 60'000};
  store_.rows()[kKey] = SharedRow{0, DbNow(), 10, 60'000};
  const int64_t start = clock_.NowMicros();
  for (uint64_t tag = 0; tag < 5000; ++tag) Check(tag, 1, kTen);  // Before the store answers.
  ASSERT_EQ(store_.take_count(), 1u);
  Decide(0);
  ASSERT_EQ(recorder_.answers.size(), 5000u);
  for (uint64_t tag = 5000; tag < 10'000; ++tag) {  // One every millisecond, and Ticks.
    clock_.AdvanceMillis(1);
    Check(tag, 1, kTen);
    if (tag % 20 == 0) engine_.Tick();
  }
  ASSERT_EQ(recorder_.answers.size(), 10'000u);
  for (const Recorder::Answer& a : recorder_.answers) {
    ASSERT_FALSE(a.result.allowed) << "tag " << a.tag;
    ASSERT_EQ(a.result.status, CheckStatus::kOk) << "tag " << a.tag;
  }
  EXPECT_EQ(recorder_.answers.back().result.retry_after_ms, 1000u);
  EXPECT_EQ(store_.take_count(), 1u);
  EXPECT_EQ(engine_.metrics().cache_denied.value(), 5000u);

  clock_.SetMicros(start + 6000 * kMs);
  Check(10'000, 1, kTen);
  EXPECT_EQ(store_.take_count(), 2u) << "the retry time passed: fetch again";
}

// ---------------------------------------------------------------------------------------------
// Policy changes

constexpr Policy kOther{500, 2000};

TEST_F(LeaseEngineTest, ANewPolicyReturnsTheLeaseUnderTheOldOneAndLeasesUnderTheNew) {
  const uint32_t held = WarmUp();
  const int64_t debit = debit_us_;
  clock_.AdvanceMillis(5);
  Check(1, 1, kOther);
  EXPECT_TRUE(recorder_.answers.empty()) << "spent a lease of the old policy";
  DecideAll();
  const std::vector<StoreOp> ops = AllOps(store_);
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[2].kind, Kind::kReturn);
  EXPECT_EQ(ops[2].policy, kPolicy);
  EXPECT_EQ(ops[2].cost, held);
  EXPECT_EQ(ops[2].debit_us, debit);
  EXPECT_EQ(ops[3].kind, Kind::kLease) << "leased after the return, in order";
  EXPECT_EQ(ops[3].policy, kOther);
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{1});
  EXPECT_TRUE(recorder_.answers[0].result.allowed);
  EXPECT_EQ(recorder_.answers[0].result.limit, 500u);
  EXPECT_EQ(store_.rows().at(kKey).capacity, 500u) << "the row took the new policy";
}

TEST_F(LeaseEngineTest, AGrantForTheOldPolicyLandingAfterAChangeIsReturnedNotSpent) {
  Check(0);  // Under kPolicy.
  ASSERT_EQ(store_.take_count(), 1u);
  Check(1, 1, kOther);  // Waits behind the fetch in flight.
  const int64_t landed = DbNow();
  Decide(0);
  EXPECT_TRUE(recorder_.answers.empty()) << "served from a grant of the old policy";
  ASSERT_EQ(store_.take_count(), 2u) << "the return and both checks in one transaction";
  DecideAll();
  const std::vector<StoreOp> ops = AllOps(store_);
  ASSERT_GE(ops.size(), 4u);
  EXPECT_EQ(ops[1].kind, Kind::kReturn);
  EXPECT_EQ(ops[1].policy, kPolicy);
  EXPECT_EQ(ops[1].cost, 1u);
  EXPECT_EQ(ops[1].debit_us, landed);
  // The grant covered neither waiting check under the new policy: each is decided in the store
  // (before, a lease for both followed the return).
  for (size_t i = 2; i < 4; ++i) {
    EXPECT_EQ(ops[i].kind, Kind::kCheck);
    EXPECT_EQ(ops[i].policy, kOther);
  }
  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{0, 1}));
  for (const Recorder::Answer& a : recorder_.answers) {
    EXPECT_TRUE(a.result.allowed);
    EXPECT_EQ(a.result.limit, 500u);
  }
  EXPECT_EQ(engine_.metrics().tokens_leased.value(), 0u) << "the returned grant was not counted";
}

// ---------------------------------------------------------------------------------------------
// ReturnAll

TEST_F(LeaseEngineTest, ReturnAllReturnsEveryLeaseAndFinishesWhenTheStoreAnswered) {
  store_.set_slots(2);
  const uint32_t held = WarmUp();
  const int64_t debit = debit_us_;
  const double row_before = store_.rows().at(kKey).tokens;
  Check(1, 1, kPolicy, "b");  // A fetch in flight.
  ASSERT_EQ(store_.in_flight(), 1u);

  int finished = 0;
  engine_.ReturnAll([&finished] { ++finished; });
  EXPECT_EQ(finished, 0);
  EXPECT_EQ(CheckAtOnce(), ShuttingDown(kPolicy.limit));
  EXPECT_EQ(CheckAtOnce(0, Policy{3, 1000}, "c"), ShuttingDown(3));

  // Answer the Takes one at a time, oldest first: done only after the last.
  while (store_.in_flight() > 0) {
    EXPECT_EQ(finished, 0);
    for (size_t index = 0; index < store_.take_count(); ++index) {
      if (!store_.answered(index)) {
        Decide(index);
        break;
      }
    }
  }
  EXPECT_EQ(finished, 1);
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{1});
  EXPECT_EQ(recorder_.answers[0].result, ShuttingDown(kPolicy.limit));

  std::vector<StoreOp> returns = OpsOfKind(store_, Kind::kReturn);
  ASSERT_EQ(returns.size(), 2u);
  std::sort(returns.begin(), returns.end(),
            [](const StoreOp& x, const StoreOp& y) { return x.key < y.key; });
  EXPECT_EQ(returns[0].key, "b");
  EXPECT_EQ(returns[0].cost, 1u) << "the grant that landed during ReturnAll";
  EXPECT_EQ(returns[1].key, kKey);
  EXPECT_EQ(returns[1].cost, held);
  EXPECT_EQ(returns[1].debit_us, debit);
  EXPECT_EQ(store_.rows().at(kKey).tokens, row_before + held) << "no time passed";
  EXPECT_EQ(store_.rows().at("b").tokens, 1000);
  EXPECT_EQ(engine_.metrics().tokens_returned.value(), held + 1);
  EXPECT_EQ(engine_.metrics().tokens_expired.value(), 0u) << "given back at shutdown, not expired";
}

TEST_F(LeaseEngineTest, ReturnAllFinishesAtOnceWhenNothingIsHeldOrInFlight) {
  int finished = 0;
  engine_.ReturnAll([&finished] { ++finished; });
  EXPECT_EQ(finished, 1);

  // A key whose lease is used up holds nothing either.
  FakeStore store;
  LeaseEngine engine(store, clock_, HashKey{1, 2}, LeaseOptions{kTtlMs, false});
  Recorder done;
  engine.Check(CheckQuery{kKey, 1, kPolicy}, 0, done);
  store.Decide(0, DbNow());
  ASSERT_EQ(engine.key_count(), 1u);
  int finished_too = 0;
  engine.ReturnAll([&finished_too] { ++finished_too; });
  EXPECT_EQ(finished_too, 1);
  EXPECT_EQ(store.take_count(), 1u);
}

// A store that fails every Take before Take returns, as a database session that is already
// broken does: ReturnAll must still send every key's lease before it says it is done.
class FailsAtOnceStore final : public SharedStore {
 public:
  void Take(std::vector<StoreOp> batch, TakeDone done) override {
    for (const StoreOp& op : batch) taken.push_back(op);
    if (failing) {
      done(Status::Unavailable("session broken"));
    } else {
      pending.push_back(std::move(done));
    }
  }
  size_t free_slots() const override { return failing ? 1 : (pending.empty() ? 1 : 0); }
  bool ready() const override { return true; }
  std::string_view name() const override { return "fails-at-once"; }

  bool failing = false;
  std::vector<StoreOp> taken;
  std::vector<TakeDone> pending;
};

TEST(LeaseEngineReturnAllTest, ReturnAllSendsEveryLeaseEvenWhenTheStoreFailsThemAtOnce) {
  FakeClock clock;
  FailsAtOnceStore store;
  LeaseEngine engine(store, clock, HashKey{1, 2}, LeaseOptions{kTtlMs, false});
  Recorder done;
  const int64_t db_now = clock.NowMicros() + kDbOffsetUs;
  for (uint64_t i = 0; i < 5; ++i) {  // Five keys, each holding a lease of 3 (1 spent).
    engine.Check(CheckQuery{"k" + std::to_string(i), 1, kPolicy}, i, done);
    ASSERT_EQ(store.pending.size(), 1u);
    StoreAnswer grant;
    grant.check.allowed = true;
    grant.check.limit = kPolicy.limit;
    grant.granted = 4;
    grant.now_us = db_now;
    TakeDone answer = std::move(store.pending.back());
    store.pending.clear();
    answer(std::vector<StoreAnswer>{grant});
  }
  ASSERT_EQ(done.answers.size(), 5u);
  store.failing = true;
  store.taken.clear();
  int finished = 0;
  engine.ReturnAll([&] {
    ++finished;
    EXPECT_EQ(store.taken.size(), 5u) << "finished before every lease was sent";
  });
  EXPECT_EQ(finished, 1);
  EXPECT_EQ(store.taken.size(), 5u);
  for (const StoreOp& op : store.taken) {
    EXPECT_EQ(op.kind, Kind::kReturn);
    EXPECT_EQ(op.cost, 3u);
  }
}

// A fetch that the store fails before Take returns answers its check, and leaves the key free
// to fetch again: nothing is left waiting on a fetch that already ended.
TEST(LeaseEngineFetchTest, AFetchFailedBeforeTakeReturnsLeavesTheKeyFreeToFetchAgain) {
  FakeClock clock;
  FailsAtOnceStore store;
  store.failing = true;
  LeaseEngine engine(store, clock, HashKey{1, 2}, LeaseOptions{kTtlMs, false});
  Recorder done;
  for (uint64_t i = 0; i < 3; ++i) {
    engine.Check(CheckQuery{kKey, 1, kPolicy}, i, done);
    ASSERT_EQ(done.answers.size(), i + 1) << "check " << i << " was left waiting";
    EXPECT_EQ(done.answers[i].result.status, CheckStatus::kStoreUnavailable);
    EXPECT_EQ(store.taken.size(), i + 1) << "no new fetch for check " << i;
  }
  int finished = 0;
  engine.ReturnAll([&] { ++finished; });
  EXPECT_EQ(finished, 1) << "a fetch counted as still in flight";
}

TEST_F(LeaseEngineTest, ReturnAllFinishesEvenWhenTheReturnsFail) {
  WarmUp();
  int finished = 0;
  engine_.ReturnAll([&finished] { ++finished; });
  ASSERT_EQ(store_.take_count(), 3u);
  EXPECT_EQ(finished, 0);
  store_.Fail(2, Status::Unavailable("connection lost"));
  EXPECT_EQ(finished, 1);
  EXPECT_EQ(engine_.metrics().tokens_returned.value(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Forgetting keys

TEST_F(LeaseEngineTest, TickForgetsAKeyThatHoldsNothingAfterTtl) {
  Check(0);
  Decide(0);  // Its one token spent at once.
  ASSERT_EQ(engine_.key_count(), 1u);
  clock_.AdvanceMicros(kTtlUs - 1);
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 1u) << "forgotten before ttl, with the demand it measured";
  clock_.AdvanceMicros(1);
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 0u);
  EXPECT_EQ(store_.take_count(), 1u) << "nothing to return";
}

// The gauge /metrics shows is the engine's own, set whenever a key is added or forgotten.
TEST_F(LeaseEngineTest, TheKeysGaugeIsTheNumberOfKeysWithLeaseStateAtEveryStep) {
  EXPECT_EQ(engine_.metrics().keys.value(), 0);
  Check(0, 1, kPolicy, "a");
  Check(1, 1, kPolicy, "b");
  EXPECT_EQ(engine_.metrics().keys.value(), 2);
  DecideAll();
  clock_.AdvanceMicros(kTtlUs);
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 0u);
  EXPECT_EQ(engine_.metrics().keys.value(), 0);
}

TEST_F(LeaseEngineTest, TickKeepsAKeyWhileItHoldsALeaseAndReturnsItBeforeForgetting) {
  const int64_t sent = clock_.NowMicros() + 10 * kMs;
  ASSERT_EQ(WarmUp(), 13u);
  for (int64_t t = clock_.NowMicros(); t < sent + kTtlUs; t += 20 * kMs) {
    clock_.SetMicros(t);
    engine_.Tick();
    ASSERT_EQ(engine_.key_count(), 1u) << "at " << t - sent << " us";
  }
  clock_.SetMicros(sent + kTtlUs);
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 0u);
  ASSERT_EQ(OpsOfKind(store_, Kind::kReturn).size(), 1u);
  EXPECT_EQ(OpsOfKind(store_, Kind::kReturn)[0].cost, 13u);
}

TEST_F(LeaseEngineTest, TickKeepsAKeyWhileItsDenialLasts) {
  const Policy kTen{10, 60'000};  // 6 s until a token.
  store_.rows()[kKey] = SharedRow{0, DbNow(), 10, 60'000};
  Check(0, 1, kTen);
  Decide(0);
  ASSERT_EQ(recorder_.answers.size(), 1u);
  const int64_t until =
      clock_.NowMicros() + int64_t{recorder_.answers[0].result.retry_after_ms} * kMs;
  ASSERT_EQ(until - clock_.NowMicros(), 6000 * kMs);
  for (int64_t t = clock_.NowMicros(); t < until; t += 20 * kMs) {
    clock_.SetMicros(t);
    engine_.Tick();
    ASSERT_EQ(engine_.key_count(), 1u) << "forgot a live denial";
  }
  clock_.SetMicros(until + kTtlUs);
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 0u);
}

TEST_F(LeaseEngineTest, TickKeepsAKeyWhoseFetchIsInFlightHoweverLongItTakes) {
  Check(0);
  for (int i = 0; i < 10; ++i) {
    clock_.AdvanceMicros(kTtlUs);
    engine_.Tick();
  }
  EXPECT_EQ(engine_.key_count(), 1u);
  // The grant lands ten ttls after it was asked for: too late to spend. It goes back, and the
  // waiting check (still waiting, not lost) is decided in the store, in the same transaction
  // as the return and after it (before, a second lease waited for the return's transaction).
  Decide(0);
  EXPECT_TRUE(recorder_.answers.empty());
  ASSERT_EQ(store_.take_count(), 2u);
  ASSERT_GE(store_.batch(1).size(), 2u);
  EXPECT_EQ(store_.batch(1)[0].kind, StoreOp::Kind::kReturn);
  EXPECT_EQ(store_.batch(1)[1].kind, StoreOp::Kind::kCheck);
  Decide(1);
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{0});
  EXPECT_TRUE(recorder_.answers[0].result.allowed);
}

// A check waiting under one policy when the key's policy changes to one whose limit is below its
// cost can never be allowed: it is refused as CostExceedsLimit, and the key is not left with a
// denial computed for more tokens than the bucket holds.
TEST_F(LeaseEngineTest, AWaitingCheckCostingMoreThanANewLimitIsRefusedAndLocksNothingOut) {
  constexpr Policy kBig{1000, 60'000};
  constexpr Policy kSmall{10, 60'000};
  Check(0, 500, kBig);  // Waits for its fetch.
  ASSERT_EQ(store_.take_count(), 1u);
  Check(1, 1, kSmall);  // The key's policy changes while the fetch is in flight.
  DecideAll();
  ASSERT_EQ(recorder_.answers.size(), 2u);
  for (const Recorder::Answer& a : recorder_.answers) {
    if (a.tag == 0) {
      EXPECT_EQ(a.result.status, CheckStatus::kCostExceedsLimit);
      EXPECT_EQ(a.result.limit, 10u);
    } else {
      EXPECT_TRUE(a.result.allowed) << "the small policy's bucket is full";
    }
  }
  for (const StoreOp& op : OpsOfKind(store_, Kind::kLease)) {
    EXPECT_LE(op.cost, op.policy.limit) << "a lease asking for more than the bucket holds";
  }
  clock_.AdvanceMillis(1000);
  DecideAll();
  Check(2, 1, kSmall);
  DecideAll();
  ASSERT_EQ(recorder_.answers.size(), 3u);
  EXPECT_TRUE(recorder_.answers[2].result.allowed) << "the key must not be locked out";
}

// The same for a check further back in the queue, when the checks the lease does not cover go
// to the store: it is refused, not sent as a kCheck that could never be allowed.
TEST_F(LeaseEngineTest, AWaitingCheckBehindOthersCostingMoreThanANewLimitIsRefused) {
  constexpr Policy kBig{1000, 60'000};
  constexpr Policy kSmall{10, 60'000};
  Check(0, 1, kBig);  // Waits for its fetch.
  Check(1, 500, kBig);
  Check(2, 1, kSmall);  // The key's policy changes while the fetch is in flight.
  DecideAll();
  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{1, 0, 2}));
  EXPECT_EQ(recorder_.answers[0].result.status, CheckStatus::kCostExceedsLimit);
  EXPECT_EQ(recorder_.answers[0].result.limit, 10u);
  for (size_t i = 1; i < 3; ++i) EXPECT_TRUE(recorder_.answers[i].result.allowed) << i;
  for (const StoreOp& op : OpsOfKind(store_, Kind::kCheck)) {
    EXPECT_LE(op.cost, op.policy.limit) << "a check asking for more than the bucket holds";
  }
}

// Two policies taking turns on one key: each change gives the leases back and fetches anew, but
// the queue of keys to look at again stays about one entry per key.
TEST_F(LeaseEngineTest, AlternatingPoliciesDoNotGrowTheRevisitQueue) {
  constexpr Policy kA{1000, 60'000};
  constexpr Policy kB{900, 60'000};
  for (uint64_t i = 0; i < 2000; ++i) {
    Check(i, 1, i % 2 == 0 ? kA : kB);
    DecideAll();
    clock_.AdvanceMicros(100);
  }
  EXPECT_EQ(recorder_.answers.size(), 2000u);
  EXPECT_LE(engine_.scheduled_visits(), 4u);
  clock_.AdvanceMicros(2 * kTtlUs);
  engine_.Tick();
  DecideAll();
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 0u);
  EXPECT_EQ(engine_.scheduled_visits(), 0u);
}

// After a grant cut short (the row had less than wanted, or kept half for the next sidecar),
// the sidecar does not go straight back for the rest: the next fetch waits for a check that
// needs it.
TEST_F(LeaseEngineTest, AGrantCutShortIsNotFollowedByAPrefetch) {
  WarmUp();  // Demand is known: a lease wants 13 tokens.
  store_.rows()[kKey] = SharedRow{10, DbNow(), 1000, 1000};  // Scarce: half of 10 is 5.
  // Spend the lease down to the prefetch point; the prefetch is granted 5 of 13.
  while (store_.take_count() == 2) ASSERT_TRUE(CheckAtOnce().allowed);
  ASSERT_EQ(OnlyOp(2).kind, Kind::kLease);
  Decide(2);
  EXPECT_EQ(store_.take_count(), 3u) << "went straight back for the rest of a scarce row";
  // A check served from what is held starts no fetch either.
  ASSERT_TRUE(CheckAtOnce().allowed);
  EXPECT_EQ(store_.take_count(), 3u);
}

// While the store is not ready, checks served from a lease start no fetch that would fail.
TEST_F(LeaseEngineTest, NoPrefetchIsAttemptedWhileTheStoreIsNotReady) {
  WarmUp();
  const uint64_t fetches = engine_.metrics().fetches.value();
  store_.set_ready(false);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(CheckAtOnce().allowed);
  EXPECT_EQ(engine_.metrics().fetches.value(), fetches);
  EXPECT_EQ(store_.take_count(), 2u);
}

// ---------------------------------------------------------------------------------------------
// Reads

TEST_F(LeaseEngineTest, AReadOfAnUnknownKeyIsAStoreCheckOfCostZero) {
  store_.rows()[kKey] = SharedRow{7.5, DbNow(), 1000, 1000};
  Check(0, 0);
  EXPECT_TRUE(recorder_.answers.empty());
  ASSERT_EQ(store_.take_count(), 1u);
  EXPECT_EQ(OnlyOp(0).kind, Kind::kCheck);
  EXPECT_EQ(OnlyOp(0).cost, 0u);
  EXPECT_EQ(OnlyOp(0).policy, kPolicy);
  Decide(0);
  ASSERT_EQ(recorder_.answers.size(), 1u);
  const CheckResult& r = recorder_.answers[0].result;
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, 7u);
  EXPECT_EQ(r.source, Source::kDatabase);
  EXPECT_EQ(engine_.key_count(), 0u) << "a read leaves nothing to remember";
  EXPECT_EQ(store_.rows().at(kKey).tokens, 7.5) << "a read takes nothing";
}

// A read of a key this sidecar holds nothing of (its leases expired) asks the row, and starts
// no fetch: a read changes nothing.
TEST_F(LeaseEngineTest, AReadOfAKeyHoldingNothingAsksTheRowAndFetchesNothing) {
  WarmUp();
  clock_.AdvanceMicros(kTtlUs + 1);
  engine_.Tick();
  DecideAll();  // The expired lease goes back.
  const size_t takes = store_.take_count();
  const uint64_t fetches = engine_.metrics().fetches.value();
  Check(0, 0);
  ASSERT_EQ(store_.take_count(), takes + 1);
  EXPECT_EQ(OnlyOp(takes).kind, Kind::kCheck);
  EXPECT_EQ(OnlyOp(takes).cost, 0u);
  Decide(takes);
  ASSERT_EQ(recorder_.answers.size(), 1u);
  EXPECT_EQ(recorder_.answers[0].result.source, Source::kDatabase);
  EXPECT_EQ(recorder_.answers[0].result.remaining, 1000u) << "refilled in the second since";
  EXPECT_EQ(engine_.metrics().fetches.value(), fetches);
  EXPECT_EQ(store_.take_count(), takes + 1);
}

TEST_F(LeaseEngineTest, AReadOfAKeyHoldingALeaseIsAnsweredFromMemory) {
  const uint32_t held = WarmUp();
  const size_t takes = store_.take_count();
  const CheckResult r = CheckAtOnce(0);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.source, Source::kLease);
  ASSERT_EQ(held, 13u);
  EXPECT_EQ(r.remaining, 13u + 986u) << "held plus what the row kept: 1000 - 14";
  EXPECT_EQ(store_.take_count(), takes);
}

// ---------------------------------------------------------------------------------------------
// Several sidecars on one table

// Three sidecars, each with its own store connection, share one table. Each turns its demand
// for each key on and off at random (seeded) times, so that some hold leases they stop needing
// while others drain the row, and the store answers after a random latency. However the leases
// come and go, in every interval of length T the sidecars together admit at most
// capacity + rate * (T + ttl) of a key; and they admit nearly what one perfect bucket would of
// the same checks.
TEST(LeaseEngineSimulationTest, SidecarsSharingABucketStayWithinTheBoundAndAdmitNearlyAll) {
  struct Key {
    std::string name;
    Policy policy;
    uint64_t per_mille_per_ms;  // Chance of a check per ms from a sidecar whose demand is on.
  };
  const Key kKeys[] = {
      // 100 per second: a sidecar that is on asks 150 per second.
      {"hot", {100, 1000}, 150},
      // 800 per minute: a lease (up to 100) is far more than the 13.3 that refill in ttl.
      {"long", {800, 60'000}, 150},
      // 5 per 10 s: a lease is a token or two.
      {"slow", {50, 10'000}, 30},
  };
  constexpr int64_t kChecksUs = 12'000'000;
  constexpr int64_t kRunUs = kChecksUs + 3 * kTtlUs;  // Then only Ticks: leases expire.
  for (uint64_t seed : {1, 2, 3, 4}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    FakeClock clock;
    std::map<std::string, SharedRow> table;
    std::vector<std::unique_ptr<SimulatedSidecar>> sidecars;
    for (uint64_t i = 0; i < 3; ++i) {
      sidecars.push_back(std::make_unique<SimulatedSidecar>(
          clock, table, 1 + i % 2, seed * 10 + i, (1 + i) * 3 * kMs, LeaseOptions{kTtlMs, true}));
    }
    Rng rng(seed);
    const int64_t start = clock.NowMicros();
    // Per sidecar and key: whether its demand is on, and until when.
    std::vector<std::vector<std::pair<bool, int64_t>>> on(
        sidecars.size(), std::vector<std::pair<bool, int64_t>>(std::size(kKeys), {false, 0}));
    std::map<std::string, std::vector<Admission>> demanded;
    for (int64_t t = start; t < start + kRunUs; t += kMs) {
      clock.SetMicros(t);
      for (size_t i = 0; i < sidecars.size(); ++i) {
        SimulatedSidecar& sidecar = *sidecars[i];
        if ((t - start) % (20 * kMs) == 0) sidecar.engine().Tick();
        sidecar.Step();
        if (t >= start + kChecksUs) continue;
        for (size_t k = 0; k < std::size(kKeys); ++k) {
          auto& [is_on, until] = on[i][k];
          if (t >= until) {
            is_on = rng.UpTo(2) != 0;  // On two thirds of the time.
            until = t + 100 * kMs + static_cast<int64_t>(rng.UpTo(1900)) * kMs;
          }
          if (!is_on || rng.UpTo(999) >= kKeys[k].per_mille_per_ms) continue;
          const uint32_t cost = rng.UpTo(9) == 0 ? 1 + static_cast<uint32_t>(rng.UpTo(4)) : 1;
          demanded[kKeys[k].name].push_back(Admission{t, cost});
          sidecar.Check(kKeys[k].name, cost, kKeys[k].policy);
        }
      }
    }
    int finished = 0;
    for (auto& sidecar : sidecars) {
      sidecar->Drain();
      sidecar->engine().ReturnAll([&finished] { ++finished; });
      sidecar->Drain();
    }
    EXPECT_EQ(finished, 3);

    for (const Key& key : kKeys) {
      SCOPED_TRACE(key.name);
      std::vector<Admission> all;
      for (auto& sidecar : sidecars) {
        const std::vector<Admission>& mine = sidecar->admitted(key.name);
        all.insert(all.end(), mine.begin(), mine.end());
      }
      const double rate_per_us = double(key.policy.limit) / (double(key.policy.window_ms) * 1000);
      for (int64_t length : {int64_t{0}, 10 * kMs, 100 * kMs, 250 * kMs, 1000 * kMs, 3000 * kMs,
                             6000 * kMs, kRunUs}) {
        const double bound = key.policy.limit + rate_per_us * double(length + kTtlUs);
        EXPECT_LE(double(MostAdmittedWithin(all, length)), bound) << "T = " << length << " us";
      }
      uint64_t admitted = 0;
      for (const Admission& a : all) admitted += a.cost;
      const uint64_t perfect = PerfectlyAdmitted(demanded[key.name], key.policy);
      uint64_t asked = 0;
      for (const Admission& a : demanded[key.name]) asked += a.cost;
      ASSERT_GT(asked, 2 * perfect) << "demand must exceed supply for this to mean anything";
      EXPECT_GE(double(admitted), 0.9 * double(perfect))
          << "admitted " << admitted << ", a perfect bucket " << perfect;
      ASSERT_TRUE(table.count(key.name));
      EXPECT_LE(table.at(key.name).tokens, key.policy.limit);
    }
    for (auto& sidecar : sidecars) {
      EXPECT_EQ(sidecar->answered(), sidecar->checks()) << "a check was never answered";
      EXPECT_EQ(sidecar->refused(), 0u);
      EXPECT_LT(sidecar->store().take_count(), sidecar->checks() / 4)
          << "the leases did not spare the database";
    }
  }
}

}  // namespace
}  // namespace ratelimit
