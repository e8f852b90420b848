// Structured logging: one JSON object per line on stderr.
#include "sidecar/log/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>

namespace ratelimit {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "unknown";
}

void AppendTimestamp(std::string& out) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  char buf[40];
  const size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &utc);
  out.append(buf, n);
  snprintf(buf, sizeof(buf), ".%03ldZ", ts.tv_nsec / 1000000);
  out.append(buf);
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }

bool LogEnabled(LogLevel level) { return level >= g_level.load(std::memory_order_relaxed); }

void AppendJsonEscaped(std::string& out, std::string_view text) {
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
}

Log::Log(LogLevel level, std::string_view msg) : enabled_(LogEnabled(level)) {
  if (!enabled_) return;
  line_.reserve(256);
  line_ += "{\"ts\":\"";
  AppendTimestamp(line_);
  line_ += "\",\"level\":\"";
  line_ += LevelName(level);
  line_ += "\",\"msg\":\"";
  AppendJsonEscaped(line_, msg);
  line_ += '"';
}

Log::~Log() {
  if (!enabled_) return;
  line_ += "}\n";
  const char* p = line_.data();
  size_t left = line_.size();
  while (left > 0) {
    const ssize_t n = write(STDERR_FILENO, p, left);
    if (n <= 0) break;  // Nowhere left to report a failure to log.
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void Log::Key(std::string_view key) {
  line_ += ",\"";
  AppendJsonEscaped(line_, key);
  line_ += "\":";
}

Log& Log::Str(std::string_view key, std::string_view value) {
  if (!enabled_) return *this;
  Key(key);
  line_ += '"';
  AppendJsonEscaped(line_, value);
  line_ += '"';
  return *this;
}

Log& Log::Int(std::string_view key, int64_t value) {
  if (!enabled_) return *this;
  Key(key);
  line_ += std::to_string(value);
  return *this;
}

Log& Log::Bool(std::string_view key, bool value) {
  if (!enabled_) return *this;
  Key(key);
  line_ += value ? "true" : "false";
  return *this;
}

}  // namespace ratelimit
