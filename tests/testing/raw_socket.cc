// Raw Unix-socket helpers for tests that must send what no well-behaved client would.
#include "tests/testing/raw_socket.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "schema/frame_codec.h"
#include "schema/frame_reader.h"

namespace ratelimit {
namespace {

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof(addr.sun_path) - 1));
  return addr;
}

}  // namespace

Result<RawSocket> RawSocket::Connect(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = Address(path);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    return Status::Unavailable(std::string("connect: ") + strerror(err));
  }
  return RawSocket(fd);
}

RawSocket::~RawSocket() { Close(); }

void RawSocket::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool RawSocket::SendAll(std::span<const uint8_t> bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

bool RawSocket::ReadExactly(uint8_t* out, size_t n, int timeout_ms) {
  size_t got = 0;
  while (got < n) {
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return false;
    const ssize_t r = recv(fd_, out + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

Result<std::vector<uint8_t>> RawSocket::ReadFrame(int timeout_ms) {
  std::vector<uint8_t> frame(kFramePrefixBytes);
  if (!ReadExactly(frame.data(), kFramePrefixBytes, timeout_ms)) {
    return Status::Closed("no frame prefix");
  }
  const uint32_t payload = ReadFramePrefix(frame.data());
  if (payload > (1u << 24)) return Status::ProtocolError("absurd frame length");
  frame.resize(kFramePrefixBytes + payload);
  if (!ReadExactly(frame.data() + kFramePrefixBytes, payload, timeout_ms)) {
    return Status::Closed("truncated frame");
  }
  return frame;
}

bool RawSocket::WaitForClose(int timeout_ms) {
  uint8_t sink[4096];
  while (true) {
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return false;
    const ssize_t r = recv(fd_, sink, sizeof(sink), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
    if (r < 0) return false;
  }
}

std::thread FloodWithoutReading(int fd, const std::string& key) {
  return std::thread([fd, key] {
    FrameEncoder encoder;
    std::vector<uint8_t> burst;
    for (uint64_t id = 0; id < 1000; ++id) {
      const auto frame = encoder.CheckRequest(id, {.key = key});
      burst.insert(burst.end(), frame.begin(), frame.end());
    }
    for (int i = 0; i < 200; ++i) {
      if (send(fd, burst.data(), burst.size(), MSG_NOSIGNAL) <= 0) return;
    }
  });
}

FakeServer::FakeServer(const std::string& path, std::function<void(RawSocket&)> serve)
    : path_(path) {
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = Address(path);
  bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  listen(listen_fd_, 16);
  acceptor_ = std::thread([this, serve] {
    while (true) {
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0 && errno == EINTR) continue;
      if (fd < 0) return;
      if (stopping_) {  // The destructor's wake-up call.
        close(fd);
        return;
      }
      workers_.emplace_back([fd, serve] {
        RawSocket socket(fd);
        serve(socket);
      });
    }
  });
}

FakeServer::~FakeServer() {
  stopping_ = true;
  {
    Result<RawSocket> wake = RawSocket::Connect(path_);
    acceptor_.join();
  }
  close(listen_fd_);
  for (std::thread& worker : workers_) worker.join();
  unlink(path_.c_str());
}

}  // namespace ratelimit
