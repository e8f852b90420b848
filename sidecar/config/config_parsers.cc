// Config parsers: the typed parsers a configuration variable's row is made of.
#include "sidecar/config/config_parsers.h"

#include <charconv>
#include <cstdio>

namespace ratelimit {
namespace {

std::string Octal(uint32_t value, const char* format) {
  char text[16];
  std::snprintf(text, sizeof(text), format, value);
  return text;
}

bool IsIpv6Char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
         c == '.';
}

bool IsHostNameChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
         c == '.';
}

// The host part of host:port without its brackets, or nullopt when it is neither a bracketed
// IPv6 literal nor an IPv4 literal or host name of at most 253 bytes.
std::optional<std::string_view> ParseHost(std::string_view host) {
  bool (*allowed)(char) = IsHostNameChar;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return std::nullopt;
    host = host.substr(1, host.size() - 2);
    allowed = IsIpv6Char;
  } else if (host.size() > 253) {
    return std::nullopt;
  }
  for (const char c : host) {
    if (!allowed(c)) return std::nullopt;
  }
  return host;
}

}  // namespace

std::optional<uint64_t> ParseDigits(std::string_view text, int base, uint64_t min, uint64_t max) {
  uint64_t parsed = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, parsed, base);
  if (ec != std::errc() || ptr != end || parsed < min || parsed > max) return std::nullopt;
  return parsed;
}

std::string IntegerIn::Allowed() const {
  std::string allowed = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  if (!unit.empty()) allowed += " (" + std::string(unit) + ")";
  return allowed;
}

Result<uint32_t> IntegerIn::Parse(std::string_view text) const {
  const std::optional<uint64_t> parsed = ParseDigits(text, 10, min, max);
  if (!parsed) return Status::InvalidArgument(Allowed());
  return static_cast<uint32_t>(*parsed);
}

std::string FileMode::Allowed() const {
  return "an octal file mode from " + Octal(required, "%o") + " to " + Octal(max, "%o") +
         " (the owner must be able to read and write)";
}

Result<uint32_t> FileMode::Parse(std::string_view text) const {
  const std::optional<uint64_t> parsed = ParseDigits(text, 8, 0, max);
  if (!parsed || (*parsed & required) != required) return Status::InvalidArgument(Allowed());
  return static_cast<uint32_t>(*parsed);
}

std::string FileMode::Format(const uint32_t& value) const { return Octal(value, "%04o"); }

std::string UidList::Allowed() const {
  return "comma-separated uids, each an integer from 0 to " + std::to_string(max);
}

Result<std::vector<uint32_t>> UidList::Parse(std::string_view text) const {
  std::vector<uint32_t> uids;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    const std::optional<uint64_t> uid = ParseDigits(text.substr(start, comma - start), 10, 0, max);
    if (!uid) return Status::InvalidArgument(Allowed());
    uids.push_back(static_cast<uint32_t>(*uid));
    start = comma + 1;
  }
  return uids;
}

std::string UidList::Format(const std::vector<uint32_t>& value) const {
  std::string text;
  for (const uint32_t uid : value) {
    if (!text.empty()) text += ',';
    text += std::to_string(uid);
  }
  return text;
}

std::string SocketPath::Allowed() const {
  return "a path of at most " + std::to_string(max_bytes) + " bytes (the Unix socket limit)";
}

Result<std::string> SocketPath::Parse(std::string_view text) const {
  if (text.size() > max_bytes || text.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument(Allowed() + "; this one has " + std::to_string(text.size()));
  }
  return std::string(text);
}

std::string HostPort::Allowed() const {
  return "host:port, where host is an IPv4 address, [IPv6 address] or host name and port is 0 "
         "to " +
         std::to_string(UINT16_MAX) + " (for example 0.0.0.0:9464)";
}

Result<std::optional<AdminAddress>> HostPort::Parse(std::string_view text) const {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return Status::InvalidArgument(Allowed());
  const std::optional<std::string_view> host = ParseHost(text.substr(0, colon));
  const std::optional<uint64_t> port = ParseDigits(text.substr(colon + 1), 10, 0, UINT16_MAX);
  if (!host || !port) return Status::InvalidArgument(Allowed());
  return std::optional<AdminAddress>(
      AdminAddress{std::string(*host), static_cast<uint16_t>(*port)});
}

std::string HostPort::Format(const std::optional<AdminAddress>& value) const {
  if (!value) return "";
  const std::string& host = value->host;
  const std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return shown + ":" + std::to_string(value->port);
}

std::string TableNameText::Allowed() const {
  // ParseTableName's refusal is the one statement of what a table name may be, and an empty
  // name is always refused.
  return ParseTableName("").status().message();
}

}  // namespace ratelimit
