// End-to-end: the sidecar's admin server (RATE_LIMIT_ADMIN_ADDR): /metrics, /healthz, /readyz.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "schema/frame_codec.h"
#include "tests/testing/check_load.h"
#include "tests/testing/http_client.h"
#include "tests/testing/prometheus_text.h"
#include "tests/testing/raw_socket.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

// A window so long that nothing refills while a test runs (one token per 10 minutes).
constexpr uint32_t kSlowWindowMs = 600'000'000;

constexpr const char* kRefusals[] = {"invalid_request", "cost_exceeds_limit", "store_unavailable",
                                     "overloaded", "shutting_down"};

// Polls `done` every 20 ms for up to `timeout_ms`; returns its last answer.
bool Eventually(const std::function<bool()>& done, int timeout_ms = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

PromLabels Check(const std::string& decision, const std::string& source) {
  return {{"decision", decision}, {"source", source}};
}

// The lines of `text` at level error.
std::vector<std::string> ErrorLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"level\":\"error\"") != std::string::npos) lines.push_back(line);
  }
  return lines;
}

// The TCP ports that process `pid` listens on (IPv4 and IPv6), from /proc: its socket inodes,
// matched against the kernel's tables of listening sockets.
std::vector<uint16_t> ListeningTcpPorts(pid_t pid) {
  std::vector<std::string> inodes;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", error)) {
    std::error_code link_error;
    const std::string target = std::filesystem::read_symlink(entry.path(), link_error).string();
    if (target.rfind("socket:[", 0) == 0) inodes.push_back(target.substr(8, target.size() - 9));
  }
  std::vector<uint16_t> ports;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // The header.
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode;
      if (state != "0A") continue;  // TCP_LISTEN.
      if (std::find(inodes.begin(), inodes.end(), inode) == inodes.end()) continue;
      ports.push_back(
          static_cast<uint16_t>(std::stoul(local.substr(local.find(':') + 1), nullptr, 16)));
    }
  }
  return ports;
}

TEST(AdminE2E, MetricsCountEveryCheckByDecisionSourceAndStatusExactly) {
  AdminSidecar sidecar = StartWithAdmin(
      {{"RATE_LIMIT_MAX_REQUESTS", "5"}, {"RATE_LIMIT_WINDOW_MS", std::to_string(kSlowWindowMs)}});
  ASSERT_TRUE(sidecar.process);
  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  int allowed = 0;
  int denied = 0;
  auto check = [&](const CheckArgs& args, CheckStatus status) {
    Result<CheckResult> r = client.Check(args);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, status);
    if (status == CheckStatus::kOk) ++(r->allowed ? allowed : denied);
  };
  for (int i = 0; i < 8; ++i) check({.key = "a"}, CheckStatus::kOk);  // 5 allowed, 3 denied.
  for (int i = 0; i < 2; ++i) check({.key = "b"}, CheckStatus::kOk);
  check({.key = "c"}, CheckStatus::kOk);
  for (int i = 0; i < 2; ++i) check({.key = "a", .cost = 6}, CheckStatus::kCostExceedsLimit);
  check({.key = ""}, CheckStatus::kInvalidRequest);
  check({.key = "x", .limit = 5}, CheckStatus::kInvalidRequest);  // A limit without a window.
  ASSERT_EQ(allowed, 8);
  ASSERT_EQ(denied, 3);
  constexpr int kChecks = 15;

  // The buckets are published by the status timer; the ping connection of start-up closes on
  // a later loop turn. Everything else is counted before the answer leaves.
  Result<PromText> m = ScrapeUntil(sidecar.port, [](const PromText& t) {
    return t.Value("ratelimit_active_buckets", {{"store", "memory"}}) == 3 &&
           t.Value("ratelimit_connections") == 1;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_EQ(m->Value("ratelimit_checks_total", Check("allowed", "memory")), 8);
  EXPECT_EQ(m->Value("ratelimit_checks_total", Check("denied", "memory")), 3);
  for (const char* source : {"lease", "database", "fallback"}) {
    EXPECT_EQ(m->Value("ratelimit_checks_total", Check("allowed", source)), 0) << source;
    EXPECT_EQ(m->Value("ratelimit_checks_total", Check("denied", source)), 0) << source;
  }
  EXPECT_EQ(m->Count("ratelimit_checks_total"), 8u) << "two decisions by four sources";
  EXPECT_EQ(m->Value("ratelimit_check_errors_total", {{"status", "cost_exceeds_limit"}}), 2);
  EXPECT_EQ(m->Value("ratelimit_check_errors_total", {{"status", "invalid_request"}}), 2);
  for (const char* status : {"store_unavailable", "overloaded", "shutting_down"}) {
    EXPECT_EQ(m->Value("ratelimit_check_errors_total", {{"status", status}}), 0) << status;
  }
  EXPECT_EQ(m->Count("ratelimit_check_errors_total"), std::size(kRefusals));
  // Every check answered is timed, refusals included; the parser checked _count == +Inf bucket.
  EXPECT_EQ(m->Value("ratelimit_check_duration_seconds_count"), kChecks);
  EXPECT_GT(*m->Value("ratelimit_check_duration_seconds_sum"), 0);
  EXPECT_EQ(m->Family("ratelimit_check_duration_seconds")->type, "histogram");
  EXPECT_EQ(m->Value("ratelimit_bad_frames_total"), 0);
  EXPECT_GE(*m->Value("ratelimit_connections_accepted_total"), 2) << "start-up's ping and ours";
  EXPECT_EQ(m->Value("ratelimit_connections_refused_total"), 0);
  EXPECT_EQ(m->Value("ratelimit_store_ready"), 1);
  EXPECT_EQ(m->Count("ratelimit_build_info"), 1u);
  EXPECT_GT(*m->Value("process_resident_memory_bytes"), 0);
  EXPECT_GT(*m->Value("process_open_fds"), 0);
  EXPECT_GT(*m->Value("process_max_fds"), 0);
  // The memory store has no database, no leases and no fallback.
  for (const char* absent : {"ratelimit_db_transactions_total", "ratelimit_db_batch_size",
                             "ratelimit_lease_tokens_fetched_total", "ratelimit_fallbacks_total"}) {
    EXPECT_EQ(m->Family(absent), nullptr) << absent;
  }
}

// A full key table: new keys evict (counted, the table never above its cap) and one warning
// line says so; another comes only when evictions start again after a pause.
TEST(AdminE2E, AFullKeyTableEvictsCountsAndWarnsOncePerEpisode) {
  AdminSidecar sidecar = StartWithAdmin(
      {{"RATE_LIMIT_MAX_KEYS", "10"}, {"RATE_LIMIT_WINDOW_MS", std::to_string(kSlowWindowMs)}});
  ASSERT_TRUE(sidecar.process);
  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  auto burst = [&](int first, int count) {
    for (int i = first; i < first + count; ++i) {
      Result<CheckResult> r = client.Check({.key = "flood-" + std::to_string(i)});
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_TRUE(r->allowed);
    }
  };
  auto warnings = [&] {
    const std::string err = sidecar.process->Stderr();
    size_t n = 0;
    for (size_t at = err.find("key table full"); at != std::string::npos;
         at = err.find("key table full", at + 1)) {
      ++n;
    }
    return n;
  };
  burst(0, 30);
  Result<PromText> m = ScrapeUntil(sidecar.port, [](const PromText& t) {
    return t.Value("ratelimit_evictions_total", {{"store", "memory"}}) == 20;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_EQ(m->Value("ratelimit_active_buckets", {{"store", "memory"}}), 10);
  EXPECT_EQ(m->Value("ratelimit_max_keys", {{"store", "memory"}}), 10);
  ASSERT_TRUE(Eventually([&] { return warnings() == 1; })) << sidecar.process->Stderr();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // Beats without evictions.
  EXPECT_EQ(warnings(), 1u) << sidecar.process->Stderr();
  burst(30, 5);
  EXPECT_TRUE(Eventually([&] { return warnings() == 2; })) << sidecar.process->Stderr();
}

TEST(AdminE2E, EverySeriesHasHelpAndTypeAndFollowsTheNamingConventions) {
  AdminSidecar sidecar = StartWithAdmin();
  ASSERT_TRUE(sidecar.process);
  ASSERT_TRUE(Client({.socket_path = sidecar.process->socket_path()}).Check({.key = "k"}).ok());
  Result<PromText> m = ScrapeMetrics(sidecar.port);  // Strict: see ParsePrometheusText.
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  for (const PromFamily& family : m->families()) {
    SCOPED_TRACE(family.name);
    EXPECT_FALSE(family.help.empty());
    EXPECT_FALSE(family.samples.empty());
    const bool ours = family.name.rfind("ratelimit_", 0) == 0;
    EXPECT_TRUE(ours || family.name.rfind("process_", 0) == 0);
    if (family.type == "histogram" && ours && family.name.find("duration") != std::string::npos) {
      EXPECT_TRUE(family.name.ends_with("_seconds")) << "durations are in seconds";
    }
  }
  // The check latency buckets, in seconds, from 10 us to 1 s.
  EXPECT_EQ(m->Count("ratelimit_check_duration_seconds_bucket"), 17u);
  EXPECT_TRUE(m->Value("ratelimit_check_duration_seconds_bucket", {{"le", "1e-05"}}).has_value());
  EXPECT_TRUE(m->Value("ratelimit_check_duration_seconds_bucket", {{"le", "1"}}).has_value());
}

TEST(AdminE2E, TheConnectionsGaugeFollowsTheOpenClientConnections) {
  AdminSidecar sidecar = StartWithAdmin();
  ASSERT_TRUE(sidecar.process);
  auto connections_become = [&](int n) {
    Result<PromText> m = ScrapeUntil(
        sidecar.port, [n](const PromText& t) { return t.Value("ratelimit_connections") == n; });
    EXPECT_TRUE(m.ok()) << "waiting for " << n << " connections: " << m.status().ToString() << "\n"
                        << DumpNow(sidecar.port, "ratelimit_connections");
  };
  std::vector<RawSocket> open;
  for (int i = 0; i < 5; ++i) {
    Result<RawSocket> s = RawSocket::Connect(sidecar.process->socket_path());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    open.push_back(std::move(*s));
  }
  connections_become(5);
  while (open.size() > 2) open.pop_back();
  connections_become(2);
  open.clear();
  connections_become(0);
}

TEST(AdminE2E, EveryKindOfBadFrameIsCountedOnceAndIsNotACheck) {
  AdminSidecar sidecar = StartWithAdmin();
  ASSERT_TRUE(sidecar.process);
  FrameEncoder encoder;
  const std::span<const uint8_t> response = encoder.CheckResponse(7, CheckResult{});
  const std::vector<std::vector<uint8_t>> bad = {
      {4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef},  // Fails verification.
      {0, 0, 0x10, 0, 1, 2, 3, 4},           // A length over RATE_LIMIT_MAX_FRAME_BYTES.
      {response.begin(), response.end()},    // A valid frame, but not a request.
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(i);
    Result<RawSocket> raw = RawSocket::Connect(sidecar.process->socket_path());
    ASSERT_TRUE(raw.ok());
    ASSERT_TRUE(raw->SendAll(bad[i]));
    ASSERT_TRUE(raw->WaitForClose()) << "a bad frame closes its connection";
    Result<PromText> m = ScrapeMetrics(sidecar.port);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->Value("ratelimit_bad_frames_total"), i + 1);
    EXPECT_EQ(m->Value("ratelimit_check_duration_seconds_count"), 0);
    EXPECT_EQ(m->Sum("ratelimit_check_errors_total"), 0);
  }
}

TEST(AdminE2E, ConnectionsPastTheCapAreCountedAsRefused) {
  AdminSidecar sidecar = StartWithAdmin({{"RATE_LIMIT_MAX_CONNECTIONS", "2"}});
  ASSERT_TRUE(sidecar.process);
  auto connections_become = [&](int n) {
    return ScrapeUntil(sidecar.port,
                       [n](const PromText& t) { return t.Value("ratelimit_connections") == n; })
        .ok();
  };
  ASSERT_TRUE(connections_become(0)) << "start-up's ping connection stayed open";
  std::vector<RawSocket> inside;
  for (int i = 0; i < 2; ++i) {
    Result<RawSocket> s = RawSocket::Connect(sidecar.process->socket_path());
    ASSERT_TRUE(s.ok());
    inside.push_back(std::move(*s));
  }
  ASSERT_TRUE(connections_become(2)) << DumpNow(sidecar.port, "ratelimit_connections");
  Result<RawSocket> over = RawSocket::Connect(sidecar.process->socket_path());
  ASSERT_TRUE(over.ok());
  ASSERT_TRUE(over->WaitForClose()) << "refused: an ErrorResponse, then the close";
  Result<PromText> m = ScrapeUntil(
      sidecar.port, [](const PromText& t) { return t.Value("ratelimit_connections") == 2; });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_EQ(m->Value("ratelimit_connections_refused_total"), 1);
  EXPECT_GE(*m->Value("ratelimit_connections_accepted_total"), 3) << "the ping and our two";
}

TEST(AdminE2E, HealthzAndReadyzAnswer200OnceTheSocketListens) {
  AdminSidecar sidecar = StartWithAdmin();
  ASSERT_TRUE(sidecar.process);
  Result<HttpResponse> live = HttpRequest("127.0.0.1", sidecar.port, "GET", "/healthz");
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(live->body, "ok\n");
  // Readiness is published when the socket starts listening, before any ping is answered.
  Result<HttpResponse> ready = HttpRequest("127.0.0.1", sidecar.port, "GET", "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ready\n");
}

TEST(AdminE2E, ReadyzAnswers503DuringShutdownWhileHealthzAndMetricsGoOn) {
  AdminSidecar sidecar = StartWithAdmin(
      {{"RATE_LIMIT_SHUTDOWN_GRACE_MS", "600000"}, {"RATE_LIMIT_MAX_REQUESTS", "1000000"}});
  ASSERT_TRUE(sidecar.process);
  Result<RawSocket> stuck = RawSocket::Connect(sidecar.process->socket_path());
  ASSERT_TRUE(stuck.ok());
  // A client that sends checks and never reads the answers: once the sidecar holds answers it
  // cannot deliver, its count stops growing, and only that client (or the grace period) can
  // end the shutdown.
  std::thread flood = FloodWithoutReading(stuck->fd(), "stuck");
  double last = -1;
  int unchanged = 0;
  const bool stalled = Eventually(
      [&] {
        Result<PromText> m = ScrapeMetrics(sidecar.port);
        const double checks = m.ok() ? m->Sum("ratelimit_checks_total") : -1;
        unchanged = checks > 0 && checks == last ? unchanged + 1 : 0;
        last = checks;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return unchanged >= 3;
      },
      20000);
  ASSERT_TRUE(stalled) << "the flood never stalled:\n" << DumpNow(sidecar.port);

  sidecar.process->Signal(SIGTERM);
  const bool draining = Eventually([&] {
    Result<HttpResponse> r = HttpRequest("127.0.0.1", sidecar.port, "GET", "/readyz");
    return r.ok() && r->status == 503;
  });
  EXPECT_TRUE(draining) << "/readyz never answered 503";
  Result<HttpResponse> ready = HttpRequest("127.0.0.1", sidecar.port, "GET", "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  EXPECT_EQ(ready->status, 503);
  EXPECT_EQ(ready->body, "not ready: shutting down\n");
  Result<HttpResponse> live = HttpRequest("127.0.0.1", sidecar.port, "GET", "/healthz");
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(live->status, 200) << "a draining sidecar is alive";
  EXPECT_EQ(sidecar.process->WaitExit(0), -1) << "exited: " << sidecar.process->Stderr();

  shutdown(stuck->fd(), SHUT_RDWR);  // The client goes; the shutdown can finish.
  flood.join();
  stuck->Close();
  EXPECT_EQ(sidecar.process->WaitExit(20000), 0) << sidecar.process->Stderr();
}

TEST(AdminE2E, AnIpv6AdminAddressInBracketsIsServed) {
  if (!CanBindTcp("::1")) GTEST_SKIP() << "this machine has no IPv6 loopback";
  Result<std::unique_ptr<SidecarProcess>> sidecar =
      SidecarProcess::Start({{"RATE_LIMIT_ADMIN_ADDR", "[::1]:0"}});
  ASSERT_TRUE(sidecar.ok()) << sidecar.status().ToString();
  const uint16_t port = AdminPortFromLog((*sidecar)->Stderr());
  ASSERT_NE(port, 0) << (*sidecar)->Stderr();
  EXPECT_NE((*sidecar)->Stderr().find(R"("host":"::1")"), std::string::npos);
  Result<HttpResponse> r = HttpRequest("::1", port, "GET", "/metrics");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  Result<PromText> m = ParsePrometheusText(r->body);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
}

TEST(AdminE2E, AnAdminAddressThatCannotBeServedStopsStartUpWithOneClearErrorLine) {
  struct Case {
    std::string value;
    std::vector<std::string> said;  // What the error line contains.
  };
  const std::vector<Case> cases = {
      {"nosuchhost.invalid:1", {"RATE_LIMIT_ADMIN_ADDR", "nosuchhost.invalid", "resolve"}},
      {"127.0.0.1", {"RATE_LIMIT_ADMIN_ADDR", "127.0.0.1", "host:port"}},
      {"127.0.0.1:65536", {"RATE_LIMIT_ADMIN_ADDR", "65536", "host:port"}},
      {"[::1:9464", {"RATE_LIMIT_ADMIN_ADDR", "[::1:9464", "host:port"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.value);
    TempDir dir;
    const ProcessResult result = RunProcess(
        {kSidecarBin},
        {{"RATE_LIMIT_SOCKET", dir.File("rl.sock")}, {"RATE_LIMIT_ADMIN_ADDR", c.value}});
    EXPECT_NE(result.exit_code, 0);
    EXPECT_NE(result.exit_code, -1) << "killed or timed out";
    const std::vector<std::string> errors = ErrorLines(result.err);
    ASSERT_EQ(errors.size(), 1u) << result.err;
    for (const std::string& word : c.said) {
      EXPECT_NE(errors[0].find(word), std::string::npos) << errors[0];
    }
    EXPECT_EQ(result.err.find("\"msg\":\"listening\""), std::string::npos) << result.err;
    EXPECT_EQ(access(dir.File("rl.sock").c_str(), F_OK), -1) << "the socket file was left";
  }
}

TEST(AdminE2E, AnAdminPortAlreadyTakenStopsStartUpWithOneClearErrorLine) {
  AdminSidecar first = StartWithAdmin();
  ASSERT_TRUE(first.process);
  TempDir dir;
  const std::string address = "127.0.0.1:" + std::to_string(first.port);
  const ProcessResult second =
      RunProcess({kSidecarBin},
                 {{"RATE_LIMIT_SOCKET", dir.File("rl.sock")}, {"RATE_LIMIT_ADMIN_ADDR", address}});
  EXPECT_EQ(second.exit_code, 1) << second.err;
  const std::vector<std::string> errors = ErrorLines(second.err);
  ASSERT_EQ(errors.size(), 1u) << second.err;
  EXPECT_NE(errors[0].find("RATE_LIMIT_ADMIN_ADDR " + address), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("in use"), std::string::npos) << errors[0];
  EXPECT_EQ(access(dir.File("rl.sock").c_str(), F_OK), -1) << "the socket file was left";
  // The first one keeps serving.
  Result<PromText> m = ScrapeMetrics(first.port);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
}

TEST(AdminE2E, WithoutAnAdminAddressNothingListensOnTcp) {
  Result<std::unique_ptr<SidecarProcess>> plain = SidecarProcess::Start();
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ((*plain)->Stderr().find("admin server listening"), std::string::npos);
  EXPECT_EQ(ListeningTcpPorts((*plain)->pid()), std::vector<uint16_t>{});

  // The same look finds the admin server when there is one.
  AdminSidecar with_admin = StartWithAdmin();
  ASSERT_TRUE(with_admin.process);
  EXPECT_EQ(ListeningTcpPorts(with_admin.process->pid()), std::vector<uint16_t>{with_admin.port});
}

TEST(AdminE2E, HttpClientsHoldingEveryAdminConnectionDoNotHoldUpChecks) {
  AdminSidecar sidecar = StartWithAdmin({{"RATE_LIMIT_MAX_REQUESTS", "1000000"}});
  ASSERT_TRUE(sidecar.process);
  // More than the admin server takes, each with half a request, as a slow or hostile client.
  std::vector<TcpConnection> stalled;
  for (int i = 0; i < 40; ++i) {
    Result<TcpConnection> c = TcpConnection::Connect("127.0.0.1", sidecar.port);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    c->SendAll("GET /metrics HTTP/1.1\r\nHost: x\r\n");
    stalled.push_back(std::move(*c));
  }
  Client client({.socket_path = sidecar.process->socket_path(), .timeout_ms = 5000});
  for (int i = 0; i < 2000; ++i) {
    Result<CheckResult> r = client.Check({.key = "k"});
    ASSERT_TRUE(r.ok()) << i << ": " << r.status().ToString();
    ASSERT_TRUE(r->allowed);
  }
  stalled.clear();
  Result<PromText> m = Status::Unavailable("not scraped");
  EXPECT_TRUE(Eventually([&] {
    m = ScrapeMetrics(sidecar.port, 1000);
    return m.ok();
  }));
  ASSERT_TRUE(m.ok()) << "the admin server never served again: " << m.status().ToString();
  EXPECT_EQ(m->Value("ratelimit_checks_total", Check("allowed", "memory")), 2000);
}

TEST(AdminE2E, ScrapesInALoopDuringThousandsOfChecksLeaveEveryCheckAnsweredAndCountedExactly) {
  AdminSidecar sidecar = StartWithAdmin({{"RATE_LIMIT_MAX_REQUESTS", "1000"},
                                         {"RATE_LIMIT_WINDOW_MS", std::to_string(kSlowWindowMs)}});
  ASSERT_TRUE(sidecar.process);
  constexpr int kThreads = 4;
  constexpr uint64_t kMinChecks = 40'000;  // Each thread's key runs dry at 1000: both decisions.
  constexpr int kMinScrapes = 10;

  std::atomic<bool> stop_scraping{false};
  std::atomic<int> scrapes{0};
  std::atomic<bool> scrape_failed{false};
  std::string scrape_error;  // Written before scrape_failed; read after the join.
  std::thread scraper([&] {
    double last_checks = 0;
    double last_timed = 0;
    while (!stop_scraping) {
      Result<PromText> m = ScrapeMetrics(sidecar.port);
      const double checks = m.ok() ? m->Sum("ratelimit_checks_total") : 0;
      const double timed =
          m.ok() ? m->Value("ratelimit_check_duration_seconds_count").value_or(-1) : 0;
      if (!m.ok() || checks < last_checks || timed < last_timed) {
        scrape_error = m.ok() ? "a count went down" : m.status().ToString();
        scrape_failed = true;
        return;
      }
      last_checks = checks;
      last_timed = timed;
      ++scrapes;
    }
  });
  CheckLoad load({.socket_paths = {sidecar.process->socket_path()},
                  .threads_per_target = kThreads,
                  .next = [](int, int thread, uint64_t) {
                    return LoadRequest{.key = "load-" + std::to_string(thread)};
                  }});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while ((load.Count() < kMinChecks || scrapes < kMinScrapes) && !scrape_failed &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  load.Stop();
  stop_scraping = true;
  scraper.join();
  ASSERT_EQ(scrape_error, "");
  const std::vector<LoadAnswer> answers = load.Snapshot();
  ASSERT_GE(answers.size(), kMinChecks) << "too slow to reach the checks wanted in 90 s";
  EXPECT_GE(scrapes, kMinScrapes);
  std::printf("%zu checks during %d scrapes\n", answers.size(), scrapes.load());

  int64_t allowed = 0;
  int64_t denied = 0;
  int64_t problems = 0;
  for (const LoadAnswer& a : answers) {
    if (!a.answered || a.result.status != CheckStatus::kOk) {
      if (problems++ == 0) ADD_FAILURE() << "not answered: " << Describe(a, answers[0].start_ns);
      continue;
    }
    ++(a.result.allowed ? allowed : denied);
  }
  EXPECT_EQ(problems, 0);
  EXPECT_EQ(allowed, 1000 * kThreads);
  Result<PromText> m = ScrapeMetrics(sidecar.port);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->Value("ratelimit_checks_total", Check("allowed", "memory")), allowed);
  EXPECT_EQ(m->Value("ratelimit_checks_total", Check("denied", "memory")), denied);
  EXPECT_EQ(m->Value("ratelimit_check_duration_seconds_count"),
            static_cast<double>(answers.size()));
  EXPECT_EQ(m->Sum("ratelimit_check_errors_total"), 0);
}

}  // namespace
}  // namespace ratelimit
