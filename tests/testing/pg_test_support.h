// Helpers for tests on a real PostgreSQL: blocking SQL, sidecars on the shared store, logs,
// waiting.
#ifndef RATELIMIT_TESTS_TESTING_PG_TEST_SUPPORT_H_
#define RATELIMIT_TESTS_TESTING_PG_TEST_SUPPORT_H_

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "sidecar/pg/pg_ptr.h"
#include "tests/testing/http_client.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace pg_test {

// A window so long that nothing measurable refills while a test runs: a bucket of 1000 refills
// 2.5e-7 tokens per ms, so a second of refill (or of a lease refund's deduction) is 0.00025.
inline constexpr uint32_t kSlowWindowMs = 4'000'000'000;

// The steady clock in nanoseconds: comparable across the test's threads.
inline int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Every test uses its own table (tests of one ctest run share the server and run in parallel)
// and its own libpq application_name, so that the server log's lines can be told apart.

// A blocking connection to the test server, its NOTICEs silenced (DROP TABLE IF EXISTS sends
// one); check PQstatus() before use.
inline PgConnPtr ConnectToTestDatabase() {
  PgConnPtr conn(PQconnectdb(TestDatabaseUrl().c_str()));
  if (conn != nullptr)
    PQsetNoticeProcessor(
        conn.get(), [](void*, const char*) {}, nullptr);
  return conn;
}

// Runs `sql` with text parameters $1, $2, ...
inline PgResultPtr Exec(PGconn* conn, const std::string& sql,
                        const std::vector<std::string>& params = {}) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  return PgResultPtr(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                                  values.data(), nullptr, nullptr, 0));
}

// Runs a command; returns "" on success, else the server's error message.
inline std::string Command(PGconn* conn, const std::string& sql,
                           const std::vector<std::string>& params = {}) {
  PgResultPtr r = Exec(conn, sql, params);
  const ExecStatusType status = PQresultStatus(r.get());
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return "";
  return PQresultErrorMessage(r.get());
}

// Runs a query returning one value; on error the text is the message, prefixed "ERROR ".
// A NULL reads as "NULL".
inline std::string QueryValue(PGconn* conn, const std::string& sql,
                              const std::vector<std::string>& params = {}) {
  PgResultPtr r = Exec(conn, sql, params);
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
    return std::string("ERROR ") + PQresultErrorMessage(r.get()) +
           " rows=" + std::to_string(PQntuples(r.get()));
  }
  return PQgetisnull(r.get(), 0, 0) ? "NULL" : PQgetvalue(r.get(), 0, 0);
}

// The environment of a strict-mode sidecar on `table`. `app` becomes the sessions' libpq
// application_name, which the server log prints on each of their lines.
inline Env StrictEnv(const std::string& table, const std::string& app, Env extra = {}) {
  Env env = {{"RATE_LIMIT_STORE", "postgres"},
             {"RATE_LIMIT_MODE", "strict"},
             {"RATE_LIMIT_FALLBACK", "deny"},  // Nothing allowed unless the database says so.
             // These tests are about what the database decides, on two busy cores: a slow
             // transaction is not a failure here (the timeout has tests of its own).
             {"RATE_LIMIT_PG_TIMEOUT_MS", "10000"},
             {"DATABASE_URL", TestDatabaseUrl() + " application_name=" + app},
             {"RATE_LIMIT_PG_TABLE", table}};
  for (auto& [name, value] : extra) env[name] = value;
  return env;
}

// The answer to a check while the database cannot decide it, under RATE_LIMIT_FALLBACK=deny.
inline void ExpectFallbackDenial(const CheckResult& r) {
  EXPECT_EQ(r.status, CheckStatus::kOk);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.source, Source::kFallback);
}

// Polls `done` every 20 ms for up to `timeout_ms`; returns its last answer.
inline bool WaitUntil(const std::function<bool()>& done, int timeout_ms = 10000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

inline bool PingsReady(const std::string& socket_path) {
  Client client({.socket_path = socket_path, .timeout_ms = 1000});
  Result<PingResult> ping = client.Ping();
  return ping.ok() && ping->ready;
}

// Starts a sidecar and waits up to 10 s for its Ping to say ready. Null (with a failure
// recorded) when it does not start or never becomes ready.
inline std::unique_ptr<SidecarProcess> StartReadySidecar(Env env) {
  Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(std::move(env));
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  if (!started.ok()) return nullptr;
  std::unique_ptr<SidecarProcess> sidecar = std::move(*started);
  const bool ready = WaitUntil([&] { return PingsReady(sidecar->socket_path()); });
  EXPECT_TRUE(ready) << "sidecar never became ready; stderr:\n" << sidecar->Stderr();
  return ready ? std::move(sidecar) : nullptr;
}

// Starts a sidecar with an admin server (see StartWithAdmin) and waits up to 10 s for it to be
// ready; empty, with a test failure recorded, when it does not start or never becomes ready.
inline AdminSidecar StartReadyWithAdmin(Env env) {
  AdminSidecar sidecar = StartWithAdmin(std::move(env));
  if (sidecar.port == 0) return {};
  if (!WaitUntil([&] { return PingsReady(sidecar.process->socket_path()); })) {
    ADD_FAILURE() << "sidecar never became ready; stderr:\n" << sidecar.process->Stderr();
    return {};
  }
  return sidecar;
}

// Starts `n` sidecars with `env` at the same moment (one thread each), then waits up to 10 s
// for every one to be ready. Fewer than `n` (with failures recorded) when some did not make it.
inline std::vector<std::unique_ptr<SidecarProcess>> StartReadySidecars(size_t n, const Env& env) {
  std::vector<std::optional<Result<std::unique_ptr<SidecarProcess>>>> started(n);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] { started[i].emplace(SidecarProcess::Start(env)); });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::unique_ptr<SidecarProcess>> sidecars;
  for (auto& s : started) {
    EXPECT_TRUE(s->ok()) << s->status().ToString();
    if (!s->ok()) continue;
    std::unique_ptr<SidecarProcess> sidecar = std::move(**s);
    const bool ready = WaitUntil([&] { return PingsReady(sidecar->socket_path()); });
    EXPECT_TRUE(ready) << "sidecar never became ready; stderr:\n" << sidecar->Stderr();
    if (ready) sidecars.push_back(std::move(sidecar));
  }
  return sidecars;
}

// Drops `table` if a previous run against the same server left it.
inline void DropTable(const std::string& table) {
  PgConnPtr conn = ConnectToTestDatabase();
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  ASSERT_EQ(Command(conn.get(), "DROP TABLE IF EXISTS " + table), "");
}

inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

inline std::vector<std::string> LinesContaining(const std::string& text,
                                                const std::vector<std::string>& needles) {
  std::vector<std::string> found;
  for (const std::string& line : Lines(text)) {
    bool all = true;
    for (const std::string& needle : needles) all &= line.find(needle) != std::string::npos;
    if (all) found.push_back(line);
  }
  return found;
}

// The server log from the moment of construction on.
class ServerLogTail {
 public:
  ServerLogTail() : offset_(ReadFile(TestPgLogPath()).size()) {}
  std::string Text() const {
    const std::string all = ReadFile(TestPgLogPath());
    return all.size() > offset_ ? all.substr(offset_) : "";
  }
  // Lines that report a deadlock in a session named `app`.
  std::vector<std::string> Deadlocks(const std::string& app) const {
    return LinesContaining(Text(), {" " + app + " ", "deadlock detected"});
  }

 private:
  size_t offset_;
};

}  // namespace pg_test
}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_PG_TEST_SUPPORT_H_
