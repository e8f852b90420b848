// Connection: one client's Unix socket, its framing, output buffering and backpressure.
#include "sidecar/server/connection.h"

#include "sidecar/log/log.h"
#include "sidecar/server/server.h"

namespace ratelimit {

Connection::Connection(Server& server, uv_loop_t* loop, uint32_t max_frame_bytes)
    : server_(server), reader_(max_frame_bytes) {
  uv_pipe_init(loop, &pipe_, 0);
  pipe_.data = this;
  write_req_.data = this;
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
      FreeIfDone();
      break;
  }
}

void Connection::Refuse(CheckStatus status, std::string_view message) {
  server_.handler().WriteError(0, status, message, *this);
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
  if (state_ != State::kClosing && state_ != State::kClosed) TransitionTo(State::kClosing);
}

void Connection::OnData(std::span<const uint8_t> data) {
  in_read_ = true;
  read_started_ns_ = uv_hrtime();
  answered_in_read_ = 0;
  const Status status = reader_.Feed(data, [this](std::span<const uint8_t> frame) {
    if (state_ != State::kReading && state_ != State::kPaused) return false;
    Status handled = server_.handler().HandleFrame(frame, *this);
    if (!handled.ok()) {
      Log(LogLevel::kDebug, "closing connection after bad frame").Str("error", handled.message());
      server_.metrics().bad_frames.Add();
      Drain();
      return false;
    }
    return true;
  });
  in_read_ = false;
  if (!status.ok()) {
    Log(LogLevel::kDebug, "closing connection after bad frame").Str("error", status.message());
    server_.metrics().bad_frames.Add();
    server_.handler().WriteError(0, CheckStatus::kInvalidRequest, status.message(), *this);
    Drain();
  } else {
    Flush();
    ApplyBackpressure();
  }
  // One clock reading for every check this read answered: their answers left together.
  if (answered_in_read_ > 0) {
    server_.metrics().latency.Observe(uv_hrtime() - read_started_ns_, answered_in_read_);
  }
}

void Connection::Write(std::span<const uint8_t> frame) {
  if (state_ == State::kClosing || state_ == State::kClosed) return;
  out_.insert(out_.end(), frame.begin(), frame.end());
}

uint64_t Connection::CheckStarted(uint64_t id) {
  ++pending_checks_;
  uint32_t slot = free_slot_;
  if (slot == kNoSlot) {
    slot = static_cast<uint32_t>(in_flight_.size());
    in_flight_.emplace_back();
  } else {
    free_slot_ = in_flight_[slot].next_free;
  }
  InFlight& check = in_flight_[slot];
  check.id = id;
  check.started_ns = read_started_ns_;
  return slot;
}

void Connection::OnCheckDone(uint64_t tag, const CheckResult& result) {
  InFlight& slot = in_flight_[tag];
  const InFlight check = slot;
  slot.next_free = free_slot_;
  free_slot_ = static_cast<uint32_t>(tag);
  --pending_checks_;
  ServerMetrics& metrics = server_.metrics();
  metrics.CountCheck(result);  // Decided, whether or not anyone is left to hear it.
  if (in_read_ && check.started_ns == read_started_ns_) {
    ++answered_in_read_;  // Measured once at the end of the read (see OnData).
  } else {
    metrics.latency.Observe(uv_hrtime() - check.started_ns);
  }
  if (state_ == State::kClosing || state_ == State::kClosed) {
    FreeIfDone();  // Nobody to answer; this may have been the last thing keeping us alive.
    return;
  }
  server_.handler().AnswerCheck(check.id, result, *this);
  if (!in_read_) {  // An engine answering later, outside any read: send it now.
    Flush();
    ApplyBackpressure();
    FinishIfDrained();
  }
}

void Connection::Flush() {
  if (write_in_flight_ || out_.empty()) return;
  if (state_ == State::kClosing || state_ == State::kClosed) return;
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
  Flush();
  ApplyBackpressure();
  FinishIfDrained();
}

bool Connection::OverCap() const {
  return out_.size() + writing_.size() > kMaxQueuedOutputBytes ||
         pending_checks_ >= kMaxPendingChecks;
}

bool Connection::UnderLowWater() const {
  return out_.size() + writing_.size() <= kMaxQueuedOutputBytes / 2 &&
         pending_checks_ <= kMaxPendingChecks / 2;
}

void Connection::ApplyBackpressure() {
  if (state_ == State::kReading && OverCap()) {
    TransitionTo(State::kPaused);
  } else if (state_ == State::kPaused && UnderLowWater()) {
    TransitionTo(State::kReading);
  }
}

void Connection::FinishIfDrained() {
  if (state_ == State::kDraining && !write_in_flight_ && out_.empty() && pending_checks_ == 0) {
    Close();
  }
}

void Connection::FreeIfDone() {
  // The engine may still hold this connection as a callback; free only after the last answer.
  if (state_ == State::kClosed && !write_in_flight_ && pending_checks_ == 0) {
    server_.Release(this);
  }
}

uv_buf_t Connection::NextReadBuffer() {
  const size_t granted = server_.reads().Grant(read_share_);
  // Held back: an empty buffer makes libuv end this connection's reads for the turn (the read
  // callback gets UV_ENOBUFS) and leaves reading on, so what the client sent waits in the
  // socket while other connections are served.
  return granted == 0 ? uv_buf_init(nullptr, 0) : server_.ReadBuffer(granted);
}

void Connection::AllocTrampoline(uv_handle_t* handle, size_t /*suggested*/, uv_buf_t* buf) {
  *buf = static_cast<Connection*>(handle->data)->NextReadBuffer();
}

void Connection::ReadTrampoline(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(stream->data);
  if (nread > 0) {
    self->server_.reads().Spent(self->read_share_, buf->len, static_cast<size_t>(nread));
    self->OnData({reinterpret_cast<const uint8_t*>(buf->base), static_cast<size_t>(nread)});
  } else if (nread == UV_ENOBUFS) {
    // Held back for this turn (see NextReadBuffer); reading goes on in a later one.
  } else if (nread == UV_EOF) {
    // The peer will send nothing more but may still read: answer what it sent, then close.
    if (self->reader_.has_partial()) {
      Log(LogLevel::kDebug, "connection ended inside a frame");
    }
    self->Drain();
  } else if (nread < 0) {
    Log(LogLevel::kDebug, "connection read failed").Str("error", uv_strerror(nread));
    self->Close();
  }
}

void Connection::WriteTrampoline(uv_write_t* req, int status) {
  static_cast<Connection*>(req->data)->OnWriteDone(status);
}

void Connection::CloseTrampoline(uv_handle_t* handle) {
  static_cast<Connection*>(handle->data)->TransitionTo(State::kClosed);
}

}  // namespace ratelimit
