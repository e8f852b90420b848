// Tests of the LeaseEngine's optimistic admission: checks of keys holding no lease admitted from
// a per-key allowance u before the store confirms them, their debits, debts and bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sidecar/core/lease_engine.h"
#include "sidecar/core/shared_bucket.h"
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
constexpr int64_t kMs = 1000;
constexpr Policy kSlow{100, 60'000};  // The benchmark's policy: 100 per minute.
constexpr Policy kTenPerSecond{10, 1000};
const std::string kKey = "k";

LeaseOptions Options(uint32_t per_key, uint32_t max = 4096, size_t max_keys = 1000) {
  LeaseOptions options{kTtlMs, false};
  options.unconfirmed_per_key = per_key;
  options.unconfirmed_max = max;
  options.max_keys = max_keys;
  return options;
}

class UnconfirmedTest : public testing::Test {
 protected:
  explicit UnconfirmedTest(const LeaseOptions& options = Options(1))
      : engine_(store_, clock_, HashKey{1, 2}, options) {}

  void Check(uint64_t tag, const std::string& key = kKey, const Policy& policy = kSlow,
             uint32_t cost = 1) {
    engine_.Check(CheckQuery{key, cost, policy}, tag, recorder_);
  }

  // Checks, expecting the answer before Check returns.
  CheckResult CheckAtOnce(const std::string& key = kKey, const Policy& policy = kSlow,
                          uint32_t cost = 1) {
    return AnswerAtOnce(engine_, CheckQuery{key, cost, policy});
  }

  int64_t DbNow() { return clock_.NowMicros() + kSimulatedDbOffsetUs; }
  void Decide(size_t index) { store_.Decide(index, DbNow()); }
  const StoreOp& OnlyOp(size_t index) {
    EXPECT_EQ(store_.batch(index).size(), 1u) << "Take " << index;
    return store_.batch(index).front();
  }
  uint64_t Unconfirmed() { return static_cast<uint64_t>(engine_.metrics().unconfirmed.value()); }

  FakeClock clock_;
  FakeStore store_;
  LeaseEngine engine_;
  Recorder recorder_;
};

TEST_F(UnconfirmedTest, AColdKeysCheckIsAdmittedAtOnceAndItsDebitGoesWithTheFetch) {
  const CheckResult r = CheckAtOnce();
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.status, CheckStatus::kOk);
  EXPECT_EQ(r.source, Source::kLease);
  EXPECT_EQ(r.remaining, 99u) << "a key never answered is taken to be full, less what was let in";
  EXPECT_EQ(r.reset_after_ms, 600u) << "one token refills in 600 ms";
  EXPECT_EQ(engine_.metrics().unconfirmed_allowed.value(), 1u);
  EXPECT_EQ(engine_.metrics().waited.value(), 0u);
  EXPECT_EQ(Unconfirmed(), 1u);
  ASSERT_EQ(store_.take_count(), 1u);
  const StoreOp& fetch = OnlyOp(0);
  EXPECT_EQ(fetch.kind, Kind::kLease);
  EXPECT_EQ(fetch.owed, 1u);
  EXPECT_EQ(fetch.want, 0u) << "no demand known: the debit alone, no lease to expire unspent";

  Decide(0);
  EXPECT_EQ(Unconfirmed(), 0u);
  EXPECT_EQ(store_.rows().at(kKey).tokens, 99) << "the debit reached the row";
  // Heard of within ttl: the next check waits for the store, as before.
  clock_.AdvanceMillis(900);
  Check(2);
  EXPECT_TRUE(recorder_.answers.empty());
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(OnlyOp(1).owed, 0u);
  Decide(1);
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{2});
  // Forgotten once its leases have gone back and it has been idle for ttl: cold again,
  // admitted at once.
  for (int i = 0; i < 3; ++i) {
    clock_.AdvanceMillis(kTtlMs);
    engine_.Tick();
    for (size_t t = 0; t < store_.take_count(); ++t) {
      if (!store_.answered(t)) Decide(t);
    }
  }
  EXPECT_EQ(engine_.key_count(), 0u);
  const size_t takes = store_.take_count();
  EXPECT_TRUE(CheckAtOnce().allowed);
  ASSERT_EQ(store_.take_count(), takes + 1);
  EXPECT_EQ(OnlyOp(takes).owed, 1u);
}

TEST_F(UnconfirmedTest, AKeyWhoseAllowanceIsInFlightWaitsForTheStoreAsBefore) {
  EXPECT_TRUE(CheckAtOnce().allowed);
  Check(2);
  EXPECT_TRUE(recorder_.answers.empty()) << "u = 1 is spent until the store confirms it";
  EXPECT_EQ(engine_.metrics().waited.value(), 1u);
  Decide(0);  // The debit alone landed: the waiting check is decided in the next Take.
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(OnlyOp(1).kind, Kind::kCheck);
  Decide(1);
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{2});
  EXPECT_TRUE(recorder_.answers[0].result.allowed);
  EXPECT_EQ(store_.rows().at(kKey).tokens, 98);
}

TEST_F(UnconfirmedTest, AnAnswerInDebtDeniesUntilRepaidAndNoPolicyChangeLiftsThat) {
  store_.rows()[kKey] = SharedRow{0, DbNow(), 10, 1000};  // Empty, 10 per second.
  EXPECT_TRUE(CheckAtOnce(kKey, kTenPerSecond).allowed) << "this sidecar knows nothing of the row";
  Decide(0);
  EXPECT_EQ(store_.rows().at(kKey).tokens, -1) << "the row owes what was let in";
  EXPECT_EQ(engine_.metrics().debts.value(), 1u);
  const CheckResult denied = CheckAtOnce(kKey, kTenPerSecond);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.retry_after_ms, 200u) << "the debt and one token: 200 ms";
  EXPECT_EQ(store_.take_count(), 1u) << "denied from memory";

  // Another policy forgets the denial, not the debt: the check waits for the store.
  const Policy kTwenty{20, 1000};
  Check(3, kKey, kTwenty);
  EXPECT_TRUE(recorder_.answers.empty());
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(OnlyOp(1).owed, 0u);
  Decide(1);
  ASSERT_EQ(recorder_.answers.size(), 1u);
  EXPECT_FALSE(recorder_.answers[0].result.allowed) << "the row still owes";

  // Once refill has repaid it (and the denial is over), cold checks are admitted at once again.
  clock_.AdvanceMillis(300);
  Check(4, kKey, kTwenty);
  ASSERT_EQ(store_.take_count(), 3u);
  Decide(2);
  clock_.AdvanceMillis(kTtlMs * 2);
  engine_.Tick();
  EXPECT_TRUE(CheckAtOnce(kKey, kTwenty).allowed);
}

TEST_F(UnconfirmedTest, NothingIsAdmittedUnconfirmedWhileTheStoreIsNotReady) {
  store_.set_ready(false);
  const CheckResult r = CheckAtOnce();
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.status, CheckStatus::kStoreUnavailable) << "the fallback's case, as before";
  EXPECT_EQ(engine_.metrics().unconfirmed_allowed.value(), 0u);
  EXPECT_EQ(store_.take_count(), 0u);
}

TEST_F(UnconfirmedTest, ADebitTheStoreFailedStaysOnTheKeyAndIsSentAgain) {
  EXPECT_TRUE(CheckAtOnce().allowed);
  store_.Fail(0, Status::Unavailable("rolled back"));
  EXPECT_EQ(Unconfirmed(), 1u) << "not confirmed: still counted";
  // The allowance is still spent: the next check waits, and its fetch carries the debit.
  Check(2);
  EXPECT_TRUE(recorder_.answers.empty());
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(OnlyOp(1).owed, 1u);
  store_.Fail(1, Status::Unavailable("rolled back again"));
  ASSERT_EQ(recorder_.answers.size(), 1u);
  EXPECT_EQ(recorder_.answers[0].result.status, CheckStatus::kStoreUnavailable);

  // No more checks: Tick sends it again after ttl, and the key is kept until it lands.
  clock_.AdvanceMillis(kTtlMs * 3);
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 1u);
  ASSERT_EQ(store_.take_count(), 3u);
  EXPECT_EQ(OnlyOp(2).owed, 1u);
  EXPECT_EQ(OnlyOp(2).want, 0u);
  Decide(2);
  EXPECT_EQ(Unconfirmed(), 0u);
  EXPECT_EQ(store_.rows().at(kKey).tokens, 99) << "debited once";
  clock_.AdvanceMillis(kTtlMs * 3);
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 0u) << "then forgotten";
}

TEST_F(UnconfirmedTest, ReturnAllSendsTheDebitsNotYetConfirmedAndWaitsForThem) {
  EXPECT_TRUE(CheckAtOnce().allowed);
  store_.Fail(0, Status::Unavailable("rolled back"));
  bool finished = false;
  engine_.ReturnAll([&finished] { finished = true; });
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(OnlyOp(1).owed, 1u);
  EXPECT_EQ(OnlyOp(1).want, 0u) << "nothing leased while giving everything back";
  EXPECT_FALSE(finished);
  Decide(1);
  EXPECT_TRUE(finished);
  EXPECT_EQ(store_.rows().at(kKey).tokens, 99);
}

class UnconfirmedCapTest : public UnconfirmedTest {
 protected:
  UnconfirmedCapTest() : UnconfirmedTest(Options(1, 2)) {}
};

TEST_F(UnconfirmedCapTest, PastTheTotalCapColdChecksWaitForTheStore) {
  EXPECT_TRUE(CheckAtOnce("a").allowed);
  EXPECT_TRUE(CheckAtOnce("b").allowed);
  Check(3, "c");
  EXPECT_TRUE(recorder_.answers.empty()) << "2 tokens unconfirmed: the cap";
  EXPECT_EQ(Unconfirmed(), 2u);
  EXPECT_EQ(engine_.metrics().unconfirmed_allowed.value(), 2u);
  EXPECT_EQ(engine_.metrics().waited.value(), 1u);
}

// A table of 2 keys: at most 2 / 8, so 1, unconfirmed token at once, whatever the cap says.
class UnconfirmedEvictionTest : public UnconfirmedTest {
 protected:
  UnconfirmedEvictionTest() : UnconfirmedTest(Options(1, 4096, 2)) {}
};

TEST_F(UnconfirmedEvictionTest, AKeyHoldingUnconfirmedTokensIsNeverEvicted) {
  EXPECT_TRUE(CheckAtOnce("a").allowed);
  store_.Fail(0, Status::Unavailable("rolled back"));  // "a" keeps its unconfirmed token.
  Check(2, "b");
  EXPECT_TRUE(recorder_.answers.empty()) << "an eighth of the table is held unconfirmed already";
  Decide(1);
  ASSERT_EQ(recorder_.tags(), std::vector<uint64_t>{2});
  clock_.AdvanceMillis(1);
  Check(3, "c");  // The table holds 2 keys: "b" goes, not "a".
  EXPECT_EQ(engine_.metrics().evictions.value(), 1u);
  ASSERT_EQ(store_.take_count(), 3u);
  Check(4, "a");  // Queued behind c's fetch (one session).
  Decide(2);
  ASSERT_EQ(store_.take_count(), 4u);
  EXPECT_EQ(OnlyOp(3).key, "a");
  EXPECT_EQ(OnlyOp(3).owed, 1u) << "a's debit survived";
}

// Fixed windows, with the allowance set for them: a debt is owed by its window only.
class UnconfirmedWindowTest : public UnconfirmedTest {
 protected:
  static LeaseOptions WindowOptions() {
    LeaseOptions options = Options(1);
    options.algorithm = Algorithm::kFixedWindow;
    return options;
  }
  UnconfirmedWindowTest() : UnconfirmedTest(WindowOptions()) {}
};

TEST_F(UnconfirmedWindowTest, AWindowSpentElsewhereOwesTheAdmissionUntilItEnds) {
  // 5 per second, all spent by other sidecars in a window that opened 200 ms ago.
  const Policy kFive{5, 1000};
  store_.rows()[kKey] = SharedRow{0, DbNow() - 200'000, 5, 1000, Algorithm::kFixedWindow};
  EXPECT_TRUE(CheckAtOnce(kKey, kFive).allowed) << "new to this sidecar";
  ASSERT_EQ(store_.take_count(), 1u);
  EXPECT_EQ(OnlyOp(0).algorithm, Algorithm::kFixedWindow);
  Decide(0);
  EXPECT_EQ(store_.rows().at(kKey).tokens, -1) << "the window owes it";
  const CheckResult denied = CheckAtOnce(kKey, kFive);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.retry_after_ms, 800u) << "until the window ends, not longer";
  // The next window owes nothing: once this sidecar has forgotten the key, it is cold again.
  for (int i = 0; i < 3; ++i) {
    clock_.AdvanceMillis(kTtlMs);
    engine_.Tick();
  }
  EXPECT_EQ(engine_.key_count(), 0u);
  EXPECT_TRUE(CheckAtOnce(kKey, kFive).allowed);
  Decide(1);
  EXPECT_EQ(store_.rows().at(kKey).tokens, 4) << "a new window, full, less this admission";
}

class NoAllowanceTest : public UnconfirmedTest {
 protected:
  NoAllowanceTest() : UnconfirmedTest(Options(0)) {}
};

TEST_F(NoAllowanceTest, WithUZeroEveryColdCheckWaitsAndNoFetchCarriesADebit) {
  Check(1);
  EXPECT_TRUE(recorder_.answers.empty());
  ASSERT_EQ(store_.take_count(), 1u);
  EXPECT_EQ(OnlyOp(0).owed, 0u);
  EXPECT_EQ(OnlyOp(0).want, 1u);
  Decide(0);
  EXPECT_EQ(recorder_.tags(), std::vector<uint64_t>{1});
  EXPECT_EQ(engine_.metrics().unconfirmed_allowed.value(), 0u);
}

// ---------------------------------------------------------------------------------------------
// The bound, simulated: capacity + rate * (T + ttl) + P * u

struct SimKey {
  std::string name;
  Policy policy;
};

struct SimulationResult {
  std::map<std::string, std::vector<Admission>> admitted;
  std::map<std::string, std::vector<Admission>> demanded;
  double lowest_tokens = 0;  // The lowest any row of the table went.
  uint64_t answered = 0;
  uint64_t answered_at_once = 0;
};

// Three sidecars (plus one that replaces sidecar 0 at `crash_at_us`, if set: the crashed one's
// Takes are never answered) check 200 cold keys at random, each about 3 times a second in all
// (capacity 5, 0.5 per second), and a "tide" key (50 per second) that is hot (450 checks a
// second) for 2 s, then cold (6 a second) for 2 s, and so on, for 10 s.
SimulationResult Simulate(uint64_t seed, uint32_t u, int64_t max_latency_us,
                          uint64_t fail_per_mille, int64_t crash_at_us = 0) {
  std::vector<SimKey> keys;
  for (int i = 0; i < 200; ++i) keys.push_back({"cold" + std::to_string(i), Policy{5, 10'000}});
  const SimKey tide{"tide", Policy{50, 1000}};
  FakeClock clock;
  std::map<std::string, SharedRow> table;
  LeaseOptions options{kTtlMs, true};
  options.unconfirmed_per_key = u;
  std::vector<std::unique_ptr<SimulatedSidecar>> sidecars;
  auto add = [&](uint64_t i) {
    sidecars.push_back(std::make_unique<SimulatedSidecar>(clock, table, 1 + i % 2, seed * 10 + i,
                                                          max_latency_us, options));
    sidecars.back()->set_fail_per_mille(fail_per_mille);
  };
  for (uint64_t i = 0; i < 3; ++i) add(i);
  SimulationResult out;
  auto collect = [&](SimulatedSidecar& sidecar) {
    for (const SimKey& k : keys) {
      const auto& mine = sidecar.admitted(k.name);
      out.admitted[k.name].insert(out.admitted[k.name].end(), mine.begin(), mine.end());
    }
    const auto& mine = sidecar.admitted(tide.name);
    out.admitted[tide.name].insert(out.admitted[tide.name].end(), mine.begin(), mine.end());
    out.answered += sidecar.answered();
    out.answered_at_once += sidecar.answered_at_once();
  };
  Rng rng(seed);
  const int64_t start = clock.NowMicros();
  constexpr int64_t kChecksUs = 10'000'000;
  for (int64_t t = start; t < start + kChecksUs + 3 * kTtlUs; t += kMs) {
    clock.SetMicros(t);
    if (crash_at_us > 0 && t == start + crash_at_us) {
      collect(*sidecars[0]);  // Gone with whatever it had in flight; a new pod takes its place.
      sidecars[0].reset();
      add(3);
      std::swap(sidecars[0], sidecars.back());
      sidecars.pop_back();
    }
    const bool hot = (t - start) / 2'000'000 % 2 == 0;
    for (auto& sidecar : sidecars) {
      if ((t - start) % (20 * kMs) == 0) sidecar->engine().Tick();
      sidecar->Step();
      for (const auto& [name, row] : table)
        out.lowest_tokens = std::min(out.lowest_tokens, row.tokens);
      if (t >= start + kChecksUs) continue;
      if (rng.UpTo(999) < 200) {
        const SimKey& k = keys[rng.UpTo(keys.size() - 1)];
        out.demanded[k.name].push_back(Admission{t, 1});
        sidecar->Check(k.name, 1, k.policy);
      }
      if (rng.UpTo(999) < (hot ? 150u : 2u)) {
        out.demanded[tide.name].push_back(Admission{t, 1});
        sidecar->Check(tide.name, 1, tide.policy);
      }
    }
  }
  for (auto& sidecar : sidecars) {
    sidecar->set_fail_per_mille(0);
    sidecar->Drain();
    collect(*sidecar);
  }
  return out;
}

// In every interval of every length, no key is admitted more than the bound, P sidecars having
// checked it (4 when one was replaced).
void ExpectWithinBound(const SimulationResult& r, uint32_t u, uint32_t pods) {
  for (const auto& [name, admitted] : r.admitted) {
    SCOPED_TRACE(name);
    const Policy policy = name == "tide" ? Policy{50, 1000} : Policy{5, 10'000};
    const double rate_per_us = double(policy.limit) / (double(policy.window_ms) * 1000);
    for (int64_t length :
         {int64_t{0}, 100 * kMs, 1000 * kMs, 3000 * kMs, 10'000 * kMs, 13'000 * kMs}) {
      const double bound = policy.limit + rate_per_us * double(length + kTtlUs) + pods * u;
      ASSERT_LE(double(MostAdmittedWithin(admitted, length)), bound) << "T = " << length << " us";
    }
  }
}

TEST(UnconfirmedSimulationTest, ManyColdKeysOnThreeSidecarsStayWithinTheBoundWithPTimesU) {
  for (uint32_t u : {1u, 3u}) {
    for (uint64_t seed : {1, 2}) {
      SCOPED_TRACE("u " + std::to_string(u) + ", seed " + std::to_string(seed));
      const SimulationResult r = Simulate(seed, u, 3 * kMs, 0);
      ExpectWithinBound(r, u, 3);
      EXPECT_GE(r.lowest_tokens, -3.0 * u) << "no row owes more than P * u";
      EXPECT_LT(r.lowest_tokens, 0) << "debts happened: the bound was tested";
      // Cold keys are answered from memory: most checks were answered before Check returned
      // (those of a key its sidecar had heard of within ttl wait, as before).
      EXPECT_GT(double(r.answered_at_once), 0.8 * double(r.answered));
      uint64_t admitted = 0, perfect = 0;
      for (const auto& [name, demanded] : r.demanded) {
        if (name == "tide") continue;
        for (const Admission& a : r.admitted.at(name)) admitted += a.cost;
        perfect += PerfectlyAdmitted(demanded, Policy{5, 10'000});
      }
      EXPECT_GE(double(admitted), 0.9 * double(perfect)) << "the long-run rate is kept";
    }
  }
}

TEST(UnconfirmedSimulationTest, ASlowOrFailingStoreNeverTurnsTheAllowanceIntoMore) {
  // Answers up to 2 ttl late, and 30% of transactions rolled back.
  const SimulationResult r = Simulate(7, 1, 2 * kTtlUs, 300);
  ExpectWithinBound(r, 1, 3);
  EXPECT_GE(r.lowest_tokens, -3.0);
}

TEST(UnconfirmedSimulationTest, ARestartedSidecarLosesNoMoreThanItsOwnAllowance) {
  // Sidecar 0 is gone at 4.5 s, with what it admitted unconfirmed never debited; its
  // replacement counts as a fourth sidecar.
  const SimulationResult r = Simulate(9, 1, 20 * kMs, 0, 4'500'000);
  ExpectWithinBound(r, 1, 4);
}

}  // namespace
}  // namespace ratelimit
