// Connection: one client's Unix socket: reading with backpressure, writing, closing.
#include "sidecar/server/connection.h"

#include <algorithm>

#include "sidecar/log/log.h"

namespace ratelimit {

Connection::Connection(const ConnectionShared& shared)
    : shared_(shared), requests_(shared.requests, *this) {}

Status Connection::Accept(uv_stream_t* listener) {
  uv_pipe_init(shared_.loop, &pipe_, 0);
  pipe_.data = this;
  write_req_.data = this;
  if (const int rc = uv_accept(listener, stream()); rc != 0) {
    return Status::IoError(uv_strerror(rc));
  }
  return Status::Ok();
}

void Connection::Start() {
  const int rc = uv_read_start(stream(), &AllocTrampoline, &ReadTrampoline);
  if (rc != 0) {
    Log(LogLevel::kWarn, "cannot read from connection").Str("error", uv_strerror(rc));
    Close();
  }
}

void Connection::TransitionTo(State next) {
  if (state_ == next) return;
  const State previous = state_;
  state_ = next;
  switch (next) {
    case State::kReading:
      if (uv_read_start(stream(), &AllocTrampoline, &ReadTrampoline) != 0) Close();
      break;
    case State::kPaused:
    case State::kDraining:
      if (previous == State::kReading) uv_read_stop(stream());
      break;
    case State::kClosing:
      uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), &CloseTrampoline);
      break;
    case State::kClosed:
      FinishIfClosed();
      break;
    case State::kFinished:
      shared_.owner.Finished(*this);
      break;
  }
}

void Connection::Refuse(CheckStatus status, std::string_view message) {
  requests_.Refuse(status, message);
  Drain();
}

void Connection::Drain() {
  if (state_ == State::kReading || state_ == State::kPaused) {
    TransitionTo(State::kDraining);
    Flush();
    FinishIfDrained();
  }
}

void Connection::Close() {
  if (open()) TransitionTo(State::kClosing);
}

void Connection::OnRead(ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    const auto got = static_cast<size_t>(nread);
    shared_.reads.Spent(read_share_, buf->len, got);
    if (!requests_.Feed({reinterpret_cast<const uint8_t*>(buf->base), got})) Drain();
  } else if (nread == UV_ENOBUFS) {
    // Held back for this turn (see NextReadBuffer); reading goes on in a later one.
  } else if (nread == UV_EOF) {
    // The peer will send nothing more but may still read: answer what it sent, then close.
    if (requests_.inside_frame()) Log(LogLevel::kDebug, "connection ended inside a frame");
    Drain();
  } else if (nread < 0) {
    Log(LogLevel::kDebug, "connection read failed").Str("error", uv_strerror(nread));
    Close();
  }
}

void Connection::Queue(std::span<const uint8_t> frame) {
  if (open()) out_.insert(out_.end(), frame.begin(), frame.end());
}

void Connection::Send() {
  Flush();
  ApplyBackpressure();
  FinishIfDrained();
  FinishIfClosed();  // An answer after the close may have been the last thing pending.
}

void Connection::Flush() {
  if (write_in_flight_ || out_.empty() || !open()) return;
  // Try to write at once: most answers fit the socket buffer, which saves a loop iteration.
  uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(out_.data()), out_.size());
  const int written = uv_try_write(stream(), &buf, 1);
  if (written == static_cast<int>(out_.size())) {
    out_.clear();
    return;
  }
  if (written < 0 && written != UV_EAGAIN) {
    Log(LogLevel::kDebug, "connection write failed").Str("error", uv_strerror(written));
    Close();
    return;
  }
  const size_t done = written > 0 ? static_cast<size_t>(written) : 0;
  writing_.assign(out_.begin() + static_cast<std::ptrdiff_t>(done), out_.end());
  out_.clear();
  buf = uv_buf_init(reinterpret_cast<char*>(writing_.data()), writing_.size());
  const int rc = uv_write(&write_req_, stream(), &buf, 1, &WriteTrampoline);
  if (rc != 0) {
    Close();
    return;
  }
  write_in_flight_ = true;
}

void Connection::OnWriteDone(int status) {
  write_in_flight_ = false;
  writing_.clear();
  if (status != 0) {
    if (status != UV_ECANCELED) {
      Log(LogLevel::kDebug, "connection write failed").Str("error", uv_strerror(status));
    }
    Close();
    return;
  }
  Send();  // What was queued meanwhile.
}

bool Connection::OverCap() const {
  return out_.size() + writing_.size() > kMaxQueuedOutputBytes ||
         requests_.pending() >= kMaxPendingChecks;
}

bool Connection::UnderLowWater() const {
  return out_.size() + writing_.size() <= kMaxQueuedOutputBytes / 2 &&
         requests_.pending() <= kMaxPendingChecks / 2;
}

void Connection::ApplyBackpressure() {
  if (state_ == State::kReading && OverCap()) {
    TransitionTo(State::kPaused);
  } else if (state_ == State::kPaused && UnderLowWater()) {
    TransitionTo(State::kReading);
  }
}

void Connection::FinishIfDrained() {
  if (state_ == State::kDraining && !write_in_flight_ && out_.empty() && requests_.pending() == 0) {
    Close();
  }
}

void Connection::FinishIfClosed() {
  // The engine may still hold requests_ as a callback: finished only after the last answer.
  if (state_ == State::kClosed && !write_in_flight_ && requests_.pending() == 0) {
    TransitionTo(State::kFinished);
  }
}

uv_buf_t Connection::NextReadBuffer() {
  const size_t granted = shared_.reads.Grant(read_share_);
  // Held back: an empty buffer makes libuv end this connection's reads for the turn (the read
  // callback gets UV_ENOBUFS) and leaves reading on, so what the client sent waits in the
  // socket while other connections are served.
  if (granted == 0) return uv_buf_init(nullptr, 0);
  // Every connection reads into the same buffer: libuv calls alloc and read back to back on
  // one stream, and requests_ consumes the bytes before the read callback returns.
  return uv_buf_init(reinterpret_cast<char*>(shared_.read_buffer.data()),
                     std::min(granted, shared_.read_buffer.size()));
}

void Connection::AllocTrampoline(uv_handle_t* handle, size_t /*suggested*/, uv_buf_t* buf) {
  *buf = static_cast<Connection*>(handle->data)->NextReadBuffer();
}

void Connection::ReadTrampoline(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  static_cast<Connection*>(stream->data)->OnRead(nread, buf);
}

void Connection::WriteTrampoline(uv_write_t* req, int status) {
  static_cast<Connection*>(req->data)->OnWriteDone(status);
}

void Connection::CloseTrampoline(uv_handle_t* handle) {
  static_cast<Connection*>(handle->data)->TransitionTo(State::kClosed);
}

}  // namespace ratelimit
