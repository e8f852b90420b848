// Tests of the LeaseEngine over fixed windows: leases cut to their window, returns that name it,
// denials cached until its end, and the exact bound of limit admissions per window.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "sidecar/core/fixed_window.h"
#include "sidecar/core/lease_engine.h"
#include "tests/testing/bucket_steps.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_store.h"
#include "tests/testing/recorder.h"

namespace ratelimit {
namespace {

using Kind = StoreOp::Kind;

constexpr int64_t kMs = 1000;
// The database's clock runs kDbOffsetUs ahead of the sidecar's.
constexpr int64_t kDbOffsetUs = 1'700'000'000'000'000;
constexpr Policy kWindow{100, 1000};  // 100 admissions per 1000 ms window.
const std::string kKey = "k";

LeaseOptions WindowOptions(uint32_t ttl_ms, bool jitter) {
  return LeaseOptions{.ttl_ms = ttl_ms,
                      .jitter_denials = jitter,
                      .jitter_seed = 5,
                      .algorithm = Algorithm::kFixedWindow};
}

class LeaseFixedWindowTest : public testing::Test {
 protected:
  explicit LeaseFixedWindowTest(bool jitter = false)
      : engine_(store_, clock_, {1, 2}, WindowOptions(1000, jitter)) {}

  void Check(uint64_t tag, uint32_t cost = 1, const Policy& policy = kWindow) {
    engine_.Check(CheckQuery{kKey, cost, policy}, tag, recorder_);
  }
  int64_t DbNow() { return clock_.NowMicros() + kDbOffsetUs; }
  void Decide(size_t index) { store_.Decide(index, DbNow()); }
  const StoreOp& OnlyOp(size_t index) {
    EXPECT_EQ(store_.batch(index).size(), 1u) << "Take " << index;
    return store_.batch(index).front();
  }

  FakeClock clock_{0};
  FakeStore store_;
  LeaseEngine engine_;
  Recorder recorder_;
};

class LeaseFixedWindowWithJitterTest : public LeaseFixedWindowTest {
 protected:
  LeaseFixedWindowWithJitterTest() : LeaseFixedWindowTest(/*jitter=*/true) {}
};

TEST_F(LeaseFixedWindowTest, EveryOperationAsksForTheFixedWindow) {
  Check(1);
  ASSERT_EQ(store_.take_count(), 1u);
  EXPECT_EQ(OnlyOp(0).kind, Kind::kLease);
  EXPECT_EQ(OnlyOp(0).algorithm, Algorithm::kFixedWindow);
  Decide(0);
  EXPECT_EQ(store_.rows().at(kKey).algorithm, Algorithm::kFixedWindow);
  EXPECT_EQ(store_.rows().at(kKey).updated_us, DbNow()) << "the window opened at the debit";
}

// The window opens at the first fetch's debit (local 0). A second fetch, sent at 10 ms, is
// decided at 60 ms: 940 ms of the window are left then, so its lease lasts until 10 + 940 = 950
// ms on the local clock, before the window's true end (1000 ms), although ttl (1000 ms from
// 10 ms) would allow more. Its unused tokens go back naming the window, which still holds.
TEST_F(LeaseFixedWindowTest, ALeaseLastsAtMostTheRestOfItsWindowCountedFromBeforeItsFetch) {
  Check(1);
  Decide(0);
  clock_.AdvanceMillis(10);
  Check(2);  // Needs more than the first lease had: a fetch sized by the demand seen.
  ASSERT_EQ(store_.take_count(), 2u);
  const uint32_t wanted = OnlyOp(1).want;
  ASSERT_GT(wanted, 1u);
  clock_.AdvanceMillis(50);
  Decide(1);
  ASSERT_EQ(recorder_.answers.size(), 2u);
  EXPECT_TRUE(recorder_.answers[1].result.allowed);
  EXPECT_EQ(recorder_.answers[1].result.reset_after_ms, 940u) << "the rest of the window";
  const size_t takes = store_.take_count();

  clock_.SetMicros(950 * kMs - 1);
  engine_.Tick();
  EXPECT_EQ(store_.take_count(), takes) << "the lease still holds";
  clock_.SetMicros(950 * kMs);
  engine_.Tick();
  ASSERT_EQ(store_.take_count(), takes + 1) << "expired at the rest of its window";
  const StoreOp& back = OnlyOp(takes);
  EXPECT_EQ(back.kind, Kind::kReturn);
  EXPECT_EQ(back.cost, wanted - 1);
  EXPECT_EQ(back.debit_us, kDbOffsetUs) << "named by its window's start";
  const double before = store_.rows().at(kKey).tokens;
  Decide(takes);
  EXPECT_DOUBLE_EQ(store_.rows().at(kKey).tokens, before + wanted - 1)
      << "the window still holds: the tokens are there again for the others";
}

// Unused tokens of a window that has ended are gone: the return gives nothing, even to the
// newer window another sidecar opened meanwhile.
TEST_F(LeaseFixedWindowTest, AReturnAfterItsWindowEndedGivesNothingToTheNextWindow) {
  Check(1);
  Decide(0);
  clock_.AdvanceMillis(10);
  Check(2);
  Decide(1);
  // The return is sent when the lease expires (at about the window's end), and reaches the
  // database after another sidecar has opened the next window.
  clock_.SetMicros(1000 * kMs);
  engine_.Tick();
  const size_t back = store_.take_count() - 1;
  ASSERT_EQ(OnlyOp(back).kind, Kind::kReturn);
  SharedRow& row = store_.rows().at(kKey);
  row = SharedRow{90, DbNow() + 5 * kMs, kWindow.limit, kWindow.window_ms, Algorithm::kFixedWindow};
  clock_.AdvanceMillis(10);
  Decide(back);
  EXPECT_DOUBLE_EQ(store_.rows().at(kKey).tokens, 90) << "nothing given to the newer window";
}

// A grant that lands after its key changed policy goes straight back, also naming its window.
TEST_F(LeaseFixedWindowTest, AGrantForAnOldPolicyGoesBackNamingItsWindow) {
  Check(1);
  Decide(0);  // The window opens at local 0.
  clock_.AdvanceMillis(100);
  Check(2);  // Holds nothing: a fetch.
  ASSERT_EQ(store_.take_count(), 2u);
  Check(3, 1, Policy{100, 2000});  // Another policy while the fetch is in flight.
  clock_.AdvanceMillis(50);
  Decide(1);
  ASSERT_EQ(store_.take_count(), 3u);
  bool returned = false;
  for (const StoreOp& op : store_.batch(2)) {
    if (op.kind != Kind::kReturn) continue;
    returned = true;
    EXPECT_EQ(op.debit_us, kDbOffsetUs) << "the window's start, not the debit's time";
  }
  EXPECT_TRUE(returned);
}

// A denial is cached until the window's end, with no random extra even with jitter on: every
// denied check until then is answered in memory (no Take) with retry_after_ms counting down
// to the window's end; the first check after it fetches from the next window.
TEST_F(LeaseFixedWindowWithJitterTest, ADenialLastsExactlyUntilTheWindowsEndAndCostsNoTake) {
  constexpr Policy kTwo{2, 1000};
  Check(1, 2, kTwo);
  Decide(0);  // The whole window, at local 0.
  ASSERT_TRUE(recorder_.answers.at(0).result.allowed);
  clock_.AdvanceMillis(100);
  Check(2, 1, kTwo);
  ASSERT_EQ(store_.take_count(), 2u);
  Decide(1);
  ASSERT_EQ(recorder_.answers.size(), 2u);
  EXPECT_FALSE(recorder_.answers[1].result.allowed);
  EXPECT_EQ(recorder_.answers[1].result.retry_after_ms, 900u) << "the rest of the window";
  const size_t takes = store_.take_count();
  for (int64_t at_ms : {101, 500, 999}) {
    clock_.SetMicros(at_ms * kMs);
    Check(3, 1, kTwo);
    ASSERT_FALSE(recorder_.answers.back().result.allowed);
    EXPECT_EQ(recorder_.answers.back().result.retry_after_ms, static_cast<uint32_t>(1000 - at_ms));
    EXPECT_EQ(recorder_.answers.back().result.source, Source::kLease);
  }
  EXPECT_EQ(store_.take_count(), takes) << "denials from the cache cost the database nothing";
  EXPECT_EQ(engine_.metrics().cache_denied.value(), 3u);

  clock_.SetMicros(1000 * kMs);
  Check(4, 1, kTwo);
  ASSERT_EQ(store_.take_count(), takes + 1) << "the next window, at its first moment";
  Decide(takes);
  EXPECT_TRUE(recorder_.answers.back().result.allowed);
}

// Three sidecars on one simulated table, fetches and returns decided after random delays, and
// random checks: every admission lies in one database window, and no window admits more than
// its limit across the three.
TEST(LeaseFixedWindowBound, ThreeSidecarsNeverAdmitMoreThanTheLimitInAnyWindow) {
  constexpr Policy kPolicy{100, 200};
  Rng rng(42);
  FakeClock clock(0);
  FakeStore store(1000);
  std::vector<std::unique_ptr<LeaseEngine>> engines;
  for (int i = 0; i < 3; ++i) {
    engines.push_back(
        std::make_unique<LeaseEngine>(store, clock, HashKey{1, 2}, WindowOptions(400, false)));
  }
  std::vector<Recorder> recorders(3);
  std::map<int64_t, uint32_t> admitted_by_window;  // Window start (database) -> admissions.
  size_t answered = 0;
  std::vector<size_t> answers_seen(3, 0);
  auto window_now = [&] {  // The window the table holds at the database's time now.
    const auto it = store.rows().find(kKey);
    return it == store.rows().end() ? int64_t{-1} : it->second.updated_us;
  };
  for (int step = 0; step < 20000; ++step) {
    clock.AdvanceMicros(static_cast<int64_t>(rng.UpTo(400)));
    const int64_t db_now = clock.NowMicros() + kDbOffsetUs;
    // Demand that comes and goes (checks only in the first 100 ms of each 300 ms), so that
    // leases landing after a busy spell are left unspent when their window ends.
    const bool busy = clock.NowMicros() % 300'000 < 100'000;
    if (!busy || rng.UpTo(1) == 0) {
      // A pending Take reaches the database now (its delay was the time it waited).
      for (size_t i = answered; i < store.take_count(); ++i) {
        if (!store.answered(i)) {
          store.Decide(i, db_now);
          break;
        }
      }
      while (answered < store.take_count() && store.answered(answered)) ++answered;
    } else {
      const size_t e = rng.UpTo(2);
      engines[e]->Check(CheckQuery{kKey, 1, kPolicy}, static_cast<uint64_t>(step), recorders[e]);
    }
    for (auto& engine : engines) engine->Tick();
    // An admission answered now spends a lease of the window the table holds, or of one that
    // ended no more than its lease could outlive... which is none: attribute it to the window
    // of the database's time now, which must then be the table's.
    for (size_t e = 0; e < 3; ++e) {
      for (; answers_seen[e] < recorders[e].answers.size(); ++answers_seen[e]) {
        if (!recorders[e].answers[answers_seen[e]].result.allowed) continue;
        const int64_t start = window_now();
        ASSERT_GE(start, 0);
        ASSERT_LT(db_now, start + int64_t{kPolicy.window_ms} * 1000)
            << "an admission after its window ended, step " << step;
        ++admitted_by_window[start];
      }
    }
  }
  ASSERT_GE(admitted_by_window.size(), 10u);
  for (const auto& [start, admitted] : admitted_by_window) {
    EXPECT_LE(admitted, kPolicy.limit) << "window starting at " << start;
  }
}

}  // namespace
}  // namespace ratelimit
