// Standby failover under load: a multi-host URL finds the promoted standby, synchronous
// replication loses no debit, asynchronous loses a bounded few, a read-only server gets no write.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sidecar/core/lease_plan.h"
#include "tests/testing/check_load.h"
#include "tests/testing/pg_replication.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::LinesContaining;
using pg_test::NowNs;
using pg_test::QueryValue;

// Sidecar 0 is in strict mode and is given the keyword/value URL; 1 and 2 are in lease mode and
// are given the URI form. All list both servers, node 0 first, with
// target_session_attrs=read-write.
constexpr int kSidecars = 3;  // = RATE_LIMIT_EXPECTED_REPLICAS.
constexpr int kSessions = 2;  // RATE_LIMIT_PG_CONNECTIONS's default.
constexpr int kThreadsPerSidecar = 2;
// Commits wait for the standby's flush, on two cores and a disk shared with the builds: room
// for them. The switch does not wait for it: the dead primary's sessions break at once.
constexpr int kPgTimeoutMs = 2000;
constexpr int kClientTimeoutMs = 5000;
constexpr int kLoadPauseUs = 1000;
constexpr int kLeaseTtlMs = 500;
constexpr int kWarmUpMs = 1000;
// The bound: every sidecar decides by the database again this soon after the promotion.
constexpr int64_t kRecoveryBoundMs = 2000;
constexpr int64_t kRecoveryWaitMs = 6000;
constexpr int64_t kStableMs = 300;
// How long the asynchronous standby receives nothing before the primary dies: the lag whose
// debits are lost.
constexpr int kLagMs = 500;
// How long the load goes on once the old primary is back as a standby.
constexpr int kAfterRejoinMs = 1000;

// Every other check is of one hot key, scarce; the others are fresh keys, which need the
// database in either mode, so they show whether a sidecar decides by the database.
constexpr int kHot = 0;
constexpr int kFresh = 1;
constexpr uint32_t kHotLimit = 30;
constexpr uint32_t kHotWindowMs = 3000;  // 10 tokens a second.
constexpr uint32_t kFreshLimit = 1000;
constexpr uint32_t kFreshWindowMs = 60000;
const char kHotKey[] = "hot";
const char kTable[] = "t_failover";

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

bool IsLease(int target) { return target != 0; }
Source Decided(int target) { return IsLease(target) ? Source::kLease : Source::kDatabase; }
std::string App(int target) { return "failover_s" + std::to_string(target); }

// The multi-host URL of `target`: both nodes, node 0 first.
std::string Url(const ReplicatedPg& pg, int target) {
  const std::string p0 = std::to_string(pg.port(0)), p1 = std::to_string(pg.port(1));
  if (target == 0) {
    return "host=127.0.0.1,127.0.0.1 port=" + p0 + "," + p1 +
           " user=postgres dbname=postgres target_session_attrs=read-write application_name=" +
           App(target);
  }
  return "postgresql://127.0.0.1:" + p0 + ",127.0.0.1:" + p1 +
         "/postgres?user=postgres&target_session_attrs=read-write&application_name=" + App(target);
}

// A one-value query on a fresh connection; "ERROR ..." when it fails.
std::string Value(const std::string& conninfo, const std::string& sql) {
  PgConnPtr conn(PQconnectdb(conninfo.c_str()));
  if (PQstatus(conn.get()) != CONNECTION_OK)
    return std::string("ERROR ") + PQerrorMessage(conn.get());
  return QueryValue(conn.get(), sql);
}

// A command on a fresh connection: "" when it succeeded, else the error.
std::string Execute(const std::string& conninfo, const std::string& sql) {
  PgConnPtr conn(PQconnectdb(conninfo.c_str()));
  if (PQstatus(conn.get()) != CONNECTION_OK) return PQerrorMessage(conn.get());
  return Command(conn.get(), sql);
}

// The hot key's row: the bucket as the database holds it.
struct Row {
  double tokens = 0;
  int64_t updated_us = 0;
};

std::optional<Row> ReadHotRow(const std::string& conninfo) {
  const std::string text = Value(
      conninfo, std::string("SELECT tokens || ' ' || floor(extract(epoch FROM updated_at) * 1e6)"
                            "::int8 FROM ") +
                    kTable + " WHERE key = sha256(convert_to('" + kHotKey + "', 'UTF8'))");
  std::istringstream in(text);
  Row row;
  if (!(in >> row.tokens >> row.updated_us)) {
    ADD_FAILURE() << "hot row: " << text;
    return std::nullopt;
  }
  return row;
}

class Failover : public testing::Test {
 protected:
  void TearDown() override {
    if (load_) load_->Stop();
  }

  // Starts the pair, then the sidecars, then the load; false (with a failure) when any fails.
  bool StartAll(Replication replication) {
    const int64_t begin_ns = NowNs();
    Result<std::unique_ptr<ReplicatedPg>> pg = ReplicatedPg::Start(replication);
    if (!pg.ok()) {
      if (!TestDatabaseRequired() && pg.status().code() == Status::Code::kUnavailable) {
        skipped_ = true;
        return false;
      }
      ADD_FAILURE() << pg.status().ToString();
      return false;
    }
    pg_ = std::move(*pg);
    std::printf("primary and standby started in %.0f ms\n", Ms(NowNs() - begin_ns));
    for (int target = 0; target < kSidecars; ++target) {
      Env env = {{"RATE_LIMIT_STORE", "postgres"},
                 {"RATE_LIMIT_MODE", IsLease(target) ? "lease" : "strict"},
                 // Nothing admitted unless the database says so: what is counted against the
                 // bound is the database's coordination alone.
                 {"RATE_LIMIT_FALLBACK", "deny"},
                 {"RATE_LIMIT_EXPECTED_REPLICAS", std::to_string(kSidecars)},
                 {"RATE_LIMIT_PG_TIMEOUT_MS", std::to_string(kPgTimeoutMs)},
                 {"RATE_LIMIT_LEASE_TTL_MS", std::to_string(kLeaseTtlMs)},
                 {"RATE_LIMIT_PG_TABLE", kTable},
                 {"DATABASE_URL", Url(*pg_, target)}};
      std::unique_ptr<SidecarProcess> sidecar = pg_test::StartReadySidecar(env);
      if (sidecar == nullptr) return false;
      sidecars_.push_back(std::move(sidecar));
    }
    std::vector<std::string> paths;
    for (const auto& s : sidecars_) paths.push_back(s->socket_path());
    load_ = std::make_unique<CheckLoad>(CheckLoadOptions{
        .socket_paths = paths,
        .threads_per_target = kThreadsPerSidecar,
        .client_timeout_ms = kClientTimeoutMs,
        .pause_us = kLoadPauseUs,
        .next = [](int target, int thread, uint64_t i) {
          if (i % 2 == 0) {
            return LoadRequest{
                .key = kHotKey, .limit = kHotLimit, .window_ms = kHotWindowMs, .kind = kHot};
          }
          return LoadRequest{.key = "fresh-" + std::to_string(target) + "-" +
                                    std::to_string(thread) + "-" + std::to_string(i),
                             .limit = kFreshLimit,
                             .window_ms = kFreshWindowMs,
                             .kind = kFresh};
        }});
    load_started_ns_ = NowNs();
    std::printf("sidecars ready %.0f ms later\n", Ms(load_started_ns_ - begin_ns));
    std::this_thread::sleep_for(std::chrono::milliseconds(kWarmUpMs));
    return true;
  }

  static bool IsFresh(const LoadAnswer& a) { return a.kind == kFresh; }

  // Waits until every sidecar has decided fresh keys by the database for kStableMs since
  // `since_ns`, or kRecoveryWaitMs went by.
  void WaitForRecovery(int64_t since_ns) {
    ratelimit::WaitForRecovery(*load_, kSidecars, since_ns, Decided, IsFresh, kRecoveryWaitMs,
                               kStableMs);
  }

  // Every sidecar decided fresh keys by the database again within kRecoveryBoundMs of
  // `since_ns` (and stayed so).
  void ExpectRecoveredWithinBound(const std::vector<LoadAnswer>& answers, int64_t since_ns,
                                  const char* what) {
    for (int target = 0; target < kSidecars; ++target) {
      const std::optional<int64_t> at =
          RecoveredAtNs(answers, target, since_ns, Decided(target), IsFresh);
      ASSERT_TRUE(at.has_value()) << "sidecar " << target << " not deciding by "
                                  << SourceName(Decided(target)) << " after " << what;
      const double ms = std::max(0.0, Ms(*at - since_ns));
      std::printf("sidecar %d: fresh keys decided by %s %.1f ms after %s\n", target,
                  SourceName(Decided(target)), ms, what);
      EXPECT_LE(ms, kRecoveryBoundMs) << "sidecar " << target << " after " << what;
    }
  }

  // Every check answered, with status Ok, by its mode's source or the fallback (the switch);
  // none by the fallback before `fault_ns`.
  void ExpectNoClientError(const std::vector<LoadAnswer>& answers, int64_t fault_ns) {
    size_t bad = 0, fallbacks = 0;
    std::string first;
    for (const LoadAnswer& a : answers) {
      const bool fallback = a.answered && a.result.source == Source::kFallback;
      fallbacks += fallback ? 1 : 0;
      const bool ok = a.answered && a.result.status == CheckStatus::kOk &&
                      (a.result.source == Decided(a.target) || (fallback && a.end_ns > fault_ns));
      if (!ok && bad++ == 0) first = Describe(a, load_started_ns_);
    }
    std::printf("%zu checks, %zu answered by the fallback during the switch\n", answers.size(),
                fallbacks);
    EXPECT_EQ(bad, 0u) << "first: " << first;
  }

  // The most hot-key admissions in any interval of several lengths, less the bound
  // capacity + rate * (T + ttl + slack): the worst over-admission (0 or less when the bound
  // holds). The slack is the longest round trip of an admitted check, by which a receive time
  // lags its admission (as in lease_mode_test).
  double WorstOverAdmission(const std::vector<LoadAnswer>& answers) {
    std::vector<int64_t> admitted;
    int64_t slack_ns = 0;
    for (const LoadAnswer& a : answers) {
      if (a.kind != kHot || !a.answered || !a.result.allowed) continue;
      admitted.push_back(a.end_ns);
      slack_ns = std::max(slack_ns, a.end_ns - a.start_ns);
    }
    std::sort(admitted.begin(), admitted.end());
    const double per_ns = kHotLimit / (kHotWindowMs * 1e6);
    const int64_t ttl_ns = int64_t{kLeaseTtlMs} * 1'000'000;
    const int64_t run_ns = admitted.empty() ? 0 : admitted.back() - admitted.front();
    double worst = -1e9;
    std::printf("hot key: %zu admitted, slack %.1f ms\n", admitted.size(), Ms(slack_ns));
    for (int64_t t :
         {int64_t{500'000'000}, int64_t{1'000'000'000}, int64_t{3'000'000'000}, run_ns}) {
      const size_t most = MaxInAnyInterval(admitted, t);
      const double bound = kHotLimit + per_ns * static_cast<double>(t + ttl_ns + slack_ns);
      std::printf("  any %6.0f ms: at most %3zu admitted, bound %6.1f\n", Ms(t), most, bound);
      worst = std::max(worst, static_cast<double>(most) - bound);
    }
    return worst;
  }

  // After the old primary came back as a standby: every sidecar session is dropped on the new
  // primary, so that each reconnects and meets the standby first (node 0 comes first in every
  // URL); they must end up on the primary without writing to the standby.
  void ExpectRejoinedStandbyNotWritten() {
    const int standby = pg_->standby();
    ASSERT_EQ(standby, 0) << "node 0, first in the URLs, is the old primary";
    const int64_t dropped_ns = NowNs();
    EXPECT_EQ(Value(pg_->Conninfo(pg_->primary()),
                    "SELECT count(pg_terminate_backend(pid)) > 0 FROM pg_stat_activity WHERE "
                    "application_name LIKE 'failover_s%'"),
              "t");
    std::this_thread::sleep_for(std::chrono::milliseconds(kAfterRejoinMs));
    WaitForRecovery(dropped_ns);
    ExpectRecoveredWithinBound(load_->Snapshot(), dropped_ns, "their sessions were dropped");

    const std::string log = pg_->Log(standby);
    size_t visits = 0, refused = 0;
    for (int target = 0; target < kSidecars; ++target) {
      // log_connections: the sessions that libpq took to the standby, then left for the
      // primary because it is read-only; a write would have been refused with an error.
      visits +=
          LinesContaining(log, {"connection authorized", "application_name=" + App(target)}).size();
      refused += LinesContaining(log, {App(target), "read-only transaction"}).size();
    }
    std::printf("rejoined standby: %zu sidecar sessions connected and left, %zu writes refused\n",
                visits, refused);
    EXPECT_GT(visits, 0u) << "no session met the standby: the test proves nothing";
    EXPECT_EQ(refused, 0u) << "a sidecar tried to write to the read-only standby";
  }

  std::unique_ptr<ReplicatedPg> pg_;
  std::vector<std::unique_ptr<SidecarProcess>> sidecars_;
  std::unique_ptr<CheckLoad> load_;
  int64_t load_started_ns_ = 0;
  bool skipped_ = false;
};

#define START_OR_SKIP(replication)                                        \
  do {                                                                    \
    if (!StartAll(replication)) {                                         \
      if (skipped_) GTEST_SKIP() << "PostgreSQL 15 binaries are missing"; \
      return;                                                             \
    }                                                                     \
  } while (0)

// A failover, then a switchover back, synchronously: no debit is lost by either.
TEST_F(Failover, SynchronousReplicationLosesNoDebitAndSessionsFindTheOnePrimary) {
  START_OR_SKIP(Replication::kSynchronous);
  const int64_t killed_ns = NowNs();
  ASSERT_TRUE(pg_->KillPrimary().ok());
  ASSERT_TRUE(pg_->Promote().ok());
  const int64_t promoted_ns = NowNs();
  std::printf("primary killed, standby promoted %.1f ms later\n", Ms(promoted_ns - killed_ns));
  WaitForRecovery(promoted_ns);
  ExpectRecoveredWithinBound(load_->Snapshot(), promoted_ns, "the promotion");

  const int64_t rejoin_ns = NowNs();
  Status rejoined = pg_->RejoinAsStandby();
  ASSERT_TRUE(rejoined.ok()) << rejoined.ToString();
  std::printf("old primary back as a standby in %.0f ms\n", Ms(NowNs() - rejoin_ns));
  ExpectRejoinedStandbyNotWritten();

  // A switchover back, as an operator does it: the primary (node 1) is fenced with
  // default_transaction_read_only, reloaded under the sidecars' open sessions, then node 0
  // promoted. The sessions on node 1 are healthy connections to a server that refuses every
  // write: only the sidecar can decide to leave.
  const std::string fenced = pg_->Conninfo(1);
  EXPECT_EQ(Execute(fenced, "ALTER SYSTEM SET default_transaction_read_only = on"), "");
  EXPECT_EQ(Value(fenced, "SELECT pg_reload_conf()"), "t");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(pg_->Promote().ok());
  const int64_t switched_ns = NowNs();
  WaitForRecovery(switched_ns);
  load_->Stop();
  const std::vector<LoadAnswer> answers = load_->Snapshot();
  ExpectRecoveredWithinBound(answers, switched_ns, "the switchover");
  ExpectNoClientError(answers, killed_ns);
  // Every debit committed was on the standby too: the bound holds across both switches.
  EXPECT_LE(WorstOverAdmission(answers), 0.0);

  const std::string node1_log = pg_->Log(1);
  for (int target = 0; target < kSidecars; ++target) {
    SCOPED_TRACE("sidecar " + std::to_string(target));
    const std::string log = sidecars_[target]->Stderr();
    // Once per episode; a transaction that began before the reload may still commit between
    // the refusals of its two sessions, which makes a second one news.
    const size_t said = LinesContaining(log, {"the database server is read-only"}).size();
    EXPECT_GE(said, 1u) << log;
    EXPECT_LE(said, size_t{kSessions}) << log;
    // Each session left the fenced server after one refused statement.
    EXPECT_LE(LinesContaining(node1_log, {App(target), "read-only transaction"}).size(),
              size_t{kSessions});
  }
}

TEST_F(Failover, AsynchronousReplicationLosesAtMostTheDebitsOfTheLag) {
  START_OR_SKIP(Replication::kAsynchronous);
  // The standby stops receiving kLagMs before the primary dies: what the sidecars debit then
  // is committed on the primary alone. The lag counts from before the standby was told, an
  // upper bound of the real one.
  const int64_t detached_ns = NowNs();
  ASSERT_TRUE(pg_->DetachStandby().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(kLagMs));
  const int64_t killed_ns = NowNs();
  ASSERT_TRUE(pg_->KillPrimary().ok());
  const double lag_ms = Ms(killed_ns - detached_ns);
  ASSERT_TRUE(pg_->WaitForReplay().ok());
  const std::optional<Row> replicated = ReadHotRow(pg_->Conninfo(pg_->standby()));
  ASSERT_TRUE(pg_->Promote().ok());
  const int64_t promoted_ns = NowNs();
  WaitForRecovery(promoted_ns);
  load_->Stop();
  const std::vector<LoadAnswer> answers = load_->Snapshot();
  ExpectRecoveredWithinBound(answers, promoted_ns, "the promotion");
  ExpectNoClientError(answers, killed_ns);

  // What the old primary had committed, read from it alone.
  Status isolated = pg_->StartIsolated(0);
  ASSERT_TRUE(isolated.ok()) << isolated.ToString();
  const std::optional<Row> committed = ReadHotRow(pg_->IsolatedConninfo(0));
  ASSERT_TRUE(replicated && committed);

  // The debits lost: the replicated bucket refilled to the old primary's last write, less what
  // that write left.
  const double per_us = kHotLimit / (kHotWindowMs * 1e3);
  const double refilled = std::min<double>(
      kHotLimit, replicated->tokens +
                     per_us * static_cast<double>(committed->updated_us - replicated->updated_us));
  const double lost = refilled - committed->tokens;
  // The README's bound: no more than the bucket could give in the lag, capacity + rate * lag
  // (and no more than the leases and strict debits the sidecars committed in it).
  const double stated = kHotLimit + kHotLimit * lag_ms / kHotWindowMs;
  const double over = WorstOverAdmission(answers);
  std::printf(
      "lag %.0f ms: %.2f tokens debited on the old primary were lost (stated bound %.1f; a "
      "lease is at most %u); worst interval over the no-loss bound by %.2f\n",
      lag_ms, lost, stated, (kHotLimit + kLeaseShare - 1) / kLeaseShare, over);
  EXPECT_GT(lost, 0.0) << "the lag lost nothing: the test shows nothing";
  EXPECT_LE(lost, stated);
  // Whatever the admissions exceed the bound by is the debits lost, no more.
  EXPECT_LE(over, std::max(0.0, lost) + 1e-9);
}

}  // namespace
}  // namespace ratelimit
