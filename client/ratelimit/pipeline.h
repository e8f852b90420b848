// Pipeline: one connection to the sidecar with many requests in flight, matched by id.
#ifndef RATELIMIT_CLIENT_RATELIMIT_PIPELINE_H_
#define RATELIMIT_CLIENT_RATELIMIT_PIPELINE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "schema/check.h"
#include "schema/frame_codec.h"
#include "schema/frame_reader.h"
#include "schema/status.h"

namespace ratelimit {

// Socket path used when neither the caller nor RATE_LIMIT_SOCKET names one.
inline constexpr char kDefaultSocketPath[] = "/var/run/ratelimit/ratelimit.sock";

// $RATE_LIMIT_SOCKET when set and not empty, else kDefaultSocketPath.
std::string DefaultSocketPath();

struct ClientOptions {
  std::string socket_path = DefaultSocketPath();
  // Upper bound for each blocking step: connecting, sending a batch, waiting for one reply.
  int timeout_ms = 1000;
  // Largest frame payload either side will accept; match the sidecar's
  // RATE_LIMIT_MAX_FRAME_BYTES. Requests that would exceed it fail before being sent.
  uint32_t max_frame_bytes = 65536;
};

struct PingResult {
  uint16_t protocol_version = 0;
  std::string store;
  bool ready = false;
};

// One response frame from the sidecar.
struct Reply {
  enum class Kind { kCheck, kPing, kError };
  uint64_t id = 0;
  Kind kind = Kind::kError;
  CheckResult check;                            // kind == kCheck
  PingResult ping;                              // kind == kPing
  CheckStatus error_status = CheckStatus::kOk;  // kind == kError
  std::string error_message;                    // kind == kError
};

// A connection for callers that keep many requests in flight: queue requests with ids of your
// choosing, Flush, then Receive replies in whatever order the sidecar sends them.
// Flush also reads replies that arrive meanwhile, so a long batch never deadlocks against the
// sidecar's backpressure.
// Thread-safety: none. Use one Pipeline per thread, or ratelimit::Client.
class Pipeline {
 public:
  // Connects, waiting at most options.timeout_ms (e.g. while the sidecar's backlog is full).
  static Result<std::unique_ptr<Pipeline>> Connect(const ClientOptions& options);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Queue a request. InvalidArgument if it would exceed max_frame_bytes; nothing queued then.
  Status QueueCheck(uint64_t id, const CheckArgs& args);
  void QueuePing(uint64_t id);

  // Sends everything queued. Unavailable/Closed when the sidecar is gone; TimedOut after
  // timeout_ms without progress. After an error the pipeline is unusable: discard it.
  Status Flush();

  // The next reply, waiting at most timeout_ms. Errors as for Flush; ProtocolError when the
  // sidecar sends something that fails verification.
  Result<Reply> Receive();

  // Whether replies have arrived that Receive will return without waiting. After a failed Flush
  // this may hold the ErrorResponse that explains why the sidecar closed the connection.
  bool has_replies() const { return !replies_.empty(); }

  // Bytes queued and not yet sent.
  size_t queued_bytes() const { return out_.size() - out_sent_; }

 private:
  Pipeline(int fd, const ClientOptions& options);
  Status ReadAvailable();  // Reads what is there, without blocking, into replies_.
  Status WaitFor(short events, int64_t deadline_ms, short* revents);

  const int fd_;
  const ClientOptions options_;
  FrameReader reader_;
  FrameVerifier verifier_;
  FrameEncoder encoder_;
  std::vector<uint8_t> out_;
  size_t out_sent_ = 0;
  std::vector<uint8_t> in_;
  std::deque<Reply> replies_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_CLIENT_RATELIMIT_PIPELINE_H_
