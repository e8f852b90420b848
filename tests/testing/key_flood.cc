// KeyFlood: a flood of unique keys against a running sidecar, a hot key, and the sidecar's memory.
#include "tests/testing/key_flood.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/check_load.h"

namespace ratelimit {

std::optional<int64_t> ProcStatusKb(pid_t pid, std::string_view field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  const std::string prefix = std::string(field) + ":";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) return std::strtoll(line.c_str() + prefix.size(), nullptr, 10);
  }
  return std::nullopt;
}

std::optional<double> JsonNumber(std::string_view json, std::string_view name) {
  const std::string quoted = "\"" + std::string(name) + "\":";
  const size_t at = json.find(quoted);
  if (at == std::string_view::npos) return std::nullopt;
  const std::string rest(json.substr(at + quoted.size()));
  char* end = nullptr;
  const double value = std::strtod(rest.c_str(), &end);
  if (end == rest.c_str()) return std::nullopt;
  return value;
}

namespace {

// Tallies the hot key's answers into `result`: every one answered with kOk, and once one was
// denied, none allowed after it; the slowest of those asked from `flood_start_ns` on.
void TallyHotKey(const std::vector<LoadAnswer>& answers, int64_t flood_start_ns,
                 KeyFloodResult& result) {
  bool denied = false;
  for (const LoadAnswer& a : answers) {
    ++result.hot_checks;
    if (a.start_ns >= flood_start_ns) {
      result.hot_max_latency_ms = std::max(result.hot_max_latency_ms, a.latency_ms());
    }
    if (!a.answered || a.result.status != CheckStatus::kOk) {
      if (result.hot_problems++ == 0) {
        result.hot_first_problem = a.answered ? CheckStatusName(a.result.status) : a.error;
      }
      continue;
    }
    if (!a.result.allowed) {
      denied = true;
    } else if (denied) {
      if (result.hot_allowed_after_denial++ == 0) {
        result.hot_first_allowed_after_denial =
            std::string("from ") + SourceName(a.result.source) + " after " +
            std::to_string((a.start_ns - answers.front().start_ns) / 1'000'000) + " ms";
      }
    } else {
      ++result.hot_allowed;
    }
  }
}

}  // namespace

KeyFloodResult RunKeyFlood(const KeyFloodOptions& options) {
  KeyFloodResult result;
  CheckLoad hot({.socket_paths = {options.socket_path},
                 .threads_per_target = 1,
                 .pause_us = options.hot_pause_us,
                 .next = [&options](int, int, uint64_t) {
                   return LoadRequest{.key = options.hot_key,
                                      .limit = options.hot_limit,
                                      .window_ms = options.hot_window_ms};
                 }});
  // The hot key at its limit before the flood, as the issue puts it: its first check is a new
  // key's (in lease mode, a database round trip), not a hot key's.
  const auto warm_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (hot.Count() <= options.hot_limit && std::chrono::steady_clock::now() < warm_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int64_t flood_start_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count();
  result.rss_before_kb = ProcStatusKb(options.pid, "VmRSS").value_or(0);
  result.bench =
      RunProcess({kBenchBin, "--socket", options.socket_path, "--connections",
                  std::to_string(options.connections), "--depth", std::to_string(options.depth),
                  "--keys", std::to_string(options.keys), "--key-dist", "uniform", "--duration-s",
                  std::to_string(options.seconds), "--json"},
                 {}, (options.seconds + 30) * 1000);
  result.peak_rss_kb = ProcStatusKb(options.pid, "VmHWM").value_or(0);
  hot.Stop();
  const size_t brace = result.bench.out.rfind('{');
  if (brace != std::string::npos) result.bench_json = result.bench.out.substr(brace);
  TallyHotKey(hot.Snapshot(), flood_start_ns, result);
  return result;
}

void ExpectFloodContained(const KeyFloodResult& flood, const KeyFloodOptions& options,
                          int64_t max_keys, int64_t growth_bound_bytes) {
  SCOPED_TRACE(flood.Describe());
  EXPECT_LT(flood.growth_kb() * 1024, growth_bound_bytes);
  EXPECT_EQ(flood.bench.exit_code, 0);
  EXPECT_GT(flood.Bench("checks"), 2 * static_cast<double>(max_keys))
      << "the flood must overflow the table";
  EXPECT_EQ(flood.Bench("errors"), 0);
  EXPECT_EQ(flood.hot_allowed, options.hot_limit);
  EXPECT_GT(flood.hot_checks, flood.hot_allowed + 100) << "denied throughout the flood";
  EXPECT_EQ(flood.hot_allowed_after_denial, 0);
  EXPECT_EQ(flood.hot_problems, 0);
}

std::string KeyFloodResult::Describe() const {
  return "RSS before " + std::to_string(rss_before_kb) + " kB, peak " +
         std::to_string(peak_rss_kb) + " kB; hot key: " + std::to_string(hot_checks) + " checks, " +
         std::to_string(hot_allowed) + " allowed, " + std::to_string(hot_allowed_after_denial) +
         " allowed after a denial (first " + hot_first_allowed_after_denial + "), " +
         std::to_string(hot_problems) + " problems (first: " + hot_first_problem + "), slowest " +
         std::to_string(hot_max_latency_ms) + " ms; bench exit " + std::to_string(bench.exit_code) +
         ": " + bench.out + bench.err;
}

}  // namespace ratelimit
