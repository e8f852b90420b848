// AdminServer: /metrics, /healthz and /readyz over HTTP, served from a thread of their own.
#ifndef RATELIMIT_SIDECAR_ADMIN_ADMIN_SERVER_H_
#define RATELIMIT_SIDECAR_ADMIN_ADMIN_SERVER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "schema/status.h"
#include "sidecar/admin/health.h"
#include "sidecar/metrics/prometheus.h"

struct MHD_Daemon;

namespace ratelimit {

struct AdminServerOptions {
  std::string host;   // IPv4 literal, IPv6 literal (no brackets) or a name, resolved once.
  uint16_t port = 0;  // 0: a free port; see port().
  // Appended to every /metrics answer after the registry's series (process metrics).
  std::function<void(std::string& out)> extra_metrics;
  // An HTTP connection idle this long is closed.
  unsigned timeout_seconds = 10;
  // Moves the test clock forward by `ms` (0 to kMaxClockAdvanceMs) when set, which it is only
  // with RATE_LIMIT_TEST_CLOCK=manual: then POST /test/clock/advance?ms=N calls it on the HTTP
  // thread. Unset: that path is not found, like any other.
  std::function<void(int64_t ms)> advance_test_clock = nullptr;
};

// The HTTP side is libmicrohttpd, on its own polling thread: a scrape or a probe never runs on
// the loop thread and never waits for it. Everything it reads is published by the loop thread
// in atomics (metrics.h, Health). Only GET and HEAD are served; other methods get 405, other
// paths 404. The one exception is for tests: POST /test/clock/advance?ms=N, served only when
// the options give advance_test_clock. Connections are capped (kMaxConnections in all,
// kMaxConnectionsPerIp from one address, so one client cannot lock out the kubelet's probes) and
// time out when idle, so a slow or hostile HTTP client costs a few kilobytes and cannot hold the
// server.
//
// Thread-safety: Start and Stop on one thread; the registry and health must outlive the
// server (Stop, or the destructor, joins the HTTP thread).
class AdminServer {
 public:
  static constexpr unsigned kMaxConnections = 32;
  static constexpr unsigned kMaxConnectionsPerIp = 8;
  static constexpr const char* kClockAdvancePath = "/test/clock/advance";
  static constexpr int64_t kMaxClockAdvanceMs = int64_t{1} << 31;

  AdminServer(const MetricsRegistry& registry, const Health& health);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Resolves the host, binds, listens and starts the HTTP thread.
  Status Start(const AdminServerOptions& options);
  // The port listened on (the one chosen when options.port was 0). REQUIRES: Start succeeded.
  uint16_t port() const { return port_; }
  // Stops listening, closes connections and joins the HTTP thread. Idempotent.
  void Stop();

  // What a request gets; called on the HTTP thread for every request. `ms` is the value of the
  // query's `ms` argument, nullptr when there is none.
  struct Reply {
    unsigned status = 200;
    std::string content_type;
    std::string body;
    const char* allow = nullptr;  // 405: the methods that are allowed, for the Allow header.
  };
  Reply Route(std::string_view path, std::string_view method, const char* ms = nullptr) const;

 private:
  Reply AdvanceTestClock(std::string_view method, const char* ms) const;

  const MetricsRegistry& registry_;
  const Health& health_;
  std::function<void(std::string&)> extra_metrics_;
  std::function<void(int64_t)> advance_test_clock_;
  MHD_Daemon* daemon_ = nullptr;
  uint16_t port_ = 0;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_ADMIN_ADMIN_SERVER_H_
