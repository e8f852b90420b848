// Through a real PgBouncer: both modes under transaction pooling with fewer server connections
// than sessions, a pooler restart, and statement pooling refused.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ratelimit/client.h"
#include "tests/testing/check_load.h"
#include "tests/testing/http_client.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/pgbouncer_server.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::ConnectToTestDatabase;
using pg_test::LinesContaining;
using pg_test::NowNs;
using pg_test::PingsReady;
using pg_test::QueryValue;
using pg_test::WaitUntil;

constexpr int kSidecars = 3;
constexpr int kSessions = 2;  // RATE_LIMIT_PG_CONNECTIONS per sidecar...
constexpr int kPoolSize = 3;  // ...over fewer server connections: default_pool_size.
static_assert(kPoolSize < kSidecars * kSessions);
constexpr int kThreadsPerSidecar = 2;
// Transactions wait for a free server connection in the pooler: on two busy cores that can take
// a while, which is not what these tests are about (the timeout has tests of its own).
constexpr int kPgTimeoutMs = 2000;
constexpr int kClientTimeoutMs = 5000;  // Well above the sidecar's timeout: a hang, if reached.
constexpr int kLoadPauseUs = 500;       // Between one thread's checks: load, not a CPU hog.
constexpr int64_t kLoadMs = 4000;
constexpr uint32_t kLeaseTtlMs = 200;
// Every other check is of one hot key that every sidecar hammers, far beyond its refill; the
// others are keys never seen before, which need the database in either mode.
constexpr int kHot = 0;
constexpr int kFresh = 1;
constexpr uint32_t kHotLimit = 100;
constexpr uint32_t kHotWindowMs = 1000;
constexpr uint32_t kFreshLimit = 1000;
constexpr uint32_t kFreshWindowMs = 60000;
// As for a database restart (fault_injection_test.cc): decided by the database again this soon
// after the pooler accepts connections again, and from then on (the load goes on kStableMs
// past the bound).
constexpr int64_t kRecoveryBoundMs = 2000;
constexpr int64_t kStableMs = 500;
constexpr int kOutageMs = 1000;

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

bool IsFresh(const LoadAnswer& a) { return a.kind == kFresh; }

LoadRequest NextRequest(int target, int thread, uint64_t i) {
  if (i % 2 == 0) {
    return {.key = "hot", .limit = kHotLimit, .window_ms = kHotWindowMs, .kind = kHot};
  }
  return {.key = "fresh-" + std::to_string(target) + "-" + std::to_string(thread) + "-" +
                 std::to_string(i),
          .limit = kFreshLimit,
          .window_ms = kFreshWindowMs,
          .kind = kFresh};
}

std::string Superuser(const std::string& sql, const std::vector<std::string>& params = {}) {
  PgConnPtr conn = ConnectToTestDatabase();
  if (PQstatus(conn.get()) != CONNECTION_OK)
    return std::string("ERROR ") + PQerrorMessage(conn.get());
  return QueryValue(conn.get(), sql, params);
}

// The hot key's admissions against the pods' bound, capacity + rate * (T + extra_ms), in every
// interval of length T, for several T and the whole run. An admission counts in an interval
// when its whole round trip lies in it: it was decided there, so no slack is added.
void ExpectHotKeyWithinBound(const std::vector<LoadAnswer>& answers, double extra_ms) {
  std::vector<std::pair<int64_t, int64_t>> admitted;  // (start, end), by start.
  for (const LoadAnswer& a : answers) {
    if (a.kind == kHot && a.answered && a.result.status == CheckStatus::kOk && a.result.allowed) {
      admitted.emplace_back(a.start_ns, a.end_ns);
    }
  }
  std::sort(admitted.begin(), admitted.end());
  ASSERT_GE(admitted.size(), size_t{kHotLimit}) << "the hot key was not hammered";
  int64_t last_end = 0;
  for (const auto& [start, end] : admitted) last_end = std::max(last_end, end);
  const int64_t run_ns = last_end - admitted.front().first;
  const double per_ms = static_cast<double>(kHotLimit) / kHotWindowMs;
  for (int64_t length_ns : {int64_t{100'000'000}, int64_t{500'000'000}, int64_t{1'000'000'000},
                            int64_t{2'000'000'000}, run_ns}) {
    size_t most = 0;
    for (size_t i = 0; i < admitted.size(); ++i) {
      const int64_t close = admitted[i].first + length_ns;
      size_t inside = 0;
      for (size_t j = i; j < admitted.size() && admitted[j].first <= close; ++j) {
        if (admitted[j].second <= close) ++inside;
      }
      most = std::max(most, inside);
    }
    const double bound = kHotLimit + per_ms * (Ms(length_ns) + extra_ms);
    std::printf("hot key, any %5.0f ms: at most %4zu admitted, bound %7.1f\n", Ms(length_ns), most,
                bound);
    EXPECT_LE(static_cast<double>(most), bound) << "in an interval of " << Ms(length_ns) << " ms";
  }
}

// Three sidecars on one table, reaching PostgreSQL only through a PgBouncer of the test's own.
class PgBouncerTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    REQUIRE_TEST_DATABASE();
    static int serial = 0;
    table_ = "t_bouncer_" + std::to_string(++serial) + "_" + mode();
    app_ = "bouncer_" + std::to_string(serial) + "_" + mode();
    if (access(PgBouncerServer::kBinary, X_OK) != 0) {
      const std::string why = std::string(PgBouncerServer::kBinary) +
                              " not found: install pgbouncer (scripts/install-deps.sh does)";
      if (TestDatabaseRequired()) GTEST_FAIL() << why;
      GTEST_SKIP() << why;
    }
    pg_test::DropTable(table_);
  }

  void TearDown() override {
    if (probe_) probe_->Stop();
    if (load_) load_->Stop();
    sidecars_.clear();
    bouncer_.reset();
  }

  std::string mode() const { return GetParam(); }
  Source decided() const { return mode() == "lease" ? Source::kLease : Source::kDatabase; }

  // Starts the pooler; false (with a failure recorded) when it does not start.
  bool StartBouncer(const std::string& pool_mode) {
    Result<std::unique_ptr<PgBouncerServer>> started = PgBouncerServer::Start(
        {.pool_mode = pool_mode, .default_pool_size = kPoolSize, .max_client_conn = 100});
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (!started.ok()) return false;
    bouncer_ = std::move(*started);
    return true;
  }

  Env SidecarEnv() const {
    return {{"RATE_LIMIT_STORE", "postgres"},
            {"RATE_LIMIT_MODE", mode()},
            // Nothing admitted unless the database says so: the bound holds through outages.
            {"RATE_LIMIT_FALLBACK", "deny"},
            {"RATE_LIMIT_EXPECTED_REPLICAS", std::to_string(kSidecars)},
            {"RATE_LIMIT_PG_CONNECTIONS", std::to_string(kSessions)},
            {"RATE_LIMIT_PG_TIMEOUT_MS", std::to_string(kPgTimeoutMs)},
            {"RATE_LIMIT_PG_STATEMENTS", "unnamed"},
            {"RATE_LIMIT_LEASE_TTL_MS", std::to_string(kLeaseTtlMs)},
            {"RATE_LIMIT_PG_TABLE", table_},
            {"RATE_LIMIT_ADMIN_ADDR", "127.0.0.1:0"},
            {"DATABASE_URL", bouncer_->Url() + " application_name=" + app_}};
  }

  std::vector<std::string> SocketPaths() const {
    std::vector<std::string> paths;
    for (const auto& s : sidecars_) paths.push_back(s->socket_path());
    return paths;
  }

  void StartLoad() {
    load_ = std::make_unique<CheckLoad>(CheckLoadOptions{.socket_paths = SocketPaths(),
                                                         .threads_per_target = kThreadsPerSidecar,
                                                         .client_timeout_ms = kClientTimeoutMs,
                                                         .pause_us = kLoadPauseUs,
                                                         .next = NextRequest});
    probe_ = std::make_unique<ReadinessProbe>(SocketPaths());
  }

  // The most server sessions PostgreSQL shows for the sidecars (PgBouncer passes their
  // application_name on), sampled every 100 ms for `ms`.
  int MostServerSessions(int64_t ms) {
    int most = 0;
    const int64_t until = NowNs() + ms * 1'000'000;
    while (NowNs() < until) {
      const std::string n =
          Superuser("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", {app_});
      EXPECT_EQ(n.rfind("ERROR", 0), std::string::npos) << n;
      if (n.rfind("ERROR", 0) != 0) most = std::max(most, std::stoi(n));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return most;
  }

  // Every answer from the mode's own source (or, with `fallback_allowed`, the fallback), with
  // status Ok, before the client's timeout. Returns the fallback answers.
  size_t ExpectDecided(const std::vector<LoadAnswer>& answers, bool fallback_allowed) {
    size_t unanswered = 0, wrong = 0, fallbacks = 0;
    std::string first;
    for (const LoadAnswer& a : answers) {
      const bool fallback = a.answered && a.result.source == Source::kFallback;
      fallbacks += fallback ? 1 : 0;
      const bool ok = a.answered && a.result.status == CheckStatus::kOk &&
                      (a.result.source == decided() || (fallback && fallback_allowed));
      if (ok) continue;
      ++(a.answered ? wrong : unanswered);
      if (first.empty()) first = Describe(a, answers.front().start_ns);
    }
    std::printf("%zu checks, %zu answered by the fallback\n", answers.size(), fallbacks);
    EXPECT_EQ(unanswered, 0u) << "checks that hung; first: " << first;
    EXPECT_EQ(wrong, 0u) << "answers with a wrong status or source; first: " << first;
    return fallbacks;
  }

  // No check of `sidecar` answered by the fallback or failed, by its own counters and its log.
  void ExpectNoFallbackCounted(SidecarProcess& sidecar) {
    const std::string log = sidecar.Stderr();
    const uint16_t port = AdminPortFromLog(log);
    ASSERT_NE(port, 0) << log;
    Result<PromText> metrics = ScrapeUntil(port, [](const PromText& m) {
      return m.Value("ratelimit_db_transactions_total").value_or(0) > 0;
    });
    ASSERT_TRUE(metrics.ok()) << metrics.status().ToString();
    EXPECT_EQ(metrics->Value("ratelimit_fallbacks_total").value_or(-1), 0)
        << metrics->Dump("ratelimit_");
    EXPECT_EQ(metrics->Value("ratelimit_db_transaction_errors_total").value_or(-1), 0)
        << metrics->Dump("ratelimit_");
    EXPECT_EQ(LinesContaining(log, {"database transactions failing"}), std::vector<std::string>{});
    EXPECT_EQ(LinesContaining(log, {"\"level\":\"error\""}), std::vector<std::string>{});
  }

  void StopSidecars() {
    for (auto& s : sidecars_) s->Signal(SIGTERM);
    for (auto& s : sidecars_) EXPECT_EQ(s->WaitExit(10000), 0) << s->Stderr();
  }

  std::string table_;
  std::string app_;
  std::unique_ptr<PgBouncerServer> bouncer_;
  std::vector<std::unique_ptr<SidecarProcess>> sidecars_;
  std::unique_ptr<CheckLoad> load_;
  std::unique_ptr<ReadinessProbe> probe_;
};

TEST_P(PgBouncerTest, TransactionPoolingDecidesEveryCheckInTheDatabaseWithinTheBound) {
  ASSERT_TRUE(StartBouncer("transaction"));
  sidecars_ = pg_test::StartReadySidecars(kSidecars, SidecarEnv());
  ASSERT_EQ(sidecars_.size(), size_t{kSidecars});
  // The table did not exist: the sidecars created it through the pooler.
  EXPECT_EQ(Superuser("SELECT to_regclass($1) IS NOT NULL", {table_}), "t");

  // A key whose bucket is full again at once, for garbage collection to delete through the
  // pooler (every 5 s, rows full and untouched for a second).
  const std::string gc_row =
      "SELECT count(*) FROM " + table_ + " WHERE key = sha256(convert_to('collected', 'UTF8'))";
  {
    Client client({.socket_path = sidecars_[0]->socket_path(), .timeout_ms = kClientTimeoutMs});
    Result<CheckResult> r = client.Check({.key = "collected", .limit = 5, .window_ms = 200});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->source, decided());
    // In lease mode the check of a key new to the sidecar is answered before its debit lands.
    EXPECT_TRUE(WaitUntil([&] { return Superuser(gc_row) == "1"; }));
  }

  StartLoad();
  const int most_sessions = MostServerSessions(kLoadMs);
  load_->Stop();
  probe_->Stop();
  const std::vector<LoadAnswer> answers = load_->Snapshot();
  std::printf("at most %d server sessions for %d sidecar sessions\n", most_sessions,
              kSidecars * kSessions);
  EXPECT_GE(most_sessions, 1);
  EXPECT_LE(most_sessions, kPoolSize);

  EXPECT_EQ(ExpectDecided(answers, /*fallback_allowed=*/false), 0u);
  ExpectHotKeyWithinBound(answers, mode() == "lease" ? kLeaseTtlMs : 0);
  size_t not_ready = 0;
  for (const PingAnswer& p : probe_->Snapshot()) not_ready += p.answered && p.ready ? 0 : 1;
  EXPECT_EQ(not_ready, 0u) << "pings not answered, or answered not ready, under load";
  for (auto& sidecar : sidecars_) ExpectNoFallbackCounted(*sidecar);

  EXPECT_TRUE(WaitUntil([&] { return Superuser(gc_row) == "0"; }, 12000))
      << "the full row was not collected";
  StopSidecars();
}

TEST_P(PgBouncerTest, APoolerRestartIsSurvivedLikeADatabaseRestart) {
  ASSERT_TRUE(StartBouncer("transaction"));
  sidecars_ = pg_test::StartReadySidecars(kSidecars, SidecarEnv());
  ASSERT_EQ(sidecars_.size(), size_t{kSidecars});
  StartLoad();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int64_t stopped_ns = NowNs();
  ASSERT_TRUE(bouncer_->Stop().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(kOutageMs));
  Status restarted = bouncer_->Restart();
  const int64_t healed_ns = NowNs();
  ASSERT_TRUE(restarted.ok()) << restarted.ToString();

  // Load for as long as recovery may take, and then some, to see that it lasts.
  std::this_thread::sleep_for(std::chrono::milliseconds(kRecoveryBoundMs + kStableMs));
  load_->Stop();
  probe_->Stop();
  const std::vector<LoadAnswer> answers = load_->Snapshot();

  EXPECT_GT(ExpectDecided(answers, /*fallback_allowed=*/true), 0u);
  ExpectHotKeyWithinBound(answers, mode() == "lease" ? kLeaseTtlMs : 0);
  for (int target = 0; target < kSidecars; ++target) {
    SCOPED_TRACE("sidecar " + std::to_string(target));
    size_t early = 0, during = 0;
    for (const LoadAnswer& a : answers) {
      if (a.target != target || !a.answered || a.result.source != Source::kFallback) continue;
      ++(a.end_ns < stopped_ns ? early : during);
    }
    EXPECT_EQ(early, 0u) << "answered by the fallback before the pooler stopped";
    EXPECT_GT(during, 0u) << "no fallback while the pooler was down";
    const std::optional<int64_t> recovered =
        RecoveredAtNs(answers, target, healed_ns, decided(), IsFresh);
    ASSERT_TRUE(recovered) << "fresh keys not decided by the database again";
    const double ms = std::max(0.0, Ms(*recovered - healed_ns));
    std::printf("sidecar %d: decided by %s again %.1f ms after the restart\n", target,
                SourceName(decided()), ms);
    EXPECT_LE(ms, kRecoveryBoundMs);
    size_t not_ready = 0;
    for (const PingAnswer& p : probe_->Snapshot()) {
      if (p.target == target && p.answered && !p.ready && p.start_ns >= stopped_ns) ++not_ready;
    }
    EXPECT_GT(not_ready, 0u) << "ready stayed true while the pooler was down";
    EXPECT_TRUE(WaitUntil([&] { return PingsReady(sidecars_[target]->socket_path()); }, 5000));
  }
  StopSidecars();
}

// Statement pooling cannot carry a transaction of several statements. The sidecar learns it
// from its first transaction (the table's check passes through such a pooler): from then on it
// is not ready, and every check goes to the fallback, for good.
TEST_P(PgBouncerTest, StatementPoolingIsRefusedFromTheFirstTransactionOnForGood) {
  ASSERT_TRUE(StartBouncer("statement"));
  Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(SidecarEnv());
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  sidecars_.push_back(std::move(*started));
  SidecarProcess& sidecar = *sidecars_[0];
  // Until its first transaction, nothing tells the sidecar what is in between.
  ASSERT_TRUE(WaitUntil([&] { return PingsReady(sidecar.socket_path()); })) << sidecar.Stderr();
  Client client({.socket_path = sidecar.socket_path(), .timeout_ms = kClientTimeoutMs});
  Result<CheckResult> first = client.Check({.key = "statement-first"});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  if (GetParam() == "lease") {
    // Admitted from the allowance of a key new to the sidecar (u = 1) before its debit's
    // transaction, the first, fails on the pooler; that transaction is what tells.
    EXPECT_TRUE(first->allowed);
    EXPECT_EQ(first->source, Source::kLease);
    EXPECT_TRUE(WaitUntil([&] {
      Result<PingResult> ping = client.Ping();
      return ping.ok() && !ping->ready;
    }));
  } else {
    pg_test::ExpectFallbackDenial(*first);
  }
  for (int i = 0; i < 10; ++i) {
    Result<PingResult> ping = client.Ping();
    ASSERT_TRUE(ping.ok()) << ping.status().ToString();
    EXPECT_FALSE(ping->ready) << "ready again through statement pooling";
    Result<CheckResult> r = client.Check({.key = "statement-" + std::to_string(i)});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    pg_test::ExpectFallbackDenial(*r);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Said once, as an error that names the cause, not once per attempt.
  const std::string log = sidecar.Stderr();
  EXPECT_EQ(
      LinesContaining(log, {"\"level\":\"error\"", "pooler in statement pooling mode"}).size(), 1u)
      << log;
  StopSidecars();
}

INSTANTIATE_TEST_SUITE_P(Modes, PgBouncerTest, testing::Values("strict", "lease"),
                         [](const testing::TestParamInfo<std::string>& mode) {
                           return mode.param;
                         });

}  // namespace
}  // namespace ratelimit
