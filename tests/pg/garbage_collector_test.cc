// GarbageCollector without PostgreSQL: when it collects, on which session, and what it sends.
#include "sidecar/pg/garbage_collector.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "tests/testing/fake_pool.h"

namespace ratelimit {
namespace {

using State = GarbageCollector::State;

class GarbageCollectorTest : public testing::Test {
 protected:
  GarbageCollectorTest()
      : gc_(
            fake_.loop(), fake_.pool(), "\"t\"", collected_, [this] { return table_ready_; },
            [this] { ++capacity_calls_; }) {
    fake_.StartConnected();
    gc_.Start();
  }
  void TearDown() override {
    bool closed = false;
    gc_.Close([&closed] { closed = true; });
    fake_.pool().Shutdown([] {});
    EXPECT_TRUE(fake_.RunUntil([&] { return closed; }));
  }

  // Both sessions busy with checks, as under load; the first, then the second.
  std::pair<SessionPool::Slot*, SessionPool::Slot*> LendBothToTransactions() {
    SessionPool::Slot* a = fake_.pool().FreeSlot(SessionPool::End::kFirst);
    fake_.pool().Lend(*a, SessionPool::Work::kTransaction);
    SessionPool::Slot* b = fake_.pool().FreeSlot(SessionPool::End::kFirst);
    fake_.pool().Lend(*b, SessionPool::Work::kTransaction);
    return {a, b};
  }

  bool NothingSent() { return fake_.session(0).runs().empty() && fake_.session(1).runs().empty(); }

  FakePool fake_{2};
  Counter collected_;
  bool table_ready_ = true;
  int capacity_calls_ = 0;
  GarbageCollector gc_;
};

TEST_F(GarbageCollectorTest, DeletesFullRowsOnTheLastFreeSessionAndGivesItBack) {
  gc_.Collect();
  EXPECT_TRUE(fake_.session(0).runs().empty()) << "the first session is the checks'";
  ASSERT_EQ(fake_.session(1).runs().size(), 1u);
  const PgQuery& query = fake_.session(1).runs()[0][0];
  EXPECT_EQ(query.sql, GarbageCollector::DeleteQuery("\"t\"").sql);
  EXPECT_NE(query.sql.find("DELETE FROM \"t\""), std::string::npos);
  EXPECT_NE(query.sql.find("LIMIT 500 FOR UPDATE SKIP LOCKED"), std::string::npos);
  EXPECT_EQ(gc_.state(), State::kCollecting);
  EXPECT_EQ(fake_.pool().free_slots(), 1u);

  gc_.Collect();  // One collection at a time.
  EXPECT_EQ(fake_.session(0).runs().size() + fake_.session(1).runs().size(), 1u);

  fake_.session(1).Answer(CommandResults(1));
  EXPECT_EQ(gc_.state(), State::kWaiting);
  EXPECT_EQ(fake_.pool().free_slots(), 2u);
  EXPECT_EQ(capacity_calls_, 1) << "checks waiting for a session are told";
}

TEST_F(GarbageCollectorTest, WaitsWhileTheTableIsNotReady) {
  table_ready_ = false;
  gc_.Collect();
  EXPECT_TRUE(NothingSent());
  EXPECT_EQ(gc_.state(), State::kWaiting);
}

TEST_F(GarbageCollectorTest, EverySessionBusyMakesItDueAndItTakesTheNextSessionGivenBack) {
  SessionPool& pool = fake_.pool();
  auto [a, b] = LendBothToTransactions();
  gc_.Collect();  // The tick: nothing free.
  EXPECT_TRUE(NothingSent());
  EXPECT_EQ(gc_.state(), State::kDue);

  pool.Return(*a);  // A transaction ends on the first session...
  gc_.OnSessionReturned(*a);
  ASSERT_EQ(fake_.session(0).runs().size(), 1u) << "...and collection takes it before checks";
  EXPECT_EQ(fake_.session(0).runs()[0][0].sql, GarbageCollector::DeleteQuery("\"t\"").sql);
  EXPECT_EQ(gc_.state(), State::kCollecting);
  EXPECT_EQ(pool.free_slots(), 0u);

  pool.Return(*b);  // One collection at a time: the other session stays the checks'.
  gc_.OnSessionReturned(*b);
  EXPECT_TRUE(fake_.session(1).runs().empty());
  EXPECT_EQ(pool.free_slots(), 1u);

  fake_.session(0).Answer(CommandResults(1));  // Fewer rows than a batch: not due any more.
  EXPECT_EQ(gc_.state(), State::kWaiting);
  EXPECT_EQ(pool.free_slots(), 2u);
  EXPECT_EQ(capacity_calls_, 1);
}

TEST_F(GarbageCollectorTest, ASessionGivenBackIsLeftToChecksUnlessCollectionIsDue) {
  SessionPool& pool = fake_.pool();
  SessionPool::Slot* a = pool.FreeSlot(SessionPool::End::kFirst);
  pool.Lend(*a, SessionPool::Work::kTransaction);
  pool.Return(*a);
  gc_.OnSessionReturned(*a);
  EXPECT_TRUE(NothingSent());
  EXPECT_EQ(gc_.state(), State::kWaiting);
}

TEST_F(GarbageCollectorTest, ADueCollectionWaitsForTheTableToBeReady) {
  SessionPool& pool = fake_.pool();
  auto [a, b] = LendBothToTransactions();
  gc_.Collect();
  ASSERT_EQ(gc_.state(), State::kDue);
  table_ready_ = false;
  pool.Return(*a);
  gc_.OnSessionReturned(*a);
  EXPECT_TRUE(fake_.session(0).runs().empty());
  pool.Return(*b);
}

TEST(GarbageCollectorQuery, TakesFullRowsUntouchedForTheirWindowUpTo30SecondsAndAtLeastOne) {
  const std::string sql = GarbageCollector::DeleteQuery("\"t\"").sql;
  EXPECT_NE(sql.find("updated_at <= clock_timestamp()"
                     "   - greatest(least(window_ms, 30000), 1000) * interval '1 millisecond'"),
            std::string::npos)
      << sql;
}

TEST_F(GarbageCollectorTest, AFailedCollectionGivesTheSessionBackAndWaitsForTheNextTick) {
  gc_.Collect();
  fake_.session(1).FailStatement("canceling statement due to statement timeout", "57014");
  EXPECT_EQ(gc_.state(), State::kWaiting);
  EXPECT_EQ(fake_.pool().free_slots(), 2u);
  EXPECT_EQ(collected_.value(), 0u);
}

}  // namespace
}  // namespace ratelimit
