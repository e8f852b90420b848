// CheckLoad: client threads that check against sidecars continuously and record every answer.
#include "tests/testing/check_load.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "ratelimit/client.h"

namespace ratelimit {
namespace {

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

CheckLoad::CheckLoad(CheckLoadOptions options) : options_(std::move(options)) {
  const int targets = static_cast<int>(options_.socket_paths.size());
  for (int target = 0; target < targets; ++target) {
    for (int thread = 0; thread < options_.threads_per_target; ++thread) {
      workers_.push_back(std::make_unique<Worker>());
      Worker& worker = *workers_.back();
      worker.thread = std::thread([this, &worker, target, thread] { Run(worker, target, thread); });
    }
  }
}

CheckLoad::~CheckLoad() { Stop(); }

void CheckLoad::Stop() {
  stop_ = true;
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) worker->thread.join();
  }
}

void CheckLoad::Run(Worker& worker, int target, int thread) {
  Client client(
      {.socket_path = options_.socket_paths[target], .timeout_ms = options_.client_timeout_ms});
  for (uint64_t i = 0; !stop_; ++i) {
    const LoadRequest request = options_.next(target, thread, i);
    LoadAnswer answer;
    answer.target = target;
    answer.thread = thread;
    answer.kind = request.kind;
    answer.start_ns = SteadyNowNs();
    Result<CheckResult> r = client.Check({.key = request.key,
                                          .cost = request.cost,
                                          .limit = request.limit,
                                          .window_ms = request.window_ms});
    answer.end_ns = SteadyNowNs();
    answer.answered = r.ok();
    if (r.ok()) {
      answer.result = *r;
    } else {
      answer.error = r.status().ToString();
    }
    {
      std::lock_guard<std::mutex> lock(worker.mu);
      worker.answers.push_back(std::move(answer));
    }
    ++count_;
    if (options_.pause_us > 0)
      std::this_thread::sleep_for(std::chrono::microseconds(options_.pause_us));
  }
}

std::vector<LoadAnswer> CheckLoad::Snapshot() const {
  std::vector<LoadAnswer> all;
  for (const auto& worker : workers_) {
    std::lock_guard<std::mutex> lock(worker->mu);
    all.insert(all.end(), worker->answers.begin(), worker->answers.end());
  }
  std::stable_sort(all.begin(), all.end(), [](const LoadAnswer& a, const LoadAnswer& b) {
    return a.start_ns < b.start_ns;
  });
  return all;
}

ReadinessProbe::ReadinessProbe(std::vector<std::string> socket_paths, int interval_ms,
                               int client_timeout_ms)
    : socket_paths_(std::move(socket_paths)),
      interval_ms_(interval_ms),
      client_timeout_ms_(client_timeout_ms),
      thread_([this] { Run(); }) {}

ReadinessProbe::~ReadinessProbe() { Stop(); }

void ReadinessProbe::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ReadinessProbe::Run() {
  std::vector<std::unique_ptr<Client>> clients;
  for (const std::string& path : socket_paths_) {
    clients.push_back(std::make_unique<Client>(
        ClientOptions{.socket_path = path, .timeout_ms = client_timeout_ms_}));
  }
  while (!stop_) {
    for (size_t i = 0; i < clients.size() && !stop_; ++i) {
      PingAnswer answer;
      answer.target = static_cast<int>(i);
      answer.start_ns = SteadyNowNs();
      Result<PingResult> r = clients[i]->Ping();
      answer.end_ns = SteadyNowNs();
      answer.answered = r.ok();
      answer.ready = r.ok() && r->ready;
      std::lock_guard<std::mutex> lock(mu_);
      answers_.push_back(answer);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms_));
  }
}

std::vector<PingAnswer> ReadinessProbe::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return answers_;
}

LatencySummary SummarizeLatency(const std::vector<LoadAnswer>& answers,
                                const std::function<bool(const LoadAnswer&)>& which) {
  std::vector<double> ms;
  for (const LoadAnswer& a : answers) {
    if (which(a)) ms.push_back(a.latency_ms());
  }
  LatencySummary s;
  s.count = ms.size();
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  s.median_ms = ms[ms.size() / 2];
  s.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  s.max_ms = ms.back();
  return s;
}

std::optional<int64_t> RecoveredAtNs(const std::vector<LoadAnswer>& answers, int target,
                                     int64_t since_ns, Source decided,
                                     const std::function<bool(const LoadAnswer&)>& which) {
  // `answers` is in start order: walk back from the last one while they are decided.
  std::optional<int64_t> recovered;
  for (auto it = answers.rbegin(); it != answers.rend(); ++it) {
    const LoadAnswer& a = *it;
    if (a.target != target || a.start_ns < since_ns || !which(a)) continue;
    if (!a.answered || a.result.status != CheckStatus::kOk || a.result.source != decided) break;
    recovered = recovered ? std::min(*recovered, a.end_ns) : a.end_ns;
  }
  return recovered;
}

bool WaitForRecovery(const CheckLoad& load, int targets, int64_t since_ns,
                     const std::function<Source(int target)>& decided,
                     const std::function<bool(const LoadAnswer&)>& which, int64_t wait_ms,
                     int64_t stable_ms) {
  const int64_t deadline = since_ns + wait_ms * 1'000'000;
  while (SteadyNowNs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::vector<LoadAnswer> answers = load.Snapshot();
    int64_t latest = 0;
    bool all = true;
    for (int target = 0; target < targets && all; ++target) {
      std::optional<int64_t> at = RecoveredAtNs(answers, target, since_ns, decided(target), which);
      all = at.has_value();
      if (at) latest = std::max(latest, *at);
    }
    if (all && SteadyNowNs() >= latest + stable_ms * 1'000'000) return true;
  }
  return false;
}

size_t MaxInAnyInterval(const std::vector<int64_t>& sorted, int64_t length_ns) {
  size_t best = 0;
  size_t lo = 0;
  for (size_t hi = 0; hi < sorted.size(); ++hi) {
    while (sorted[hi] - sorted[lo] > length_ns) ++lo;
    best = std::max(best, hi - lo + 1);
  }
  return best;
}

std::string Describe(const LoadAnswer& a, int64_t origin_ns) {
  char buf[256];
  if (!a.answered) {
    std::snprintf(buf, sizeof(buf),
                  "target %d thread %d at %+.1f ms: no answer after %.1f ms: ", a.target, a.thread,
                  static_cast<double>(a.start_ns - origin_ns) / 1e6, a.latency_ms());
    return buf + a.error;
  }
  std::snprintf(buf, sizeof(buf),
                "target %d thread %d kind %d at %+.1f ms took %.1f ms: status %s allowed %d "
                "source %s remaining %u",
                a.target, a.thread, a.kind, static_cast<double>(a.start_ns - origin_ns) / 1e6,
                a.latency_ms(), CheckStatusName(a.result.status), a.result.allowed ? 1 : 0,
                SourceName(a.result.source), a.result.remaining);
  return buf;
}

}  // namespace ratelimit
