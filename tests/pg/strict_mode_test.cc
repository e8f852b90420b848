// Strict mode on a real PostgreSQL: the global bound under contention, first use, outages.
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
#include "ratelimit/pipeline.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::ExpectFallbackDenial;
using pg_test::kSlowWindowMs;
using pg_test::NowNs;

using pg_test::QueryValue;
using pg_test::ServerLogTail;
using pg_test::StartReadySidecar;
using pg_test::StartReadySidecars;
using pg_test::StrictEnv;

// What one client thread saw.
struct Tally {
  int64_t allowed = 0;
  int64_t denied = 0;
  int64_t client_errors = 0;  // No answer: timeout, broken connection, ...
  int64_t store_unavailable = 0;
  int64_t other_refusals = 0;  // Any other non-Ok status.
  int64_t wrong_source = 0;    // An answer not from the database.
  std::string first_problem;
  int64_t first_send_ns = 0;
  int64_t last_answer_ns = 0;

  void Add(const Result<CheckResult>& r) {
    if (!r.ok()) {
      ++client_errors;
      Note(r.status().ToString());
    } else {
      Add(*r);
    }
  }
  void Add(const CheckResult& r) {
    if (r.source != Source::kDatabase) {
      ++wrong_source;
      Note(std::string("source ") + SourceName(r.source));
    }
    if (r.status == CheckStatus::kOk) {
      ++(r.allowed ? allowed : denied);
    } else if (r.status == CheckStatus::kStoreUnavailable) {
      ++store_unavailable;
      Note("store_unavailable");
    } else {
      ++other_refusals;
      Note(CheckStatusName(r.status));
    }
  }
  void Note(const std::string& problem) {
    if (first_problem.empty()) first_problem = problem;
  }
  void Merge(const Tally& o) {
    allowed += o.allowed;
    denied += o.denied;
    client_errors += o.client_errors;
    store_unavailable += o.store_unavailable;
    other_refusals += o.other_refusals;
    wrong_source += o.wrong_source;
    if (first_problem.empty()) first_problem = o.first_problem;
    first_send_ns = first_send_ns == 0 ? o.first_send_ns : std::min(first_send_ns, o.first_send_ns);
    last_answer_ns = std::max(last_answer_ns, o.last_answer_ns);
  }
};

void ExpectNoFailures(const Tally& total) {
  EXPECT_EQ(total.store_unavailable, 0) << total.first_problem;
  EXPECT_EQ(total.client_errors, 0) << total.first_problem;
  EXPECT_EQ(total.other_refusals, 0) << total.first_problem;
  EXPECT_EQ(total.wrong_source, 0) << total.first_problem;
}

// The hot-key bound with each way of sending statements (RATE_LIMIT_PG_STATEMENTS): prepared
// once per connection, or unnamed, parsed in every transaction as a transaction pooler needs.
class StrictModeStatements : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Statements, StrictModeStatements, ::testing::Values("prepared", "unnamed"),
                         [](const auto& test) { return test.param; });

TEST_P(StrictModeStatements, HotKeyOnThreeSidecarsAdmitsAtMostCapacityPlusRefillAndNearlyThatMuch) {
  REQUIRE_TEST_DATABASE();
  constexpr int kLimit = 200;
  constexpr int kWindowMs = 2000;
  constexpr size_t kSidecars = 3;
  constexpr size_t kThreadsPerSidecar = 16;
  constexpr int64_t kRunNs = 4'000'000'000;
  const std::string table = "t_strict_hot_key_" + GetParam();
  const std::string app = "strict_hot_key_" + GetParam();
  DropTable(table);
  ServerLogTail server_log;
  auto sidecars =
      StartReadySidecars(kSidecars, StrictEnv(table, app,
                                              {{"RATE_LIMIT_MAX_REQUESTS", std::to_string(kLimit)},
                                               {"RATE_LIMIT_WINDOW_MS", std::to_string(kWindowMs)},
                                               {"RATE_LIMIT_PG_STATEMENTS", GetParam()}}));
  ASSERT_EQ(sidecars.size(), kSidecars);

  const size_t n = kSidecars * kThreadsPerSidecar;
  std::vector<Tally> tallies(n);
  std::latch start(static_cast<ptrdiff_t>(n));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      Client client({.socket_path = sidecars[i % kSidecars]->socket_path(), .timeout_ms = 5000});
      Tally& tally = tallies[i];
      start.arrive_and_wait();
      tally.first_send_ns = NowNs();
      while (NowNs() < tally.first_send_ns + kRunNs) {
        tally.Add(client.Check({.key = "strict-hot-key"}));
        tally.last_answer_ns = NowNs();
      }
    });
  }
  for (std::thread& t : threads) t.join();

  Tally total;
  for (const Tally& t : tallies) total.Merge(t);
  const double t_ms = static_cast<double>(total.last_answer_ns - total.first_send_ns) / 1e6;
  const double bound = kLimit + static_cast<double>(kLimit) / kWindowMs * t_ms;
  const int64_t checks = total.allowed + total.denied;
  std::printf(
      "hot key: %.0f ms, %lld checks (%.0f/s across %zu sidecars), %lld admitted, "
      "bound %.1f\n",
      t_ms, static_cast<long long>(checks), checks / (t_ms / 1000), kSidecars,
      static_cast<long long>(total.allowed), bound);
  EXPECT_LE(total.allowed, static_cast<int64_t>(bound));
  EXPECT_GE(static_cast<double>(total.allowed), 0.9 * bound);
  ExpectNoFailures(total);
  EXPECT_EQ(server_log.Deadlocks(app), std::vector<std::string>{});
}

TEST(StrictMode, KeysCheckedInDifferentOrdersNeverDeadlockAndEachKeyKeepsItsBound) {
  REQUIRE_TEST_DATABASE();
  constexpr uint32_t kLimit = 50;
  constexpr uint32_t kWindowMs = 1000;
  constexpr size_t kSidecars = 3;
  constexpr size_t kThreadsPerSidecar = 16;
  constexpr int64_t kRunNs = 3'000'000'000;
  const std::string table = "t_strict_key_orders";
  const std::string app = "strict_key_orders";
  DropTable(table);
  ServerLogTail server_log;
  auto sidecars = StartReadySidecars(kSidecars, StrictEnv(table, app));
  ASSERT_EQ(sidecars.size(), kSidecars);

  const std::vector<std::string> keys = {"order-a", "order-b", "order-c", "order-d", "order-e"};
  const size_t n = kSidecars * kThreadsPerSidecar;
  // Per thread, then per key.
  std::vector<std::vector<Tally>> tallies(n, std::vector<Tally>(keys.size()));
  std::vector<std::string> pipeline_errors(n);
  std::latch start(static_cast<ptrdiff_t>(n));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937 rng(static_cast<uint32_t>(i));
      Result<std::unique_ptr<Pipeline>> pipeline = Pipeline::Connect(
          {.socket_path = sidecars[i % kSidecars]->socket_path(), .timeout_ms = 5000});
      start.arrive_and_wait();
      if (!pipeline.ok()) {
        pipeline_errors[i] = pipeline.status().ToString();
        return;
      }
      std::vector<size_t> order = {0, 1, 2, 3, 4};
      const int64_t first_send = NowNs();
      for (Tally& t : tallies[i]) t.first_send_ns = first_send;
      while (NowNs() < first_send + kRunNs) {
        // One batch: every key once, in an order of this thread's own, so that transactions
        // of different sidecars touch the same rows in different orders.
        std::shuffle(order.begin(), order.end(), rng);
        for (size_t id = 0; id < order.size(); ++id) {
          const Status queued = (*pipeline)->QueueCheck(
              id, {.key = keys[order[id]], .limit = kLimit, .window_ms = kWindowMs});
          if (!queued.ok()) {
            pipeline_errors[i] = queued.ToString();
            return;
          }
        }
        if (Status flushed = (*pipeline)->Flush(); !flushed.ok()) {
          pipeline_errors[i] = flushed.ToString();
          return;
        }
        for (size_t j = 0; j < order.size(); ++j) {
          Result<Reply> reply = (*pipeline)->Receive();
          if (!reply.ok() || reply->kind != Reply::Kind::kCheck || reply->id >= order.size()) {
            pipeline_errors[i] = reply.ok() ? "unexpected reply" : reply.status().ToString();
            return;
          }
          Tally& t = tallies[i][order[reply->id]];
          t.Add(reply->check);
          t.last_answer_ns = NowNs();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  for (size_t i = 0; i < n; ++i) EXPECT_EQ(pipeline_errors[i], "") << "thread " << i;
  for (size_t k = 0; k < keys.size(); ++k) {
    Tally total;
    for (size_t i = 0; i < n; ++i) total.Merge(tallies[i][k]);
    const double t_ms = static_cast<double>(total.last_answer_ns - total.first_send_ns) / 1e6;
    const double bound = kLimit + static_cast<double>(kLimit) / kWindowMs * t_ms;
    std::printf("key %s: %.0f ms, %lld checks, %lld admitted, bound %.1f\n", keys[k].c_str(), t_ms,
                static_cast<long long>(total.allowed + total.denied),
                static_cast<long long>(total.allowed), bound);
    EXPECT_LE(total.allowed, static_cast<int64_t>(bound)) << keys[k];
    EXPECT_GE(total.allowed, kLimit) << keys[k];  // Each key starts full and is hammered.
    ExpectNoFailures(total);
  }
  EXPECT_EQ(server_log.Deadlocks(app), std::vector<std::string>{});
}

TEST(StrictMode, BrandNewKeyCheckedByAllSidecarsAtOnceAdmitsExactlyTheLimit) {
  REQUIRE_TEST_DATABASE();
  constexpr uint32_t kLimit = 50;
  constexpr size_t kSidecars = 4;
  constexpr size_t kThreadsPerSidecar = 8;
  constexpr int kChecksPerThread = 3;  // 96 checks a key: more than the limit.
  const std::string table = "t_strict_first_use";
  DropTable(table);
  auto sidecars = StartReadySidecars(kSidecars, StrictEnv(table, "strict_first_use"));
  ASSERT_EQ(sidecars.size(), kSidecars);

  // Several rounds, each on a key no sidecar has seen: each round races the row's insertion.
  for (int round = 0; round < 3; ++round) {
    const std::string key = "first-use-" + std::to_string(round);
    const size_t n = kSidecars * kThreadsPerSidecar;
    std::vector<Tally> tallies(n);
    std::latch start(static_cast<ptrdiff_t>(n));
    std::vector<std::thread> threads;
    for (size_t i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        Client client({.socket_path = sidecars[i % kSidecars]->socket_path(), .timeout_ms = 5000});
        // Connect before the barrier, so that the checks leave together.
        if (Result<PingResult> ping = client.Ping(); !ping.ok()) tallies[i].Note("ping failed");
        start.arrive_and_wait();
        for (int c = 0; c < kChecksPerThread; ++c) {
          tallies[i].Add(client.Check({.key = key, .limit = kLimit, .window_ms = kSlowWindowMs}));
        }
      });
    }
    for (std::thread& t : threads) t.join();
    Tally total;
    for (const Tally& t : tallies) total.Merge(t);
    EXPECT_EQ(total.allowed, kLimit) << key;
    EXPECT_EQ(total.denied, static_cast<int64_t>(n) * kChecksPerThread - kLimit) << key;
    ExpectNoFailures(total);
  }
}

TEST(StrictMode, DatabaseDownAtStartUpAnswersByTheFallbackAndReportsNotReady) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_strict_db_down";
  Env env = StrictEnv(table, "strict_db_down");
  env["DATABASE_URL"] = "host=127.0.0.1 port=1 connect_timeout=2";  // Nothing listens there.
  Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(env);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  SidecarProcess& sidecar = **started;
  Client client({.socket_path = sidecar.socket_path(), .timeout_ms = 5000});

  for (int i = 0; i < 3; ++i) {
    Result<PingResult> ping = client.Ping();
    ASSERT_TRUE(ping.ok()) << ping.status().ToString();
    EXPECT_FALSE(ping->ready);
    EXPECT_EQ(ping->store, "postgres");
    for (int j = 0; j < 5; ++j) {
      Result<CheckResult> r = client.Check({.key = "db-down"});
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ExpectFallbackDenial(*r);
    }
    // It keeps running through reconnection attempts (the backoff starts at 100 ms).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  EXPECT_EQ(sidecar.WaitExit(0), -1) << "the sidecar exited: " << sidecar.Stderr();
  EXPECT_NE(sidecar.Stderr().find("database connection failed"), std::string::npos)
      << sidecar.Stderr();

  // The same configuration pointed at a server that is up is ready and serves.
  std::unique_ptr<SidecarProcess> healthy = StartReadySidecar(StrictEnv(table, "strict_db_down"));
  ASSERT_TRUE(healthy);
  Client healthy_client({.socket_path = healthy->socket_path(), .timeout_ms = 5000});
  Result<CheckResult> r = healthy_client.Check({.key = "db-down"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, CheckStatus::kOk);
  EXPECT_TRUE(r->allowed);
  EXPECT_EQ(r->source, Source::kDatabase);
}

TEST(StrictMode, DenialsLeaveTheRowUntouched) {
  REQUIRE_TEST_DATABASE();
  constexpr uint32_t kLimit = 3;
  const std::string table = "t_strict_denial";
  const std::string key = "denied-key";
  DropTable(table);
  std::unique_ptr<SidecarProcess> sidecar = StartReadySidecar(StrictEnv(table, "strict_denial"));
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  for (uint32_t i = 0; i < kLimit; ++i) {
    Result<CheckResult> r = client.Check({.key = key, .limit = kLimit, .window_ms = kSlowWindowMs});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(r->allowed);
  }

  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  // xmin changes with any write to the row, even one that rewrites the same values.
  const std::string row_sql =
      "SELECT xmin::text || ' ' || tokens::text || ' ' || updated_at::text || ' ' || "
      "capacity::text || ' ' || window_ms::text FROM " +
      table + " WHERE key = sha256(convert_to($1, 'UTF8'))";
  const std::string before = QueryValue(conn.get(), row_sql, {key});
  ASSERT_EQ(before.find("ERROR"), std::string::npos) << before;

  for (int i = 0; i < 20; ++i) {
    Result<CheckResult> r = client.Check({.key = key, .limit = kLimit, .window_ms = kSlowWindowMs});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, CheckStatus::kOk);
    EXPECT_FALSE(r->allowed);
    EXPECT_EQ(r->source, Source::kDatabase);
  }
  EXPECT_EQ(QueryValue(conn.get(), row_sql, {key}), before);
}

}  // namespace
}  // namespace ratelimit
