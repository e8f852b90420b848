// AdminServer: /metrics, /healthz and /readyz over HTTP, served from a thread of their own.
#include "sidecar/admin/admin_server.h"

#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>

#include "sidecar/log/log.h"

namespace ratelimit {
namespace {

constexpr const char* kTextType = "text/plain; charset=utf-8";
// The Prometheus text exposition format, version 0.0.4.
constexpr const char* kMetricsType = "text/plain; version=0.0.4; charset=utf-8";

void LogFromHttp(void* /*cls*/, const char* format, va_list args) {
  char buf[512];
  std::vsnprintf(buf, sizeof(buf), format, args);
  std::string text(buf);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  Log(LogLevel::kWarn, "admin http server").Str("error", text);
}

MHD_Result Handle(void* cls, MHD_Connection* connection, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/, size_t* upload_data_size,
                  void** /*request_state*/) {
  const auto* server = static_cast<const AdminServer*>(cls);
  // A body is never read: every endpoint answers at once; a body sent anyway is dropped with
  // the connection once the answer is out.
  *upload_data_size = 0;
  const AdminServer::Reply reply = server->Route(
      url, method, MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "ms"));
  MHD_Response* response = MHD_create_response_from_buffer(
      reply.body.size(), const_cast<char*>(reply.body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;  // Out of memory: MHD closes the connection.
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, reply.content_type.c_str());
  MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (reply.allow != nullptr) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, reply.allow);
  const MHD_Result queued = MHD_queue_response(connection, reply.status, response);
  MHD_destroy_response(response);
  return queued;
}

// `text` as a whole number of milliseconds a test clock may advance by: decimal digits only.
std::optional<int64_t> ParseAdvanceMs(const char* text) {
  if (text == nullptr) return std::nullopt;
  const std::string_view digits(text);
  uint64_t ms = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), ms);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() ||
      ms > static_cast<uint64_t>(AdminServer::kMaxClockAdvanceMs)) {
    return std::nullopt;
  }
  return static_cast<int64_t>(ms);
}

AdminServer::Reply NotFound() {
  return {MHD_HTTP_NOT_FOUND, kTextType, "not found; try /metrics, /healthz or /readyz\n"};
}

}  // namespace

AdminServer::AdminServer(const MetricsRegistry& registry, const Health& health)
    : registry_(registry), health_(health) {}

AdminServer::~AdminServer() { Stop(); }

Status AdminServer::Start(const AdminServerOptions& options) {
  extra_metrics_ = options.extra_metrics;
  advance_test_clock_ = options.advance_test_clock;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(options.port);
  if (const int rc = getaddrinfo(options.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return Status::InvalidArgument("RATE_LIMIT_ADMIN_ADDR: cannot resolve \"" + options.host +
                                   "\": " + gai_strerror(rc));
  }
  sockaddr_storage address{};
  const bool ipv6 = found->ai_family == AF_INET6;
  std::memcpy(&address, found->ai_addr, std::min<size_t>(found->ai_addrlen, sizeof(address)));
  freeaddrinfo(found);

  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
  // Dual stack: "[::]:port" then also serves IPv4 clients, as operators expect of a wildcard.
  if (ipv6) flags |= MHD_USE_DUAL_STACK;
  // The logger first, so that even complaints about later options reach our log.
  daemon_ = MHD_start_daemon(
      flags, options.port, nullptr, nullptr, &Handle, this, MHD_OPTION_EXTERNAL_LOGGER,
      &LogFromHttp, nullptr, MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&address),
      MHD_OPTION_CONNECTION_LIMIT, kMaxConnections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      kMaxConnectionsPerIp, MHD_OPTION_CONNECTION_TIMEOUT, options.timeout_seconds, MHD_OPTION_END);
  if (daemon_ == nullptr) {
    return Status::IoError("cannot serve RATE_LIMIT_ADMIN_ADDR " + options.host + ":" + port +
                           " (address in use or not available here)");
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info != nullptr && info->port != 0 ? info->port : options.port;
  return Status::Ok();
}

void AdminServer::Stop() {
  if (daemon_ == nullptr) return;
  MHD_stop_daemon(daemon_);
  daemon_ = nullptr;
}

AdminServer::Reply AdminServer::Route(std::string_view path, std::string_view method,
                                      const char* ms) const {
  // Without the test clock the path does not exist for any method: a test that finds 404
  // knows the sidecar was started without RATE_LIMIT_TEST_CLOCK=manual.
  if (path == kClockAdvancePath) {
    return advance_test_clock_ ? AdvanceTestClock(method, ms) : NotFound();
  }
  if (method != MHD_HTTP_METHOD_GET && method != MHD_HTTP_METHOD_HEAD) {
    return {MHD_HTTP_METHOD_NOT_ALLOWED, kTextType, "only GET and HEAD are served\n", "GET, HEAD"};
  }
  if (path == "/metrics") {
    Reply reply{MHD_HTTP_OK, kMetricsType, registry_.Render()};
    if (extra_metrics_) extra_metrics_(reply.body);
    return reply;
  }
  if (path == "/healthz" || path == "/readyz") {
    const Health::Answer answer =
        path == "/healthz" ? health_.Liveness(MonotonicMs()) : health_.Readiness();
    return {answer.ok ? unsigned{MHD_HTTP_OK} : unsigned{MHD_HTTP_SERVICE_UNAVAILABLE}, kTextType,
            answer.body};
  }
  return NotFound();
}

AdminServer::Reply AdminServer::AdvanceTestClock(std::string_view method, const char* ms) const {
  if (method != MHD_HTTP_METHOD_POST) {
    return {MHD_HTTP_METHOD_NOT_ALLOWED, kTextType, "the test clock advances on POST only\n",
            MHD_HTTP_METHOD_POST};
  }
  const std::optional<int64_t> advance = ParseAdvanceMs(ms);
  if (!advance.has_value()) {
    // The value is not echoed: an admin port's answers should not carry what anyone sent.
    return {MHD_HTTP_BAD_REQUEST, kTextType,
            "ms must be an integer from 0 to " + std::to_string(kMaxClockAdvanceMs) +
                " (milliseconds), as in POST " + kClockAdvancePath + "?ms=1000\n"};
  }
  advance_test_clock_(*advance);
  return {MHD_HTTP_OK, kTextType, "test clock advanced by " + std::to_string(*advance) + " ms\n"};
}

}  // namespace ratelimit
