// Status and Result<T>: cheap error values used everywhere instead of exceptions.
#ifndef RATELIMIT_SCHEMA_STATUS_H_
#define RATELIMIT_SCHEMA_STATUS_H_

#include <optional>
#include <string>
#include <utility>

namespace ratelimit {

// A Status is either OK or an error code with a human-readable message. Errors from libuv, libpq
// and the OS are converted at the boundary, keeping their own message text.
class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk,
    kInvalidArgument,  // The caller passed something malformed.
    kProtocolError,    // The peer sent bytes that violate the wire contract.
    kIoError,          // A system call failed.
    kUnavailable,      // The peer is gone or not there yet; retrying may help.
    kTimedOut,         // A deadline passed.
    kClosed,           // The connection was closed in an orderly way.
    kOverloaded,       // Refused to protect this process: a queue is full.
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {Code::kInvalidArgument, std::move(msg)};
  }
  static Status ProtocolError(std::string msg) { return {Code::kProtocolError, std::move(msg)}; }
  static Status IoError(std::string msg) { return {Code::kIoError, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {Code::kUnavailable, std::move(msg)}; }
  static Status TimedOut(std::string msg) { return {Code::kTimedOut, std::move(msg)}; }
  static Status Closed(std::string msg) { return {Code::kClosed, std::move(msg)}; }
  static Status Overloaded(std::string msg) { return {Code::kOverloaded, std::move(msg)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "<code name>: <message>", or "ok".
  std::string ToString() const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

inline std::string Status::ToString() const {
  const char* name = "ok";
  switch (code_) {
    case Code::kOk:
      return name;
    case Code::kInvalidArgument:
      name = "invalid argument";
      break;
    case Code::kProtocolError:
      name = "protocol error";
      break;
    case Code::kIoError:
      name = "I/O error";
      break;
    case Code::kUnavailable:
      name = "unavailable";
      break;
    case Code::kTimedOut:
      name = "timed out";
      break;
    case Code::kClosed:
      name = "closed";
      break;
    case Code::kOverloaded:
      name = "overloaded";
      break;
  }
  return std::string(name) + ": " + message_;
}

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT: implicit by design
  // REQUIRES: status is not OK (an OK Result must carry a value).

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SCHEMA_STATUS_H_
