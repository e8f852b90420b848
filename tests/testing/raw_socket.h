// Raw Unix-socket helpers for tests that must send what no well-behaved client would.
#ifndef RATELIMIT_TESTS_TESTING_RAW_SOCKET_H_
#define RATELIMIT_TESTS_TESTING_RAW_SOCKET_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "schema/status.h"

namespace ratelimit {

// A connected blocking socket, closed on destruction.
class RawSocket {
 public:
  static Result<RawSocket> Connect(const std::string& path);
  explicit RawSocket(int fd) : fd_(fd) {}
  RawSocket(RawSocket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  RawSocket& operator=(RawSocket&&) = delete;
  ~RawSocket();

  int fd() const { return fd_; }
  bool SendAll(std::span<const uint8_t> bytes);
  // Reads one size-prefixed frame (prefix included), waiting at most timeout_ms.
  Result<std::vector<uint8_t>> ReadFrame(int timeout_ms = 5000);
  // True when the peer closes the connection within timeout_ms (data before that is skipped).
  bool WaitForClose(int timeout_ms = 5000);
  void Close();

 private:
  bool ReadExactly(uint8_t* out, size_t n, int timeout_ms);
  int fd_;
};

// Starts a thread that writes check requests for `key` on `fd` without ever reading answers:
// up to 200,000 requests, until a send fails. It stops when the caller shuts the socket down
// (shutdown(fd, SHUT_RDWR) wakes a blocked send), and must then be joined.
std::thread FloodWithoutReading(int fd, const std::string& key);

// A listener on a Unix socket whose every accepted connection is handed to `serve` on its own
// thread: a stand-in sidecar that misbehaves on purpose. Stops and joins on destruction.
class FakeServer {
 public:
  FakeServer(const std::string& path, std::function<void(RawSocket&)> serve);
  ~FakeServer();

 private:
  std::string path_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::vector<std::thread> workers_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_RAW_SOCKET_H_
