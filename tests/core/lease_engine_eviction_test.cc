// Tests of the LeaseEngine's bounded key table: eviction gives leases back, busy keys stay.
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
  explicit LeaseEvictionTest(size_t max_keys = 4, size_t max_key_bytes = 4 * 64)
      : engine_(store_, clock_, HashKey{1, 2},
                LeaseOptions{.ttl_ms = kTtlMs,
                             .jitter_denials = false,
                             .max_keys = max_keys,
                             .max_key_bytes = max_key_bytes}) {}

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

}  // namespace
}  // namespace ratelimit
