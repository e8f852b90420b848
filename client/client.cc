// Client: the blocking, thread-safe way for an application to ask the sidecar for a decision.
#include "ratelimit/client.h"

namespace ratelimit {
namespace {

// Connections kept open between calls; more concurrent calls open more, then close the excess.
constexpr size_t kMaxIdleConnections = 8;

Status RefusalStatus(const Reply& reply) {
  const std::string text = std::string("sidecar refused the request (") +
                           CheckStatusName(reply.error_status) + "): " + reply.error_message;
  if (reply.error_status == CheckStatus::kOverloaded ||
      reply.error_status == CheckStatus::kShuttingDown) {
    return Status::Unavailable(text);
  }
  return Status::ProtocolError(text);
}

}  // namespace

Client::Client(ClientOptions options) : options_(std::move(options)) {}

Client::~Client() = default;

Result<std::unique_ptr<Pipeline>> Client::Acquire(bool* reused) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      std::unique_ptr<Pipeline> pipeline = std::move(idle_.back());
      idle_.pop_back();
      *reused = true;
      return pipeline;
    }
  }
  *reused = false;
  return Pipeline::Connect(options_);
}

void Client::DropIdle() {
  std::vector<std::unique_ptr<Pipeline>> stale;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stale.swap(idle_);
  }
}  // Closed here, outside the lock.

void Client::Recycle(std::unique_ptr<Pipeline> pipeline) {
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(pipeline));
}

template <typename Queue>
Result<Reply> Client::RoundTrip(Queue&& queue) {
  const uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    Result<std::unique_ptr<Pipeline>> acquired = Acquire(&reused);
    if (!acquired.ok()) return acquired.status();
    std::unique_ptr<Pipeline> pipeline = std::move(*acquired);
    if (Status queued = queue(*pipeline, id); !queued.ok()) {
      Recycle(std::move(pipeline));  // Nothing was sent; the connection is still good.
      return queued;
    }
    if (Status sent = pipeline->Flush(); !sent.ok()) {
      // A pooled connection the sidecar closed while idle: it never read this request. The
      // sidecar probably restarted, so every idle connection is stale: drop them all and
      // retry once on a fresh connection.
      if (reused && attempt == 0 && sent.code() == Status::Code::kClosed) {
        DropIdle();
        continue;
      }
      // A sidecar that refused this connection (too many, shutting down) said why first.
      if (pipeline->has_replies()) {
        Result<Reply> said = pipeline->Receive();
        if (said.ok() && said->kind == Reply::Kind::kError) return RefusalStatus(*said);
      }
      return sent;
    }
    Result<Reply> reply = pipeline->Receive();
    if (!reply.ok()) return reply.status();
    if (reply->id != id) {
      // An ErrorResponse for a frame the sidecar could not parse carries id 0.
      if (reply->kind == Reply::Kind::kError) return RefusalStatus(*reply);
      return Status::ProtocolError("reply id " + std::to_string(reply->id) +
                                   " does not match request id " + std::to_string(id));
    }
    if (reply->kind == Reply::Kind::kError) return RefusalStatus(*reply);
    Recycle(std::move(pipeline));
    return reply;
  }
}

Result<CheckResult> Client::Check(const CheckArgs& args) {
  Result<Reply> reply =
      RoundTrip([&args](Pipeline& p, uint64_t id) { return p.QueueCheck(id, args); });
  if (!reply.ok()) return reply.status();
  if (reply->kind != Reply::Kind::kCheck) {
    return Status::ProtocolError("sidecar answered a check with another kind of reply");
  }
  return reply->check;
}

Result<PingResult> Client::Ping() {
  Result<Reply> reply = RoundTrip([](Pipeline& p, uint64_t id) {
    p.QueuePing(id);
    return Status::Ok();
  });
  if (!reply.ok()) return reply.status();
  if (reply->kind != Reply::Kind::kPing) {
    return Status::ProtocolError("sidecar answered a ping with another kind of reply");
  }
  return std::move(reply->ping);
}

}  // namespace ratelimit
