// Structured logging: one JSON object per line on stderr, repeated lines rate-limited.
#include "sidecar/log/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <limits>
#include <mutex>
#include <utility>

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

// The process's repeat limiter and the clock it reads. Never destroyed: other threads may still
// log while static destructors run at exit.
struct Repeats {
  std::mutex mu;
  RepeatLimiter limiter;
  std::function<uint64_t()> now_ms = &MonotonicMs;
};

Repeats& ProcessRepeats() {
  static Repeats* repeats = new Repeats;
  return *repeats;
}

// Serializes writes, so that a line that takes several write(2) calls (a long line on a pipe)
// is never interleaved with another thread's.
std::mutex& WriteMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }

bool LogEnabled(LogLevel level) { return level >= g_level.load(std::memory_order_relaxed); }

bool RepeatLimiter::Ended(const Entry& entry, uint64_t now_ms) const {
  return now_ms >= entry.window_start_ms && now_ms - entry.window_start_ms >= options_.interval_ms;
}

RepeatLimiter::Verdict RepeatLimiter::AdmitTo(Entry& entry, LogLevel level, uint64_t now_ms,
                                              bool carry) {
  if (Ended(entry, now_ms)) {
    entry.window_start_ms = now_ms;
    entry.written = 0;
    no_idle_before_ms_ = std::min(no_idle_before_ms_, EndOf(entry));
  }
  if (entry.written < options_.burst) {
    ++entry.written;
    Verdict verdict;
    if (carry) verdict.suppressed = std::exchange(entry.suppressed, 0);
    return verdict;
  }
  entry.level = entry.suppressed == 0 ? level : std::max(entry.level, level);
  ++entry.suppressed;
  return Verdict{false, 0};
}

uint64_t RepeatLimiter::EndOf(const Entry& entry) const {
  constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();
  return entry.window_start_ms > kNever - options_.interval_ms
             ? kNever
             : entry.window_start_ms + options_.interval_ms;
}

void RepeatLimiter::ForgetIdle(uint64_t now_ms) {
  std::erase_if(entries_, [this, now_ms](const auto& item) {
    return item.second.suppressed == 0 && Ended(item.second, now_ms);
  });
  // An entry with lines dropped turns idle only after a new interval starts (AdmitTo lowers the
  // bound then), so only the others bound it now.
  no_idle_before_ms_ = std::numeric_limits<uint64_t>::max();
  for (const auto& [message, entry] : entries_) {
    if (entry.suppressed == 0) no_idle_before_ms_ = std::min(no_idle_before_ms_, EndOf(entry));
  }
}

RepeatLimiter::Verdict RepeatLimiter::Admit(std::string_view message, LogLevel level,
                                            uint64_t now_ms) {
  message = message.substr(0, kMaxMessageBytes);
  auto it = entries_.find(message);
  if (it == entries_.end()) {
    if (entries_.size() >= options_.max_messages && now_ms >= no_idle_before_ms_) {
      ForgetIdle(now_ms);
    }
    if (entries_.size() >= options_.max_messages) {
      return AdmitTo(untracked_, level, now_ms, /*carry=*/false);
    }
    Entry fresh;
    fresh.window_start_ms = now_ms;
    no_idle_before_ms_ = std::min(no_idle_before_ms_, EndOf(fresh));
    it = entries_.emplace(std::string(message), fresh).first;
  }
  return AdmitTo(it->second, level, now_ms, /*carry=*/true);
}

std::vector<RepeatLimiter::Suppressed> RepeatLimiter::TakeSuppressed(uint64_t now_ms) {
  std::vector<Suppressed> taken;
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& entry = it->second;
    if (!Ended(entry, now_ms)) {
      ++it;
      continue;
    }
    // Reported or not, an ended entry means the same as no entry: its next line starts afresh.
    if (entry.suppressed > 0) taken.push_back({it->first, entry.level, entry.suppressed});
    it = entries_.erase(it);
  }
  if (untracked_.suppressed > 0 && Ended(untracked_, now_ms)) {
    taken.push_back({std::string(kUntrackedMessages), untracked_.level, untracked_.suppressed});
    untracked_.suppressed = 0;
  }
  return taken;
}

uint64_t MonotonicMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

void ResetLogRepeatLimiter(const RepeatLimiter::Options& options,
                           std::function<uint64_t()> now_ms) {
  Repeats& repeats = ProcessRepeats();
  std::lock_guard<std::mutex> lock(repeats.mu);
  repeats.limiter = RepeatLimiter(options);
  repeats.now_ms = now_ms ? std::move(now_ms) : std::function<uint64_t()>(&MonotonicMs);
}

void Log::WriteSuppressed(const std::vector<RepeatLimiter::Suppressed>& taken) {
  for (const RepeatLimiter::Suppressed& s : taken) {
    Log(s.level, kLogSuppressedMsg, Unlimited{})
        .Str("message", s.message)
        .Int("suppressed", static_cast<int64_t>(s.count));
  }
}

namespace {

// `flush`: every count, as if every interval had ended.
std::vector<RepeatLimiter::Suppressed> TakeSuppressed(bool flush) {
  Repeats& repeats = ProcessRepeats();
  std::lock_guard<std::mutex> lock(repeats.mu);
  return repeats.limiter.TakeSuppressed(flush ? std::numeric_limits<uint64_t>::max()
                                              : repeats.now_ms());
}

}  // namespace

void LogReportSuppressed() { Log::WriteSuppressed(TakeSuppressed(/*flush=*/false)); }

void LogFlushSuppressed() { Log::WriteSuppressed(TakeSuppressed(/*flush=*/true)); }

Log::Log(LogLevel level, std::string_view msg) : enabled_(LogEnabled(level)) {
  if (!enabled_) return;
  uint64_t suppressed = 0;
  if (level != LogLevel::kDebug) {
    Repeats& repeats = ProcessRepeats();
    std::lock_guard<std::mutex> lock(repeats.mu);
    const RepeatLimiter::Verdict verdict = repeats.limiter.Admit(msg, level, repeats.now_ms());
    if (!verdict.write) {
      enabled_ = false;
      return;
    }
    suppressed = verdict.suppressed;
  }
  Begin(level, msg);
  if (suppressed > 0) Int("suppressed", static_cast<int64_t>(suppressed));
}

Log::Log(LogLevel level, std::string_view msg, Unlimited) : enabled_(LogEnabled(level)) {
  if (enabled_) Begin(level, msg);
}

void Log::Begin(LogLevel level, std::string_view msg) {
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
  std::lock_guard<std::mutex> lock(WriteMutex());
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
