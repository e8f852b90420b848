// The admin server of sidecars on the postgres store: database, lease and fallback series, and
// readiness while the database cannot be reached.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "ratelimit/client.h"
#include "tests/testing/http_client.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/prometheus_text.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::DropTable;
using pg_test::kSlowWindowMs;
using pg_test::PingsReady;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

// Starts a sidecar with an admin server (see StartWithAdmin); with `wait_ready`, waits up to
// 10 s for its Ping to say ready.
AdminSidecar StartWithAdmin(Env env, bool wait_ready) {
  AdminSidecar sidecar = ::ratelimit::StartWithAdmin(std::move(env));
  if (sidecar.port == 0) return {};
  if (wait_ready && !WaitUntil([&] { return PingsReady(sidecar.process->socket_path()); })) {
    ADD_FAILURE() << "sidecar never became ready; stderr:\n" << sidecar.process->Stderr();
    return {};
  }
  return sidecar;
}

Env LeaseEnv(const std::string& table, const std::string& app, Env extra = {}) {
  extra.emplace("RATE_LIMIT_MODE", "lease");
  return StrictEnv(table, app, std::move(extra));
}

PromLabels Checks(const std::string& decision, const std::string& source) {
  return {{"decision", decision}, {"source", source}};
}

double Get(const PromText& m, std::string_view name, const PromLabels& labels = {}) {
  return m.Value(name, labels).value_or(-1);
}

// Every transaction started has its batch size and, once finished, its duration recorded: at
// a moment with none in flight, the three counts agree.
bool TransactionsAccountedFor(const PromText& m) {
  const double transactions = Get(m, "ratelimit_db_transactions_total");
  return transactions > 0 && Get(m, "ratelimit_db_batch_size_count") == transactions &&
         Get(m, "ratelimit_db_transaction_duration_seconds_count") == transactions;
}

TEST(AdminPg, LeaseModeCountsTransactionsBatchesAndLeaseTokens) {
  REQUIRE_TEST_DATABASE();
  constexpr int kChecks = 50;
  const std::string table = "t_admin_lease_metrics";
  DropTable(table);
  AdminSidecar sidecar =
      StartWithAdmin(LeaseEnv(table, "admin_lease",
                              {{"RATE_LIMIT_MAX_REQUESTS", "1000"},
                               {"RATE_LIMIT_WINDOW_MS", std::to_string(kSlowWindowMs)}}),
                     true);
  ASSERT_TRUE(sidecar.process);
  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  for (int i = 0; i < kChecks; ++i) {
    Result<CheckResult> r = client.Check({.key = "admin-lease-key"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, CheckStatus::kOk);
    ASSERT_TRUE(r->allowed);
    ASSERT_EQ(r->source, Source::kLease);
  }
  // The lease series lag the checks by up to a status tick: wait until they show every lease
  // the checks were spent from.
  Result<PromText> m = ScrapeUntil(sidecar.port, [](const PromText& t) {
    return TransactionsAccountedFor(t) &&
           Get(t, "ratelimit_lease_tokens_fetched_total") >= kChecks &&
           Get(t, "ratelimit_store_ready") == 1;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_EQ(Get(*m, "ratelimit_checks_total", Checks("allowed", "lease")), kChecks);
  EXPECT_EQ(m->Sum("ratelimit_checks_total"), kChecks);
  EXPECT_EQ(Get(*m, "ratelimit_check_duration_seconds_count"), kChecks);
  EXPECT_GT(Get(*m, "ratelimit_lease_fetches_total"), 0);
  EXPECT_GE(Get(*m, "ratelimit_db_batch_size_sum"), Get(*m, "ratelimit_db_batch_size_count"))
      << "every transaction carries at least one operation";
  EXPECT_EQ(Get(*m, "ratelimit_db_transaction_errors_total"), 0);
  EXPECT_EQ(Get(*m, "ratelimit_fallbacks_total"), 0);
  // The key's lease state, until the lease expires and the key is forgotten.
  EXPECT_EQ(m->Count("ratelimit_active_buckets", {{"store", "lease"}}), 1u);
  // Durations in seconds with the same buckets for every scrape; the parser checked their shape.
  EXPECT_EQ(m->Count("ratelimit_db_transaction_duration_seconds_bucket"), 14u);
  EXPECT_EQ(m->Count("ratelimit_db_batch_size_bucket"), 12u);
  Result<HttpResponse> ready = HttpRequest("127.0.0.1", sidecar.port, "GET", "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ready\n");
}

TEST(AdminPg, StrictModeCountsEveryCheckAsAnOperationOfATransaction) {
  REQUIRE_TEST_DATABASE();
  constexpr int kLimit = 10;
  constexpr int kChecks = 20;
  const std::string table = "t_admin_strict_metrics";
  DropTable(table);
  AdminSidecar sidecar = StartWithAdmin(StrictEnv(table, "admin_strict"), true);
  ASSERT_TRUE(sidecar.process);
  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  int allowed = 0;
  for (int i = 0; i < kChecks; ++i) {
    Result<CheckResult> r =
        client.Check({.key = "admin-strict-key", .limit = kLimit, .window_ms = kSlowWindowMs});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, CheckStatus::kOk);
    ASSERT_EQ(r->source, Source::kDatabase);
    allowed += r->allowed;
  }
  ASSERT_EQ(allowed, kLimit);
  Result<PromText> m = ScrapeUntil(sidecar.port, [](const PromText& t) {
    return TransactionsAccountedFor(t) && Get(t, "ratelimit_store_ready") == 1;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_EQ(Get(*m, "ratelimit_checks_total", Checks("allowed", "database")), kLimit);
  EXPECT_EQ(Get(*m, "ratelimit_checks_total", Checks("denied", "database")), kChecks - kLimit);
  EXPECT_EQ(Get(*m, "ratelimit_check_duration_seconds_count"), kChecks);
  EXPECT_EQ(Get(*m, "ratelimit_db_batch_size_sum"), kChecks) << "one operation per check";
  EXPECT_LE(Get(*m, "ratelimit_db_transactions_total"), kChecks);
  EXPECT_EQ(Get(*m, "ratelimit_db_transaction_errors_total"), 0);
  EXPECT_EQ(m->Family("ratelimit_lease_tokens_fetched_total"), nullptr) << "no leases in strict";
}

TEST(AdminPg, ExpiredLeasesAreCountedAsExpiredAndTheirTokensAsReturned) {
  REQUIRE_TEST_DATABASE();
  constexpr int kChecks = 30;
  const std::string table = "t_admin_lease_expiry";
  DropTable(table);
  AdminSidecar sidecar =
      StartWithAdmin(LeaseEnv(table, "admin_lease_expiry",
                              {{"RATE_LIMIT_LEASE_TTL_MS", "100"},
                               {"RATE_LIMIT_MAX_REQUESTS", "1000"},
                               {"RATE_LIMIT_WINDOW_MS", std::to_string(kSlowWindowMs)}}),
                     true);
  ASSERT_TRUE(sidecar.process);
  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  for (int i = 0; i < kChecks; ++i) {
    Result<CheckResult> r = client.Check({.key = "admin-expiry-key"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(r->allowed);
  }
  // Once every lease has expired, each token fetched was either spent on an allowed check or
  // still unspent at expiry, and the database took the unspent ones back.
  Result<PromText> m = ScrapeUntil(
      sidecar.port,
      [](const PromText& t) {
        // The key's first check was admitted from the allowance (u = 1), and checks a landing
        // lease did not cover were decided in the database: neither came from a lease.
        const double fetched = Get(t, "ratelimit_lease_tokens_fetched_total") +
                               Get(t, "ratelimit_lease_unconfirmed_allowed_total") +
                               Get(t, "ratelimit_lease_decided_in_store_total");
        const double spent = Get(t, "ratelimit_checks_total", Checks("allowed", "lease"));
        const double expired = Get(t, "ratelimit_lease_tokens_expired_total");
        return expired > 0 && fetched == spent + expired &&
               Get(t, "ratelimit_lease_tokens_returned_total") > 0 && TransactionsAccountedFor(t);
      },
      10000);
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_EQ(Get(*m, "ratelimit_checks_total", Checks("allowed", "lease")), kChecks);
  EXPECT_GT(Get(*m, "ratelimit_lease_returns_total"), 0);
  EXPECT_LE(Get(*m, "ratelimit_lease_tokens_returned_total"),
            Get(*m, "ratelimit_lease_tokens_expired_total"))
      << "whole tokens back, less the refill since the debit";
  EXPECT_GE(Get(*m, "ratelimit_db_batch_size_sum"),
            Get(*m, "ratelimit_lease_fetches_total") + Get(*m, "ratelimit_lease_returns_total"))
      << "every fetch and every return is an operation of a transaction";
}

// A sidecar on the postgres store whose database is never there: nothing listens on port 1.
AdminSidecar StartWithoutDatabase(const std::string& mode, const std::string& fallback) {
  return StartWithAdmin({{"RATE_LIMIT_STORE", "postgres"},
                         {"RATE_LIMIT_MODE", mode},
                         {"RATE_LIMIT_FALLBACK", fallback},
                         {"RATE_LIMIT_EXPECTED_REPLICAS", "1"},
                         {"RATE_LIMIT_MAX_REQUESTS", "10"},
                         {"RATE_LIMIT_WINDOW_MS", std::to_string(kSlowWindowMs)},
                         {"DATABASE_URL", "host=127.0.0.1 port=1 connect_timeout=1"}},
                        false);
}

class AdminPgWithoutDatabase : public testing::TestWithParam<std::string> {};  // The mode.

TEST_P(AdminPgWithoutDatabase, LocalFallbackIsReadyAndCountsEveryCheckItAnswers) {
  constexpr int kChecks = 30;
  AdminSidecar sidecar = StartWithoutDatabase(GetParam(), "local");
  ASSERT_TRUE(sidecar.process);
  Result<HttpResponse> ready = HttpRequest("127.0.0.1", sidecar.port, "GET", "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ready: the postgres store is not ready; the fallback answers\n");

  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  int allowed = 0;
  for (int i = 0; i < kChecks; ++i) {
    Result<CheckResult> r = client.Check({.key = "no-db-key"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, CheckStatus::kOk);
    ASSERT_EQ(r->source, Source::kFallback);
    allowed += r->allowed;
  }
  EXPECT_EQ(allowed, 10) << "the local bucket of 10 / 1 replica";
  Result<PromText> m = ScrapeUntil(sidecar.port, [](const PromText& t) {
    return Get(t, "ratelimit_fallbacks_total") == kChecks &&
           Get(t, "ratelimit_active_buckets", {{"store", "fallback"}}) == 1;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_EQ(Get(*m, "ratelimit_checks_total", Checks("allowed", "fallback")), allowed);
  EXPECT_EQ(Get(*m, "ratelimit_checks_total", Checks("denied", "fallback")), kChecks - allowed);
  EXPECT_EQ(m->Sum("ratelimit_checks_total", {{"source", "fallback"}}), kChecks);
  EXPECT_EQ(m->Sum("ratelimit_checks_total"), kChecks);
  EXPECT_EQ(Get(*m, "ratelimit_check_duration_seconds_count"), kChecks);
  EXPECT_EQ(Get(*m, "ratelimit_store_ready"), 0);
  EXPECT_EQ(Get(*m, "ratelimit_active_buckets", {{"store", "fallback"}}), 1);
  Result<HttpResponse> still = HttpRequest("127.0.0.1", sidecar.port, "GET", "/readyz");
  ASSERT_TRUE(still.ok()) << still.status().ToString();
  EXPECT_EQ(still->status, 200) << "still ready once the database is known to be down";
  Result<HttpResponse> live = HttpRequest("127.0.0.1", sidecar.port, "GET", "/healthz");
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(live->status, 200);
}

TEST_P(AdminPgWithoutDatabase, DenyFallbackIsNotReadyAndCountsEveryCheckItDenies) {
  constexpr int kChecks = 25;
  AdminSidecar sidecar = StartWithoutDatabase(GetParam(), "deny");
  ASSERT_TRUE(sidecar.process);
  Result<HttpResponse> ready = HttpRequest("127.0.0.1", sidecar.port, "GET", "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  EXPECT_EQ(ready->status, 503);
  EXPECT_EQ(ready->body,
            "not ready: the postgres store is not ready and RATE_LIMIT_FALLBACK=deny\n");

  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  for (int i = 0; i < kChecks; ++i) {
    Result<CheckResult> r = client.Check({.key = "no-db-key"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    pg_test::ExpectFallbackDenial(*r);
  }
  Result<PromText> m = ScrapeUntil(sidecar.port, [](const PromText& t) {
    return Get(t, "ratelimit_fallbacks_total") == kChecks;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_EQ(Get(*m, "ratelimit_checks_total", Checks("denied", "fallback")), kChecks);
  EXPECT_EQ(m->Sum("ratelimit_checks_total"), kChecks);
  EXPECT_EQ(Get(*m, "ratelimit_store_ready"), 0);
  EXPECT_FALSE(m->Value("ratelimit_active_buckets", {{"store", "fallback"}}).has_value())
      << "deny keeps no buckets";
  Result<HttpResponse> still = HttpRequest("127.0.0.1", sidecar.port, "GET", "/readyz");
  ASSERT_TRUE(still.ok()) << still.status().ToString();
  EXPECT_EQ(still->status, 503);
  Result<HttpResponse> live = HttpRequest("127.0.0.1", sidecar.port, "GET", "/healthz");
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(live->status, 200) << "not ready, yet alive";
}

INSTANTIATE_TEST_SUITE_P(Modes, AdminPgWithoutDatabase, testing::Values("lease", "strict"));

}  // namespace
}  // namespace ratelimit
