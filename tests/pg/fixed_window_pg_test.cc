// Fixed windows shared through a real PostgreSQL, strict and lease: one window per key across
// sidecars, at most `limit` admissions per window, denials that cost no transaction, the table's
// algorithm column, rows of the other algorithm and damaged rows, and collection.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "sidecar/pg/garbage_collector.h"
#include "tests/testing/http_client.h"
#include "tests/testing/pg_test_support.h"
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

// A fixed window sidecar of `mode` on `table`, whose default policy is kLimit per kWindowMs.
Env WindowEnv(const std::string& mode, const std::string& table, const std::string& app,
              Env extra = {}) {
  extra.emplace("RATE_LIMIT_MODE", mode);
  extra.emplace("RATE_LIMIT_ALGORITHM", "fixed_window");
  extra.emplace("RATE_LIMIT_MAX_REQUESTS", std::to_string(kLimit));
  extra.emplace("RATE_LIMIT_WINDOW_MS", std::to_string(kWindowMs));
  return StrictEnv(table, app, std::move(extra));
}

// Admissions grouped by window: an allowed answer's window ends reset_after_ms after it was
// received. Windows start at least window_ms apart, so ends closer than half a window are one
// window's (the estimates differ by round trips, milliseconds). Sorted by end.
std::vector<size_t> AdmissionsPerWindow(std::vector<int64_t> window_ends_ns) {
  std::sort(window_ends_ns.begin(), window_ends_ns.end());
  std::vector<size_t> counts;
  int64_t last = 0;
  for (int64_t end : window_ends_ns) {
    if (counts.empty() || end - last > int64_t{kWindowMs} * 1'000'000 / 2) counts.push_back(0);
    ++counts.back();
    last = end;
  }
  return counts;
}

class FixedWindowPg : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Modes, FixedWindowPg, ::testing::Values("strict", "lease"),
                         [](const auto& test) { return test.param; });

// Three sidecars on one table, a hot key saturated by two client threads each for about four
// windows: no window admits more than the limit across the three, and every full window (all
// but the first and the last, which the run cuts) admits at least 95% of it.
TEST_P(FixedWindowPg, ThreeSidecarsOnAHotKeyAdmitAtMostTheLimitPerWindowAndNearlyAllOfIt) {
  REQUIRE_TEST_DATABASE();
  constexpr size_t kSidecars = 3;
  constexpr size_t kThreadsPerSidecar = 2;
  constexpr int64_t kRunNs = 4'200'000'000;
  const std::string table = "t_fixed_hot_" + GetParam();
  DropTable(table);
  auto sidecars = StartReadySidecars(kSidecars, WindowEnv(GetParam(), table, "fixed_hot"));
  ASSERT_EQ(sidecars.size(), kSidecars);

  const size_t n = kSidecars * kThreadsPerSidecar;
  std::vector<std::vector<int64_t>> ends(n);
  std::vector<int64_t> denied(n, 0);
  std::vector<std::string> problems(n);
  std::latch start(static_cast<ptrdiff_t>(n));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      Client client({.socket_path = sidecars[i % kSidecars]->socket_path(), .timeout_ms = 5000});
      start.arrive_and_wait();
      const int64_t begin = NowNs();
      while (NowNs() < begin + kRunNs) {
        Result<CheckResult> r = client.Check({.key = "fixed-hot"});
        const int64_t received = NowNs();
        if (!r.ok() || r->status != CheckStatus::kOk || r->source == Source::kFallback) {
          if (problems[i].empty()) {
            problems[i] = r.ok() ? std::string("status ") + CheckStatusName(r->status) +
                                       " source " + SourceName(r->source)
                                 : r.status().ToString();
          }
          continue;
        }
        if (r->allowed) {
          ends[i].push_back(received + int64_t{r->reset_after_ms} * 1'000'000);
        } else {
          ++denied[i];
          EXPECT_GT(r->retry_after_ms, 0u);
          EXPECT_LE(r->retry_after_ms, kWindowMs);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<int64_t> all_ends;
  int64_t all_denied = 0;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(problems[i], "") << "thread " << i;
    all_ends.insert(all_ends.end(), ends[i].begin(), ends[i].end());
    all_denied += denied[i];
  }
  const std::vector<size_t> counts = AdmissionsPerWindow(all_ends);
  std::string shown;
  for (size_t c : counts) shown += std::to_string(c) + " ";
  std::printf("%s: admissions per window: %s(%lld denied)\n", GetParam().c_str(), shown.c_str(),
              static_cast<long long>(all_denied));
  ASSERT_GE(counts.size(), 4u) << shown;
  ASSERT_GT(all_denied, static_cast<int64_t>(all_ends.size())) << "the key was not saturated";
  for (size_t w = 0; w < counts.size(); ++w) {
    EXPECT_LE(counts[w], kLimit) << "window " << w << " of " << shown;
    if (w > 0 && w + 1 < counts.size()) {
      EXPECT_GE(counts[w] * 100, kLimit * 95u) << "window " << w << " of " << shown;
    }
  }
  for (auto& s : sidecars) s->Signal(SIGTERM);
  for (auto& s : sidecars) EXPECT_EQ(s->WaitExit(10000), 0) << s->Stderr();
}

// Database transactions the sidecar counted, once its published series have settled.
double Transactions(uint16_t port) {
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // Published every 250 ms.
  Result<PromText> m = ScrapeMetrics(port);
  return m.ok() ? m->Value("ratelimit_db_transactions_total").value_or(-1) : -1;
}

// Lease mode: once the store has denied a key, checks until the window's end are denied from
// memory (the denial cache), each with the rest of the window as retry_after_ms, and cost no
// database transaction; the first check after the window's end is admitted from the next one.
TEST(FixedWindowPgLease, DenialsUntilTheWindowsEndCostNoTransaction) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_fixed_denials";
  DropTable(table);
  AdminSidecar sidecar = StartWithAdmin(WindowEnv("lease", table, "fixed_denials"));
  ASSERT_NE(sidecar.port, 0);
  ASSERT_TRUE(WaitUntil([&] { return PingsReady(sidecar.process->socket_path()); }));
  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  const CheckArgs args{.key = "fixed-denied", .limit = 5, .window_ms = 2000};
  int admitted = 0;
  int64_t first_ns = 0;
  for (int i = 0; i < 6; ++i) {
    Result<CheckResult> r = client.Check(args);
    if (i == 0) first_ns = NowNs();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    admitted += r->allowed ? 1 : 0;
  }
  EXPECT_EQ(admitted, 5);
  const double before = Transactions(sidecar.port);
  ASSERT_GT(before, 0);
  int denials = 0;
  while (NowNs() < first_ns + 1'500'000'000) {
    Result<CheckResult> r = client.Check(args);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_FALSE(r->allowed);
    EXPECT_EQ(r->source, Source::kLease);
    const int64_t left_ms = (first_ns + 2'000'000'000 - NowNs()) / 1'000'000;
    EXPECT_LE(r->retry_after_ms, left_ms + 50) << "the rest of the window";
    EXPECT_GE(r->retry_after_ms + 50, left_ms - 1) << "the rest of the window";
    ++denials;
  }
  EXPECT_EQ(Transactions(sidecar.port), before) << denials << " denials from the cache";
  ASSERT_GT(denials, 100);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // Past the window's end.
  Result<CheckResult> next = client.Check(args);
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(next->allowed) << "a new window";
}

// A connection to the test database on which `table` was just created afresh with `columns`;
// null, with a failure recorded, when that failed.
PgConnPtr FreshTable(const std::string& table, const std::string& columns) {
  DropTable(table);
  PgConnPtr conn = ConnectToTestDatabase();
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    ADD_FAILURE() << PQerrorMessage(conn.get());
    return nullptr;
  }
  const std::string created = Command(conn.get(), "CREATE TABLE " + table + " " + columns);
  if (!created.empty()) {
    ADD_FAILURE() << created;
    return nullptr;
  }
  return conn;
}

// The columns of the table's first version, without `algorithm`.
constexpr char kFirstColumns[] =
    "(key bytea PRIMARY KEY, tokens double precision, updated_at timestamptz, capacity bigint,"
    " window_ms bigint";

// An old table without the algorithm column gets it; a token bucket row asked for as a fixed
// window is converted (counted, logged); damaged fixed window rows are repaired.
TEST(FixedWindowPgTable, AnOldTableGetsTheColumnAndOtherOrDamagedRowsAreHandled) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_fixed_old";
  PgConnPtr conn = FreshTable(table, std::string(kFirstColumns) + ")");
  ASSERT_TRUE(conn);
  const auto insert = [&](const std::string& key, const std::string& values) {
    EXPECT_EQ(
        Command(conn.get(),
                "INSERT INTO " + table + " VALUES (sha256(convert_to($1, 'UTF8')), " + values + ")",
                {key}),
        "");
  };
  insert("was-bucket", "2.25, now(), 10, 3600000");  // A token bucket of 2 whole tokens.
  AdminSidecar sidecar =
      StartWithAdmin(WindowEnv("strict", table, "fixed_old", {{"RATE_LIMIT_LOG_LEVEL", "info"}}));
  ASSERT_NE(sidecar.port, 0);
  ASSERT_TRUE(WaitUntil([&] { return PingsReady(sidecar.process->socket_path()); }))
      << sidecar.process->Stderr();
  EXPECT_EQ(QueryValue(conn.get(),
                       "SELECT data_type || ' ' || is_nullable || ' ' || column_default FROM "
                       "information_schema.columns WHERE table_name = $1 AND column_name = "
                       "'algorithm'",
                       {table}),
            "smallint NO 0");
  insert("damaged", "2.5, now(), 10, 3600000, 1");  // Fractional admissions.
  insert("unknown", "3, now(), 10, 3600000, 7");    // An algorithm of no version.
  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  const auto check = [&](const std::string& key) {
    Result<CheckResult> r = client.Check({.key = key, .limit = 10, .window_ms = 3600000});
    EXPECT_TRUE(r.ok() && r->allowed && r->source == Source::kDatabase)
        << key << ": " << (r.ok() ? "" : r.status().ToString());
    return r.ok() ? r->remaining : 99u;
  };
  EXPECT_EQ(check("was-bucket"), 1u) << "a window of the 2 whole tokens the bucket held";
  EXPECT_EQ(check("damaged"), 1u) << "2.5 admissions left read as 2";
  EXPECT_EQ(check("unknown"), 2u) << "repaired to the check's algorithm: a window with 3 left";
  const std::string row =
      "SELECT algorithm FROM " + table + " WHERE key = sha256(convert_to($1, 'UTF8'))";
  EXPECT_EQ(QueryValue(conn.get(), row, {"was-bucket"}), "1");
  EXPECT_EQ(QueryValue(conn.get(), row, {"damaged"}), "1");
  Result<PromText> m = ScrapeUntil(sidecar.port, [](const PromText& t) {
    return t.Value("ratelimit_db_algorithm_switched_rows_total").value_or(0) >= 1 &&
           t.Value("ratelimit_db_repaired_rows_total").value_or(0) >= 2;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << DumpNow(sidecar.port);
  EXPECT_EQ(m->Value("ratelimit_db_algorithm_switched_rows_total"), 1);
  EXPECT_EQ(m->Value("ratelimit_db_repaired_rows_total"), 2);
  const std::string err = sidecar.process->Stderr();
  EXPECT_EQ(LinesContaining(err, {"a rate limit row of the other algorithm was converted"}).size(),
            1u)
      << err;
  EXPECT_EQ(LinesContaining(err, {"adding columns to the rate limit table"}).size(), 1u) << err;
}

// The collector deletes a fixed window's row once its window has ended (a second ago), and
// keeps one whose window holds, even with every admission left.
TEST(FixedWindowPgTable, TheCollectorTakesRowsOfEndedWindowsOnly) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_fixed_gc";
  PgConnPtr conn =
      FreshTable(table, std::string(kFirstColumns) + ", algorithm smallint NOT NULL DEFAULT 0)");
  ASSERT_TRUE(conn);
  ASSERT_EQ(Command(conn.get(), "INSERT INTO " + table +
                                    " VALUES ('ended', 0, now() - interval '3 s', 10, 1000, 1),"
                                    " ('holds_full', 10, now() - interval '3 s', 10, 60000, 1),"
                                    " ('holds_spent', 0, now() - interval '3 s', 10, 60000, 1),"
                                    " ('bucket_full', 10, now() - interval '3 s', 10, 1000, 0)"),
            "");
  ASSERT_EQ(Command(conn.get(), GarbageCollector::DeleteQuery(table).sql), "");
  EXPECT_EQ(QueryValue(conn.get(),
                       "SELECT string_agg(encode(key, 'escape'), ',' ORDER BY key)"
                       " FROM " +
                           table),
            "holds_full,holds_spent");
}

}  // namespace
}  // namespace ratelimit
