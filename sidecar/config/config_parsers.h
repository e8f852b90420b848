// Config parsers: the typed parsers a configuration variable's row is made of.
#ifndef RATELIMIT_SIDECAR_CONFIG_CONFIG_PARSERS_H_
#define RATELIMIT_SIDECAR_CONFIG_CONFIG_PARSERS_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"
#include "sidecar/config/config.h"
#include "sidecar/pg/table_name.h"

namespace ratelimit {

// Every parser here has the same shape, which MakeVariable (config_variables.cc) relies on:
//   using Value = ...;                               // the type of the member it fills
//   std::string Allowed() const;                     // what a value must be, from its bounds
//   Result<Value> Parse(std::string_view) const;     // InvalidArgument: what was expected
//   std::string Format(const Value&) const;          // text that Parse reads back as the same
// Parse is only called with a non-empty value: an empty variable means its default. Parsers are
// immutable values built once with the table; any thread may use them.

// `text` read as an unsigned integer in `base` from `min` to `max`; every character must be a
// digit (no sign, space or prefix). nullopt otherwise, including on overflow.
std::optional<uint64_t> ParseDigits(std::string_view text, int base, uint64_t min, uint64_t max);

// A decimal integer from `min` to `max`, counted in `unit` (e.g. "milliseconds").
struct IntegerIn {
  using Value = uint32_t;
  uint32_t min = 0;
  uint32_t max = 0;
  std::string_view unit;

  std::string Allowed() const;
  Result<Value> Parse(std::string_view text) const;
  std::string Format(const Value& value) const { return std::to_string(value); }
};

// An octal file mode no larger than `max` with every bit of `required` set (the owner's read and
// write, without which the sidecar could not use its own socket).
struct FileMode {
  using Value = uint32_t;
  uint32_t required = 0600;
  uint32_t max = 0777;

  std::string Allowed() const;
  Result<Value> Parse(std::string_view text) const;
  std::string Format(const Value& value) const;  // Four octal digits: 0660.
};

// One word of a variable that takes a word, and the setting it stands for.
template <typename T>
struct Word {
  std::string_view word;
  T value;
};

// One of `words`, spelled exactly (case matters).
template <typename T>
struct OneOf {
  using Value = T;
  std::span<const Word<T>> words;

  std::string Allowed() const {
    std::string allowed = "one of ";
    for (const Word<T>& w : words) {
      if (&w != words.data()) allowed += ", ";
      allowed += w.word;
    }
    return allowed;
  }
  Result<Value> Parse(std::string_view text) const {
    for (const Word<T>& w : words) {
      if (w.word == text) return w.value;
    }
    return Status::InvalidArgument(Allowed());
  }
  std::string Format(const Value& value) const {
    for (const Word<T>& w : words) {
      if (w.value == value) return std::string(w.word);
    }
    return "?";  // Unreachable while every enumerator has its word.
  }
};

// Comma-separated uids, no spaces, none empty; the largest uid, 2^32 - 1, is (uid_t)-1, which
// no process has.
struct UidList {
  using Value = std::vector<uint32_t>;
  uint32_t max = UINT32_MAX - 1;

  std::string Allowed() const;
  Result<Value> Parse(std::string_view text) const;
  std::string Format(const Value& value) const;
};

// A filesystem path of at most `max_bytes` (sockaddr_un's limit for a socket path).
struct SocketPath {
  using Value = std::string;
  size_t max_bytes = kMaxSocketPathBytes;

  std::string Allowed() const;
  Result<Value> Parse(std::string_view text) const;  // The error adds the path's length.
  std::string Format(const Value& value) const { return value; }
};

// host:port for a TCP listener: host an IPv4 literal, a bracketed IPv6 literal or a host name;
// any port (0 takes a free one). Formatted with brackets again around an IPv6 host.
struct HostPort {
  using Value = std::optional<AdminAddress>;

  std::string Allowed() const;
  Result<Value> Parse(std::string_view text) const;
  std::string Format(const Value& value) const;  // Empty when there is no address.
};

// A PostgreSQL table name, as sidecar/pg validates it (ParseTableName).
struct TableNameText {
  using Value = TableName;

  std::string Allowed() const;
  Result<Value> Parse(std::string_view text) const { return ParseTableName(text); }
  std::string Format(const Value& value) const { return value.Plain(); }
};

// Any text; `what` says what it should be, for a reader (no check happens here).
struct AnyText {
  using Value = std::string;
  std::string_view what;

  std::string Allowed() const { return std::string(what); }
  Result<Value> Parse(std::string_view text) const { return std::string(text); }
  std::string Format(const Value& value) const { return value; }
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CONFIG_CONFIG_PARSERS_H_
