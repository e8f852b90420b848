// A sidecar stopped (SIGSTOP) while its transaction holds a hot row: the server ends the
// transaction, the others decide by the database again within the stated bound, and the stopped
// one, continued, reconnects and admits nothing beyond the bucket's bound.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "tests/testing/check_load.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::ConnectToTestDatabase;
using pg_test::NowNs;
using pg_test::QueryValue;
using pg_test::WaitUntil;

constexpr int kSidecars = 3;
constexpr int kStopped = 0;  // The sidecar that stalls.
constexpr uint32_t kLimit = 50;
constexpr uint32_t kWindowMs = 1000;
// RATE_LIMIT_PG_TIMEOUT_MS and RATE_LIMIT_LEASE_TTL_MS are left at their defaults: the README
// states the bound for them.
constexpr int64_t kDefaultPgTimeoutMs = 250;
constexpr int64_t kDefaultLeaseTtlMs = 1000;
// The README's "a stuck pod delays a key for at most 2 * RATE_LIMIT_PG_TIMEOUT_MS + 1 s".
constexpr int64_t kStatedBoundMs = 2 * kDefaultPgTimeoutMs + 1000;
constexpr int kStallMs = 3000;  // Twice the bound: without a server-side end, all of it.
constexpr int kWarmUpMs = 1000;
constexpr int64_t kCatchMs = 15000;
constexpr int64_t kRecoveryWaitMs = 6000;  // For the continued one: reconnecting included.
constexpr int64_t kStableMs = 500;

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

bool IsFallback(const LoadAnswer& a) { return !a.answered || a.result.source == Source::kFallback; }

// The end of the last answer of `target` started at or after `since_ns` that the database did not
// decide (a fallback, or none at all); `since_ns` when there is none.
int64_t LastUndecidedEndNs(const std::vector<LoadAnswer>& answers, int target, int64_t since_ns) {
  int64_t last = since_ns;
  for (const LoadAnswer& a : answers) {
    if (a.target == target && a.start_ns >= since_ns && IsFallback(a)) {
      last = std::max(last, a.end_ns);
    }
  }
  return last;
}

size_t DecidedBetween(const std::vector<LoadAnswer>& answers, int target, int64_t from_ns,
                      int64_t to_ns) {
  return static_cast<size_t>(std::count_if(answers.begin(), answers.end(), [&](const auto& a) {
    return a.target == target && a.start_ns >= from_ns && a.end_ns <= to_ns && !IsFallback(a);
  }));
}

class StalledHolder : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    REQUIRE_TEST_DATABASE();
    static int serial = 0;
    table_ = "t_stall_" + std::to_string(++serial) + "_" + mode();
    app_ = "stall_" + std::to_string(serial) + "_" + mode();
    pg_test::DropTable(table_);
    for (int i = 0; i < kSidecars; ++i) {
      sidecars_.push_back(pg_test::StartReadySidecar(
          Env{{"RATE_LIMIT_STORE", "postgres"},
              {"RATE_LIMIT_MODE", mode()},
              {"RATE_LIMIT_FALLBACK", "deny"},  // Every admission is the database's.
              {"RATE_LIMIT_EXPECTED_REPLICAS", std::to_string(kSidecars)},
              {"RATE_LIMIT_PG_TABLE", table_},
              {"DATABASE_URL", TestDatabaseUrl() + " application_name=" + App(i)}}));
      ASSERT_NE(sidecars_.back(), nullptr);
    }
    conn_ = ConnectToTestDatabase();
    ASSERT_EQ(PQstatus(conn_.get()), CONNECTION_OK) << PQerrorMessage(conn_.get());
  }

  void TearDown() override {
    if (load_) load_->Stop();
    for (auto& s : sidecars_) {
      if (s) s->Signal(SIGCONT);
    }
  }

  std::string mode() const { return GetParam(); }
  std::string App(int i) const { return app_ + "_" + std::to_string(i); }

  void StartLoad() {
    std::vector<std::string> paths;
    for (const auto& s : sidecars_) paths.push_back(s->socket_path());
    load_ = std::make_unique<CheckLoad>(CheckLoadOptions{
        .socket_paths = paths,
        .threads_per_target = 2,
        .client_timeout_ms = 3000,
        .pause_us = 2000,
        .next = [](int, int, uint64_t) {
          return LoadRequest{.key = "hot", .limit = kLimit, .window_ms = kWindowMs};
        }});
  }

  // Sessions of sidecar `i` idle inside a transaction: between its two pipelines, the rows of
  // the first locked (every transaction here is of the hot key).
  int IdleInTransaction(int i) { return SessionsIn(i, "{idle in transaction}"); }

  // Sessions of sidecar `i` in one of `states` (an array literal).
  int SessionsIn(int i, const std::string& states) {
    const std::string n = QueryValue(conn_.get(),
                                     "SELECT count(*) FROM pg_stat_activity WHERE "
                                     "application_name = $1 AND state = ANY($2::text[])",
                                     {App(i), states});
    return n.starts_with("ERROR") ? -1 : std::stoi(n);
  }

  // Every session of the sidecars: what each is doing, for the record.
  std::string Sessions() {
    return QueryValue(conn_.get(),
                      "SELECT string_agg(application_name || ' ' || coalesce(state, '') || ' ' || "
                      "coalesce(wait_event, '') || ' ' || left(query, 30), E'\n') "
                      "FROM pg_stat_activity WHERE application_name LIKE $1",
                      {app_ + "_%"});
  }

  // Stops the sidecar at a moment one of its transactions holds the hot row: as soon as the
  // server shows one of its sessions in a statement or idle in a transaction, then makes sure
  // one is idle in a transaction (the sidecar may have sent its second pipeline meanwhile; then
  // SIGCONT and watch again). The time of the SIGSTOP that caught it; 0 when none did within
  // kCatchMs.
  int64_t StopWhileHoldingTheRow() {
    const int64_t give_up_ns = NowNs() + kCatchMs * 1'000'000LL;
    for (int attempt = 1; NowNs() < give_up_ns;) {
      if (SessionsIn(kStopped, "{active,idle in transaction}") <= 0) continue;
      const int64_t stopped_ns = NowNs();
      sidecars_[kStopped]->Signal(SIGSTOP);
      // A pipeline the server was still running when the client stopped ends idle as well.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (IdleInTransaction(kStopped) > 0) {
        std::printf("stopped holding the row at attempt %d\n", attempt);
        return stopped_ns;
      }
      sidecars_[kStopped]->Signal(SIGCONT);
      ++attempt;
    }
    return 0;
  }

  void ExpectNoWindowOverTheBound(const std::vector<LoadAnswer>& answers) {
    std::vector<int64_t> received;
    int64_t slowest_ns = 0;
    for (const LoadAnswer& a : answers) {
      if (!a.answered || !a.result.allowed) continue;
      EXPECT_NE(a.result.source, Source::kFallback) << "the deny fallback admitted";
      received.push_back(a.end_ns);
      slowest_ns = std::max(slowest_ns, a.end_ns - a.start_ns);
    }
    std::sort(received.begin(), received.end());
    ASSERT_FALSE(received.empty());
    // An admission received in [t, t + T] was decided in [t - slowest, t + T].
    const int64_t ttl_ns = mode() == "lease" ? kDefaultLeaseTtlMs * 1'000'000 : 0;
    const double per_ns = static_cast<double>(kLimit) / (kWindowMs * 1e6);
    for (const int64_t length_ms : {100, 1000, 2000, 5000, 20000}) {
      const int64_t length = length_ms * 1'000'000;
      const size_t most = MaxInAnyInterval(received, length);
      const double bound = kLimit + per_ns * static_cast<double>(length + slowest_ns + ttl_ns);
      std::printf("any %5lld ms: at most %4zu admitted, bound %7.1f (%5.1f%%)\n",
                  static_cast<long long>(length_ms), most, bound, 100 * most / bound);
      EXPECT_LE(static_cast<double>(most), bound) << "in " << length_ms << " ms";
    }
  }

  std::string table_;
  std::string app_;
  std::vector<std::unique_ptr<SidecarProcess>> sidecars_;
  std::unique_ptr<CheckLoad> load_;
  PgConnPtr conn_;
};

// Stopped holding the row for 3 s: the server releases it, the others decide again within the
// bound, the continued one recovers, and no interval admits more than the bucket allows.
TEST_P(StalledHolder, TheOthersDecideAgainWithinTheBoundAndTheStoppedOneRecovers) {
  StartLoad();
  std::this_thread::sleep_for(std::chrono::milliseconds(kWarmUpMs));
  const int64_t stopped_ns = StopWhileHoldingTheRow();
  ASSERT_NE(stopped_ns, 0) << "never stopped while holding the row";
  // The server ends the stalled transaction (the session with it) after the idle timeout.
  EXPECT_TRUE(WaitUntil([&] { return IdleInTransaction(kStopped) == 0; }, kStallMs / 2));
  std::printf("row released by the server %.0f ms after the stop\n", Ms(NowNs() - stopped_ns));
  std::this_thread::sleep_for(
      std::chrono::nanoseconds(stopped_ns + kStallMs * 1'000'000LL - NowNs()));
  std::printf("sessions just before the SIGCONT:\n%s\n", Sessions().c_str());
  const int64_t continued_ns = NowNs();
  sidecars_[kStopped]->Signal(SIGCONT);
  // The continued one reconnects and decides by the database again, for kStableMs.
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::vector<LoadAnswer> a = load_->Snapshot();
        const int64_t last = LastUndecidedEndNs(a, kStopped, continued_ns);
        return NowNs() - last > kStableMs * 1'000'000 &&
               DecidedBetween(a, kStopped, last, NowNs()) > 0;
      },
      kRecoveryWaitMs))
      << "the continued sidecar does not decide by the database again; stderr:\n"
      << sidecars_[kStopped]->Stderr();
  load_->Stop();
  const std::vector<LoadAnswer> answers = load_->Snapshot();
  std::printf("continued one: decided by the database again %.0f ms after SIGCONT\n",
              Ms(LastUndecidedEndNs(answers, kStopped, continued_ns) - continued_ns));

  for (int target = 0; target < kSidecars; ++target) {
    if (target == kStopped) continue;
    SCOPED_TRACE("sidecar " + std::to_string(target));
    const int64_t last = LastUndecidedEndNs(answers, target, stopped_ns);
    std::printf("sidecar %d: decided by the database again %.0f ms after the stop (bound %lld)\n",
                target, Ms(last - stopped_ns), static_cast<long long>(kStatedBoundMs));
    EXPECT_LE(Ms(last - stopped_ns), kStatedBoundMs) << sidecars_[target]->Stderr();
    EXPECT_GT(DecidedBetween(answers, target, last, continued_ns), 0u)
        << "no check decided by the database between then and the SIGCONT";
  }
  ExpectNoWindowOverTheBound(answers);
  for (auto& s : sidecars_) EXPECT_EQ(s->WaitExit(0), -1) << "a sidecar exited: " << s->Stderr();
  for (auto& s : sidecars_) s->Signal(SIGTERM);
  for (auto& s : sidecars_) EXPECT_EQ(s->WaitExit(10000), 0) << s->Stderr();
}

INSTANTIATE_TEST_SUITE_P(Modes, StalledHolder, testing::Values("strict", "lease"),
                         [](const testing::TestParamInfo<std::string>& mode) {
                           return mode.param;
                         });

}  // namespace
}  // namespace ratelimit
