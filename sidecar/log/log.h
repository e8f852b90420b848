// Structured logging: one JSON object per line on stderr.
#ifndef RATELIMIT_SIDECAR_LOG_LOG_H_
#define RATELIMIT_SIDECAR_LOG_LOG_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace ratelimit {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Sets the lowest level that is written. Default kInfo. Call before other threads start.
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// Builds one log line and writes it, with a single write(2), when destroyed:
//   Log(LogLevel::kInfo, "listening").Str("socket", path).Int("max_connections", 1024);
// prints {"ts":"2026-11-28T13:00:00.000Z","level":"info","msg":"listening","socket":...}.
// Never put secrets in a field. Thread-safety: each line is independent and written whole.
class Log {
 public:
  Log(LogLevel level, std::string_view msg);
  ~Log();
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  Log& Str(std::string_view key, std::string_view value);
  Log& Int(std::string_view key, int64_t value);
  Log& Bool(std::string_view key, bool value);

 private:
  void Key(std::string_view key);

  bool enabled_;
  std::string line_;
};

// Appends `text` to `out` as the inside of a JSON string literal.
void AppendJsonEscaped(std::string& out, std::string_view text);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_LOG_LOG_H_
