// Tests of AdminServer over real loopback TCP: routes, methods, addresses, caps and timeouts.
#include "sidecar/admin/admin_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "sidecar/log/log.h"
#include "tests/testing/http_client.h"
#include "tests/testing/prometheus_text.h"

namespace ratelimit {
namespace {

constexpr char kLoopback[] = "127.0.0.1";

// A TCP socket listening on 127.0.0.1 at a free port, closed on destruction.
class PortHolder {
 public:
  PortHolder() : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && listen(fd_, 4) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port_ = ntohs(a.sin_port);
    }
  }
  ~PortHolder() { close(fd_); }
  uint16_t port() const { return port_; }

 private:
  int fd_;
  uint16_t port_ = 0;
};

// Options on `host` and `port`, the rest as by default.
AdminServerOptions On(std::string host, uint16_t port = 0) {
  AdminServerOptions options;
  options.host = std::move(host);
  options.port = port;
  return options;
}

// Options on 127.0.0.1, a free port, with this idle timeout.
AdminServerOptions WithTimeout(unsigned seconds) {
  AdminServerOptions options = On(kLoopback);
  options.timeout_seconds = seconds;
  return options;
}

class AdminServerTest : public testing::Test {
 protected:
  AdminServerTest() {
    registry_.AddCounter("test_checks_total", "Checks.", checks_, {{"decision", "allowed"}});
    registry_.AddHistogram("test_duration_seconds", "Durations.", latency_, 1e9);
    health_.Beat(MonotonicMs());
  }

  // Starts on 127.0.0.1 unless options name a host; port 0 unless they name one.
  void Start(AdminServerOptions options = {}) {
    if (options.host.empty()) options.host = kLoopback;
    const Status started = server_.Start(options);
    ASSERT_TRUE(started.ok()) << started.ToString();
    ASSERT_NE(server_.port(), 0);
  }

  Result<HttpResponse> Request(std::string_view method, std::string_view target) {
    return HttpRequest(kLoopback, server_.port(), method, target);
  }

  // Sends `request` as is on a new connection and reads the answer up to the close.
  Result<HttpResponse> Exchange(std::string_view request, bool head = false) {
    Result<TcpConnection> connection = TcpConnection::Connect(kLoopback, server_.port());
    if (!connection.ok()) return connection.status();
    if (!connection->SendAll(request)) return Status::Unavailable("send failed");
    Result<std::string> raw = connection->ReadUntilClose();
    if (!raw.ok()) return raw.status();
    return ParseHttpResponse(*raw, head);
  }

  // Polls GET /healthz for up to 10 s until it answers 200.
  bool ServesAgain() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      Result<HttpResponse> r = HttpRequest(kLoopback, server_.port(), "GET", "/healthz", 2000);
      if (r.ok() && r->status == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  Counter checks_;
  Histogram latency_{{1'000'000, 1'000'000'000}};
  MetricsRegistry registry_;
  Health health_{"memory", false};
  AdminServer server_{registry_, health_};  // Last: stopped before what it reads goes.
};

TEST_F(AdminServerTest, MetricsAnswers200InTheTextFormatWithTheExtraSeriesLast) {
  AdminServerOptions options = On(kLoopback);
  options.extra_metrics = [](std::string& out) {
    out += "# HELP extra_things A series from elsewhere.\n# TYPE extra_things gauge\n";
    out += "extra_things 7\n";
  };
  Start(options);
  checks_.Add(5);
  latency_.Observe(2'000'000);
  Result<HttpResponse> r = Request("GET", "/metrics");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  Result<PromText> parsed = ParsePrometheusText(r->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString() << "\n" << r->body;
  EXPECT_EQ(parsed->Value("test_checks_total", {{"decision", "allowed"}}), 5);
  EXPECT_EQ(parsed->Value("test_duration_seconds_count"), 1);
  EXPECT_EQ(parsed->Value("test_duration_seconds_sum"), 0.002);
  ASSERT_EQ(parsed->families().size(), 3u);
  EXPECT_EQ(parsed->families().back().name, "extra_things");
  EXPECT_EQ(parsed->Value("extra_things"), 7);
}

TEST_F(AdminServerTest, EachScrapeReadsTheCurrentValues) {
  Start();
  for (uint64_t n : {1, 2, 10}) {
    checks_.Set(n);
    Result<PromText> parsed = ScrapeMetrics(server_.port());
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(parsed->Value("test_checks_total", {{"decision", "allowed"}}), n);
  }
}

TEST_F(AdminServerTest, HeadAnswersTheHeadersOfGetWithoutABody) {
  Start();
  for (const char* path : {"/metrics", "/healthz", "/readyz"}) {
    SCOPED_TRACE(path);
    Result<HttpResponse> get = Request("GET", path);
    Result<HttpResponse> head = Request("HEAD", path);
    ASSERT_TRUE(get.ok()) << get.status().ToString();
    ASSERT_TRUE(head.ok()) << head.status().ToString();
    EXPECT_EQ(head->status, get->status);
    EXPECT_EQ(head->Header("Content-Type"), get->Header("Content-Type"));
    EXPECT_FALSE(get->body.empty());
    EXPECT_EQ(head->body, "");
  }
}

TEST_F(AdminServerTest, QueryStringsDoNotChangeTheRoute) {
  Start();
  health_.SetListening(true);
  health_.SetStoreReady(true);
  for (const char* target :
       {"/metrics?x=1", "/metrics?", "/healthz?probe=kubelet&x=%20", "/readyz?verbose"}) {
    SCOPED_TRACE(target);
    Result<HttpResponse> r = Request("GET", target);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200) << r->body;
  }
  Result<HttpResponse> metrics = Request("GET", "/metrics?x=1");
  ASSERT_TRUE(metrics.ok());
  EXPECT_TRUE(ParsePrometheusText(metrics->body).ok());
}

TEST_F(AdminServerTest, OtherPathsGet404) {
  Start();
  for (const char* path : {"/", "/metrics/", "/METRICS", "/metricsz", "/healthz/live",
                           "/favicon.ico", "/metrics/../metrics"}) {
    SCOPED_TRACE(path);
    Result<HttpResponse> r = Request("GET", path);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 404);
    EXPECT_NE(r->body.find("/metrics"), std::string::npos) << "the body names the paths served";
  }
}

TEST_F(AdminServerTest, OtherMethodsGet405WithAllowGetHead) {
  Start();
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"}) {
    for (const char* path : {"/metrics", "/healthz", "/nowhere"}) {
      SCOPED_TRACE(std::string(method) + " " + path);
      Result<HttpResponse> r = Request(method, path);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->status, 405);
      EXPECT_EQ(r->Header("Allow"), "GET, HEAD");
    }
  }
}

TEST_F(AdminServerTest, APostWithABodyGets405AndTheBodyIsNotRead) {
  Start();
  Result<HttpResponse> r = Exchange(
      "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
      "hello world");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("Allow"), "GET, HEAD");
  EXPECT_TRUE(ServesAgain());
}

TEST_F(AdminServerTest, AnHttp10RequestWithoutHostIsServed) {
  Start();
  Result<HttpResponse> r = Exchange("GET /healthz HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok\n");
}

TEST_F(AdminServerTest, HealthzFollowsTheLoopsBeats) {
  Start();
  Result<HttpResponse> alive = Request("GET", "/healthz");
  ASSERT_TRUE(alive.ok()) << alive.status().ToString();
  EXPECT_EQ(alive->status, 200);
  EXPECT_EQ(alive->body, "ok\n");
  EXPECT_EQ(alive->Header("Content-Type"), "text/plain; charset=utf-8");

  const uint64_t now = MonotonicMs();
  if (now <= 2 * Health::kStallMs) GTEST_SKIP() << "the monotonic clock is too young";
  health_.Beat(now - 2 * Health::kStallMs);  // As if the loop had stopped turning.
  Result<HttpResponse> stalled = Request("GET", "/healthz");
  ASSERT_TRUE(stalled.ok()) << stalled.status().ToString();
  EXPECT_EQ(stalled->status, 503);
  EXPECT_NE(stalled->body.find("event loop stalled"), std::string::npos) << stalled->body;
}

TEST_F(AdminServerTest, ReadyzFollowsListeningStoreAndShutdown) {
  Start();
  struct Step {
    std::string what;
    std::function<void()> change;
    int status;
    std::string body;
  };
  const Step steps[] = {
      {"at start", [] {}, 503, "not ready: the socket is not listening yet\n"},
      {"store ready", [&] { health_.SetStoreReady(true); }, 503,
       "not ready: the socket is not listening yet\n"},
      {"listening", [&] { health_.SetListening(true); }, 200, "ready\n"},
      {"stopping", [&] { health_.SetStopping(); }, 503, "not ready: shutting down\n"},
  };
  for (const Step& step : steps) {
    SCOPED_TRACE(step.what);
    step.change();
    Result<HttpResponse> r = Request("GET", "/readyz");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, step.status);
    EXPECT_EQ(r->body, step.body);
  }
}

TEST_F(AdminServerTest, PortZeroPicksAFreePortForEachServer) {
  Start();
  AdminServer second(registry_, health_);
  ASSERT_TRUE(second.Start(On(kLoopback)).ok());
  EXPECT_NE(second.port(), 0);
  EXPECT_NE(second.port(), server_.port());
  for (uint16_t port : {server_.port(), second.port()}) {
    Result<HttpResponse> r = HttpRequest(kLoopback, port, "GET", "/healthz");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
  }
}

TEST_F(AdminServerTest, AGivenPortIsTheOneListenedOn) {
  uint16_t free_port = 0;
  {
    PortHolder probe;  // A port free a moment ago; another process could take it meanwhile.
    free_port = probe.port();
  }
  ASSERT_NE(free_port, 0);
  const Status started = server_.Start(On(kLoopback, free_port));
  if (!started.ok()) GTEST_SKIP() << "the port was taken meanwhile: " << started.ToString();
  EXPECT_EQ(server_.port(), free_port);
  EXPECT_TRUE(ServesAgain());
}

TEST_F(AdminServerTest, AHostThatDoesNotResolveFailsStartWithAClearMessage) {
  const Status started = server_.Start(On("nosuchhost.invalid"));
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(started.message().find("RATE_LIMIT_ADMIN_ADDR"), std::string::npos);
  EXPECT_NE(started.message().find("cannot resolve \"nosuchhost.invalid\""), std::string::npos)
      << started.message();
  // Nothing was left half-started: the same object can still start on a good address.
  Start();
  EXPECT_TRUE(ServesAgain());
}

TEST_F(AdminServerTest, APortInUseFailsStartWithAClearMessage) {
  PortHolder taken;
  ASSERT_NE(taken.port(), 0);
  const Status started = server_.Start(On(kLoopback, taken.port()));
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.message().find("127.0.0.1:" + std::to_string(taken.port())), std::string::npos)
      << started.message();
  EXPECT_NE(started.message().find("in use"), std::string::npos) << started.message();
  server_.Stop();  // Harmless after a failed Start.
}

TEST_F(AdminServerTest, IPv6LoopbackIsServed) {
  if (!CanBindTcp("::1")) GTEST_SKIP() << "this machine has no IPv6 loopback";
  Start(On("::1"));
  Result<HttpResponse> r = HttpRequest("::1", server_.port(), "GET", "/metrics");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(ParsePrometheusText(r->body).ok());
  // Bound to ::1 only: IPv4 clients do not reach it.
  EXPECT_FALSE(HttpRequest(kLoopback, server_.port(), "GET", "/healthz", 1000).ok());
}

// On Linux, with net.ipv6.bindv6only=0 (the default), a socket bound to [::] accepts IPv4
// clients too; an operator who writes RATE_LIMIT_ADMIN_ADDR=[::]:9464 for "every address"
// expects the kubelet's IPv4 probes to arrive.
TEST_F(AdminServerTest, TheIpv6WildcardAddressAlsoServesIpv4Clients) {
  if (!CanBindTcp("::1")) GTEST_SKIP() << "this machine has no IPv6";
  std::ifstream bindv6only("/proc/sys/net/ipv6/bindv6only");
  int v6only = 0;
  if (bindv6only >> v6only && v6only != 0) GTEST_SKIP() << "[::] is IPv6 only on this machine";
  Start(On("::"));
  for (const char* address : {"::1", kLoopback}) {
    SCOPED_TRACE(address);
    Result<HttpResponse> r = HttpRequest(address, server_.port(), "GET", "/healthz", 2000);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
  }
}

TEST_F(AdminServerTest, AHostNameIsResolved) {
  Start(On("localhost"));
  bool served = false;
  for (const char* address : {kLoopback, "::1"}) {
    Result<HttpResponse> r = HttpRequest(address, server_.port(), "GET", "/healthz", 2000);
    served |= r.ok() && r->status == 200;
  }
  EXPECT_TRUE(served) << "localhost resolved to neither 127.0.0.1 nor ::1";
}

TEST_F(AdminServerTest, OneAddressAtItsConnectionCapDoesNotLockOutAnother) {
  if (!CanBindTcp("127.0.0.2")) GTEST_SKIP() << "cannot use 127.0.0.2 as a client address";
  Start(WithTimeout(60));
  std::vector<TcpConnection> held;
  for (unsigned i = 0; i < AdminServer::kMaxConnectionsPerIp; ++i) {
    Result<TcpConnection> c = TcpConnection::Connect(kLoopback, server_.port(), "127.0.0.2");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    held.push_back(std::move(*c));
  }
  // The probe from another address is served while 127.0.0.2 holds all it may.
  Result<HttpResponse> probe = Request("GET", "/healthz");
  ASSERT_TRUE(probe.ok()) << probe.status().ToString();
  EXPECT_EQ(probe->status, 200);
  // One more from 127.0.0.2 is closed without an answer (connections are accepted in order).
  Result<TcpConnection> extra = TcpConnection::Connect(kLoopback, server_.port(), "127.0.0.2");
  ASSERT_TRUE(extra.ok()) << extra.status().ToString();
  extra->SendAll("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  Result<std::string> refused = extra->ReadUntilClose(10000);
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  EXPECT_EQ(*refused, "");
}

TEST_F(AdminServerTest, ConnectionsBeyondTheCapsDoNotWedgeTheServer) {
  Start(WithTimeout(60));
  // From five addresses when the machine allows it (each within the per-address cap), else all
  // from one: either way more than the server takes at once.
  std::vector<std::string> sources = {""};
  if (CanBindTcp("127.0.0.2"))
    sources = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"};
  const size_t total = AdminServer::kMaxConnections + 8;
  std::vector<TcpConnection> held;
  for (size_t i = 0; i < total; ++i) {
    Result<TcpConnection> c =
        TcpConnection::Connect(kLoopback, server_.port(), sources[i % sources.size()]);
    ASSERT_TRUE(c.ok()) << i << ": " << c.status().ToString();
    // Half of them send half a request, the others nothing.
    if (i % 2 == 0) c->SendAll("GET /metrics HTTP/1.1\r\nHost: x\r\n");
    held.push_back(std::move(*c));
  }
  held.clear();  // They all go away at once.
  EXPECT_TRUE(ServesAgain());
  Result<PromText> parsed = ScrapeMetrics(server_.port());
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
}

TEST_F(AdminServerTest, IdleConnectionsAreClosedAfterTheIdleTimeout) {
  Start(WithTimeout(1));
  const std::string sends[] = {
      "GET /metrics HTTP/1.1\r\nHost: x\r\n",  // Half a request: no blank line.
      "",                                      // Nothing at all.
      std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),  // A TLS hello.
  };
  std::vector<TcpConnection> idle;
  for (const std::string& bytes : sends) {
    Result<TcpConnection> c = TcpConnection::Connect(kLoopback, server_.port());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ASSERT_TRUE(c->SendAll(bytes));
    idle.push_back(std::move(*c));
  }
  for (size_t i = 0; i < idle.size(); ++i) {
    SCOPED_TRACE(i);
    // A bound far above the timeout, only so that a missing timeout fails instead of hanging.
    Result<std::string> end = idle[i].ReadUntilClose(20000);
    EXPECT_TRUE(end.ok()) << end.status().ToString();
  }
  EXPECT_TRUE(ServesAgain());
}

TEST_F(AdminServerTest, OversizedRequestsGetAnErrorStatusAndTheServerGoesOn) {
  Start();
  const struct {
    std::string request;
    int status;
  } cases[] = {
      {"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(100'000, 'a') + "\r\n\r\n", 431},
      {"GET /" + std::string(100'000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.status);
    Result<HttpResponse> r = Exchange(c.request);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, c.status);
    EXPECT_TRUE(ServesAgain());
  }
}

TEST_F(AdminServerTest, ScrapesFromSeveralThreadsWhileTheWriterCountsSeeCountsOnlyGrow) {
  Start();
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop) {
      checks_.Add();
      latency_.Observe(500'000);
    }
  });
  std::atomic<int> failures{0};
  std::vector<std::thread> scrapers;
  for (int t = 0; t < 4; ++t) {
    scrapers.emplace_back([&] {
      double last_checks = 0;
      double last_count = 0;
      for (int i = 0; i < 25; ++i) {
        Result<PromText> parsed = ScrapeMetrics(server_.port());
        if (!parsed.ok()) {
          ADD_FAILURE() << parsed.status().ToString();
          ++failures;
          return;
        }
        const double checks = *parsed->Value("test_checks_total", {{"decision", "allowed"}});
        const double count = *parsed->Value("test_duration_seconds_count");
        if (checks < last_checks || count < last_count) ++failures;
        last_checks = checks;
        last_count = count;
      }
    });
  }
  for (std::thread& t : scrapers) t.join();
  stop = true;
  writer.join();
  EXPECT_EQ(failures, 0);
}

TEST_F(AdminServerTest, StopClosesThePortAndMayBeCalledTwice) {
  Start();
  const uint16_t port = server_.port();
  ASSERT_TRUE(ServesAgain());
  server_.Stop();
  server_.Stop();
  Result<TcpConnection> after = TcpConnection::Connect(kLoopback, port, "", 1000);
  EXPECT_FALSE(after.ok()) << "still accepting after Stop";
}

}  // namespace
}  // namespace ratelimit
