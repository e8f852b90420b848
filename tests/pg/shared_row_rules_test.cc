// What reads and damaged rows may do to a key's row on a real PostgreSQL, in both modes.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "tests/testing/http_client.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/prometheus_text.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::LinesContaining;
using pg_test::NowNs;
using pg_test::PingsReady;
using pg_test::QueryValue;
using pg_test::StartReadySidecars;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

constexpr uint32_t kLimit = 50;
constexpr uint32_t kWindowMs = 1000;
constexpr uint32_t kLeaseTtlMs = 200;

// A sidecar of `mode` on `table` whose default policy is the checks' 50 per 1000 ms.
Env ModeEnv(const std::string& mode, const std::string& table, const std::string& app,
            Env extra = {}) {
  extra.emplace("RATE_LIMIT_MODE", mode);
  extra.emplace("RATE_LIMIT_LEASE_TTL_MS", std::to_string(kLeaseTtlMs));
  extra.emplace("RATE_LIMIT_MAX_REQUESTS", std::to_string(kLimit));
  extra.emplace("RATE_LIMIT_WINDOW_MS", std::to_string(kWindowMs));
  return StrictEnv(table, app, std::move(extra));
}

// The bound of any interval of `t_ms` for the checks' policy on `pods` sidecars:
// capacity + rate * (T + ttl) + pods * u, the ttl and u (1 by default) being 0 in strict mode
// (README, lease mode).
double Bound(const std::string& mode, double t_ms, int pods = 2) {
  const double ttl_ms = mode == "lease" ? kLeaseTtlMs : 0;
  const double unconfirmed = mode == "lease" ? pods : 0;
  return kLimit + static_cast<double>(kLimit) / kWindowMs * (t_ms + ttl_ms) + unconfirmed;
}

class SharedRowRules : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Modes, SharedRowRules, ::testing::Values("strict", "lease"),
                         [](const auto& test) { return test.param; });

// One admitted check: when it was sent and when its answer came back.
struct Admission {
  int64_t sent_ns = 0;
  int64_t answered_ns = 0;
};

// The most admissions whose whole round trip lies inside one interval of `t_ns`. Such an
// interval can be taken to start at the send of the first admission it holds.
size_t MostInAnyInterval(const std::vector<Admission>& admissions, int64_t t_ns) {
  size_t most = 0;
  for (const Admission& first : admissions) {
    const size_t in = static_cast<size_t>(
        std::count_if(admissions.begin(), admissions.end(), [&](const Admission& a) {
          return a.sent_ns >= first.sent_ns && a.answered_ns <= first.sent_ns + t_ns;
        }));
    most = std::max(most, in);
  }
  return most;
}

// What the checks and reads of one key saw.
struct KeyRun {
  std::vector<Admission> admitted;
  int64_t reads = 0;
  int64_t problems = 0;  // Failed calls, refusals, reads not under their own policy.
  std::string first_problem;
  std::mutex mu;

  void Problem(const std::string& what) {
    std::lock_guard lock(mu);
    if (problems++ == 0) first_problem = what;
  }
};

// On `sockets`, two threads each check `key` under the checks' policy and two read it (cost 0)
// under `read`, all as fast as they are answered, for `run_ns`.
void Hammer(const std::vector<std::string>& sockets, const std::string& key, const Policy& read,
            int64_t run_ns, KeyRun& run) {
  constexpr size_t kThreadsPerSocket = 4;
  const size_t n = sockets.size() * kThreadsPerSocket;
  std::latch start(static_cast<ptrdiff_t>(n));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      const bool reader = i % kThreadsPerSocket >= 2;
      Client client({.socket_path = sockets[i % sockets.size()], .timeout_ms = 5000});
      const CheckArgs args = reader ? CheckArgs{key, 0, read.limit, read.window_ms}
                                    : CheckArgs{key, 1, kLimit, kWindowMs};
      std::vector<Admission> admitted;
      int64_t reads = 0;
      start.arrive_and_wait();
      const int64_t end_ns = NowNs() + run_ns;
      while (NowNs() < end_ns) {
        const int64_t sent = NowNs();
        Result<CheckResult> r = client.Check(args);
        const int64_t answered = NowNs();
        if (!r.ok() || r->status != CheckStatus::kOk) {
          run.Problem(r.ok() ? CheckStatusName(r->status) : r.status().ToString());
        } else if (reader && r->limit != read.limit) {
          run.Problem("a read answered under limit " + std::to_string(r->limit));
        } else if (reader) {
          ++reads;
        } else if (r->allowed) {
          admitted.push_back({sent, answered});
        }
      }
      std::lock_guard lock(run.mu);
      run.admitted.insert(run.admitted.end(), admitted.begin(), admitted.end());
      run.reads += reads;
    });
  }
  for (std::thread& t : threads) t.join();
}

// Reads under 50 per 100 ms, batched with checks under 50 per 1000 ms, used to leave the row at
// the reads' policy: over 1.6 times the checks' bound. Reads under 50 per 100 s starved the
// checks instead. Now no interval of 1000 ms holds more than the checks' bound, and the checks
// are admitted at nearly their own rate whatever the reads' policy.
TEST_P(SharedRowRules, ReadsUnderAnotherPolicyNeitherRaiseTheChecksBoundNorStarveThem) {
  REQUIRE_TEST_DATABASE();
  constexpr int64_t kRunNs = 3'000'000'000;
  const std::string mode = GetParam();
  const std::string table = "t_rows_reads_" + mode;
  DropTable(table);
  auto sidecars = StartReadySidecars(2, ModeEnv(mode, table, "rows_reads_" + mode));
  ASSERT_EQ(sidecars.size(), 2u);
  const std::vector<std::string> sockets = {sidecars[0]->socket_path(), sidecars[1]->socket_path()};
  KeyRun fast;
  KeyRun slow;
  std::thread fast_thread([&] { Hammer(sockets, "reads-fast", Policy{50, 100}, kRunNs, fast); });
  std::thread slow_thread([&] {
    Hammer(sockets, "reads-slow", Policy{50, 100'000}, kRunNs, slow);
  });
  fast_thread.join();
  slow_thread.join();

  const double run_ms = kRunNs / 1e6;
  for (KeyRun* run : {&fast, &slow}) {
    const char* name = run == &fast ? "reads under 50/100 ms" : "reads under 50/100 s";
    SCOPED_TRACE(name);
    const size_t most = MostInAnyInterval(run->admitted, 1'000'000'000);
    std::printf(
        "%s, %s: %lld reads, %zu checks admitted in %.0f ms (bound %.0f), at most %zu "
        "in 1000 ms (bound %.0f)\n",
        mode.c_str(), name, static_cast<long long>(run->reads), run->admitted.size(), run_ms,
        Bound(mode, run_ms), most, Bound(mode, 1000));
    EXPECT_EQ(run->problems, 0) << run->first_problem;
    EXPECT_GT(run->reads, 100) << "the reads must interleave with the checks";
    EXPECT_LE(static_cast<double>(most), Bound(mode, 1000));
    // Starving shows as a few percent of the bound (246 in 30 s against 1,550).
    EXPECT_GE(static_cast<double>(run->admitted.size()), 0.75 * Bound("strict", run_ms));
  }
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  for (const char* key : {"reads-fast", "reads-slow"}) {
    EXPECT_EQ(QueryValue(conn.get(),
                         "SELECT capacity || '/' || window_ms FROM " + table +
                             " WHERE key = sha256(convert_to($1, 'UTF8'))",
                         {key}),
              "50/1000")
        << key << ": only the checks' policy is ever written";
  }
}

// A sidecar of one mode with its admin server, on a table of its own that holds one
// hand-written row.
struct RowFixture {
  AdminSidecar sidecar;
  PgConnPtr conn;
  std::unique_ptr<Client> client;  // Null when the fixture could not be set up.
  std::string table;
  std::string key;

  // The SQL expression `what` of the row, read now.
  std::string Row(const std::string& what) const {
    return QueryValue(
        conn.get(),
        "SELECT " + what + " FROM " + table + " WHERE key = sha256(convert_to($1, 'UTF8'))", {key});
  }
};

// Starts a sidecar of `mode` on table t_rows_`name`_`mode`, makes it create the table, then
// inserts the row of `key` with the SQL expressions `values` for its columns.
RowFixture StartWithRow(const std::string& mode, const std::string& name, const std::string& key,
                        const std::string& values, Env extra = {}) {
  RowFixture f;
  f.table = "t_rows_" + name + "_" + mode;
  f.key = key;
  DropTable(f.table);
  f.sidecar = StartWithAdmin(ModeEnv(mode, f.table, "rows_" + name + "_" + mode, std::move(extra)));
  if (f.sidecar.port == 0) return f;
  if (!WaitUntil([&] { return PingsReady(f.sidecar.process->socket_path()); })) {
    ADD_FAILURE() << "never ready: " << f.sidecar.process->Stderr();
    return f;
  }
  Client setup({.socket_path = f.sidecar.process->socket_path(), .timeout_ms = 5000});
  Result<CheckResult> r = setup.Check({.key = "rows-setup"});  // Creates the table.
  f.conn = ConnectToTestDatabase();
  if (!r.ok() || !r->allowed || PQstatus(f.conn.get()) != CONNECTION_OK) {
    ADD_FAILURE() << "setup: " << r.status().ToString() << " " << PQerrorMessage(f.conn.get());
    return f;
  }
  const std::string inserted = Command(f.conn.get(),
                                       "INSERT INTO " + f.table +
                                           " (key, tokens, updated_at, capacity, window_ms) VALUES "
                                           "(sha256(convert_to($1, 'UTF8')), " +
                                           values + ")",
                                       {key});
  if (!inserted.empty()) {
    ADD_FAILURE() << inserted;
    return f;
  }
  f.client = std::make_unique<Client>(
      ClientOptions{.socket_path = f.sidecar.process->socket_path(), .timeout_ms = 5000});
  return f;
}

// The repairs counted by the sidecar, once its series show at least `at_least`.
double RepairedRows(uint16_t port, double at_least) {
  Result<PromText> m = ScrapeUntil(port, [&](const PromText& t) {
    return t.Value("ratelimit_db_repaired_rows_total").value_or(0) >= at_least;
  });
  return m.ok() ? m->Value("ratelimit_db_repaired_rows_total").value_or(-1) : -1;
}

// The row: window_ms 4,000,000,000 (in range), updated_at 30 days ahead, no tokens.
// Judged against its own window it was a clock that stepped back, so it refilled nothing and
// every check was denied for 30 days. No clock steps back that far: it is repaired.
TEST_P(SharedRowRules, ARowThirtyDaysAheadIsRepairedAndItsKeyAllowedAtOnce) {
  REQUIRE_TEST_DATABASE();
  const RowFixture f = StartWithRow(GetParam(), "future", "row-from-the-future",
                                    "0, clock_timestamp() + interval '30 days', 50, 4000000000");
  ASSERT_TRUE(f.client);

  Result<CheckResult> r = f.client->Check({.key = f.key});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, CheckStatus::kOk);
  EXPECT_TRUE(r->allowed) << "retry_after_ms " << r->retry_after_ms;
  EXPECT_NE(r->source, Source::kFallback);
  EXPECT_EQ(RepairedRows(f.sidecar.port, 1), 1);
  const std::vector<std::string> logged =
      LinesContaining(f.sidecar.process->Stderr(),
                      {"\"msg\":\"repaired a malformed rate limit row\"",
                       "updated_at in the future, beyond any clock step", "\"level\":\"warn\""});
  EXPECT_EQ(logged.size(), 1u) << f.sidecar.process->Stderr();
  EXPECT_EQ(f.Row("capacity || '/' || window_ms || ' ' || (updated_at <= clock_timestamp())"),
            "50/1000 true")
      << "the row is corrected in the table";
}

// A repair is written even when the checks it precedes are all denied (a denial writes
// nothing): a row 10 minutes ahead, more than its window, with no tokens, keeps its tokens but
// takes the database's time, so the key refills from now on instead of in 10 minutes.
TEST_P(SharedRowRules, ARepairIsWrittenEvenWhenTheCheckIsDenied) {
  REQUIRE_TEST_DATABASE();
  // A lease sidecar admits the first check of a key new to it from its allowance (u = 1), the
  // row owing it; with u = 0 the row decides it, as strict mode does.
  const RowFixture f = StartWithRow(GetParam(), "denied_repair", "row-ten-minutes-ahead",
                                    "0, clock_timestamp() + interval '10 minutes', 50, 1000",
                                    {{"RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", "0"}});
  ASSERT_TRUE(f.client);

  Result<CheckResult> r = f.client->Check({.key = f.key});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, CheckStatus::kOk);
  EXPECT_FALSE(r->allowed) << "no tokens: the repair keeps them";
  EXPECT_EQ(RepairedRows(f.sidecar.port, 1), 1);
  EXPECT_EQ(f.Row("updated_at <= clock_timestamp()"), "t") << "the repaired time is in the table";
  // And the key refills from the repair on: 1 token in 20 ms.
  EXPECT_TRUE(WaitUntil(
      [&] {
        Result<CheckResult> again = f.client->Check({.key = f.key});
        return again.ok() && again->allowed;
      },
      2000));
}

}  // namespace
}  // namespace ratelimit
