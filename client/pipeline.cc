// Pipeline: one connection to the sidecar with many requests in flight, matched by id.
#include "ratelimit/pipeline.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>

namespace ratelimit {
namespace {

constexpr size_t kReadChunkBytes = 64 * 1024;

int64_t NowMillis() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Status ErrnoStatus(const std::string& what, int err) {
  std::string msg = what + ": " + strerror(err);
  if (err == EPIPE || err == ECONNRESET) return Status::Closed(std::move(msg));
  if (err == ENOENT || err == ECONNREFUSED) return Status::Unavailable(std::move(msg));
  return Status::IoError(std::move(msg));
}

Result<Reply> ToReply(const wire::Frame& frame) {
  Reply reply;
  reply.id = frame.id();
  // The Verifier accepts a union whose type is set but whose table is absent: check both.
  switch (frame.body() == nullptr ? wire::Body::NONE : frame.body_type()) {
    case wire::Body::CheckResponse:
      reply.kind = Reply::Kind::kCheck;
      reply.check = ToCheckResult(*frame.body_as_CheckResponse());
      return reply;
    case wire::Body::PingResponse: {
      const wire::PingResponse& ping = *frame.body_as_PingResponse();
      reply.kind = Reply::Kind::kPing;
      reply.ping.protocol_version = ping.protocol_version();
      reply.ping.ready = ping.ready();
      if (ping.store() != nullptr) reply.ping.store = ping.store()->str();
      return reply;
    }
    case wire::Body::ErrorResponse: {
      const wire::ErrorResponse& error = *frame.body_as_ErrorResponse();
      reply.kind = Reply::Kind::kError;
      reply.error_status = StatusFromWire(error.status());
      if (error.message() != nullptr) reply.error_message = error.message()->str();
      return reply;
    }
    default:
      return Status::ProtocolError("sidecar sent a frame with body type " +
                                   std::to_string(static_cast<int>(frame.body_type())));
  }
}

}  // namespace

std::string DefaultSocketPath() {
  const char* env = std::getenv("RATE_LIMIT_SOCKET");
  return env != nullptr && *env != '\0' ? env : kDefaultSocketPath;
}

Result<std::unique_ptr<Pipeline>> Pipeline::Connect(const ClientOptions& options) {
  sockaddr_un addr{};
  if (options.socket_path.empty() || options.socket_path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("socket path must be 1 to " +
                                   std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, options.socket_path.c_str(), options.socket_path.size() + 1);
  const int64_t deadline = NowMillis() + options.timeout_ms;
  while (true) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus("socket", errno);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return std::unique_ptr<Pipeline>(new Pipeline(fd, options));
    }
    const int err = errno;
    close(fd);
    // EAGAIN: the listener's backlog is full. Wait a little and try again until the deadline.
    if (err != EAGAIN || NowMillis() >= deadline) {
      if (err == EAGAIN) return Status::TimedOut("connect to " + options.socket_path);
      return ErrnoStatus("connect to " + options.socket_path, err);
    }
    usleep(1000);
  }
}

Pipeline::Pipeline(int fd, const ClientOptions& options)
    : fd_(fd), options_(options), reader_(options.max_frame_bytes) {}

Pipeline::~Pipeline() { close(fd_); }

Status Pipeline::QueueCheck(uint64_t id, const CheckArgs& args) {
  const std::span<const uint8_t> frame = encoder_.CheckRequest(id, args);
  if (frame.size() - kFramePrefixBytes > options_.max_frame_bytes) {
    return Status::InvalidArgument("request of " + std::to_string(frame.size()) +
                                   " bytes exceeds max_frame_bytes");
  }
  out_.insert(out_.end(), frame.begin(), frame.end());
  return Status::Ok();
}

void Pipeline::QueuePing(uint64_t id) {
  const std::span<const uint8_t> frame = encoder_.PingRequest(id);
  out_.insert(out_.end(), frame.begin(), frame.end());
}

Status Pipeline::WaitFor(short events, int64_t deadline_ms, short* revents) {
  while (true) {
    const int64_t left = deadline_ms - NowMillis();
    if (left <= 0)
      return Status::TimedOut("no progress within " + std::to_string(options_.timeout_ms) + " ms");
    pollfd pfd{fd_, events, 0};
    const int rc = poll(&pfd, 1, static_cast<int>(left));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return ErrnoStatus("poll", errno);
    if (rc == 0) continue;  // Re-check the deadline.
    *revents = pfd.revents;
    return Status::Ok();
  }
}

Status Pipeline::Flush() {
  int64_t deadline = NowMillis() + options_.timeout_ms;
  while (out_sent_ < out_.size()) {
    const ssize_t n = send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_NOSIGNAL);
    if (n > 0) {
      out_sent_ += static_cast<size_t>(n);
      deadline = NowMillis() + options_.timeout_ms;  // Progress: the timeout starts over.
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) {
      const Status failed = ErrnoStatus("send", errno);
      (void)ReadAvailable();  // Keep what the sidecar said before closing (an ErrorResponse).
      return failed;
    }
    short revents = 0;
    if (Status s = WaitFor(POLLOUT | POLLIN, deadline, &revents); !s.ok()) return s;
    // The sidecar may be waiting for us to read before it reads more: take its replies.
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
      if (Status s = ReadAvailable(); !s.ok()) return s;
    }
  }
  out_.clear();
  out_sent_ = 0;
  return Status::Ok();
}

Status Pipeline::ReadAvailable() {
  in_.resize(kReadChunkBytes);
  while (true) {
    const ssize_t n = recv(fd_, in_.data(), in_.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return Status::Ok();
    if (n < 0) return ErrnoStatus("recv", errno);
    if (n == 0) return Status::Closed("the sidecar closed the connection");
    Status failure;
    const Status fed =
        reader_.Feed(std::span<const uint8_t>(in_.data(), static_cast<size_t>(n)),
                     [&](std::span<const uint8_t> bytes) {
                       Result<const wire::Frame*> frame = verifier_.Verify(bytes);
                       if (!frame.ok()) {
                         failure = Status::ProtocolError("reply " + frame.status().message());
                         return false;
                       }
                       Result<Reply> reply = ToReply(**frame);
                       if (!reply.ok()) {
                         failure = reply.status();
                         return false;
                       }
                       replies_.push_back(std::move(*reply));
                       return true;
                     });
    if (!fed.ok()) return fed;
    if (!failure.ok()) return failure;
    if (static_cast<size_t>(n) < in_.size()) return Status::Ok();
  }
}

Result<Reply> Pipeline::Receive() {
  const int64_t deadline = NowMillis() + options_.timeout_ms;
  while (replies_.empty()) {
    short revents = 0;
    if (Status s = WaitFor(POLLIN, deadline, &revents); !s.ok()) return s;
    if (Status s = ReadAvailable(); !s.ok()) {
      if (!replies_.empty()) break;  // Hand out what arrived before the error first.
      return s;
    }
  }
  Reply reply = std::move(replies_.front());
  replies_.pop_front();
  return reply;
}

}  // namespace ratelimit
