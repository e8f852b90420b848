// HTTP for tests: a blocking TCP client with bounded waits, and scrapes of the admin server.
#include "tests/testing/http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace ratelimit {
namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Part of a response, for an error message: at most a line's worth.
std::string Quoted(std::string_view text) {
  constexpr size_t kMax = 160;
  std::string out(text.substr(0, kMax));
  if (text.size() > kMax) out += "...";
  return "`" + out + "`";
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Result<addrinfo*> Resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
      rc != 0) {
    return Status::InvalidArgument("not an address: " + host + ": " + gai_strerror(rc));
  }
  return found;
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  const std::string wanted = Lower(name);
  for (const auto& [key, value] : headers) {
    if (Lower(key) == wanted) return value;
  }
  return std::nullopt;
}

bool CanBindTcp(const std::string& address) {
  Result<addrinfo*> found = Resolve(address, 0);
  if (!found.ok()) return false;
  const int fd = socket((*found)->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool bound = fd >= 0 && bind(fd, (*found)->ai_addr, (*found)->ai_addrlen) == 0;
  if (fd >= 0) close(fd);
  freeaddrinfo(*found);
  return bound;
}

Result<TcpConnection> TcpConnection::Connect(const std::string& host, uint16_t port,
                                             const std::string& source, int timeout_ms) {
  Result<addrinfo*> target = Resolve(host, port);
  if (!target.ok()) return target.status();
  const int fd = socket((*target)->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    freeaddrinfo(*target);
    return Status::IoError(std::string("socket: ") + strerror(errno));
  }
  TcpConnection connection(fd);
  if (!source.empty()) {
    Result<addrinfo*> from = Resolve(source, 0);
    if (!from.ok()) {
      freeaddrinfo(*target);
      return from.status();
    }
    const int rc = bind(fd, (*from)->ai_addr, (*from)->ai_addrlen);
    const int err = errno;
    freeaddrinfo(*from);
    if (rc != 0) {
      freeaddrinfo(*target);
      return Status::Unavailable("bind to " + source + ": " + strerror(err));
    }
  }
  int rc = connect(fd, (*target)->ai_addr, (*target)->ai_addrlen);
  int err = errno;
  freeaddrinfo(*target);
  const std::string where = host + " port " + std::to_string(port);
  if (rc != 0 && err == EINPROGRESS) {
    pollfd pfd{fd, POLLOUT, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return Status::TimedOut("connect to " + where);
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    rc = err == 0 ? 0 : -1;
  }
  if (rc != 0) return Status::Unavailable("connect to " + where + ": " + strerror(err));
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  // Sends are bounded too: a server that stops reading cannot hang a test.
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return connection;
}

TcpConnection::~TcpConnection() { Close(); }

void TcpConnection::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool TcpConnection::SendAll(std::string_view bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

Result<std::string> TcpConnection::ReadUntilClose(int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  std::string data;
  char buf[16384];
  while (true) {
    const int64_t left = deadline - NowMs();
    pollfd pfd{fd_, POLLIN, 0};
    const int ready = left > 0 ? poll(&pfd, 1, static_cast<int>(left)) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      return Status::TimedOut("the server did not close the connection within " +
                              std::to_string(timeout_ms) + " ms (" + std::to_string(data.size()) +
                              " bytes came)");
    }
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return data;
    if (n < 0) return Status::IoError(std::string("recv: ") + strerror(errno));
    data.append(buf, static_cast<size_t>(n));
  }
}

Result<HttpResponse> ParseHttpResponse(std::string_view raw, bool head_request) {
  const size_t end = raw.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return Status::ProtocolError("no end of the headers in a response of " +
                                 std::to_string(raw.size()) +
                                 " bytes: " + Quoted(raw.substr(0, 200)));
  }
  HttpResponse response;
  std::string_view head = raw.substr(0, end);
  size_t line_end = head.find("\r\n");
  response.status_line = std::string(head.substr(0, line_end));
  if (response.status_line.rfind("HTTP/1.", 0) != 0 || response.status_line.size() < 12 ||
      response.status_line[8] != ' ' || !IsDigit(response.status_line[9])) {
    return Status::ProtocolError("bad status line " + Quoted(response.status_line));
  }
  response.status = std::atoi(response.status_line.c_str() + 9);
  while (line_end != std::string_view::npos) {
    head.remove_prefix(line_end + 2);
    line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Status::ProtocolError("bad header " + Quoted(line));
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && IsBlank(value.front())) value.remove_prefix(1);
    while (!value.empty() && IsBlank(value.back())) value.remove_suffix(1);
    response.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  response.body = std::string(raw.substr(end + 4));
  if (const std::optional<std::string> length = response.Header("Content-Length");
      length && !head_request && std::to_string(response.body.size()) != *length) {
    return Status::ProtocolError("Content-Length " + *length + " but " +
                                 std::to_string(response.body.size()) + " bytes of body");
  }
  return response;
}

Result<HttpResponse> HttpRequest(const std::string& host, uint16_t port, std::string_view method,
                                 std::string_view target, int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  Result<TcpConnection> connection = TcpConnection::Connect(host, port, "", timeout_ms);
  if (!connection.ok()) return connection.status();
  const std::string authority =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  const std::string request = std::string(method) + " " + std::string(target) +
                              " HTTP/1.1\r\nHost: " + authority + "\r\nConnection: close\r\n\r\n";
  if (!connection->SendAll(request)) {
    return Status::Unavailable("cannot send the request: " + std::string(strerror(errno)));
  }
  Result<std::string> raw =
      connection->ReadUntilClose(static_cast<int>(std::max<int64_t>(1, deadline - NowMs())));
  if (!raw.ok()) return raw.status();
  return ParseHttpResponse(*raw, method == "HEAD");
}

Result<PromText> ScrapeMetrics(uint16_t port, int timeout_ms) {
  Result<HttpResponse> response = HttpRequest("127.0.0.1", port, "GET", "/metrics", timeout_ms);
  if (!response.ok()) return response.status();
  if (response->status != 200) {
    return Status::ProtocolError("/metrics answered " + response->status_line + ": " +
                                 response->body);
  }
  const std::string type = response->Header("Content-Type").value_or("(none)");
  if (type.rfind("text/plain; version=0.0.4", 0) != 0) {
    return Status::ProtocolError("/metrics has Content-Type " + type);
  }
  return ParsePrometheusText(response->body);
}

Result<PromText> ScrapeUntil(uint16_t port, const std::function<bool(const PromText&)>& done,
                             int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  int scrapes = 0;
  while (true) {
    Result<PromText> scraped = ScrapeMetrics(port);
    ++scrapes;
    if (!scraped.ok() || done(*scraped)) return scraped;
    if (NowMs() >= deadline) {
      return Status::TimedOut("no scrape of " + std::to_string(scrapes) + " in " +
                              std::to_string(timeout_ms) + " ms showed what was awaited");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

uint16_t AdminPortFromLog(std::string_view log) {
  const size_t line = log.find("\"msg\":\"admin server listening\"");
  if (line == std::string_view::npos) return 0;
  const std::string_view rest = log.substr(line, log.find('\n', line) - line);
  constexpr std::string_view kPort = "\"port\":";
  const size_t at = rest.find(kPort);
  if (at == std::string_view::npos) return 0;
  const long port = std::strtol(std::string(rest.substr(at + kPort.size())).c_str(), nullptr, 10);
  return port > 0 && port <= 65535 ? static_cast<uint16_t>(port) : 0;
}

AdminSidecar StartWithAdmin(Env env) {
  env["RATE_LIMIT_ADMIN_ADDR"] = "127.0.0.1:0";
  Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(std::move(env));
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  if (!started.ok()) return {};
  AdminSidecar sidecar{std::move(*started), 0};
  // The line is written before the socket listens, so before the ping that Start waited for.
  sidecar.port = AdminPortFromLog(sidecar.process->Stderr());
  EXPECT_NE(sidecar.port, 0) << "no admin server listening line:\n" << sidecar.process->Stderr();
  if (sidecar.port == 0) return {};
  return sidecar;
}

std::string DumpNow(uint16_t port, std::string_view prefix) {
  Result<PromText> m = ScrapeMetrics(port);
  return m.ok() ? m->Dump(prefix) : m.status().ToString();
}

}  // namespace ratelimit
