// A database that accepts connections but does not answer: checks fall back within
// RATE_LIMIT_PG_TIMEOUT_MS, and coordination resumes by itself once it answers again.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <optional>
#include <string>

#include "ratelimit/client.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::StartReadySidecar;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

constexpr int kTimeoutMs = 200;

class PgTimeout : public testing::TestWithParam<std::string> {};  // The mode.

// Another session holds the table locked (ACCESS EXCLUSIVE) for 2 s: the sidecar's transactions
// wait on the lock. Checks of a new key must still be answered, by the fallback, within the
// timeout plus scheduling; once the lock is gone, checks are decided by the database again.
TEST_P(PgTimeout, ALockedTableFallsBackWithinTheTimeoutThenCoordinationResumes) {
  REQUIRE_TEST_DATABASE();
  const std::string mode = GetParam();
  const std::string table = "t_timeout_" + mode;
  DropTable(table);
  auto sidecar =
      StartReadySidecar(StrictEnv(table, "timeout_" + mode,
                                  {{"RATE_LIMIT_MODE", mode},
                                   {"RATE_LIMIT_FALLBACK", "deny"},
                                   {"RATE_LIMIT_LOG_LEVEL", "debug"},
                                   {"RATE_LIMIT_PG_TIMEOUT_MS", std::to_string(kTimeoutMs)}}));
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  const Source decided = mode == "lease" ? Source::kLease : Source::kDatabase;
  Result<CheckResult> before = client.Check({.key = "warm"});
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_EQ(before->source, decided);

  PgConnPtr locker = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(locker.get()), CONNECTION_OK);
  ASSERT_EQ(Command(locker.get(), "BEGIN"), "");
  ASSERT_EQ(Command(locker.get(), "LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE"), "");
  const auto locked_at = std::chrono::steady_clock::now();
  int fallbacks = 0;
  int unconfirmed = 0;
  std::optional<std::chrono::steady_clock::time_point> first_unconfirmed;
  std::chrono::milliseconds slowest{0};
  for (int i = 0; std::chrono::steady_clock::now() - locked_at < std::chrono::seconds(2); ++i) {
    const auto start = std::chrono::steady_clock::now();
    Result<CheckResult> r = client.Check({.key = "locked-" + std::to_string(i)});
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    slowest = std::max(slowest, took);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, CheckStatus::kOk);
    // Lease mode admits a new key's first check from its allowance (u = 1) before the database
    // answers, but only until it has confirmed nothing for R (250 ms) since the first such
    // admission: a stalled database. Checks sent well after that (the loop runs 2 s) must all
    // get the fallback.
    if (mode == "lease" && r->allowed && r->source == Source::kLease) {
      if (!first_unconfirmed) first_unconfirmed = start;
      EXPECT_LT(start - *first_unconfirmed, std::chrono::milliseconds(500))
          << "admitted unconfirmed long after the database stopped confirming";
      ++unconfirmed;
      continue;
    }
    EXPECT_FALSE(r->allowed) << "the deny fallback, or a decision it could not have made";
    EXPECT_EQ(r->source, Source::kFallback);
    ++fallbacks;
  }
  std::printf(
      "%d checks while locked (and %d admitted unconfirmed), slowest %lld ms (timeout %d ms)\n",
      fallbacks, unconfirmed, static_cast<long long>(slowest.count()), kTimeoutMs);
  // Checks were answered one after another while the lock lasted: not one of them waited for
  // the lock (2 s) to go away. (How long each took is printed, not asserted.) And they did not
  // each wait for a transaction bound to fail: once the circuit breaker opened, the database
  // saw only a probe every open period (at most 1 s), so checks came back far more often than
  // one per lock timeout (2 s / 160 ms = 12).
  EXPECT_GE(fallbacks, 100);
  // The server gave up each transaction itself: no backend was left waiting on the lock for a
  // session that went away, so the sidecar still has just its own sessions (2).
  const std::string backends = pg_test::QueryValue(
      locker.get(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
      {"timeout_" + mode});
  EXPECT_EQ(backends, "2");
  ASSERT_EQ(Command(locker.get(), "COMMIT"), "");

  // Sessions reconnect with backoff (at most 1.25 s between attempts) and decide again.
  const bool resumed = WaitUntil(
      [&] {
        Result<CheckResult> r = client.Check({.key = "after"});
        return r.ok() && r->status == CheckStatus::kOk && r->source == decided && r->allowed;
      },
      15000);
  EXPECT_TRUE(resumed) << sidecar->Stderr();
  const std::string log = sidecar->Stderr();
  // Said once when it started and once when it ended, not once per check.
  auto count = [&log](const std::string& what) {
    size_t n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("database transactions failing"), 1u) << log;
  EXPECT_EQ(count("circuit breaker open"), 1u) << log;
  EXPECT_EQ(count("database transactions succeed again"), 1u) << log;
  // The transactions that failed on the lock: the two that opened the breaker, then probes
  // (200 ms doubling to 1 s: about 5 in 2 s). Without the breaker: one per check.
  const size_t failed = count("rate limit transaction failed");
  std::printf("%zu transactions failed while %d checks were answered\n", failed, fallbacks);
  EXPECT_GE(failed, 2u);
  EXPECT_LE(failed, 12u) << log;
  EXPECT_EQ(sidecar->WaitExit(0), -1) << "the sidecar exited: " << log;
}

INSTANTIATE_TEST_SUITE_P(Modes, PgTimeout, testing::Values("strict", "lease"));

}  // namespace
}  // namespace ratelimit
