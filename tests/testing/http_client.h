// HTTP for tests: a blocking TCP client with bounded waits, and scrapes of the admin server.
#ifndef RATELIMIT_TESTS_TESTING_HTTP_CLIENT_H_
#define RATELIMIT_TESTS_TESTING_HTTP_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schema/status.h"
#include "tests/testing/prometheus_text.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {

// An HTTP response as read off the wire.
struct HttpResponse {
  int status = 0;
  std::string status_line;  // Without the CRLF.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The value of header `name` (case-insensitive); nullopt when absent.
  std::optional<std::string> Header(std::string_view name) const;
};

// Whether this machine lets a TCP socket bind `address` (an IPv4 or IPv6 literal), e.g. ::1
// (not every container has IPv6) or 127.0.0.2 (as a second client address).
bool CanBindTcp(const std::string& address);

// A blocking TCP connection, closed on destruction. Every wait is bounded by a timeout.
class TcpConnection {
 public:
  // Connects to `host` (an IPv4 or IPv6 literal) and `port`, from the address `source` when it
  // is not empty (e.g. 127.0.0.2, to look like another client).
  static Result<TcpConnection> Connect(const std::string& host, uint16_t port,
                                       const std::string& source = "", int timeout_ms = 5000);
  TcpConnection(TcpConnection&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  TcpConnection& operator=(TcpConnection&&) = delete;
  ~TcpConnection();

  bool SendAll(std::string_view bytes);
  // Everything the peer sends until it closes the connection (a reset counts as a close).
  // TimedOut when it has not closed within `timeout_ms`.
  Result<std::string> ReadUntilClose(int timeout_ms = 5000);
  void Close();

 private:
  explicit TcpConnection(int fd) : fd_(fd) {}
  int fd_;
};

// Parses a whole response (the server closed the connection after it). A body shorter than its
// Content-Length is an error, except in the answer to a HEAD request, which has none.
Result<HttpResponse> ParseHttpResponse(std::string_view raw, bool head_request);

// Sends `method target HTTP/1.1` with Host and `Connection: close` and reads the response, all
// within `timeout_ms`.
Result<HttpResponse> HttpRequest(const std::string& host, uint16_t port, std::string_view method,
                                 std::string_view target, int timeout_ms = 5000);

// GETs /metrics from 127.0.0.1:port and parses it with ParsePrometheusText; an error when the
// status is not 200, the content type not the text format 0.0.4, or the body does not parse.
Result<PromText> ScrapeMetrics(uint16_t port, int timeout_ms = 5000);

// Scrapes 127.0.0.1:port every 20 ms until `done` holds for a scrape, for at most `timeout_ms`
// (the sidecar publishes its engines' series every 250 ms, so they lag the checks). Returns that
// scrape; an error when a scrape fails (see ScrapeMetrics) or none satisfied `done` in time.
Result<PromText> ScrapeUntil(uint16_t port, const std::function<bool(const PromText&)>& done,
                             int timeout_ms = 5000);

// The port in the sidecar's log line {"msg":"admin server listening",...,"port":N}; 0 when the
// log has no such line.
uint16_t AdminPortFromLog(std::string_view log);

// The series whose names start with `prefix` as scraped now, one a line, or why the scrape
// failed: for failure messages.
std::string DumpNow(uint16_t port, std::string_view prefix = "ratelimit_");

// A running sidecar with its admin server on 127.0.0.1 and a port of the sidecar's choosing.
struct AdminSidecar {
  std::unique_ptr<SidecarProcess> process;
  uint16_t port = 0;
};

// Starts a sidecar with `env` and RATE_LIMIT_ADMIN_ADDR=127.0.0.1:0 and reads its admin port
// from its log. Empty, with a test failure recorded, when it does not start or logs no port.
AdminSidecar StartWithAdmin(Env env = {});

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_HTTP_CLIENT_H_
