// SessionPool without PostgreSQL: backoff, deadlines, lending and the breaker, on fake sessions.
#include "sidecar/pg/session_pool.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "sidecar/core/circuit_breaker.h"
#include "tests/testing/fake_pool.h"
#include "tests/testing/stderr_capture.h"

namespace ratelimit {
namespace {

using SlotState = SessionPool::Slot::State;

TEST(SessionPoolBackoff, DoublesFrom100MsToAtMostOneSecond) {
  uint64_t backoff = 0;
  std::vector<uint64_t> steps;
  for (int i = 0; i < 6; ++i) steps.push_back(backoff = SessionPool::NextBackoffMs(backoff));
  EXPECT_EQ(steps, (std::vector<uint64_t>{100, 200, 400, 800, 1000, 1000}));
}

TEST(SessionPoolBackoff, JitterStaysWithinAQuarterEitherSide) {
  for (uint64_t backoff : {100u, 400u, 1000u}) {
    EXPECT_EQ(SessionPool::JitteredMs(backoff, 0), backoff * 3 / 4);
    EXPECT_EQ(SessionPool::JitteredMs(backoff, backoff / 2 - 1), backoff * 5 / 4 - 1);
    for (uint64_t random : {1u, 77u, 12345u, 0xffffffffu}) {
      const uint64_t ms = SessionPool::JitteredMs(backoff, random);
      EXPECT_GE(ms, backoff * 3 / 4);
      EXPECT_LT(ms, backoff * 5 / 4);
    }
  }
}

TEST(SessionPool, StartConnectsEverySessionAndLendsOnlyConnectedOnes) {
  FakePool fake(3);
  fake.pool().Start();
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(fake.session(i).connects(), 1);
  EXPECT_EQ(fake.pool().free_slots(), 0u);
  EXPECT_FALSE(fake.pool().serving());
  EXPECT_EQ(fake.pool().FreeSlot(SessionPool::End::kFirst), nullptr);

  fake.session(1).Connected();
  EXPECT_EQ(fake.connected(), 1);
  EXPECT_EQ(fake.pool().free_slots(), 1u);
  EXPECT_TRUE(fake.pool().serving());
  fake.session(0).Connected();
  fake.session(2).Connected();
  EXPECT_EQ(fake.pool().free_slots(), 3u);
  EXPECT_EQ(fake.capacity_calls(), 3);
}

TEST(SessionPool, TransactionsTakeTheFirstFreeSlotAndBackgroundWorkTheLast) {
  FakePool fake(3);
  fake.StartConnected();
  SessionPool::Slot* first = fake.pool().FreeSlot(SessionPool::End::kFirst);
  SessionPool::Slot* last = fake.pool().FreeSlot(SessionPool::End::kLast);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(&first->session(), &fake.session(0));
  EXPECT_EQ(&last->session(), &fake.session(2));

  fake.pool().Lend(*first, SessionPool::Work::kTransaction);
  EXPECT_EQ(first->state(), SlotState::kLent);
  EXPECT_EQ(fake.pool().free_slots(), 2u);
  EXPECT_EQ(&fake.pool().FreeSlot(SessionPool::End::kFirst)->session(), &fake.session(1));
  fake.pool().EndTransaction(*first, Status::Ok());
  fake.pool().Return(*first);
  EXPECT_TRUE(first->free());
  EXPECT_EQ(fake.pool().free_slots(), 3u);
}

TEST(SessionPool, ABrokenSessionReconnectsAfterItsBackoffAndLogsOncePerOutage) {
  StderrCapture capture;
  FakePool fake(1);
  fake.StartConnected();
  SessionPool::Slot* slot = fake.pool().FreeSlot(SessionPool::End::kFirst);
  fake.session(0).Break("server closed the connection unexpectedly");
  EXPECT_EQ(slot->state(), SlotState::kDown);
  EXPECT_FALSE(fake.pool().serving());
  EXPECT_EQ(fake.pool().free_slots(), 0u);

  // Two attempts that fail, then one that succeeds: each after a backoff, the outage logged
  // when it began and when it ended, not once per attempt.
  for (int attempt = 2; attempt <= 3; ++attempt) {
    ASSERT_TRUE(fake.RunUntil([&] { return fake.session(0).connects() == attempt; }));
    EXPECT_EQ(slot->state(), SlotState::kReconnecting);
    if (attempt < 3) fake.session(0).Break("connection refused");
  }
  fake.session(0).Connected();
  EXPECT_TRUE(slot->free());
  EXPECT_TRUE(fake.pool().serving());
  EXPECT_EQ(fake.connected(), 2);
  const std::string log = capture.Text();
  EXPECT_EQ(capture.Count("database connection failed"), 1u) << log;
  EXPECT_EQ(capture.Count("server closed the connection unexpectedly"), 1u) << log;
  EXPECT_EQ(capture.Count("database connection restored"), 1u) << log;
}

TEST(SessionPool, ATransactionNotAnsweredWithinTheTimeoutAbandonsItsSession) {
  FakePool fake(1, /*timeout_ms=*/20);
  fake.StartConnected();
  SessionPool::Slot* slot = fake.pool().FreeSlot(SessionPool::End::kFirst);
  fake.pool().Lend(*slot, SessionPool::Work::kTransaction);
  Status failed;
  slot->session().Run({{"BEGIN", {}}}, [&](Result<std::vector<PgResultPtr>> r) {
    failed = r.status();
    fake.pool().Return(*slot);
  });
  ASSERT_TRUE(fake.RunUntil([&] { return fake.session(0).abandons() == 1; }));
  EXPECT_EQ(failed.code(), Status::Code::kUnavailable);
  EXPECT_NE(failed.message().find("no answer within 20 ms"), std::string::npos) << failed.message();
  EXPECT_EQ(slot->state(), SlotState::kDown) << "a slot whose session broke stays down on Return";
}

TEST(SessionPool, WorkReturnedInTimeKeepsItsSession) {
  FakePool fake(1, /*timeout_ms=*/20);
  fake.StartConnected();
  SessionPool::Slot* slot = fake.pool().FreeSlot(SessionPool::End::kFirst);
  fake.pool().Lend(*slot, SessionPool::Work::kTransaction);
  fake.pool().EndTransaction(*slot, Status::Ok());
  fake.pool().Return(*slot);
  // Well past the deadline it would have had.
  const auto later = std::chrono::steady_clock::now() + std::chrono::milliseconds(60);
  ASSERT_TRUE(fake.RunUntil([&] { return std::chrono::steady_clock::now() > later; }));
  EXPECT_EQ(fake.session(0).abandons(), 0);
  EXPECT_TRUE(slot->free());
}

TEST(SessionPool, BreakerOpensAfterFailedTransactionsAndOneProbeClosesIt) {
  StderrCapture capture;
  FakePool fake(2);
  fake.StartConnected();
  for (uint32_t i = 0; i < CircuitBreaker::kFailureThreshold; ++i) {
    ASSERT_GT(fake.pool().free_slots(), 0u);
    SessionPool::Slot* slot = fake.pool().FreeSlot(SessionPool::End::kFirst);
    fake.pool().Lend(*slot, SessionPool::Work::kTransaction);
    fake.pool().EndTransaction(*slot, Status::IoError("canceling statement due to lock timeout"));
    fake.pool().Return(*slot);
  }
  // Open: both sessions are free and connected, yet no transaction may start.
  EXPECT_EQ(fake.pool().breaker().state(), CircuitBreaker::State::kOpen);
  EXPECT_EQ(fake.pool().free_slots(), 0u);
  EXPECT_FALSE(fake.pool().serving());

  // After the open period: one probe, and nothing beside it.
  ASSERT_TRUE(fake.RunUntil([&] { return fake.pool().free_slots() == 1; }));
  SessionPool::Slot* probe = fake.pool().FreeSlot(SessionPool::End::kFirst);
  fake.pool().Lend(*probe, SessionPool::Work::kTransaction);
  EXPECT_EQ(fake.pool().breaker().state(), CircuitBreaker::State::kHalfOpen);
  EXPECT_EQ(fake.pool().free_slots(), 0u);
  fake.pool().EndTransaction(*probe, Status::Ok());
  fake.pool().Return(*probe);
  EXPECT_EQ(fake.pool().free_slots(), 2u);
  EXPECT_TRUE(fake.pool().serving());

  const std::string log = capture.Text();
  EXPECT_EQ(capture.Count("circuit breaker open"), 1u) << log;
  EXPECT_EQ(capture.Count("database transactions failing"), 1u) << log;
  EXPECT_EQ(capture.Count("database transactions succeed again"), 1u) << log;
}

TEST(SessionPool, RetryAfterBackoffRunsOnItsSlotAndAReconnectReplacesIt) {
  FakePool fake(2);
  fake.StartConnected();
  SessionPool::Slot* slot = fake.pool().FreeSlot(SessionPool::End::kFirst);
  int retries = 0;
  fake.pool().RetryAfterBackoff(*slot, [&](SessionPool::Slot& s) {
    EXPECT_EQ(&s, slot);
    ++retries;
  });
  ASSERT_TRUE(fake.RunUntil([&] { return retries == 1; }));

  // The slot's one timer: a reconnect scheduled after the retry runs instead of it.
  fake.pool().RetryAfterBackoff(*slot, [&](SessionPool::Slot&) { ++retries; });
  fake.session(0).Break("gone");
  ASSERT_TRUE(fake.RunUntil([&] { return fake.session(0).connects() == 2; }));
  EXPECT_EQ(retries, 1);
}

TEST(SessionPool, SqlStateReadOnlySaysTheServerTakesNoWrites) {
  EXPECT_TRUE(SessionPool::ServerReadOnly("25006"));
  for (const char* other : {"", "42P01", "25P02", "40001", "57P01"}) {
    EXPECT_FALSE(SessionPool::ServerReadOnly(other)) << other;
  }
}

// Fails the pipeline of `slot`, lent for `work`, with `sqlstate`, then ends the lend as its
// borrower would: a transaction is counted before its Return.
void FailLend(FakePool& fake, SessionPool::Slot& slot, SessionPool::Work work,
              const std::string& sqlstate) {
  fake.pool().Lend(slot, work);
  Status failed;
  slot.session().Run({{"INSERT", {}}},
                     [&](Result<std::vector<PgResultPtr>> r) { failed = r.status(); });
  static_cast<FakeDbSession&>(slot.session()).FailStatement("statement failed", sqlstate);
  if (work == SessionPool::Work::kTransaction) fake.pool().EndTransaction(slot, failed);
  fake.pool().Return(slot);
}

TEST(SessionPool, AReadOnlyServerLosesItsSessionsWhichReconnectAndItIsLoggedOnce) {
  StderrCapture capture;
  FakePool fake(2);
  fake.StartConnected();
  SessionPool::Slot* first = fake.pool().FreeSlot(SessionPool::End::kFirst);
  SessionPool::Slot* last = fake.pool().FreeSlot(SessionPool::End::kLast);

  // A transaction and background work refused as writes on a read-only server: both sessions
  // are dropped, not kept for the next piece of work.
  FailLend(fake, *first, SessionPool::Work::kTransaction, "25006");
  EXPECT_EQ(fake.session(0).abandons(), 1);
  EXPECT_EQ(first->state(), SlotState::kDown);
  FailLend(fake, *last, SessionPool::Work::kBackground, "25006");
  EXPECT_EQ(fake.session(1).abandons(), 1);
  EXPECT_EQ(last->state(), SlotState::kDown);
  EXPECT_FALSE(fake.pool().serving());

  // Each reconnects after its backoff, and landing on a read-only server again drops it again,
  // without another line.
  ASSERT_TRUE(fake.RunUntil([&] { return fake.session(0).connects() == 2; }));
  fake.session(0).Connected();
  ASSERT_TRUE(first->free());
  FailLend(fake, *first, SessionPool::Work::kTransaction, "25006");
  EXPECT_EQ(fake.session(0).abandons(), 2);
  EXPECT_EQ(capture.Count("the database server is read-only"), 1u) << capture.Text();
  EXPECT_EQ(capture.Count("target_session_attrs=read-write"), 1u) << capture.Text();

  // Any other statement failure keeps the session.
  ASSERT_TRUE(fake.RunUntil([&] { return fake.session(0).connects() == 3; }));
  fake.session(0).Connected();
  FailLend(fake, *first, SessionPool::Work::kTransaction, "42P01");
  FailLend(fake, *first, SessionPool::Work::kBackground, "42P01");
  EXPECT_EQ(fake.session(0).abandons(), 2);
  EXPECT_TRUE(first->free());

  // After a success, a read-only server is news again.
  fake.pool().Lend(*first, SessionPool::Work::kTransaction);
  fake.pool().EndTransaction(*first, Status::Ok());
  fake.pool().Return(*first);
  FailLend(fake, *first, SessionPool::Work::kTransaction, "25006");
  EXPECT_EQ(capture.Count("the database server is read-only"), 2u) << capture.Text();
}

TEST(SessionPool, ShutdownFailsWorkInFlightAndClosesEverything) {
  auto fake = std::make_unique<FakePool>(2);
  fake->StartConnected();
  SessionPool::Slot* slot = fake->pool().FreeSlot(SessionPool::End::kFirst);
  fake->pool().Lend(*slot, SessionPool::Work::kTransaction);
  Status status;
  slot->session().Run({{"BEGIN", {}}}, [&](Result<std::vector<PgResultPtr>> r) {
    status = r.status();
    fake->pool().Return(*slot);
  });
  fake->pool().Shutdown([] {});
  EXPECT_EQ(status.code(), Status::Code::kUnavailable);
  EXPECT_EQ(fake->session(0).state(), DbSession::State::kClosed);
  EXPECT_EQ(fake->session(1).state(), DbSession::State::kClosed);
  EXPECT_EQ(fake->pool().free_slots(), 0u);
  EXPECT_FALSE(fake->pool().serving());
  EXPECT_EQ(slot->state(), SlotState::kClosed);
  fake.reset();  // Runs the loop: every timer is released, or uv_loop_close fails.
}

}  // namespace
}  // namespace ratelimit
