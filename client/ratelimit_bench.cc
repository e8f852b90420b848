// ratelimit-bench: a load generator over the sidecar's Unix socket, built on the client library.
//
//   ratelimit-bench [--socket PATH] [--connections N] [--depth D] [--duration-s S] [--keys K]
//                   [--key-dist uniform|zipf|hot] [--cost C] [--limit L] [--window-ms W] [--json]
//                   [--floor] [--hot-limit L [--hot-window-ms W] [--hot-per-s R]]
//
// --floor first measures the physical floor, a raw Unix-socket echo of frames of the same size
// with the same connections and depth and no decoding, then the sidecar, and prints the
// sidecar's figures as ratios to the floor's: comparable on a noisy machine.
//
// --hot-limit adds a hot key beside the load: one more connection checks the key "bench-hot"
// R times a second (default 200) with limit L per W ms (default an hour), and reports whether it
// was allowed exactly as such a bucket allows (L times, then denied) however the load goes.
//
// Each connection runs on its own thread with D requests in flight. Every request's latency,
// from send to response on a monotonic clock, goes into a log-linear histogram (about 0.8%
// resolution): all requests are recorded, none sampled.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ratelimit/client.h"
#include "ratelimit/pipeline.h"
#include "schema/frame_codec.h"

namespace ratelimit {
namespace {

using SteadyTime = std::chrono::steady_clock;

constexpr int kExitUsage = 2;

struct Options {
  ClientOptions client;
  int connections = 1;
  int depth = 1;
  int duration_s = 10;
  uint32_t keys = 1;
  std::string key_dist = "uniform";
  uint32_t cost = 1;
  uint32_t limit = 0;
  uint32_t window_ms = 0;
  bool json = false;
  bool floor = false;
  uint32_t hot_limit = 0;  // 0: no hot key.
  uint32_t hot_window_ms = 3'600'000;
  uint32_t hot_per_s = 200;
};

// Latencies in nanoseconds: exact below 256 ns, then 128 buckets per power of two.
class Histogram {
 public:
  static constexpr int kSubBits = 7;
  Histogram() : counts_((64 - kSubBits + 1) << kSubBits) {}

  void Record(uint64_t ns) {
    ++counts_[Index(ns)];
    max_ = std::max(max_, ns);
  }
  void Merge(const Histogram& other) {
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    max_ = std::max(max_, other.max_);
  }
  uint64_t count() const {
    uint64_t n = 0;
    for (uint64_t c : counts_) n += c;
    return n;
  }
  // The smallest recorded bucket value below which `q` of all values lie.
  uint64_t Quantile(double q) const {
    const uint64_t total = count();
    if (total == 0) return 0;
    const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= std::max<uint64_t>(rank, 1)) return std::min(ValueAt(i), max_);
    }
    return max_;
  }
  uint64_t max() const { return max_; }

 private:
  static size_t Index(uint64_t v) {
    if (v < (1u << (kSubBits + 1))) return static_cast<size_t>(v);
    const int msb = 63 - __builtin_clzll(v);
    const uint64_t mantissa = v >> (msb - kSubBits);
    return (static_cast<size_t>(msb - kSubBits + 1) << kSubBits) +
           static_cast<size_t>(mantissa - (1u << kSubBits));
  }
  static uint64_t ValueAt(size_t index) {
    if (index < (1u << (kSubBits + 1))) return index;
    const size_t group = index >> kSubBits;
    const uint64_t mantissa = (index & ((1u << kSubBits) - 1)) + (1u << kSubBits);
    return mantissa << (group - 1);
  }

  std::vector<uint64_t> counts_;
  uint64_t max_ = 0;
};

struct Totals {
  std::atomic<uint64_t> checks{0};
  std::atomic<uint64_t> allowed{0};
  std::atomic<uint64_t> denied{0};
  std::atomic<uint64_t> errors{0};
};

// Picks the key of each request: uniform over K keys, Zipf(1) over K keys, or "hot": 90% of
// requests to one key, the rest uniform.
class KeyPicker {
 public:
  KeyPicker(const Options& options, uint64_t seed) : options_(options), rng_(seed) {
    if (options.key_dist == "zipf") {
      double sum = 0;
      for (uint32_t k = 1; k <= options.keys; ++k) cdf_.push_back(sum += 1.0 / k);
      for (double& c : cdf_) c /= sum;
    }
  }
  std::string Next() {
    uint32_t k = 0;
    if (options_.key_dist == "zipf") {
      const double u = std::uniform_real_distribution<double>(0, 1)(rng_);
      k = static_cast<uint32_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
    } else if (options_.key_dist == "hot" && rng_() % 10 != 0) {
      k = 0;
    } else {
      k = static_cast<uint32_t>(rng_() % options_.keys);
    }
    return "bench-key-" + std::to_string(std::min(k, options_.keys - 1));
  }

 private:
  const Options& options_;
  std::mt19937_64 rng_;
  std::vector<double> cdf_;
};

void RunConnection(const Options& options, int index, SteadyTime::time_point end, Totals& totals,
                   Histogram& histogram) {
  Result<std::unique_ptr<Pipeline>> connected = Pipeline::Connect(options.client);
  if (!connected.ok()) {
    std::fprintf(stderr, "connection %d: %s\n", index, connected.status().ToString().c_str());
    ++totals.errors;
    return;
  }
  Pipeline& pipeline = **connected;
  KeyPicker keys(options, 0x5eed + static_cast<uint64_t>(index));
  std::unordered_map<uint64_t, SteadyTime::time_point> sent;
  uint64_t next_id = 1;
  auto send_one = [&] {
    const std::string key = keys.Next();
    const uint64_t id = next_id++;
    (void)pipeline.QueueCheck(
        id,
        {.key = key, .cost = options.cost, .limit = options.limit, .window_ms = options.window_ms});
    sent[id] = SteadyTime::now();
  };
  for (int i = 0; i < options.depth; ++i) send_one();
  if (!pipeline.Flush().ok()) {
    ++totals.errors;
    return;
  }
  while (!sent.empty()) {
    Result<Reply> reply = pipeline.Receive();
    if (!reply.ok()) {
      totals.errors += sent.size();
      std::fprintf(stderr, "connection %d: %s\n", index, reply.status().ToString().c_str());
      return;
    }
    const auto now = SteadyTime::now();
    auto it = sent.find(reply->id);
    if (it != sent.end()) {
      histogram.Record(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - it->second).count()));
      sent.erase(it);
    }
    ++totals.checks;
    if (reply->kind != Reply::Kind::kCheck || reply->check.status != CheckStatus::kOk) {
      ++totals.errors;
    } else if (reply->check.allowed) {
      ++totals.allowed;
    } else {
      ++totals.denied;
    }
    if (now < end) send_one();
    if (!pipeline.has_replies() && pipeline.queued_bytes() > 0 && !pipeline.Flush().ok()) {
      ++totals.errors;
      return;
    }
  }
}

// The hot key's answers, in the order asked. A bucket that is not refilled meanwhile allows its
// first `limit` checks and denies every later one: an allowance after a denial is a decision the
// load changed (or a refill, over a run as long as a token's refill time).
struct HotKeyTally {
  uint64_t checks = 0, allowed = 0, denied = 0, allowed_after_denial = 0, errors = 0;
  uint64_t fallback = 0;  // Answers of any kind from the fallback policy (the store failed).

  // Each count by name, in the order printed.
  std::vector<std::pair<const char*, unsigned long long>> Fields() const {
    return {{"checks", checks}, {"allowed", allowed},
            {"denied", denied}, {"allowed_after_denial", allowed_after_denial},
            {"errors", errors}, {"fallback", fallback}};
  }
};

// Checks "bench-hot" options.hot_per_s times a second on a connection of its own until `end`.
HotKeyTally RunHotKey(const Options& options, SteadyTime::time_point end) {
  Client client(options.client);
  HotKeyTally tally;
  const auto period = std::chrono::nanoseconds(1'000'000'000 / options.hot_per_s);
  for (auto next = SteadyTime::now(); next < end; next += period) {
    std::this_thread::sleep_until(next);
    Result<CheckResult> r = client.Check(
        {.key = "bench-hot", .limit = options.hot_limit, .window_ms = options.hot_window_ms});
    ++tally.checks;
    if (r.ok() && r->source == Source::kFallback) ++tally.fallback;
    if (!r.ok() || r->status != CheckStatus::kOk) {
      ++tally.errors;
    } else if (!r->allowed) {
      ++tally.denied;
    } else if (tally.denied > 0) {
      ++tally.allowed_after_denial;
    } else {
      ++tally.allowed;
    }
  }
  return tally;
}

// What one run measured.
struct Summary {
  uint64_t checks = 0, allowed = 0, denied = 0, errors = 0;
  double seconds = 0;
  Histogram latency;
  std::optional<HotKeyTally> hot;  // With --hot-limit.
  double per_s() const { return seconds > 0 ? static_cast<double>(checks) / seconds : 0; }
};

using ConnectionRunner = void (*)(const Options&, int, SteadyTime::time_point, Totals&, Histogram&);

// Runs `runner` on options.connections threads for options.duration_s, printing progress on
// stderr once a second.
Summary RunLoad(const Options& options, const char* unit, ConnectionRunner runner) {
  Totals totals;
  std::vector<Histogram> histograms(static_cast<size_t>(options.connections));
  const auto start = SteadyTime::now();
  const auto end = start + std::chrono::seconds(options.duration_s);
  std::vector<std::thread> threads;
  for (int c = 0; c < options.connections; ++c) {
    threads.emplace_back(runner, std::cref(options), c, end, std::ref(totals),
                         std::ref(histograms[static_cast<size_t>(c)]));
  }
  std::atomic<bool> done{false};
  std::thread progress([&] {
    uint64_t last = 0;
    for (int second = 1; !done; ++second) {
      for (int tick = 0; tick < 10 && !done; ++tick) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (done) break;
      const uint64_t now = totals.checks.load();
      std::fprintf(stderr, "[%ds] %llu %s/s, %llu errors\n", second,
                   static_cast<unsigned long long>(now - last), unit,
                   static_cast<unsigned long long>(totals.errors.load()));
      last = now;
    }
  });
  for (std::thread& t : threads) t.join();
  Summary summary;
  summary.seconds = std::chrono::duration<double>(SteadyTime::now() - start).count();
  done = true;
  progress.join();
  for (const Histogram& h : histograms) summary.latency.Merge(h);
  summary.checks = totals.checks.load();
  summary.allowed = totals.allowed.load();
  summary.denied = totals.denied.load();
  summary.errors = totals.errors.load();
  return summary;
}

// The readable summary, ratios to `floor` when given, and with `json` the JSON line last.
void Print(const char* what, const char* unit, const Summary& s, bool json, const Summary* floor) {
  const double us = 1000.0;
  const Histogram& h = s.latency;
  std::printf(
      "%s: %llu %s in %.2f s: %.0f %s/s (%llu allowed, %llu denied, %llu errors)\n"
      "  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
      what, static_cast<unsigned long long>(s.checks), unit, s.seconds, s.per_s(), unit,
      static_cast<unsigned long long>(s.allowed), static_cast<unsigned long long>(s.denied),
      static_cast<unsigned long long>(s.errors), h.Quantile(0.5) / us, h.Quantile(0.9) / us,
      h.Quantile(0.99) / us, h.Quantile(0.999) / us, h.max() / us);
  if (floor != nullptr) {
    const Histogram& f = floor->latency;
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    std::printf("  vs floor: p50 %.2fx  p99 %.2fx  throughput %.0f%% of the echo's\n",
                ratio(static_cast<double>(h.Quantile(0.5)), static_cast<double>(f.Quantile(0.5))),
                ratio(static_cast<double>(h.Quantile(0.99)), static_cast<double>(f.Quantile(0.99))),
                100 * ratio(s.per_s(), floor->per_s()));
  }
  if (s.hot) {
    std::printf("  hot key:");
    for (const auto& [name, value] : s.hot->Fields()) std::printf(" %s %llu", name, value);
    std::printf("\n");
  }
  if (json) {
    std::printf(
        "{\"checks\":%llu,\"allowed\":%llu,\"denied\":%llu,\"errors\":%llu,"
        "\"checks_per_s\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
        "\"p999_us\":%.1f,\"max_us\":%.1f",
        static_cast<unsigned long long>(s.checks), static_cast<unsigned long long>(s.allowed),
        static_cast<unsigned long long>(s.denied), static_cast<unsigned long long>(s.errors),
        s.per_s(), h.Quantile(0.5) / us, h.Quantile(0.9) / us, h.Quantile(0.99) / us,
        h.Quantile(0.999) / us, h.max() / us);
    if (s.hot) {
      for (const auto& [name, value] : s.hot->Fields())
        std::printf(",\"hot_%s\":%llu", name, value);
    }
    std::printf("}\n");
  }
}

// The sidecar's run, with the hot key checked beside the load when asked for.
Summary RunSidecar(const Options& options) {
  std::optional<HotKeyTally> hot;
  std::thread hot_thread;
  if (options.hot_limit > 0) {
    const auto end = SteadyTime::now() + std::chrono::seconds(options.duration_s);
    hot_thread = std::thread([&options, &hot, end] { hot = RunHotKey(options, end); });
  }
  Summary summary = RunLoad(options, "checks", RunConnection);
  if (hot_thread.joinable()) hot_thread.join();
  summary.hot = hot;
  return summary;
}

// The physical floor: a Unix-socket server that writes back every byte it reads, with no
// decoding, one thread per connection. Stops (and removes its socket) when destroyed.
class EchoServer {
 public:
  static Result<std::unique_ptr<EchoServer>> Start() {
    char dir[] = "/tmp/rlbench-XXXXXX";
    if (mkdtemp(dir) == nullptr) return Status::IoError("mkdtemp failed");
    auto server = std::unique_ptr<EchoServer>(new EchoServer(std::string(dir)));
    server->listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", server->path_.c_str());
    if (bind(server->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(server->listen_fd_, 1024) != 0) {
      return Status::IoError("cannot listen on " + server->path_);
    }
    EchoServer* raw = server.get();
    server->acceptor_ = std::thread([raw] { raw->Accept(); });
    return server;
  }
  ~EchoServer() {
    shutdown(listen_fd_, SHUT_RDWR);  // Wakes accept().
    acceptor_.join();
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);  // Wakes the echo threads' read().
    for (std::thread& t : echoes_) t.join();
    for (int fd : fds_) close(fd);
    close(listen_fd_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  explicit EchoServer(std::string dir) : dir_(std::move(dir)), path_(dir_ + "/echo.sock") {}

  void Accept() {
    while (true) {
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      fds_.push_back(fd);
      echoes_.emplace_back([fd] {
        std::vector<char> buf(64 * 1024);
        while (true) {
          const ssize_t n = read(fd, buf.data(), buf.size());
          if (n <= 0) return;
          for (ssize_t sent = 0; sent < n;) {
            const ssize_t w = write(fd, buf.data() + sent, static_cast<size_t>(n - sent));
            if (w <= 0) return;
            sent += w;
          }
        }
      });
    }
  }

  const std::string dir_;
  const std::string path_;
  int listen_fd_ = -1;
  std::thread acceptor_;
  std::vector<int> fds_;  // Touched by the acceptor, then by the destructor after joining it.
  std::vector<std::thread> echoes_;
};

// Like RunConnection, against the echo: the same request frame, D in flight, each reply the
// same bytes back, counted by size; the writes are batched as the client library batches them.
void RunFloorConnection(const Options& options, int index, SteadyTime::time_point end,
                        Totals& totals, Histogram& histogram) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", options.client.socket_path.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::fprintf(stderr, "floor connection %d: cannot connect\n", index);
    ++totals.errors;
    close(fd);
    return;
  }
  FrameEncoder encoder;
  const std::span<const uint8_t> frame_view =
      encoder.CheckRequest(1, {.key = "bench-key-0",
                               .cost = options.cost,
                               .limit = options.limit,
                               .window_ms = options.window_ms});
  const std::vector<uint8_t> frame(frame_view.begin(), frame_view.end());
  std::deque<SteadyTime::time_point> sent;
  std::vector<uint8_t> out;
  auto send_frames = [&](size_t n) {
    out.clear();
    for (size_t i = 0; i < n; ++i) {
      out.insert(out.end(), frame.begin(), frame.end());
      sent.push_back(SteadyTime::now());
    }
    for (size_t done = 0; done < out.size();) {
      const ssize_t w = write(fd, out.data() + done, out.size() - done);
      if (w <= 0) return false;
      done += static_cast<size_t>(w);
    }
    return true;
  };
  std::vector<uint8_t> in(64 * 1024);
  size_t pending_bytes = 0;
  bool ok = send_frames(static_cast<size_t>(options.depth));
  while (ok && !sent.empty()) {
    const ssize_t n = read(fd, in.data(), in.size());
    if (n <= 0) break;
    pending_bytes += static_cast<size_t>(n);
    const auto now = SteadyTime::now();
    size_t replies = 0;
    while (pending_bytes >= frame.size() && !sent.empty()) {
      pending_bytes -= frame.size();
      histogram.Record(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent.front()).count()));
      sent.pop_front();
      ++replies;
    }
    totals.checks += replies;
    if (now < end && replies > 0) ok = send_frames(replies);
  }
  if (!sent.empty()) totals.errors += sent.size();
  close(fd);
}

bool ParseInt(std::string_view text, uint64_t min, uint64_t max, uint64_t& out) {
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size() && out >= min && out <= max;
}

int Usage(const std::string& message) {
  std::fprintf(stderr,
               "ratelimit-bench: %s\nusage: ratelimit-bench [--socket PATH] [--connections N] "
               "[--depth D] [--duration-s S] [--keys K] [--key-dist uniform|zipf|hot] "
               "[--cost C] [--limit L] [--window-ms W] [--json] [--floor] "
               "[--hot-limit L [--hot-window-ms W] [--hot-per-s R]]\n",
               message.c_str());
  return kExitUsage;
}

// The options that take a number: the range allowed and where the value goes.
struct NumberOption {
  std::string_view name;
  uint64_t min, max;
  void (*set)(Options&, uint64_t);
};
constexpr NumberOption kNumberOptions[] = {
    {"--connections", 1, 1024, [](Options& o, uint64_t n) { o.connections = static_cast<int>(n); }},
    {"--depth", 1, 4096, [](Options& o, uint64_t n) { o.depth = static_cast<int>(n); }},
    {"--duration-s", 1, 3600, [](Options& o, uint64_t n) { o.duration_s = static_cast<int>(n); }},
    {"--keys", 1, 100000000, [](Options& o, uint64_t n) { o.keys = static_cast<uint32_t>(n); }},
    {"--cost", 0, UINT32_MAX, [](Options& o, uint64_t n) { o.cost = static_cast<uint32_t>(n); }},
    {"--limit", 0, UINT32_MAX, [](Options& o, uint64_t n) { o.limit = static_cast<uint32_t>(n); }},
    {"--window-ms", 0, UINT32_MAX,
     [](Options& o, uint64_t n) { o.window_ms = static_cast<uint32_t>(n); }},
    {"--hot-limit", 1, UINT32_MAX,
     [](Options& o, uint64_t n) { o.hot_limit = static_cast<uint32_t>(n); }},
    {"--hot-window-ms", 1, UINT32_MAX,
     [](Options& o, uint64_t n) { o.hot_window_ms = static_cast<uint32_t>(n); }},
    {"--hot-per-s", 1, 10000,
     [](Options& o, uint64_t n) { o.hot_per_s = static_cast<uint32_t>(n); }},
};

// Reads the command line into `options`; kExitUsage (with the usage printed) when it is wrong,
// else 0.
int ParseOptions(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--json" || arg == "--floor") {
      (arg == "--json" ? options.json : options.floor) = true;
      continue;
    }
    if (i + 1 >= argc) return Usage(std::string(arg) + " needs a value");
    const std::string_view value = argv[++i];
    if (arg == "--socket") {
      options.client.socket_path = std::string(value);
    } else if (arg == "--key-dist") {
      if (value != "uniform" && value != "zipf" && value != "hot") {
        return Usage("--key-dist must be uniform, zipf or hot");
      }
      options.key_dist = std::string(value);
    } else {
      const auto* option = std::find_if(std::begin(kNumberOptions), std::end(kNumberOptions),
                                        [&](const NumberOption& o) { return o.name == arg; });
      if (option == std::end(kNumberOptions)) return Usage("unknown option " + std::string(arg));
      uint64_t n = 0;
      if (!ParseInt(value, option->min, option->max, n)) {
        return Usage(std::string(arg) + " must be an integer from " + std::to_string(option->min) +
                     " to " + std::to_string(option->max));
      }
      option->set(options, n);
    }
  }
  return 0;
}

int Main(int argc, char** argv) {
  Options options;
  options.client.timeout_ms = 10000;
  if (const int usage = ParseOptions(argc, argv, options); usage != 0) return usage;

  if (!options.floor) {
    const Summary sidecar = RunSidecar(options);
    Print("sidecar", "checks", sidecar, options.json, nullptr);
    return sidecar.errors == 0 && (!sidecar.hot || sidecar.hot->errors == 0) ? 0 : 1;
  }
  // The floor first, with the same connections, depth and frame size, then the sidecar.
  Result<std::unique_ptr<EchoServer>> echo = EchoServer::Start();
  if (!echo.ok()) {
    std::fprintf(stderr, "ratelimit-bench: %s\n", echo.status().ToString().c_str());
    return 1;
  }
  Options floor_options = options;
  floor_options.client.socket_path = (*echo)->path();
  const Summary floor = RunLoad(floor_options, "echoes", RunFloorConnection);
  echo->reset();
  const Summary sidecar = RunSidecar(options);
  Print("floor (raw echo)", "echoes", floor, options.json, nullptr);
  Print("sidecar", "checks", sidecar, options.json, &floor);
  return sidecar.errors == 0 && floor.errors == 0 && (!sidecar.hot || sidecar.hot->errors == 0) ? 0
                                                                                                : 1;
}

}  // namespace
}  // namespace ratelimit

int main(int argc, char** argv) { return ratelimit::Main(argc, argv); }
