// Key floods on a real PostgreSQL: new rows bounded, hot keys exact, the table collected back.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "sidecar/pg/batch_transaction.h"
#include "sidecar/pg/garbage_collector.h"
#include "sidecar/pg/table_name.h"
#include "sidecar/pg/table_sql.h"
#include "tests/testing/canned_lock_results.h"
#include "tests/testing/check_load.h"
#include "tests/testing/fake_pool.h"
#include "tests/testing/http_client.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/prometheus_text.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::Exec;
using pg_test::kSlowWindowMs;
using pg_test::NowNs;
using pg_test::PingsReady;
using pg_test::QueryValue;
using pg_test::StartReadyWithAdmin;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

constexpr int kNewKeysPerSec = 200;
constexpr uint32_t kHotLimit = 10;
constexpr int kHotKeys = 3;
constexpr int kFlood = -1;  // LoadRequest::kind of a flood check; a hot key's is its index.

std::string HotKey(int index) { return "hot-" + std::to_string(index); }

int64_t TableRows(PGconn* conn, const std::string& table) {
  return std::stoll(QueryValue(conn, "SELECT count(*) FROM " + table));
}

double Series(const PromText& m, std::string_view name) { return m.Value(name).value_or(-1); }

// Gives each hot key its row before the flood, with one check each (a read would write
// nothing: its transaction rolls back, the new row with it).
void CreateHotRows(const std::string& socket_path, uint32_t limit, uint32_t window_ms) {
  Client client({.socket_path = socket_path, .timeout_ms = 5000});
  for (int k = 0; k < kHotKeys; ++k) {
    Result<CheckResult> r =
        client.Check({.key = HotKey(k), .cost = 1, .limit = limit, .window_ms = window_ms});
    ASSERT_TRUE(r.ok() && r->allowed && r->source != Source::kFallback) << HotKey(k);
  }
}

// Load on one sidecar: threads [0, hot_threads) check the hot keys round robin, the others a
// new key each time while `flooding` (then hot keys too). Flood keys take 1 of 100 tokens.
CheckLoadOptions FloodLoad(const std::string& socket_path, int hot_threads, uint32_t hot_limit,
                           uint32_t window_ms, const std::atomic<bool>& flooding) {
  return CheckLoadOptions{
      .socket_paths = {socket_path},
      .threads_per_target = 4,
      .client_timeout_ms = 15000,
      .next = [=, &flooding](int, int thread, uint64_t i) {
        if (thread >= hot_threads && flooding.load()) {
          return LoadRequest{.key = "flood-" + std::to_string(thread) + "-" + std::to_string(i),
                             .limit = 100,
                             .window_ms = window_ms,
                             .kind = kFlood};
        }
        const int k = static_cast<int>((i + thread) % kHotKeys);
        return LoadRequest{.key = HotKey(k), .limit = hot_limit, .window_ms = window_ms, .kind = k};
      }};
}

// What the flood checks got, by source, and whether any was not an ordinary answer.
struct FloodTally {
  std::map<Source, int64_t> sources;
  int64_t not_ok = 0;
  int64_t unanswered = 0;
};

FloodTally TallyFlood(const std::vector<LoadAnswer>& answers) {
  FloodTally tally;
  for (const LoadAnswer& a : answers) {
    if (a.kind != kFlood) continue;
    if (!a.answered) {
      ++tally.unanswered;
      continue;
    }
    ++tally.sources[a.result.source];
    tally.not_ok += a.result.status != CheckStatus::kOk;
  }
  return tally;
}

// Each hot key admitted exactly what its bucket had left after CreateHotRows, every answer from
// the shared bucket (`sources`).
void ExpectHotKeysExact(const std::vector<LoadAnswer>& answers,
                        const std::vector<Source>& sources) {
  std::vector<int> allowed(kHotKeys), checks(kHotKeys);
  for (const LoadAnswer& a : answers) {
    if (a.kind == kFlood) continue;
    ++checks[a.kind];
    ASSERT_TRUE(a.answered) << a.error;
    ASSERT_EQ(a.result.status, CheckStatus::kOk);
    ASSERT_NE(std::find(sources.begin(), sources.end(), a.result.source), sources.end())
        << "source " << static_cast<int>(a.result.source);
    allowed[a.kind] += a.result.allowed;
  }
  for (int k = 0; k < kHotKeys; ++k) {
    EXPECT_GT(checks[k], static_cast<int>(kHotLimit)) << HotKey(k) << " was checked past its limit";
    EXPECT_EQ(allowed[k], static_cast<int>(kHotLimit) - 1) << HotKey(k);
  }
}

// Floods one sidecar in `mode`, bounded to kNewKeysPerSec new rows a second, for about 3 s.
void RunBoundedFlood(const std::string& mode, const std::string& table,
                     const std::vector<Source>& hot_sources) {
  DropTable(table);
  AdminSidecar sidecar = StartReadyWithAdmin(
      StrictEnv(table, table,
                {{"RATE_LIMIT_MODE", mode},
                 {"RATE_LIMIT_PG_NEW_KEYS_PER_SEC", std::to_string(kNewKeysPerSec)}}));
  ASSERT_TRUE(sidecar.process);
  const std::string socket = sidecar.process->socket_path();
  CreateHotRows(socket, kHotLimit, kSlowWindowMs);  // The flood must not crowd them out.
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);
  Result<PromText> before = ScrapeUntil(sidecar.port, [](const PromText& t) {
    return Series(t, "ratelimit_db_new_keys_total") >= kHotKeys;
  });
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  const double inserted_before = Series(*before, "ratelimit_db_new_keys_total");
  EXPECT_EQ(inserted_before, kHotKeys);

  std::atomic<bool> flooding{true};
  const int64_t started = NowNs();
  CheckLoad load(FloodLoad(socket, 1, kHotLimit, kSlowWindowMs, flooding));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  load.Stop();
  const double elapsed_s = static_cast<double>(NowNs() - started) / 1e9;
  const std::vector<LoadAnswer> answers = load.Snapshot();
  FloodTally flood = TallyFlood(answers);

  Result<PromText> m = ScrapeUntil(sidecar.port, [&](const PromText& t) {
    return Series(t, "ratelimit_db_new_keys_deferred_total") >= 1;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port, "ratelimit_db");
  // Rows inserted: within rate * time + burst (the hot keys' rows were inserted before), the
  // time running until the scrape: lease mode sends the debits of new keys it admitted
  // unconfirmed and the store deferred again after the load stops, still within the rate.
  const double bound =
      kNewKeysPerSec * static_cast<double>(NowNs() - started) / 1e9 + kNewKeysPerSec;
  const double inserted = Series(*m, "ratelimit_db_new_keys_total") - inserted_before;
  const int64_t rows = TableRows(conn.get(), table) - kHotKeys;
  EXPECT_LE(inserted, bound) << "in " << elapsed_s << " s";
  EXPECT_GT(inserted, kNewKeysPerSec) << "new keys get rows up to the bound";
  EXPECT_LE(rows, inserted) << "the metric counts every row the sidecar added";
  // The rest were answered by the fallback (deny, under StrictEnv), and counted.
  EXPECT_EQ(flood.unanswered, 0);
  EXPECT_EQ(flood.not_ok, 0);
  EXPECT_GT(flood.sources[Source::kFallback],
            flood.sources[Source::kDatabase] + flood.sources[Source::kLease]);
  // Lease mode answers most of a flood without the database once it has deferred a new key.
  const double lease_deferred = m->Value("ratelimit_lease_new_keys_deferred_total").value_or(0);
  const double deferred = Series(*m, "ratelimit_db_new_keys_deferred_total") + lease_deferred;
  EXPECT_GE(deferred, static_cast<double>(flood.sources[Source::kFallback]))
      << "every fallback answer to a new key was deferred by the bound";
  if (mode == "lease") {
    EXPECT_GT(lease_deferred, Series(*m, "ratelimit_db_new_keys_deferred_total"))
        << "most of the flood answered without asking the database";
  }
  if (mode == "strict") {
    EXPECT_EQ(rows, static_cast<int64_t>(inserted)) << "none is full yet: none collected";
    EXPECT_EQ(flood.sources[Source::kDatabase], rows) << "a check the database answered has a row";
  }
  ExpectHotKeysExact(answers, hot_sources);
  const std::string log = sidecar.process->Stderr();
  EXPECT_NE(log.find("RATE_LIMIT_PG_NEW_KEYS_PER_SEC"), std::string::npos) << log;
}

TEST(KeyFlood, StrictModeInsertsAtMostTheBoundAndTheFallbackAnswersTheRest) {
  REQUIRE_TEST_DATABASE();
  RunBoundedFlood("strict", "t_flood_strict", {Source::kDatabase});
}

TEST(KeyFlood, LeaseModeInsertsAtMostTheBoundAndTheFallbackAnswersTheRest) {
  REQUIRE_TEST_DATABASE();
  RunBoundedFlood("lease", "t_flood_lease", {Source::kLease, Source::kDatabase});
}

// Rows of a short window are full within a second of their check; collection must take them
// while checks keep every session busy, and never a busy key's row (full again within
// microseconds, and checked every few milliseconds).
TEST(KeyFlood, TheTableShrinksBackAfterAFloodWhileChecksKeepEverySessionBusy) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_flood_gc";
  DropTable(table);
  constexpr uint32_t kWindowMs = 1000;
  constexpr uint32_t kBusyLimit = 1'000'000;  // A token a microsecond: always full again.
  AdminSidecar sidecar =
      StartReadyWithAdmin(StrictEnv(table, table, {{"RATE_LIMIT_PG_NEW_KEYS_PER_SEC", "0"}}));
  ASSERT_TRUE(sidecar.process);
  const std::string socket = sidecar.process->socket_path();
  CreateHotRows(socket, kBusyLimit, kWindowMs);
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);

  std::atomic<bool> flooding{true};
  CheckLoad load(FloodLoad(socket, 1, kBusyLimit, kWindowMs, flooding));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  flooding = false;  // From now on every thread checks the busy keys.
  const int64_t peak = TableRows(conn.get(), table);
  EXPECT_GT(peak, GarbageCollector::kBatch) << "more than one collection's worth";
  const int64_t flood_ended = NowNs();
  // Within 10 s: the first tick (every 5 s) finds the sessions busy, and from then on collection
  // takes every other session given back. Waiting for idle sessions at ticks instead, 500 rows
  // a tick, took 18 s for 2,000 rows.
  const bool shrank = WaitUntil([&] { return TableRows(conn.get(), table) <= kHotKeys; }, 10000);
  const double shrink_s = static_cast<double>(NowNs() - flood_ended) / 1e9;
  const uint64_t checks_while_shrinking = load.Count();
  load.Stop();
  EXPECT_TRUE(shrank) << TableRows(conn.get(), table) << " rows left of " << peak;
  std::printf("[ measured ] %lld rows collected in %.1f s under load (%llu checks in all)\n",
              static_cast<long long>(peak), shrink_s,
              static_cast<unsigned long long>(checks_while_shrinking));
  EXPECT_EQ(TableRows(conn.get(), table), kHotKeys) << "the busy keys' rows stay";
  for (const LoadAnswer& a : load.Snapshot()) {
    if (a.kind == kFlood) continue;
    ASSERT_TRUE(a.answered) << a.error;
    ASSERT_EQ(a.result.status, CheckStatus::kOk);
    ASSERT_EQ(a.result.source, Source::kDatabase) << "a busy key's row was never collected";
    ASSERT_TRUE(a.result.allowed);
  }
  Result<PromText> m = ScrapeMetrics(sidecar.port);
  ASSERT_TRUE(m.ok());
  EXPECT_GE(Series(*m, "ratelimit_db_collected_rows_total"), static_cast<double>(peak - kHotKeys));
}

// The bounded INSERT as the server runs it: only keys without a row, at most the reservation,
// in key order; rows that exist are neither counted nor changed.
TEST(KeyFlood, TheBoundedInsertAddsOnlyMissingKeysUpToItsLimitInKeyOrder) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "t_flood_bounded_insert";
  DropTable(table);
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);
  const TableName name{"", table};
  ASSERT_EQ(Command(conn.get(), CreateTableSql(name)), "");
  // "a" and "c" have rows with 3 tokens; "b", "d" and "e" have none.
  ASSERT_EQ(Command(conn.get(), "INSERT INTO " + table +
                                    " SELECT convert_to(k, 'UTF8'), 3, now(), 10, 1000"
                                    " FROM unnest(ARRAY['a', 'c']) AS k"),
            "");
  std::vector<StoreOp> batch;
  for (const char* key : {"e", "c", "b", "a", "d"}) {
    batch.push_back(StoreOp{.key = key, .cost = 1, .policy = Policy{10, 1000}});
  }
  TransactionPlan plan = PlanTransaction(batch, KeyHashing::kNone);
  auto run_insert = [&](size_t reserved) {
    plan.new_keys = reserved;
    const PgQuery insert = LockQueries(plan, name.Quoted(), 250)[LockPipeline::kInsert];
    PgResultPtr r = Exec(conn.get(), insert.sql, insert.params);
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
    return std::string(PQcmdTuples(r.get()));
  };
  const std::string keys_sql =
      "SELECT string_agg(convert_from(key, 'UTF8') || ':' || tokens, ','"
      " ORDER BY key) FROM " +
      table;
  EXPECT_EQ(run_insert(0), "0");
  EXPECT_EQ(QueryValue(conn.get(), keys_sql), "a:3,c:3");
  EXPECT_EQ(run_insert(2), "2") << "the keys with rows use none of the two";
  EXPECT_EQ(QueryValue(conn.get(), keys_sql), "a:3,b:10,c:3,d:10") << "b and d: key order";
  EXPECT_EQ(run_insert(4), "1") << "only e is left";
  EXPECT_EQ(QueryValue(conn.get(), keys_sql), "a:3,b:10,c:3,d:10,e:10");
  DropTable(table);
}

// The bound's accounting when a transaction fails: rows an INSERT added count unless they were
// surely rolled back. The sessions are fakes; the INSERT's result is a real server's, since
// only a server sets the row count a result carries.
class NewKeyAccounting : public testing::Test {
 protected:
  NewKeyAccounting() { fake_.StartConnected(); }
  void TearDown() override {
    fake_.pool().Shutdown([] {});
  }

  // The lock pipeline's results for rows "a" and "b", its INSERT having added both.
  std::vector<PgResultPtr> LockResultsInsertingTwo() {
    PgConnPtr conn = ConnectToTestDatabase();
    EXPECT_EQ(Command(conn.get(), "CREATE TEMP TABLE two (k int)"), "");
    const int64_t now_us = 1'700'000'000'000'000;
    std::vector<PgResultPtr> results =
        CannedLockResults({{"61", "10", std::to_string(now_us), "10", "1000"},
                           {"62", "10", std::to_string(now_us), "10", "1000"}},
                          now_us);
    results[LockPipeline::kInsert] = Exec(conn.get(), "INSERT INTO two VALUES (1), (2)");
    EXPECT_STREQ(PQcmdTuples(results[LockPipeline::kInsert].get()), "2");
    return results;
  }

  void Start() {
    SessionPool::Slot* slot = fake_.pool().FreeSlot(SessionPool::End::kFirst);
    std::vector<StoreOp> batch;
    for (const char* key : {"a", "b"}) {
      batch.push_back(StoreOp{.key = key, .cost = 1, .policy = Policy{10, 1000}});
    }
    BatchTransaction::Start(context_, *slot, std::move(batch),
                            [this](Result<std::vector<StoreAnswer>> r) { ok_ = r.ok(); });
  }

  // Starts the transaction and answers its lock pipeline: it has inserted two rows.
  void LockWithTwoInserted() {
    Start();
    fake_.session(0).Answer(LockResultsInsertingTwo());
  }

  // `rows` counted as inserted, by the metric and by the budget (10 a second, two reserved).
  void ExpectCounted(size_t rows) {
    EXPECT_EQ(metrics_.new_keys.value(), rows);
    EXPECT_EQ(budget_.Reserve(10, 0), 10 - rows);
  }

  FakePool fake_{1};
  PgStoreMetrics metrics_;
  NewKeyBudget budget_{10};
  BatchTransaction::Context context_{fake_.pool(),
                                     metrics_,
                                     budget_,
                                     "\"t\"",
                                     250,
                                     KeyHashing::kNone,
                                     [](std::string_view, const Status&) {},
                                     [](SessionPool::Slot&) {}};
  std::optional<bool> ok_;
};

TEST_F(NewKeyAccounting, ACommittedInsertCountsItsRows) {
  REQUIRE_TEST_DATABASE();
  LockWithTwoInserted();
  fake_.session(0).Answer(CommandResults(2));
  ASSERT_EQ(ok_, true);
  ExpectCounted(2);
}

TEST_F(NewKeyAccounting, AFailureAfterTheCommitWasSentCountsTheRowsItMayHaveCommitted) {
  REQUIRE_TEST_DATABASE();
  LockWithTwoInserted();
  fake_.session(0).Break("no answer within 250 ms");  // The COMMIT's fate is unknown.
  ASSERT_EQ(ok_, false);
  ExpectCounted(2);
}

TEST_F(NewKeyAccounting, AFailureBeforeTheCommitGivesEverythingBack) {
  REQUIRE_TEST_DATABASE();
  Start();
  fake_.session(0).Break("no answer within 250 ms");  // The lock pipeline: rolled back.
  ASSERT_EQ(ok_, false);
  ExpectCounted(0);
}

}  // namespace
}  // namespace ratelimit
