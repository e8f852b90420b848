// Client: the blocking, thread-safe way for an application to ask the sidecar for a decision.
#ifndef RATELIMIT_CLIENT_RATELIMIT_CLIENT_H_
#define RATELIMIT_CLIENT_RATELIMIT_CLIENT_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "ratelimit/pipeline.h"

namespace ratelimit {

// Asks the sidecar one question at a time per calling thread:
//
//   ratelimit::Client client({.socket_path = "/var/run/ratelimit/ratelimit.sock"});
//   ratelimit::Result<ratelimit::CheckResult> r = client.Check({.key = "api-key-123"});
//   if (r.ok() && r->allowed) { ... }
//
// Results: a Result is an error only when no answer came: the sidecar is unreachable
// (Unavailable), the connection broke (Closed), the timeout passed (TimedOut), or the reply was
// malformed (ProtocolError). Otherwise CheckResult::status says how the sidecar decided:
// kOk with `allowed`, or a refusal such as kInvalidRequest or kCostExceedsLimit.
//
// Timeouts: each call waits at most about 2 * options.timeout_ms (connect or send, then receive).
//
// Reconnection: connections are opened lazily and kept in a small pool. A connection that fails
// is dropped, and the next call opens a new one, so a restarted sidecar is picked up by itself.
// A request is re-sent on a fresh connection only when sending it on a pooled connection failed
// (the sidecar had closed that connection and never read the request); the whole pool is then
// dropped, since a sidecar that closed one idle connection has usually restarted. Once a
// request may have reached the sidecar it is never repeated, since a check spends tokens.
//
// Thread-safety: all methods may be called from any number of threads at once. Each concurrent
// call uses its own pooled connection, so calls do not wait for each other.
class Client {
 public:
  explicit Client(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<CheckResult> Check(const CheckArgs& args);
  Result<PingResult> Ping();

 private:
  // Sends what `queue` puts on a pooled connection under a fresh id and waits for the reply.
  template <typename Queue>
  Result<Reply> RoundTrip(Queue&& queue);
  Result<std::unique_ptr<Pipeline>> Acquire(bool* reused);
  void Recycle(std::unique_ptr<Pipeline> pipeline);
  void DropIdle();

  const ClientOptions options_;
  std::atomic<uint64_t> next_id_{1};
  std::mutex mu_;
  std::vector<std::unique_ptr<Pipeline>> idle_;  // Guarded by mu_.
};

}  // namespace ratelimit

#endif  // RATELIMIT_CLIENT_RATELIMIT_CLIENT_H_
