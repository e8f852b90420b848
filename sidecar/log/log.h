// Structured logging: one JSON object per line on stderr, repeated lines rate-limited.
#ifndef RATELIMIT_SIDECAR_LOG_LOG_H_
#define RATELIMIT_SIDECAR_LOG_LOG_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "schema/json_text.h"

namespace ratelimit {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Sets the lowest level that is written. Default kInfo. Call before other threads start.
void SetLogLevel(LogLevel level);
// One relaxed atomic load: what a line at a disabled level costs, and all it costs.
bool LogEnabled(LogLevel level);

// RepeatLimiter: which lines of a repeated message are written, so that an error repeated in a
// loop (a dead database, a misbehaving client) costs a few lines per interval, not a flood.
//
// Lines are grouped by their message text (Log's `msg`, not its fields). Of one message, the
// first `burst` lines of an interval are written; the rest of that interval are dropped and
// counted. An interval starts with the first line of the message after the previous interval
// ended. Every dropped line is reported exactly once: in the `suppressed` count of the message's
// next written line, or by TakeSuppressed once its interval has ended, whichever comes first.
//
// Memory is bounded. At most `max_messages` messages are tracked, each by at most
// kMaxMessageBytes of its text (longer messages that share that prefix count as one). Lines of
// any further message share one more entry, reported as kUntrackedMessages, so that even a flood
// of distinct texts writes at most (max_messages + 1) * burst lines per interval. A message whose
// interval has ended with nothing dropped is forgotten: by TakeSuppressed, or when its slot is
// needed.
//
// Pure: the caller passes the time, in milliseconds of a monotonic clock. Not thread-safe; the
// process's instance, used by Log, is guarded by a mutex.
class RepeatLimiter {
 public:
  struct Options {
    uint32_t burst = 5;            // Lines of one message written per interval.
    uint64_t interval_ms = 10000;  // 0: nothing is ever dropped.
    size_t max_messages = 256;     // Distinct messages tracked.
  };
  static constexpr size_t kMaxMessageBytes = 256;
  // The message that TakeSuppressed reports for lines of messages beyond the table.
  static constexpr std::string_view kUntrackedMessages = "(messages beyond the tracked ones)";

  struct Verdict {
    bool write = true;
    // When written: lines of this message dropped since its last line written or reported.
    // Always 0 for a message beyond the table (TakeSuppressed reports those).
    uint64_t suppressed = 0;
  };
  struct Suppressed {
    std::string message;
    LogLevel level;  // The highest level among the dropped lines.
    uint64_t count;
    bool operator==(const Suppressed&) const = default;
  };

  RepeatLimiter() : RepeatLimiter(Options{}) {}
  explicit RepeatLimiter(const Options& options) : options_(options) {}

  // Decides about one line of `message` at `level`, logged at `now_ms`.
  Verdict Admit(std::string_view message, LogLevel level, uint64_t now_ms);

  // Every message whose interval has ended by `now_ms` with lines dropped in it, in message
  // order (kUntrackedMessages last); their counts start again from zero. Also forgets messages
  // whose interval has ended.
  std::vector<Suppressed> TakeSuppressed(uint64_t now_ms);

  // Messages in the table, not counting the shared entry of the untracked ones.
  size_t tracked() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t window_start_ms = 0;
    uint32_t written = 0;               // Lines written in the current interval.
    uint64_t suppressed = 0;            // Lines dropped since the last one written or reported.
    LogLevel level = LogLevel::kDebug;  // The highest level among those dropped.
  };

  bool Ended(const Entry& entry, uint64_t now_ms) const;
  uint64_t EndOf(const Entry& entry) const;  // When its interval ends (saturating).
  // `carry`: a written line takes the entry's suppressed count with it.
  Verdict AdmitTo(Entry& entry, LogLevel level, uint64_t now_ms, bool carry);
  // Forgets the messages whose interval has ended with nothing dropped.
  void ForgetIdle(uint64_t now_ms);

  Options options_;
  std::map<std::string, Entry, std::less<>> entries_;
  Entry untracked_;
  // No entry turns idle before this: while the table is full, a flood of new messages costs a
  // lookup per line, not a scan of the table. Invariant: every entry with nothing dropped has
  // EndOf(entry) >= no_idle_before_ms_.
  uint64_t no_idle_before_ms_ = std::numeric_limits<uint64_t>::max();
};

// Milliseconds of CLOCK_MONOTONIC: the clock the process's repeat limiter reads by default.
uint64_t MonotonicMs();

// Replaces the process's repeat limiter, forgetting every count, and the clock it reads
// (milliseconds, monotonic; empty: MonotonicMs). Tests drive the clock by hand; a program may
// choose other limits. Thread-safe, but lines being built meanwhile may be counted by either.
void ResetLogRepeatLimiter(const RepeatLimiter::Options& options = {},
                           std::function<uint64_t()> now_ms = nullptr);

// Writes, for every message whose lines were dropped in an interval that has ended, one line at
// the highest level of the dropped lines:
//   {"ts":...,"level":"warn","msg":"log lines suppressed","message":"accept failed",
//    "suppressed":812}
// These lines are never limited themselves (at most one per tracked message per interval).
// The owner of the event loop calls it about once a second; lines dropped and then followed by a
// written line of the same message are counted on that line instead. Thread-safe.
inline constexpr std::string_view kLogSuppressedMsg = "log lines suppressed";
void LogReportSuppressed();
// The same for every message with lines dropped, its interval ended or not: call it once on the
// way out, so that the last interval's counts are not lost. Thread-safe.
void LogFlushSuppressed();

// Builds one log line and writes it whole to stderr when destroyed (one write(2), or more under
// a lock when a pipe takes only part of it):
//   Log(LogLevel::kInfo, "listening").Str("socket", path).Int("max_connections", 1024);
// prints {"ts":"2026-11-28T13:00:00.000Z","level":"info","msg":"listening","socket":...}.
//
// Lines at info, warn and error go through the process's RepeatLimiter (see above) by their
// `msg`: keep `msg` a fixed text and put what varies in fields. A line written after some of
// its message were dropped carries "suppressed":N right after "msg". Debug lines are never
// limited: whoever turns debug on wants every line, and it is never on in normal operation.
// Info is limited because a line that repeats more than `burst` times an interval is a flood
// whatever its level; no one-off event (start-up, shutdown, a state change) ever reaches that.
//
// A line at a disabled level costs one relaxed atomic load: no clock, no lock, no allocation.
// Field names "ts", "level", "msg" and "suppressed" are taken. Never put secrets in a field
// (passwords, connection strings, API keys). Thread-safety: lines from any thread are written
// whole, never interleaved.
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
  friend void LogReportSuppressed();
  friend void LogFlushSuppressed();
  struct Unlimited {};
  // A line that bypasses the repeat limiter.
  Log(LogLevel level, std::string_view msg, Unlimited);
  // Writes one kLogSuppressedMsg line for each count.
  static void WriteSuppressed(const std::vector<RepeatLimiter::Suppressed>& taken);

  void Begin(LogLevel level, std::string_view msg);
  void Key(std::string_view key);

  bool enabled_;
  std::string line_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_LOG_LOG_H_
