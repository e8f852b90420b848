// KeyFlood: a flood of unique keys (ratelimit-bench as a child process) against a running
// sidecar, with a hot key checked alongside and the sidecar's memory read from /proc.
#ifndef RATELIMIT_TESTS_TESTING_KEY_FLOOD_H_
#define RATELIMIT_TESTS_TESTING_KEY_FLOOD_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tests/testing/sidecar_process.h"

namespace ratelimit {

// A field of /proc/PID/status in kB ("VmRSS", "VmHWM", ...); nullopt when the process or the
// field is gone.
std::optional<int64_t> ProcStatusKb(pid_t pid, std::string_view field);

// The number `name` in a one-line JSON object such as ratelimit-bench's; nullopt when absent.
std::optional<double> JsonNumber(std::string_view json, std::string_view name);

struct KeyFloodOptions {
  std::string socket_path;  // The sidecar's.
  pid_t pid = -1;           // The sidecar's, for its memory.
  int seconds = 4;
  // As the attack: every check a new key (uniform over 50 million), 4 connections with
  // 64 checks in flight each, under the sidecar's default policy.
  int connections = 4;
  int depth = 64;
  uint32_t keys = 50'000'000;
  // The hot key: checked one after another, `hot_pause_us` apart, with a limit so small and a
  // window so long that nothing refills during the test; the flood starts once it is spent.
  std::string hot_key = "key-flood-hot";
  uint32_t hot_limit = 20;
  uint32_t hot_window_ms = 3'600'000;
  int hot_pause_us = 2000;
};

// What one flood did. Sizes in kB as /proc reports them.
struct KeyFloodResult {
  int64_t rss_before_kb = 0;  // VmRSS just before the flood.
  int64_t peak_rss_kb = 0;    // VmHWM just after it.
  ProcessResult bench;        // ratelimit-bench's exit status and output.
  std::string bench_json;     // Its last line.
  // The hot key's answers, in the order they were asked.
  int64_t hot_checks = 0;
  int64_t hot_allowed = 0;
  int64_t hot_allowed_after_denial = 0;  // Allowed once it had been denied: a changed decision.
  std::string hot_first_allowed_after_denial;  // Its source and when, for failure messages.
  int64_t hot_problems = 0;                    // Unanswered or not CheckStatus::kOk.
  std::string hot_first_problem;
  double hot_max_latency_ms = 0;  // The slowest of the hot key's checks during the flood.

  int64_t growth_kb() const { return peak_rss_kb - rss_before_kb; }
  // The bench's JSON field `name`, or -1 when it printed none.
  double Bench(std::string_view name) const { return JsonNumber(bench_json, name).value_or(-1); }
  std::string Describe() const;  // For failure messages.
};

// Runs the flood for options.seconds with the hot key checked throughout, then returns what it
// measured. Blocks for about options.seconds (the bench is killed 30 s past it).
KeyFloodResult RunKeyFlood(const KeyFloodOptions& options);

// The verdicts on a flood, whatever the store (gtest expectations): the sidecar grew by
// less than `growth_bound_bytes`; the bench saw no error and overflowed a table of `max_keys`
// (more than twice as many checks); the hot key was allowed exactly its limit, then denied every
// time after. How slow a check may be depends on the store: the callers' to say.
void ExpectFloodContained(const KeyFloodResult& flood, const KeyFloodOptions& options,
                          int64_t max_keys, int64_t growth_bound_bytes);

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_KEY_FLOOD_H_
