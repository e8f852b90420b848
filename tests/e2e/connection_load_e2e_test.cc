// End-to-end: 10,000 idle connections are held; flooders that never read cost bounded memory.
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "schema/frame_codec.h"
#include "sidecar/server/connection.h"
#include "tests/testing/raw_socket.h"
#include "tests/testing/sanitizers.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * kKiB;

int64_t NowMicros() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

// Raises this process's soft RLIMIT_NOFILE to its hard limit; false when even that is below
// `needed`, so the test cannot hold its connections here.
bool RaiseOwnFdLimit(size_t needed) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  limit.rlim_cur = limit.rlim_max;
  return setrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur >= needed;
}

// A field of /proc/PID/status in kB (VmRSS, VmHWM), or -1.
int64_t ProcStatusKb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

// The sockets a process has open, from /proc/PID/fd.
size_t OpenSockets(pid_t pid) {
  size_t count = 0;
  std::error_code error;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", error), end;
       !error && it != end; it.increment(error)) {
    std::error_code unreadable;
    const std::string target = std::filesystem::read_symlink(it->path(), unreadable).string();
    if (!unreadable && target.rfind("socket:", 0) == 0) ++count;
  }
  return count;
}

// Opens `count` connections; fewer when a connect fails.
std::vector<RawSocket> ConnectMany(const std::string& path, size_t count) {
  std::vector<RawSocket> sockets;
  sockets.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    Result<RawSocket> raw = RawSocket::Connect(path);
    if (!raw.ok()) break;
    sockets.push_back(std::move(*raw));
  }
  return sockets;
}

// Sends a ping with id `i` on every socket, then reads every answer: all of them are open and
// served. Returns how many answered with their own ping.
size_t PingAll(std::vector<RawSocket>& sockets) {
  FrameEncoder encoder;
  FrameVerifier verifier;
  for (size_t i = 0; i < sockets.size(); ++i) {
    if (!sockets[i].SendAll(encoder.PingRequest(i))) return 0;
  }
  size_t answered = 0;
  for (size_t i = 0; i < sockets.size(); ++i) {
    Result<std::vector<uint8_t>> frame = sockets[i].ReadFrame();
    if (!frame.ok()) continue;
    Result<const wire::Frame*> root = verifier.Verify(*frame);
    if (root.ok() && (*root)->body_type() == wire::Body::PingResponse && (*root)->id() == i) {
      ++answered;
    }
  }
  return answered;
}

TEST(ConnectionLoadE2E, TenThousandIdleConnectionsAreHeldWhileANewClientIsServed) {
  constexpr size_t kIdle = 10000;
  ASSERT_TRUE(RaiseOwnFdLimit(kIdle + 64)) << "needs a hard RLIMIT_NOFILE above " << kIdle + 64;
  Result<std::unique_ptr<SidecarProcess>> started =
      SidecarProcess::Start({{"RATE_LIMIT_MAX_CONNECTIONS", std::to_string(kIdle + 16)}});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  SidecarProcess& sidecar = **started;

  std::vector<RawSocket> idle = ConnectMany(sidecar.socket_path(), kIdle);
  ASSERT_EQ(idle.size(), kIdle);
  // Every one was accepted and is served: a ping on each, sent once all are connected.
  EXPECT_EQ(PingAll(idle), kIdle);

  // A client arriving now is served at once, on a connection of its own.
  Client fresh({.socket_path = sidecar.socket_path()});
  Result<CheckResult> check = fresh.Check({.key = "fresh"});
  ASSERT_TRUE(check.ok()) << check.status().ToString();
  EXPECT_TRUE(check->allowed);

  // All held at once: the sidecar has a socket open for each, besides its listener.
  const size_t sockets = OpenSockets(sidecar.pid());
  EXPECT_GE(sockets, kIdle + 1);
  std::printf("held %zu idle connections; the sidecar had %zu sockets open, VmRSS %lld kB\n",
              idle.size(), sockets, static_cast<long long>(ProcStatusKb(sidecar.pid(), "VmRSS")));

  sidecar.Signal(SIGTERM);
  EXPECT_EQ(sidecar.WaitExit(30000), 0) << sidecar.Stderr().substr(0, 4000);
  for (size_t i = 0; i < idle.size(); i += 997) EXPECT_TRUE(idle[i].WaitForClose()) << i;
}

// CPU time the process has used (user + system), in clock ticks, from /proc/PID/stat; -1 when
// it cannot be read.
int64_t CpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t comm_end = stat.rfind(')');  // The command name may hold spaces.
  if (comm_end == std::string::npos) return -1;
  std::istringstream fields(stat.substr(comm_end + 2));
  std::string field;
  int64_t utime = -1;
  int64_t stime = -1;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // Fields 14 and 15: utime, stime.
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return utime < 0 || stime < 0 ? -1 : utime + stime;
}

// One flooder's bytes: kFramesPerBurst check requests, written again and again.
constexpr size_t kFramesPerBurst = 512;
// The most a flooder sends; with backpressure the sidecar stops reading long before.
constexpr size_t kMaxFloodBytesPerConnection = 4 * kMiB;

struct FloodResult {
  size_t total_bytes = 0;
  size_t most_bytes_one_connection = 0;
  size_t send_errors = 0;
  // Every socket refused more (EAGAIN) while the sidecar sat idle: it reads none of them.
  bool sidecar_stopped_reading = false;
  double seconds = 0;
  double sidecar_cpu_seconds = 0;
};

// Writes pipelined checks on every socket, without blocking and without ever reading, until the
// kernel refuses more on all of them and the sidecar has used almost no CPU for a while: it has
// stopped reading every one. (Waiting for sends alone to stall is not enough: the kernel frees a
// socket's room only when whole buffers of it have been read, and a sidecar sharing its reads
// among a thousand connections takes a while to finish one.) Bounded by
// kMaxFloodBytesPerConnection and a deadline.
FloodResult FloodUntilTheSidecarStopsReading(std::vector<RawSocket>& sockets,
                                             const std::vector<uint8_t>& burst, pid_t sidecar) {
  constexpr int64_t kDeadlineUs = 90'000'000;
  constexpr int64_t kIdleWindowUs = 500'000;
  constexpr int64_t kIdleTicks = 2;  // At most 20 ms of CPU in half a second.
  FloodResult result;
  std::vector<size_t> sent(sockets.size(), 0);
  const int64_t start = NowMicros();
  const int64_t start_ticks = CpuTicks(sidecar);
  int64_t window_start = start;
  int64_t window_ticks = start_ticks;
  while (NowMicros() - start < kDeadlineUs) {
    bool progress = false;
    for (size_t i = 0; i < sockets.size(); ++i) {
      while (sockets[i].fd() >= 0 && sent[i] < kMaxFloodBytesPerConnection) {
        const size_t offset = sent[i] % burst.size();  // Resume mid-burst: frames stay whole.
        const ssize_t n = send(sockets[i].fd(), burst.data() + offset, burst.size() - offset,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          sent[i] += static_cast<size_t>(n);
          progress = true;
        } else if (n < 0 && errno == EAGAIN) {
          break;
        } else if (!(n < 0 && errno == EINTR)) {
          ++result.send_errors;
          sockets[i].Close();
        }
      }
    }
    const int64_t now = NowMicros();
    if (progress) {
      window_start = now;
      window_ticks = CpuTicks(sidecar);
      usleep(1000);  // The sockets stay full; the CPU is left to the sidecar and the others.
      continue;
    }
    if (now - window_start >= kIdleWindowUs) {
      const int64_t ticks = CpuTicks(sidecar);
      if (ticks - window_ticks <= kIdleTicks) {
        result.sidecar_stopped_reading = true;
        break;
      }
      window_start = now;
      window_ticks = ticks;
    }
    usleep(10000);  // Let the sidecar read more, if it still would.
  }
  result.seconds = static_cast<double>(NowMicros() - start) / 1e6;
  result.sidecar_cpu_seconds = static_cast<double>(CpuTicks(sidecar) - start_ticks) /
                               static_cast<double>(sysconf(_SC_CLK_TCK));
  for (size_t bytes : sent) {
    result.total_bytes += bytes;
    result.most_bytes_one_connection = std::max(result.most_bytes_one_connection, bytes);
  }
  return result;
}

TEST(ConnectionLoadE2E, FloodersThatNeverReadCostBoundedMemoryAndOthersAreServedWithin100Ms) {
  constexpr size_t kFlooders = 1000;
  constexpr int kWellBehavedChecks = 200;
  constexpr int kMaxWellBehavedChecks = 20000;
  constexpr uint32_t kMaxFrameBytes = 4096;
  constexpr int kDeadlineMs = 100;
  ASSERT_TRUE(RaiseOwnFdLimit(kFlooders + 64));
  Result<std::unique_ptr<SidecarProcess>> started =
      SidecarProcess::Start({{"RATE_LIMIT_MAX_CONNECTIONS", std::to_string(kFlooders + 16)},
                             {"RATE_LIMIT_MAX_FRAME_BYTES", std::to_string(kMaxFrameBytes)},
                             {"RATE_LIMIT_MAX_REQUESTS", "1000000000"},
                             {"RATE_LIMIT_SHUTDOWN_GRACE_MS", "500"}});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  SidecarProcess& sidecar = **started;

  // The well-behaved client connects first; each of its checks must come back within its
  // 100 ms deadline (Receive fails with TimedOut otherwise), during the flood and after it.
  // Under the sanitizers the sidecar is slower by kSanitizerSlowdown, and so is the deadline.
  Result<std::unique_ptr<Pipeline>> connected = Pipeline::Connect(
      {.socket_path = sidecar.socket_path(), .timeout_ms = kDeadlineMs * kSanitizerSlowdown});
  ASSERT_TRUE(connected.ok()) << connected.status().ToString();
  Pipeline& well_behaved = **connected;

  std::vector<RawSocket> flooders = ConnectMany(sidecar.socket_path(), kFlooders);
  ASSERT_EQ(flooders.size(), kFlooders);
  ASSERT_EQ(PingAll(flooders), kFlooders);  // All accepted before the flood starts.
  const int64_t baseline_kb = ProcStatusKb(sidecar.pid(), "VmRSS");
  ASSERT_GT(baseline_kb, 0);

  FrameEncoder encoder;
  std::vector<uint8_t> burst;
  for (uint64_t id = 0; id < kFramesPerBurst; ++id) {
    const std::span<const uint8_t> frame = encoder.CheckRequest(id, {.key = "flood"});
    burst.insert(burst.end(), frame.begin(), frame.end());
  }
  const size_t request_bytes = burst.size() / kFramesPerBurst;
  const size_t response_bytes = encoder.CheckResponse(1, CheckResult{}).size();

  FloodResult flood;
  std::atomic<bool> flooding{true};
  std::thread flood_thread([&] {
    flood = FloodUntilTheSidecarStopsReading(flooders, burst, sidecar.pid());
    flooding = false;
  });
  // Failures are recorded, not asserted, until the flood thread is joined.
  int64_t slowest_us = 0;
  int answered = 0;
  Status failure;
  // At least kWellBehavedChecks, and on until the flood is over.
  for (int i = 0; (i < kWellBehavedChecks || flooding) && i < kMaxWellBehavedChecks && failure.ok();
       ++i) {
    const int64_t start = NowMicros();
    Status sent = well_behaved.QueueCheck(i, {.key = "well-behaved"});
    if (sent.ok()) sent = well_behaved.Flush();
    Result<Reply> reply = sent.ok() ? well_behaved.Receive() : Result<Reply>(sent);
    const int64_t latency_us = NowMicros() - start;
    if (!reply.ok()) {
      failure = Status::TimedOut("check " + std::to_string(i) + " failed after " +
                                 std::to_string(latency_us) + " us: " + reply.status().ToString());
    } else if (reply->id != static_cast<uint64_t>(i) || !reply->check.allowed) {
      failure = Status::ProtocolError("check " + std::to_string(i) + " got a wrong answer");
    } else {
      ++answered;
    }
    slowest_us = std::max(slowest_us, latency_us);
    usleep(10000);
  }
  flood_thread.join();
  const int64_t peak_kb = ProcStatusKb(sidecar.pid(), "VmHWM");
  const int64_t final_kb = ProcStatusKb(sidecar.pid(), "VmRSS");

  // What the sidecar may hold per connection, from the caps in connection.h:
  // - Queued output. Reading stops once the answers waiting to be sent exceed
  //   kMaxQueuedOutputBytes, a test made after each read; one read takes at most 64 KiB of
  //   requests (the server's read buffer), whose answers come on top. They sit in two buffers
  //   (queued, and owned by the write in flight) whose capacity may reach twice their content:
  //   at most 3 * (kMaxQueuedOutputBytes + answers to 64 KiB of requests).
  // - Pending checks: the memory store answers each check before the next frame is read, so
  //   kMaxPendingChecks adds nothing here.
  // - A frame split across reads: at most RATE_LIMIT_MAX_FRAME_BYTES plus its prefix.
  // - The connection and its libuv handle: under 2 KiB.
  // On top: the idle sidecar as measured before the flood, and headroom for the allocator's
  // fragmentation (a quarter more, plus 64 MiB). Under ASan, freed blocks wait in a quarantine
  // of up to 256 MiB, and shadow memory adds an eighth.
  const size_t answers_per_read = (64 * kKiB + request_bytes - 1) / request_bytes * response_bytes;
  const size_t per_connection =
      3 * (kMaxQueuedOutputBytes + answers_per_read) + kMaxFrameBytes + 4 + 2 * kKiB;
  size_t bound = per_connection * kFlooders;
  bound += bound / 4 + 64 * kMiB;
  if (kUnderAddressSanitizer) bound += bound / 8 + 256 * kMiB;
  const int64_t bound_kb = baseline_kb + static_cast<int64_t>(bound / kKiB);

  std::printf(
      "flood: %zu connections sent %zu MiB (at most %zu KiB on one) of %zu-byte requests "
      "(answers %zu bytes) in %.1f s, the sidecar busy %.1f s of it\n"
      "sidecar VmRSS: %lld kB before, peak (VmHWM) %lld kB, after %lld kB; bound %lld kB\n"
      "well-behaved client: %d checks answered, slowest %.2f ms (deadline %d ms)\n",
      kFlooders, flood.total_bytes / kMiB, flood.most_bytes_one_connection / kKiB, request_bytes,
      response_bytes, flood.seconds, flood.sidecar_cpu_seconds, static_cast<long long>(baseline_kb),
      static_cast<long long>(peak_kb), static_cast<long long>(final_kb),
      static_cast<long long>(bound_kb), answered, static_cast<double>(slowest_us) / 1000.0,
      kDeadlineMs * kSanitizerSlowdown);
  EXPECT_TRUE(failure.ok()) << failure.ToString();
  EXPECT_GE(answered, kWellBehavedChecks);
  EXPECT_EQ(flood.send_errors, 0u);  // Flooders are slowed down, not disconnected.
  EXPECT_TRUE(flood.sidecar_stopped_reading);
  // The sidecar stopped reading each flooder long before it had sent everything it would.
  EXPECT_LT(flood.most_bytes_one_connection, kMaxFloodBytesPerConnection);
  EXPECT_LT(peak_kb, bound_kb);

  // A new connection is served after the flood too (the well-behaved one was, to the end).
  Result<CheckResult> fresh =
      Client({.socket_path = sidecar.socket_path(), .timeout_ms = kDeadlineMs * kSanitizerSlowdown})
          .Check({.key = "fresh"});
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  sidecar.Signal(SIGTERM);  // Flooders that never read are closed when the grace period ends.
  EXPECT_EQ(sidecar.WaitExit(30000), 0) << sidecar.Stderr().substr(0, 4000);
}

}  // namespace
}  // namespace ratelimit
