// Tests of the LeaseEngine under a flood of keys: its bounded table, and new keys in a flood.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sidecar/core/lease_engine.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_store.h"
#include "tests/testing/recorder.h"

namespace ratelimit {
namespace {

using Kind = StoreOp::Kind;

constexpr uint32_t kTtlMs = 1000;
constexpr Policy kPolicy{1000, 1000};

class LeaseEvictionTest : public testing::Test {
 protected:
  explicit LeaseEvictionTest(size_t max_keys = 4, size_t max_key_bytes = 4 * 64,
                             uint32_t new_keys_per_sec = 0)
      : engine_(store_, clock_, HashKey{1, 2},
                LeaseOptions{.ttl_ms = kTtlMs,
                             .jitter_denials = false,
                             .max_keys = max_keys,
                             .max_key_bytes = max_key_bytes,
                             .new_keys_per_sec = new_keys_per_sec}) {}

  void Check(const std::string& key, uint64_t tag = 1) {
    engine_.Check(CheckQuery{key, 1, kPolicy}, tag, recorder_);
  }

  // Answers every pending Take as the database would now.
  void DecideAll() {
    for (size_t i = 0; i < store_.take_count(); ++i) {
      if (!store_.answered(i)) store_.Decide(i, clock_.NowMicros());
    }
  }

  // Brings `key` to holding a lease with tokens left over (a second fetch is sized by demand).
  void Warm(const std::string& key) {
    Check(key);
    DecideAll();
    clock_.AdvanceMillis(10);
    Check(key);
    DecideAll();
  }

  // The operations of `kind` on `key` sent so far.
  std::vector<StoreOp> Ops(Kind kind, const std::string& key) const {
    std::vector<StoreOp> out;
    for (size_t i = 0; i < store_.take_count(); ++i) {
      for (const StoreOp& op : store_.batch(i)) {
        if (op.kind == kind && op.key == key) out.push_back(op);
      }
    }
    return out;
  }

  FakeClock clock_;
  FakeStore store_{16};
  LeaseEngine engine_;
  Recorder recorder_;
};

TEST_F(LeaseEvictionTest, AFullTableEvictsTheLeastRecentlyAskedKeyAndGivesItsLeasesBack) {
  EXPECT_EQ(engine_.metrics().max_keys.value(), 4);
  for (const std::string key : {"a", "b", "c", "d"}) {
    Warm(key);
    clock_.AdvanceMillis(1);
  }
  ASSERT_EQ(engine_.key_count(), 4u);
  ASSERT_TRUE(Ops(Kind::kReturn, "a").empty());

  Check("e");
  EXPECT_EQ(engine_.key_count(), 4u);
  EXPECT_EQ(engine_.metrics().evictions.value(), 1u);
  const std::vector<StoreOp> returned = Ops(Kind::kReturn, "a");
  ASSERT_EQ(returned.size(), 1u) << "the oldest key's lease goes back, as on expiry";
  EXPECT_GT(returned[0].cost, 0u);
  for (const std::string key : {"b", "c", "d"}) EXPECT_TRUE(Ops(Kind::kReturn, key).empty());
  EXPECT_EQ(Ops(Kind::kLease, "e").size(), 1u) << "the new key leases as usual";
}

// A key waiting for its fetch cannot go; when every key is waiting, the new key's check is
// decided by the store alone (as strict mode would) and leaves no state.
TEST_F(LeaseEvictionTest, KeysWaitingForAFetchStayAndANewKeyIsThenDecidedInTheStore) {
  for (const std::string key : {"a", "b", "c", "d"}) Check(key);  // Four fetches in flight.
  ASSERT_EQ(engine_.key_count(), 4u);
  Check("e", 5);
  EXPECT_EQ(engine_.key_count(), 4u);
  EXPECT_EQ(engine_.metrics().evictions.value(), 0u);
  const std::vector<StoreOp> checks = Ops(Kind::kCheck, "e");
  ASSERT_EQ(checks.size(), 1u);
  EXPECT_TRUE(Ops(Kind::kLease, "e").empty());
  DecideAll();
  ASSERT_EQ(recorder_.answers.size(), 5u);
  for (const Recorder::Answer& answer : recorder_.answers) {
    EXPECT_TRUE(answer.result.allowed);
    EXPECT_EQ(answer.result.source, answer.tag == 5 ? Source::kDatabase : Source::kLease);
  }
}

class LeaseKeyBytesTest : public LeaseEvictionTest {
 protected:
  LeaseKeyBytesTest() : LeaseEvictionTest(100, 1000) {}
};

// Key text is what a lease key's memory grows with: long keys mean fewer keys held.
TEST_F(LeaseKeyBytesTest, KeyTextBeyondItsBudgetEvictsKeys) {
  for (char c = 'a'; c <= 'f'; ++c) {
    Warm(std::string(400, c));
    clock_.AdvanceMillis(1);
    EXPECT_LE(engine_.key_count(), 2u) << "2 x 400 bytes fit in 1000, 3 do not";
  }
  EXPECT_EQ(engine_.metrics().evictions.value(), 4u);
}

// A new key the store refused (past its bound for new rows, or down) holds nothing: it is
// forgotten at the next Tick instead of staying for a ttl.
TEST_F(LeaseEvictionTest, AKeyTheStoreRefusedIsForgottenAtTheNextTick) {
  Check("a");
  ASSERT_EQ(store_.take_count(), 1u);
  store_.Fail(0, Status::Unavailable("new key deferred"));
  ASSERT_EQ(recorder_.answers.size(), 1u);
  EXPECT_EQ(recorder_.answers[0].result.status, CheckStatus::kStoreUnavailable);
  EXPECT_EQ(engine_.key_count(), 1u);
  engine_.Tick();
  EXPECT_EQ(engine_.key_count(), 0u);
  EXPECT_EQ(engine_.metrics().keys.value(), 0);
}

class LeaseFloodTest : public LeaseEvictionTest {
 protected:
  LeaseFloodTest() : LeaseEvictionTest(1000, 1000 * 64, 10) {}

  size_t Takes(Kind kind) const {
    size_t n = 0;
    for (size_t i = 0; i < store_.take_count(); ++i) {
      for (const StoreOp& op : store_.batch(i)) n += op.kind == kind ? 1 : 0;
    }
    return n;
  }
};

// Once the store says it deferred a new key, every check of a key without state is answered at
// once (here without a fallback: StoreUnavailable), and at the store's rate of new rows such a
// key gets a lease fetched in the background for its next checks; for as long as new keys come
// faster than that rate.
TEST_F(LeaseFloodTest, DuringAFloodNewKeysAreAnsweredAtOnceAndLeasedForLaterAtTheStoresRate) {
  Warm("known");
  Check("first");
  const size_t fetch = store_.take_count() - 1;
  StoreAnswer deferred{Refusal(CheckStatus::kStoreUnavailable, kPolicy.limit, Source::kDatabase), 0,
                       clock_.NowMicros(), true};
  store_.Answer(fetch, std::vector<StoreAnswer>{deferred});
  recorder_.answers.clear();
  const size_t leases_before = Takes(Kind::kLease);

  for (int i = 0; i < 100; ++i) Check("flood-" + std::to_string(i), 100 + i);
  ASSERT_EQ(recorder_.answers.size(), 100u) << "answered at once, without the database";
  for (const Recorder::Answer& a : recorder_.answers) {
    EXPECT_EQ(a.result.status, CheckStatus::kStoreUnavailable);
  }
  EXPECT_EQ(engine_.metrics().new_keys_deferred.value(), 100u);
  EXPECT_EQ(Takes(Kind::kLease) - leases_before, 10u) << "ten a second, a burst of one second's";
  DecideAll();
  EXPECT_EQ(recorder_.answers.size(), 100u) << "the background fetches answer no check";
  Check("flood-3", 7);  // One of the ten: its next check is served from its lease.
  ASSERT_EQ(recorder_.answers.size(), 101u);
  EXPECT_TRUE(recorder_.answers.back().result.allowed);
  EXPECT_EQ(recorder_.answers.back().result.source, Source::kLease);
  Check("known", 8);  // A key with state is served as always.
  ASSERT_EQ(recorder_.answers.size(), 102u);
  EXPECT_EQ(recorder_.answers.back().result.source, Source::kLease);

  // New keys keep coming faster than ten a second: the flood goes on past its first second,
  // though the keys let through got rows, not deferrals.
  clock_.AdvanceMicros(LeaseEngine::kFloodHoldUs / 2);
  for (int i = 0; i < 20; ++i) Check("half-" + std::to_string(i));  // 5 leased for later.
  clock_.AdvanceMicros(LeaseEngine::kFloodHoldUs * 3 / 4);          // Past the first second.
  for (int i = 0; i < 20; ++i) Check("late-" + std::to_string(i));  // Still answered at once.
  EXPECT_EQ(engine_.metrics().new_keys_deferred.value(), 140u);
  EXPECT_EQ(recorder_.answers.size(), 142u);

  DecideAll();
  clock_.AdvanceMicros(LeaseEngine::kFloodHoldUs);  // None faster than the rate since: over.
  const size_t answered = recorder_.answers.size();
  for (int i = 100; i < 150; ++i) Check("flood-" + std::to_string(i));
  EXPECT_EQ(recorder_.answers.size(), answered) << "new keys wait for their lease again";
  DecideAll();  // Starts the fetches queued behind busy sessions too.
  EXPECT_EQ(recorder_.answers.size(), answered + 50);
  EXPECT_EQ(engine_.metrics().new_keys_deferred.value(), 140u);
}

// A flood's key leased in the background and checked again before its lease lands does not wait
// for the row insert either: it is answered at once, as a new key is, without a second fetch.
TEST_F(LeaseFloodTest, AFloodKeyCheckedAgainBeforeItsLeaseLandsIsAnsweredAtOnce) {
  Check("first");
  StoreAnswer deferred{Refusal(CheckStatus::kStoreUnavailable, kPolicy.limit, Source::kDatabase), 0,
                       clock_.NowMicros(), true};
  store_.Answer(store_.take_count() - 1, std::vector<StoreAnswer>{deferred});
  recorder_.answers.clear();
  const size_t leases_before = Takes(Kind::kLease);

  Check("flood-0", 1);  // Within the store's rate: a lease is fetched in the background.
  ASSERT_EQ(Takes(Kind::kLease) - leases_before, 1u);
  Check("flood-0", 2);
  ASSERT_EQ(recorder_.answers.size(), 2u) << "the second check does not wait for the fetch";
  EXPECT_EQ(recorder_.answers[1].result.status, CheckStatus::kStoreUnavailable);
  EXPECT_EQ(Takes(Kind::kLease) - leases_before, 1u) << "nor sends another";
  EXPECT_EQ(engine_.metrics().new_keys_deferred.value(), 2u);

  DecideAll();
  EXPECT_EQ(recorder_.answers.size(), 2u);
  Check("flood-0", 3);  // The lease landed: served from it.
  ASSERT_EQ(recorder_.answers.size(), 3u);
  EXPECT_TRUE(recorder_.answers.back().result.allowed);
  EXPECT_EQ(recorder_.answers.back().result.source, Source::kLease);
}

// A key whose first check was waiting for its lease when the flood began (a hot key new at the
// same moment, say) is not a flood's: its next checks wait for that lease too, and are decided
// by it, so its decisions stay the store's.
TEST_F(LeaseFloodTest, AKeyWaitingForItsLeaseWhenTheFloodBeginsKeepsWaitingForIt) {
  store_.set_slots(2);  // The flood's first key goes to the database beside the hot key's fetch.
  Check("hot", 1);      // Before any flood: waits for its lease.
  const size_t hot_fetch = store_.take_count() - 1;
  Check("first", 2);
  StoreAnswer deferred{Refusal(CheckStatus::kStoreUnavailable, kPolicy.limit, Source::kDatabase), 0,
                       clock_.NowMicros(), true};
  store_.Answer(store_.take_count() - 1, std::vector<StoreAnswer>{deferred});  // A flood is on.
  ASSERT_EQ(recorder_.answers.size(), 1u);
  Check("hot", 3);
  EXPECT_EQ(recorder_.answers.size(), 1u) << "waits with the first, for the same lease";
  store_.Decide(hot_fetch, clock_.NowMicros());
  DecideAll();  // What the lease did not cover is decided by the database, one by one.
  ASSERT_EQ(recorder_.answers.size(), 3u);
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_TRUE(recorder_.answers[i].result.allowed);
    EXPECT_NE(recorder_.answers[i].result.source, Source::kFallback);
  }
  EXPECT_EQ(engine_.metrics().new_keys_deferred.value(), 0u);
}

}  // namespace
}  // namespace ratelimit
