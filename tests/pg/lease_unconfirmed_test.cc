// Optimistic admission on a real PostgreSQL: checks of keys holding no lease admitted before the
// database confirms them, within capacity + rate * (T + ttl) + P * u, and never without it.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <latch>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "tests/testing/check_load.h"
#include "tests/testing/http_client.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::NowNs;
using pg_test::PingsReady;
using pg_test::QueryValue;
using pg_test::StartReadyWithAdmin;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

Env LeaseEnv(const std::string& table, const std::string& app, Env extra = {}) {
  extra.emplace("RATE_LIMIT_MODE", "lease");
  return StrictEnv(table, app, std::move(extra));
}

double Counter(uint16_t port, std::string_view name) {
  Result<PromText> m = ScrapeMetrics(port);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? m->Value(name).value_or(-1) : -1;
}

// Three sidecars with the default allowance (u = 1) check 300 cold keys at random, each key
// about 10 times a second in all against a refill of 2 per second, so that rows run dry and go
// into debt. Every answer is the lease engine's, most without waiting for the database; each key
// stays within capacity + rate * (T + ttl + slack) + 3 * 1 in every interval; and no row ever
// owes more than the 3 tokens the sidecars may hold unconfirmed.
TEST(LeaseUnconfirmed, ColdKeysOnThreeSidecarsStayWithinTheBoundPlusPTimesU) {
  REQUIRE_TEST_DATABASE();
  constexpr size_t kSidecars = 3;
  constexpr size_t kThreadsPerSidecar = 2;
  constexpr int kKeys = 300;
  constexpr uint32_t kLimit = 4;
  constexpr uint32_t kWindowMs = 2000;
  constexpr uint32_t kTtlMs = 1000;
  constexpr int64_t kRunNs = 4'000'000'000;
  const std::string table = "t_lease_unconfirmed";
  DropTable(table);
  std::vector<AdminSidecar> sidecars;
  for (size_t i = 0; i < kSidecars; ++i) {
    sidecars.push_back(StartReadyWithAdmin(LeaseEnv(table, "lease_unconfirmed")));
    ASSERT_NE(sidecars.back().port, 0);
  }
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);

  struct Seen {
    std::vector<std::vector<int64_t>> admitted = std::vector<std::vector<int64_t>>(kKeys);
    int64_t slack_ns = 0;
    int64_t checks = 0;
    int64_t problems = 0;
    std::string first_problem;
  };
  std::vector<Seen> seen(kSidecars * kThreadsPerSidecar);
  std::latch start(static_cast<ptrdiff_t>(seen.size()));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < seen.size(); ++i) {
    threads.emplace_back([&, i] {
      Client client(
          {.socket_path = sidecars[i % kSidecars].process->socket_path(), .timeout_ms = 5000});
      std::mt19937 rng(static_cast<uint32_t>(i + 1));
      Seen& mine = seen[i];
      start.arrive_and_wait();
      const int64_t begin = NowNs();
      while (NowNs() < begin + kRunNs) {
        const int key = std::uniform_int_distribution<int>(0, kKeys - 1)(rng);
        const int64_t sent = NowNs();
        Result<CheckResult> r = client.Check(
            {.key = "cold-" + std::to_string(key), .limit = kLimit, .window_ms = kWindowMs});
        const int64_t received = NowNs();
        ++mine.checks;
        if (!r.ok() || r->status != CheckStatus::kOk || r->source != Source::kLease) {
          if (mine.problems++ == 0) {
            mine.first_problem =
                r.ok() ? std::string(SourceName(r->source)) + " " + CheckStatusName(r->status)
                       : r.status().ToString();
          }
          continue;
        }
        if (r->allowed) {
          mine.admitted[key].push_back(received);
          mine.slack_ns = std::max(mine.slack_ns, received - sent);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(1500));
      }
    });
  }
  // Meanwhile, the table's deepest debt, sampled.
  double lowest = 0;
  const int64_t begin = NowNs();
  while (NowNs() < begin + kRunNs) {
    const std::string value =
        QueryValue(conn.get(), "SELECT coalesce(min(tokens), 0) FROM " + table);
    if (value.rfind("ERROR", 0) != 0) lowest = std::min(lowest, std::stod(value));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (std::thread& t : threads) t.join();

  int64_t checks = 0, problems = 0, slack_ns = 0;
  std::string first_problem;
  for (const Seen& s : seen) {
    checks += s.checks;
    problems += s.problems;
    slack_ns = std::max(slack_ns, s.slack_ns);
    if (first_problem.empty()) first_problem = s.first_problem;
  }
  EXPECT_EQ(problems, 0) << first_problem;
  const double per_ns = double(kLimit) / (double(kWindowMs) * 1e6);
  const int64_t ttl_ns = int64_t{kTtlMs} * 1'000'000;
  int64_t admitted_total = 0;
  for (int k = 0; k < kKeys; ++k) {
    std::vector<int64_t> admitted;
    for (const Seen& s : seen)
      admitted.insert(admitted.end(), s.admitted[k].begin(), s.admitted[k].end());
    std::sort(admitted.begin(), admitted.end());
    admitted_total += static_cast<int64_t>(admitted.size());
    for (int64_t interval_ns : {int64_t{0}, int64_t{500'000'000}, int64_t{2'000'000'000}, kRunNs}) {
      const double bound =
          kLimit + per_ns * double(interval_ns + ttl_ns + slack_ns) + double(kSidecars) * 1;
      ASSERT_LE(double(MaxInAnyInterval(admitted, interval_ns)), bound)
          << "key " << k << ", interval " << interval_ns / 1'000'000 << " ms";
    }
  }
  std::printf("%lld checks, %lld admitted, slack %.1f ms, deepest debt %.3f tokens\n",
              static_cast<long long>(checks), static_cast<long long>(admitted_total),
              double(slack_ns) / 1e6, -lowest);
  EXPECT_GE(lowest, -double(kSidecars)) << "a row owed more than P * u";
  double unconfirmed = 0, debts = 0;
  for (const AdminSidecar& s : sidecars) {
    unconfirmed += Counter(s.port, "ratelimit_lease_unconfirmed_allowed_total");
    debts += Counter(s.port, "ratelimit_lease_debts_total");
  }
  std::printf("admitted unconfirmed %.0f, answers in debt %.0f\n", unconfirmed, debts);
  EXPECT_GT(unconfirmed, 0.2 * double(admitted_total)) << "cold keys still waited";
  EXPECT_GT(debts, 0) << "no row went into debt: the bound's P * u term was not tested";
  for (AdminSidecar& s : sidecars) EXPECT_EQ(s.process->WaitExit(0), -1) << s.process->Stderr();
}

// u = 0 is the behaviour before optimistic admission: a cold key's check waits for its lease.
// With u = 1 the same check is admitted at once and its debit reaches the row.
TEST(LeaseUnconfirmed, TheAllowanceIsWhatDecidesWhetherAColdCheckWaits) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_lease_unconfirmed_u";
  DropTable(table);
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);
  for (const char* u : {"0", "1"}) {
    SCOPED_TRACE(std::string("u = ") + u);
    AdminSidecar s = StartReadyWithAdmin(
        LeaseEnv(table, "lease_unconfirmed_u", {{"RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", u}}));
    ASSERT_NE(s.port, 0);
    Client client({.socket_path = s.process->socket_path(), .timeout_ms = 5000});
    const std::string key = std::string("cold-u") + u;
    Result<CheckResult> r = client.Check({.key = key, .limit = 10, .window_ms = 600'000});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->allowed);
    EXPECT_EQ(r->source, Source::kLease);
    const bool optimistic = std::string(u) == "1";
    Result<PromText> m = ScrapeUntil(s.port, [](const PromText& t) {
      return t.Value("ratelimit_lease_fetches_total").value_or(0) >= 1;
    });
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->Value("ratelimit_lease_unconfirmed_allowed_total").value_or(-1),
              optimistic ? 1 : 0);
    EXPECT_EQ(m->Value("ratelimit_lease_waits_total").value_or(-1), optimistic ? 0 : 1);
    EXPECT_TRUE(WaitUntil([&] {
      return QueryValue(
                 conn.get(),
                 "SELECT tokens FROM " + table + " WHERE key = sha256(convert_to($1, 'UTF8'))",
                 {key}) == "9";
    })) << "the admission reached the row";
  }
}

// Without a database, nothing is admitted unconfirmed: the fallback answers, as before.
TEST(LeaseUnconfirmed, WithoutADatabaseTheFallbackAnswersNotTheAllowance) {
  AdminSidecar s =
      StartWithAdmin({{"RATE_LIMIT_STORE", "postgres"},
                      {"RATE_LIMIT_MODE", "lease"},
                      {"RATE_LIMIT_FALLBACK", "deny"},
                      {"DATABASE_URL", "host=127.0.0.1 port=1 dbname=none connect_timeout=1"}});
  ASSERT_NE(s.port, 0);
  Client client({.socket_path = s.process->socket_path(), .timeout_ms = 5000});
  ASSERT_TRUE(WaitUntil([&] { return client.Ping().ok(); }));
  for (int i = 0; i < 20; ++i) {
    Result<CheckResult> r =
        client.Check({.key = "cold-" + std::to_string(i), .limit = 10, .window_ms = 1000});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_FALSE(r->allowed);
    EXPECT_EQ(r->source, Source::kFallback);
  }
  EXPECT_EQ(Counter(s.port, "ratelimit_lease_unconfirmed_allowed_total"), 0);
}

}  // namespace
}  // namespace ratelimit
