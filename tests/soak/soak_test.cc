// Soak: three lease-mode sidecars under load, database faults, hostile clients and restarts.
//
// For RATELIMIT_SOAK_SECONDS (default 20; scripts/soak.sh runs 60) three sidecars share one
// table in lease mode with RATE_LIMIT_FALLBACK=deny, while
//   - load: threads on every sidecar check one hot key (far above its refill) and many keys;
//   - database faults, one after another: the table locked by another session, the sidecars'
//     backends killed (pg_terminate_backend), the server frozen (SIGSTOP, then SIGCONT), the
//     server stopped (pg_ctl -m immediate) and started again;
//   - a sidecar restarted with SIGTERM while the others keep serving;
//   - hostile clients: garbage and oversized frames, clients vanishing mid-frame or right after
//     a burst, a client flooding requests without ever reading.
// Every fault is injected at least once (a first round of all of them always runs whole), then
// they go on in turn while time is left; the last seconds have no fault. Asserted:
//   (a) the bound: what the three sidecars admitted on the hot key in any interval of length T
//       is at most capacity + rate * (T + lease_ttl). With the deny fallback nothing is admitted
//       without the database or a lease, so this holds for every admission, degraded or not;
//   (b) zero errors: every check of the well-behaved clients is answered Ok within the client's
//       timeout by a running sidecar; a fallback never admits; hostile frames are refused with
//       an ErrorResponse; every sidecar exits 0 after SIGTERM, having given its leases back,
//       with no sanitizer report on its stderr;
//   (c) recovery: after every fault, and at the end, each sidecar decides by the database again.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/client.h"
#include "schema/frame_codec.h"
#include "tests/testing/pg_server.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/raw_socket.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

using pg_test::Command;
using pg_test::ConnectToTestDatabase;
using pg_test::DropTable;
using pg_test::NowNs;
using pg_test::QueryValue;
using pg_test::StartReadySidecar;
using pg_test::StrictEnv;
using pg_test::WaitUntil;

constexpr size_t kSidecars = 3;
const std::string kTable = "soak_buckets";
constexpr char kAppPrefix[] = "soak_sidecar_";  // The sidecars' libpq application_name.

// The hot key: 300 tokens refilled over a second, checked some 40 times faster than that.
const std::string kHotKey = "soak-hot";
constexpr uint32_t kHotLimit = 300;
constexpr uint32_t kHotWindowMs = 1000;
constexpr size_t kHotThreadsPerSidecar = 2;
constexpr auto kHotPause = std::chrono::microseconds(300);  // Leaves the 2 cores some air.

// Many keys: each sidecar checks a random one of them every few ms; most need a lease fetch.
constexpr int kManyKeys = 2000;
constexpr uint32_t kManyLimit = 20;
constexpr uint32_t kManyWindowMs = 1000;
constexpr auto kManyPause = std::chrono::milliseconds(3);

constexpr int64_t kLeaseTtlMs = 200;
constexpr int kPgTimeoutMs = 250;
// The no-hang criterion: a check not answered this soon is an error. Well above the database
// timeout, after which the sidecar answers by the fallback.
constexpr int kClientTimeoutMs = 3000;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000 * kMs;
constexpr int64_t kWarmUpNs = 1 * kSec;
constexpr int64_t kFaultNs = 1500 * kMs;    // How long the table stays locked, the server frozen.
constexpr int64_t kStoppedNs = 1000 * kMs;  // How long the server stays stopped.
constexpr int64_t kBetweenFaultsNs = 1 * kSec;  // Healthy load after each fault's recovery.
constexpr int64_t kQuietEndNs = 3 * kSec;       // Load without faults at the end.
constexpr int64_t kFaultGuessNs = 4 * kSec;     // A fault, its recovery, then a healthy second.
constexpr int kRecoveryMs = 15000;              // Reconnect backoff is at most 5 s.

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

// RATELIMIT_SOAK_SECONDS: 20 when unset or empty; 0 (which fails the test) when not an integer
// from 1 to 86400.
int SoakSeconds() {
  const char* value = std::getenv("RATELIMIT_SOAK_SECONDS");
  if (value == nullptr || *value == '\0') return 20;
  char* end = nullptr;
  const long seconds = std::strtol(value, &end, 10);
  return *end == '\0' && seconds >= 1 && seconds <= 86400 ? static_cast<int>(seconds) : 0;
}

// ---------------------------------------------------------------------------------------------
// The bound, over every interval.

// When an admission happened: somewhere between the moment its client sent the check and the
// moment the answer arrived.
struct AdmitWindow {
  int64_t sent_ns;
  int64_t received_ns;
};

// The most admissions that certainly happened inside one closed interval of length `length_ns`,
// over every interval: max over t of the admissions sent at or after t and received by
// t + length. An admission counted there happened inside [t, t + length], so comparing this
// with the bound for `length` needs no slack for round trips; a slow answer only leaves its
// admission out of the shortest intervals. (t can be taken among the send times.)
size_t MostCertainlyWithinAnyInterval(std::vector<AdmitWindow> admits, int64_t length_ns) {
  const size_t n = admits.size();
  std::sort(admits.begin(), admits.end(),
            [](const AdmitWindow& a, const AdmitWindow& b) { return a.sent_ns < b.sent_ns; });
  std::vector<int64_t> received;
  for (const AdmitWindow& a : admits) received.push_back(a.received_ns);
  std::sort(received.begin(), received.end());
  auto rank = [&](int64_t t) {
    return static_cast<size_t>(std::lower_bound(received.begin(), received.end(), t) -
                               received.begin());
  };
  // A Fenwick tree over receive times, holding the admissions sent at or after the current t.
  std::vector<int64_t> tree(n + 1, 0);
  auto add = [&](size_t at, int64_t delta) {
    for (size_t i = at + 1; i <= n; i += i & (~i + 1)) tree[i] += delta;
  };
  auto count_below = [&](size_t end) {
    int64_t sum = 0;
    for (size_t i = end; i > 0; i -= i & (~i + 1)) sum += tree[i];
    return sum;
  };
  for (const AdmitWindow& a : admits) add(rank(a.received_ns), 1);
  int64_t best = 0;
  for (const AdmitWindow& a : admits) {
    const int64_t end = a.sent_ns + length_ns;
    const size_t received_by_end = static_cast<size_t>(
        std::upper_bound(received.begin(), received.end(), end) - received.begin());
    best = std::max(best, count_below(received_by_end));
    add(rank(a.received_ns), -1);
  }
  return static_cast<size_t>(best);
}

TEST(SoakBound, CountsOnlyAdmissionsWhoseWholeRoundTripFitsInTheInterval) {
  const std::vector<AdmitWindow> admits = {{0, 1}, {2, 3}, {4, 10}, {5, 6}, {7, 7}};
  EXPECT_EQ(MostCertainlyWithinAnyInterval(admits, 0), 1u);  // {7, 7}
  EXPECT_EQ(MostCertainlyWithinAnyInterval(admits, 1), 1u);
  EXPECT_EQ(MostCertainlyWithinAnyInterval(admits, 3), 2u);   // {0, 1}, {2, 3}
  EXPECT_EQ(MostCertainlyWithinAnyInterval(admits, 6), 3u);   // Not {4, 10}.
  EXPECT_EQ(MostCertainlyWithinAnyInterval(admits, 7), 4u);   // [0, 7]
  EXPECT_EQ(MostCertainlyWithinAnyInterval(admits, 10), 5u);  // [0, 10]
  EXPECT_EQ(MostCertainlyWithinAnyInterval({}, 10), 0u);
}

// ---------------------------------------------------------------------------------------------
// What the clients saw.

// Errors: checks of well-behaved clients without a valid answer, and misbehaviour towards
// hostile ones. The first few are kept with their time, to compare with the fault timeline.
class Errors {
 public:
  void Add(int64_t at_ns, const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (count_++ < 10) first_.push_back("+" + Seconds(at_ns) + " s " + what);
  }
  int64_t count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }
  std::string First() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string all;
    for (const std::string& line : first_) all += "\n  " + line;
    return all;
  }
  static std::string Seconds(int64_t ns) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.3f", static_cast<double>(ns) / 1e9);
    return text;
  }

 private:
  mutable std::mutex mu_;
  int64_t count_ = 0;
  std::vector<std::string> first_;
};

// One client thread's tally.
struct Tally {
  int64_t checks = 0;
  int64_t admitted = 0;
  int64_t fallbacks = 0;
  int64_t fallbacks_admitted = 0;      // An error under RATE_LIMIT_FALLBACK=deny.
  std::array<int64_t, 4> by_source{};  // Indexed by Source.
  int64_t slowest_ns = 0;
  int64_t paused_ns = 0;
  std::vector<AdmitWindow> admits;  // Hot key only.

  void Merge(const Tally& o) {
    checks += o.checks;
    admitted += o.admitted;
    fallbacks += o.fallbacks;
    fallbacks_admitted += o.fallbacks_admitted;
    for (size_t i = 0; i < by_source.size(); ++i) by_source[i] += o.by_source[i];
    slowest_ns = std::max(slowest_ns, o.slowest_ns);
    paused_ns += o.paused_ns;
    admits.insert(admits.end(), o.admits.begin(), o.admits.end());
  }
};

// A marker of a sanitizer report in `err`, or "" when there is none.
std::string SanitizerReport(const std::string& err) {
  for (const char* marker :
       {"AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:"}) {
    const size_t at = err.find(marker);
    if (at != std::string::npos) return err.substr(at, 300);
  }
  return "";
}

size_t CountOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::vector<uint8_t> Prefix(uint32_t length) {
  return {static_cast<uint8_t>(length), static_cast<uint8_t>(length >> 8),
          static_cast<uint8_t>(length >> 16), static_cast<uint8_t>(length >> 24)};
}

// ---------------------------------------------------------------------------------------------
// The soak.

enum class Fault { kLockTable, kKillBackends, kFreeze, kStopStart, kRestartSidecar };
constexpr std::array<Fault, 5> kRound = {Fault::kLockTable, Fault::kKillBackends, Fault::kFreeze,
                                         Fault::kStopStart, Fault::kRestartSidecar};
constexpr std::array<const char*, 5> kFaultNames = {
    "table locked", "backends killed", "server frozen", "server stopped", "sidecar restarted"};

enum Attack { kGarbage, kOversized, kHalfFrame, kBurstThenVanish, kFloodNeverRead, kAttacks };
constexpr std::array<const char*, kAttacks> kAttackNames = {
    "garbage frames", "oversized frames", "vanished mid-frame", "vanished after a burst",
    "floods never read"};

// One sidecar's place: its socket path outlives restarts. Clients hold `gate` shared while they
// talk to the sidecar; a restart sets `paused` (clients wait, explicitly, and count the time),
// then takes `gate` exclusively, so no check is in flight while the old process stops, and bumps
// `generation` once the new process is ready, so clients drop their connections to the old one.
struct Slot {
  std::string socket_path;
  Env env;
  std::atomic<bool> paused{false};
  std::atomic<int> generation{0};
  std::atomic<int64_t> answered{0};  // Checks of well-behaved clients answered Ok.
  std::shared_mutex gate;
  std::unique_ptr<SidecarProcess> process;  // Replaced only under `gate` held exclusively.
  std::vector<std::unique_ptr<SidecarProcess>> retired;  // The fault thread's only.
};

class Soak : public testing::Test {
 protected:
  // A failed soak leaves the server running and answering, so that with-postgres.sh stops it.
  void TearDown() override {
    if (!server_.ok()) return;
    const Status running = server_.EnsureRunning();
    EXPECT_TRUE(running.ok()) << running.ToString();
  }

  // Enters `slot` (its gate held shared) once it is not restarting; an empty lock when the soak
  // stops first. Time spent waiting is added to `*paused_ns`.
  std::shared_lock<std::shared_mutex> Enter(Slot& slot, int64_t* paused_ns) {
    const int64_t began = NowNs();
    while (!stop_) {
      if (!slot.paused) {
        std::shared_lock<std::shared_mutex> lock(slot.gate);
        if (!slot.paused) {
          *paused_ns += NowNs() - began;
          return lock;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return {};
  }

  // One answer from sidecar `s` to a well-behaved client.
  void Record(size_t s, int64_t sent, int64_t received, const Result<CheckResult>& r, bool hot,
              Tally& tally) {
    ++tally.checks;
    tally.slowest_ns = std::max(tally.slowest_ns, received - sent);
    auto error = [&](const std::string& what) {
      errors_.Add(sent - begin_,
                  "sidecar " + std::to_string(s) + (hot ? " hot key: " : " many keys: ") + what);
    };
    if (!r.ok()) {
      error(r.status().ToString() + " after " + std::to_string((received - sent) / kMs) + " ms");
      return;
    }
    if (r->status != CheckStatus::kOk) {
      error(std::string("status ") + CheckStatusName(r->status));
      return;
    }
    ++tally.by_source[static_cast<size_t>(r->source)];
    if (r->source == Source::kFallback) {
      ++tally.fallbacks;
      if (r->allowed) {
        ++tally.fallbacks_admitted;
        error("admitted by the deny fallback");
      }
    }
    if (!r->allowed) return;
    ++tally.admitted;
    if (hot) tally.admits.push_back(AdmitWindow{sent, received});
  }

  // Checks the hot key on sidecar `s` until the soak stops.
  void HotClient(size_t s, Tally& tally) {
    Slot& slot = slots_[s];
    std::unique_ptr<Client> client;
    int generation = -1;
    while (true) {
      std::shared_lock<std::shared_mutex> lock = Enter(slot, &tally.paused_ns);
      if (!lock.owns_lock()) return;
      if (generation != slot.generation) {  // A new process: no connection to the old one.
        generation = slot.generation;
        client = std::make_unique<Client>(
            ClientOptions{.socket_path = slot.socket_path, .timeout_ms = kClientTimeoutMs});
      }
      const int64_t sent = NowNs();
      Result<CheckResult> r =
          client->Check({.key = kHotKey, .limit = kHotLimit, .window_ms = kHotWindowMs});
      const int64_t received = NowNs();
      lock.unlock();
      if (r.ok() && r->status == CheckStatus::kOk) ++slot.answered;
      Record(s, sent, received, r, /*hot=*/true, tally);
      std::this_thread::sleep_for(kHotPause);
    }
  }

  // Checks random keys among kManyKeys on sidecar `s` until the soak stops.
  void ManyKeysClient(size_t s, Tally& tally) {
    Slot& slot = slots_[s];
    std::mt19937 rng(static_cast<uint32_t>(s + 1));
    std::uniform_int_distribution<int> pick(0, kManyKeys - 1);
    std::unique_ptr<Client> client;
    int generation = -1;
    while (true) {
      std::shared_lock<std::shared_mutex> lock = Enter(slot, &tally.paused_ns);
      if (!lock.owns_lock()) return;
      if (generation != slot.generation) {
        generation = slot.generation;
        client = std::make_unique<Client>(
            ClientOptions{.socket_path = slot.socket_path, .timeout_ms = kClientTimeoutMs});
      }
      const std::string key = "soak-many-" + std::to_string(pick(rng));
      const int64_t sent = NowNs();
      Result<CheckResult> r =
          client->Check({.key = key, .limit = kManyLimit, .window_ms = kManyWindowMs});
      const int64_t received = NowNs();
      lock.unlock();
      if (r.ok() && r->status == CheckStatus::kOk) ++slot.answered;
      Record(s, sent, received, r, /*hot=*/false, tally);
      std::this_thread::sleep_for(kManyPause);
    }
  }

  // A garbage or oversized frame must get an ErrorResponse (InvalidRequest), then the close.
  void ExpectRefused(RawSocket& raw, size_t s, const char* attack) {
    Result<std::vector<uint8_t>> frame = raw.ReadFrame(kClientTimeoutMs);
    const std::string who = "sidecar " + std::to_string(s) + " " + attack + ": ";
    if (!frame.ok()) {
      errors_.Add(NowNs() - begin_, who + "no ErrorResponse: " + frame.status().ToString());
      return;
    }
    Result<const wire::Frame*> root = verifier_.Verify(*frame);
    if (!root.ok() || (*root)->body_type() != wire::Body::ErrorResponse ||
        (*root)->body_as_ErrorResponse()->status() != wire::Status::InvalidRequest) {
      errors_.Add(NowNs() - begin_, who + "answered, but not an InvalidRequest ErrorResponse");
      return;
    }
    if (!raw.WaitForClose(kClientTimeoutMs)) {
      errors_.Add(NowNs() - begin_, who + "connection not closed");
    }
  }

  // Misbehaves towards every sidecar in turn, one attack every 20 ms, until the soak stops.
  void HostileClient() {
    std::mt19937 rng(7);
    int64_t paused_ns = 0;
    for (uint64_t n = 0;; ++n) {
      const size_t s = n % kSidecars;
      const auto attack = static_cast<Attack>((n / kSidecars) % kAttacks);
      {
        std::shared_lock<std::shared_mutex> lock = Enter(slots_[s], &paused_ns);
        if (!lock.owns_lock()) return;
        Result<RawSocket> raw = RawSocket::Connect(slots_[s].socket_path);
        if (!raw.ok()) {
          errors_.Add(NowNs() - begin_, "hostile client cannot connect to sidecar " +
                                            std::to_string(s) + ": " + raw.status().ToString());
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        // Bounded sends even against a sidecar that stopped reading.
        const timeval send_timeout{.tv_sec = kClientTimeoutMs / 1000, .tv_usec = 0};
        setsockopt(raw->fd(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
        switch (attack) {
          case kGarbage: {
            std::vector<uint8_t> bytes = Prefix(64);
            for (int i = 0; i < 64; ++i) bytes.push_back(static_cast<uint8_t>(rng()));
            if (raw->SendAll(bytes)) ExpectRefused(*raw, s, kAttackNames[attack]);
            break;
          }
          case kOversized:  // One byte over RATE_LIMIT_MAX_FRAME_BYTES (default 65536).
            if (raw->SendAll(Prefix(65537))) ExpectRefused(*raw, s, kAttackNames[attack]);
            break;
          case kHalfFrame: {
            std::span<const uint8_t> frame = encoder_.CheckRequest(1, {.key = "soak-half"});
            (void)raw->SendAll(frame.first(frame.size() / 2));
            break;
          }
          case kBurstThenVanish: {
            std::vector<uint8_t> burst;
            for (uint64_t id = 0; id < 2000; ++id) {
              std::span<const uint8_t> frame = encoder_.CheckRequest(id, {.key = "soak-burst"});
              burst.insert(burst.end(), frame.begin(), frame.end());
            }
            (void)raw->SendAll(burst);
            break;
          }
          case kFloodNeverRead: {
            std::thread flood = FloodWithoutReading(raw->fd(), "soak-flood");
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            shutdown(raw->fd(), SHUT_RDWR);  // Wakes the flood's blocked send.
            flood.join();
            break;
          }
          case kAttacks:
            break;
        }
        attacks_[attack].fetch_add(1);
      }  // Closed: the client vanishes.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // Adds a line to the timeline, stamped with `at_ns` (when it began).
  void Note(int64_t at_ns, const std::string& what) {
    std::lock_guard<std::mutex> lock(timeline_mu_);
    timeline_.push_back("+" + Errors::Seconds(at_ns - begin_) + " s " + what);
  }

  // Whether sidecar `s` decides a check of a new key by the database (from a lease) again.
  bool DecidesByDatabase(size_t s, const std::string& key) {
    Client client({.socket_path = slots_[s].socket_path, .timeout_ms = kClientTimeoutMs});
    Result<CheckResult> r = client.Check({.key = key});
    return r.ok() && r->status == CheckStatus::kOk && r->allowed && r->source == Source::kLease;
  }

  // Waits until every sidecar decides by the database again; returns how long that took (ms),
  // -1 with a failure recorded when one does not within kRecoveryMs.
  int64_t AwaitRecovery(const std::string& after) {
    const int64_t began = NowNs();
    bool all = true;
    for (size_t s = 0; s < kSidecars; ++s) {
      const std::string key = "soak-probe-" + std::to_string(probes_++);
      const int left_ms = static_cast<int>(kRecoveryMs - (NowNs() - began) / kMs);
      const bool decided = WaitUntil([&] { return DecidesByDatabase(s, key); }, left_ms);
      EXPECT_TRUE(decided) << "sidecar " << s << " does not decide by the database " << kRecoveryMs
                           << " ms after: " << after << "\n"
                           << (slots_[s].process ? slots_[s].process->Stderr() : "");
      all &= decided;
    }
    return all ? (NowNs() - began) / kMs : -1;
  }

  // SIGTERM, then the exit status and the log of a sidecar that stops: 0, leases given back, no
  // sanitizer report.
  void ExpectCleanExit(SidecarProcess& process, const std::string& who) {
    process.Signal(SIGTERM);
    const int code = process.WaitExit(10000);
    const std::string err = process.Stderr();
    EXPECT_EQ(code, 0) << who << " after SIGTERM:\n" << err;
    EXPECT_NE(err.find("\"msg\":\"leases given back\""), std::string::npos) << who << ":\n" << err;
    EXPECT_EQ(SanitizerReport(err), "") << who;
  }

  // Restarts sidecar `s` with SIGTERM while its clients pause and the other sidecars serve.
  void RestartSidecar(size_t s) {
    Slot& slot = slots_[s];
    slot.paused = true;
    std::unique_lock<std::shared_mutex> lock(slot.gate);  // No check in flight any more.
    const int64_t began = NowNs();
    auto others_answered = [&] {
      int64_t n = 0;
      for (size_t o = 0; o < kSidecars; ++o) n += o == s ? 0 : slots_[o].answered.load();
      return n;
    };
    const int64_t others_before = others_answered();
    ExpectCleanExit(*slot.process, "sidecar " + std::to_string(s) + " (restarted)");
    const int64_t exited = NowNs();
    slot.retired.push_back(std::move(slot.process));
    slot.process = StartReadySidecar(slot.env);
    if (slot.process == nullptr) {
      ADD_FAILURE() << "sidecar " << s << " did not start again";
      stop_ = true;  // Its clients cannot go on; the soak ends here.
      return;
    }
    ++slot.generation;
    slot.paused = false;
    Note(began, "sidecar " + std::to_string(s) + " restarted: exited 0 in " +
                    std::to_string((exited - began) / kMs) + " ms, new one ready " +
                    std::to_string((NowNs() - exited) / kMs) +
                    " ms later; meanwhile the others answered " +
                    std::to_string(others_answered() - others_before) + " checks");
  }

  // Injects one fault; false when the database server could not be brought back.
  bool Inject(Fault fault) {
    switch (fault) {
      case Fault::kLockTable: {
        PgConnPtr locker = ConnectToTestDatabase();
        if (PQstatus(locker.get()) != CONNECTION_OK) {
          ADD_FAILURE() << "lock: " << PQerrorMessage(locker.get());
          return true;
        }
        // The lock waits for transactions in flight; everything after it waits for the lock.
        EXPECT_EQ(Command(locker.get(), "SET lock_timeout = '5s'"), "");
        EXPECT_EQ(Command(locker.get(), "BEGIN"), "");
        const int64_t asked = NowNs();
        EXPECT_EQ(Command(locker.get(), "LOCK TABLE " + kTable + " IN ACCESS EXCLUSIVE MODE"), "");
        const int64_t locked = NowNs();
        std::this_thread::sleep_for(std::chrono::nanoseconds(kFaultNs));
        EXPECT_EQ(Command(locker.get(), "COMMIT"), "");
        Note(asked, "table locked (ACCESS EXCLUSIVE, granted after " +
                        std::to_string((locked - asked) / kMs) + " ms) for " +
                        std::to_string((NowNs() - locked) / kMs) + " ms");
        return true;
      }
      case Fault::kKillBackends: {
        PgConnPtr killer = ConnectToTestDatabase();
        const int64_t at = NowNs();
        const std::string killed =
            QueryValue(killer.get(),
                       "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                       "starts_with(application_name, $1)",
                       {kAppPrefix});
        EXPECT_NE(killed.rfind("ERROR", 0), 0u) << killed;
        EXPECT_NE(killed, "0") << "no sidecar session to kill";
        backends_killed_ += std::atoll(killed.c_str());
        Note(at, "backends killed: " + killed + " sidecar sessions (pg_terminate_backend)");
        return true;
      }
      case Fault::kFreeze: {
        const int64_t at = NowNs();
        const Status frozen = server_.Freeze();
        EXPECT_TRUE(frozen.ok()) << frozen.ToString();
        std::this_thread::sleep_for(std::chrono::nanoseconds(kFaultNs));
        const Status thawed = server_.Thaw();  // Even after a partial freeze.
        EXPECT_TRUE(thawed.ok()) << thawed.ToString();
        Note(at,
             "server frozen (SIGSTOP) for " + std::to_string(kFaultNs / kMs) + " ms, then SIGCONT");
        return thawed.ok();
      }
      case Fault::kStopStart: {
        const int64_t at = NowNs();
        const Status stopped = server_.StopImmediate();
        EXPECT_TRUE(stopped.ok()) << stopped.ToString();
        std::this_thread::sleep_for(std::chrono::nanoseconds(kStoppedNs));
        const int64_t starting = NowNs();
        Status started = server_.Start();
        if (!started.ok()) started = server_.Start();
        EXPECT_TRUE(started.ok()) << started.ToString();
        Note(at, "server stopped (pg_ctl -m immediate) for " + std::to_string(kStoppedNs / kMs) +
                     " ms; start took " + std::to_string((NowNs() - starting) / kMs) + " ms");
        return started.ok();
      }
      case Fault::kRestartSidecar:
        RestartSidecar(restarts_++ % kSidecars);
        return true;
    }
    return true;
  }

  // Every fault in turn, each followed by recovery and a healthy second, until `faults_end`; the
  // first round of all of them always runs whole. Returns when the last fault has recovered.
  void InjectFaults(int64_t faults_end) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(kWarmUpNs));
    for (size_t n = 0; !stop_; ++n) {
      if (n >= kRound.size() && NowNs() + kFaultGuessNs > faults_end) return;
      const Fault fault = kRound[n % kRound.size()];
      const char* name = kFaultNames[static_cast<size_t>(fault)];
      if (!Inject(fault)) {
        ADD_FAILURE() << "the database server did not come back after: " << name;
        return;
      }
      ++faults_[static_cast<size_t>(fault)];
      if (stop_) return;
      const int64_t recovering = NowNs();
      const int64_t recovered_ms = AwaitRecovery(name);
      Note(recovering, "  every sidecar decides by the database again after " +
                           std::to_string(recovered_ms) + " ms");
      std::this_thread::sleep_for(std::chrono::nanoseconds(kBetweenFaultsNs));
    }
  }

  std::array<Slot, kSidecars> slots_;
  PgServer server_ = PgServer::FromEnvironment();
  std::atomic<bool> stop_{false};
  int64_t begin_ = 0;
  Errors errors_;
  std::array<std::atomic<int64_t>, kAttacks> attacks_{};
  std::array<int64_t, kRound.size()> faults_{};
  int64_t backends_killed_ = 0;
  int probes_ = 0;
  size_t restarts_ = 0;
  std::mutex timeline_mu_;
  std::vector<std::string> timeline_;
  // The hostile thread's only.
  FrameEncoder encoder_;
  FrameVerifier verifier_;
};

TEST_F(Soak, ThreeSidecarsUnderLoadFaultsAndHostileClientsKeepTheBoundAnswerEveryCheckAndRecover) {
  REQUIRE_TEST_DATABASE();
  const int seconds = SoakSeconds();
  ASSERT_GT(seconds, 0) << "RATELIMIT_SOAK_SECONDS must be an integer from 1 to 86400, not \""
                        << std::getenv("RATELIMIT_SOAK_SECONDS") << "\"";
  ASSERT_TRUE(server_.ok()) << "no PostgreSQL server of this test's own: run it through "
                               "scripts/with-postgres.sh (ctest does)";
  DropTable(kTable);
  if (HasFatalFailure()) return;

  TempDir sockets;
  for (size_t s = 0; s < kSidecars; ++s) {
    Slot& slot = slots_[s];
    slot.socket_path = sockets.File("s" + std::to_string(s) + ".sock");
    slot.env = StrictEnv(kTable, kAppPrefix + std::to_string(s),
                         {{"RATE_LIMIT_MODE", "lease"},
                          {"RATE_LIMIT_FALLBACK", "deny"},
                          {"RATE_LIMIT_PG_TIMEOUT_MS", std::to_string(kPgTimeoutMs)},
                          {"RATE_LIMIT_LEASE_TTL_MS", std::to_string(kLeaseTtlMs)},
                          {"RATE_LIMIT_MAX_REQUESTS", std::to_string(kHotLimit)},
                          {"RATE_LIMIT_WINDOW_MS", std::to_string(kHotWindowMs)},
                          {"RATE_LIMIT_SOCKET", slot.socket_path}});
    slot.process = StartReadySidecar(slot.env);
    ASSERT_TRUE(slot.process) << "sidecar " << s;
  }

  begin_ = NowNs();
  const int64_t nominal_end = begin_ + seconds * kSec;
  std::vector<Tally> hot(kSidecars * kHotThreadsPerSidecar);
  std::vector<Tally> many(kSidecars);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < hot.size(); ++i) {
    threads.emplace_back([this, i, &hot] { HotClient(i % kSidecars, hot[i]); });
  }
  for (size_t s = 0; s < kSidecars; ++s) {
    threads.emplace_back([this, s, &many] { ManyKeysClient(s, many[s]); });
  }
  threads.emplace_back([this] { HostileClient(); });

  InjectFaults(nominal_end - kQuietEndNs);
  const int64_t faults_done = NowNs();
  const int64_t load_end = std::max(nominal_end, faults_done + kQuietEndNs);
  while (!stop_ && NowNs() < load_end) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop_ = true;
  for (std::thread& t : threads) t.join();
  const int64_t ran_ns = NowNs() - begin_;

  // (c) Coordination recovered: every sidecar decides by the database at the end.
  const int64_t load_stopped = NowNs();
  const int64_t final_recovery_ms = AwaitRecovery("the end of the soak");
  Note(load_stopped, "end: every sidecar decides by the database (probed in " +
                         std::to_string(final_recovery_ms) + " ms)");

  // (b) Every sidecar exits 0 after SIGTERM; none left a sanitizer report.
  for (size_t s = 0; s < kSidecars; ++s) {
    if (slots_[s].process) ExpectCleanExit(*slots_[s].process, "sidecar " + std::to_string(s));
    for (const auto& old : slots_[s].retired) {
      EXPECT_EQ(SanitizerReport(old->Stderr()), "") << "restarted sidecar " << s;
    }
  }
  size_t warn_lines = 0;
  size_t error_lines = 0;
  for (Slot& slot : slots_) {
    std::vector<SidecarProcess*> all;
    for (const auto& old : slot.retired) all.push_back(old.get());
    if (slot.process) all.push_back(slot.process.get());
    for (SidecarProcess* p : all) {
      const std::string err = p->Stderr();
      warn_lines += CountOf(err, "\"level\":\"warn\"");
      error_lines += CountOf(err, "\"level\":\"error\"");
    }
  }

  Tally hot_all;
  Tally many_all;
  for (const Tally& t : hot) hot_all.Merge(t);
  for (const Tally& t : many) many_all.Merge(t);

  // (a) The bound on the hot key, over every interval of each length.
  const double capacity = kHotLimit;
  const double per_ns = capacity / (static_cast<double>(kHotWindowMs) * kMs);
  const int64_t ttl_ns = kLeaseTtlMs * kMs;
  int64_t span_ns = 0;
  if (!hot_all.admits.empty()) {
    int64_t first = hot_all.admits.front().sent_ns;
    int64_t last = hot_all.admits.front().received_ns;
    for (const AdmitWindow& a : hot_all.admits) {
      first = std::min(first, a.sent_ns);
      last = std::max(last, a.received_ns);
    }
    span_ns = last - first;
  }
  std::printf("\n== soak summary (%d s asked, %.1f s of load)\n", seconds, Ms(ran_ns) / 1000);
  std::printf(
      "hot key %s: %u tokens per %u ms, lease ttl %lld ms; bound in any T: "
      "%u + rate * (T + %lld ms)\n",
      kHotKey.c_str(), kHotLimit, kHotWindowMs, static_cast<long long>(kLeaseTtlMs), kHotLimit,
      static_cast<long long>(kLeaseTtlMs));
  double worst_ratio = 0;
  int64_t worst_length = 0;
  for (int64_t length : {50 * kMs, 100 * kMs, 200 * kMs, 500 * kMs, 1 * kSec, 2 * kSec, 5 * kSec,
                         10 * kSec, 30 * kSec, 60 * kSec, span_ns}) {
    if (length > span_ns) continue;
    const size_t most = MostCertainlyWithinAnyInterval(hot_all.admits, length);
    const double bound = capacity + per_ns * static_cast<double>(length + ttl_ns);
    std::printf("  any %8.0f ms: at most %6zu admitted, bound %8.1f (%5.1f%%)\n", Ms(length), most,
                bound, 100 * static_cast<double>(most) / bound);
    EXPECT_LE(static_cast<double>(most), bound) << "hot key, intervals of " << Ms(length) << " ms";
    if (static_cast<double>(most) / bound > worst_ratio) {
      worst_ratio = static_cast<double>(most) / bound;
      worst_length = length;
    }
  }
  const int64_t checks = hot_all.checks + many_all.checks;
  Tally all = hot_all;
  all.Merge(many_all);
  std::printf(
      "checks: %lld (hot key %lld, many keys %lld); admitted %lld (hot key %lld: %.1f%% "
      "of capacity + rate * run); fallbacks %lld, of them admitted %lld; errors %lld\n",
      static_cast<long long>(checks), static_cast<long long>(hot_all.checks),
      static_cast<long long>(many_all.checks), static_cast<long long>(all.admitted),
      static_cast<long long>(hot_all.admitted),
      100 * static_cast<double>(hot_all.admitted) /
          (capacity + per_ns * static_cast<double>(span_ns)),
      static_cast<long long>(all.fallbacks), static_cast<long long>(all.fallbacks_admitted),
      static_cast<long long>(errors_.count()));
  std::printf("sources: lease %lld, database %lld, fallback %lld, memory %lld\n",
              static_cast<long long>(all.by_source[static_cast<size_t>(Source::kLease)]),
              static_cast<long long>(all.by_source[static_cast<size_t>(Source::kDatabase)]),
              static_cast<long long>(all.by_source[static_cast<size_t>(Source::kFallback)]),
              static_cast<long long>(all.by_source[static_cast<size_t>(Source::kMemory)]));
  std::printf(
      "slowest answer %.1f ms (client timeout %d ms); clients paused during restarts "
      "%.0f ms in all\n",
      Ms(all.slowest_ns), kClientTimeoutMs, Ms(all.paused_ns));
  std::printf("worst interval: %.0f ms at %.1f%% of its bound\n", Ms(worst_length),
              100 * worst_ratio);
  std::printf("faults:");
  for (size_t f = 0; f < kRound.size(); ++f) {
    std::printf("%s %lld %s", f ? "," : "", static_cast<long long>(faults_[f]), kFaultNames[f]);
  }
  std::printf(" (%lld sessions killed)\nhostile:", static_cast<long long>(backends_killed_));
  for (size_t a = 0; a < kAttacks; ++a) {
    std::printf("%s %lld %s", a ? "," : "", static_cast<long long>(attacks_[a].load()),
                kAttackNames[a]);
  }
  std::printf("\nsidecar logs: %zu warn lines, %zu error lines\ntimeline:\n", warn_lines,
              error_lines);
  {
    std::lock_guard<std::mutex> lock(timeline_mu_);
    for (const std::string& line : timeline_) std::printf("  %s\n", line.c_str());
  }
  std::fflush(stdout);
  RecordProperty("checks", std::to_string(checks));
  RecordProperty("hot_admitted", std::to_string(hot_all.admitted));
  RecordProperty("fallbacks", std::to_string(all.fallbacks));
  RecordProperty("worst_interval_percent_of_bound", std::to_string(100 * worst_ratio));

  EXPECT_EQ(errors_.count(), 0) << "first errors:" << errors_.First();
  for (size_t f = 0; f < kRound.size(); ++f) {
    EXPECT_GE(faults_[f], 1) << "never injected: " << kFaultNames[f];
  }
  for (size_t a = 0; a < kAttacks; ++a) EXPECT_GE(attacks_[a].load(), 1) << kAttackNames[a];
  // The soak proves something only if the hot key was contended and the faults degraded it.
  EXPECT_GT(hot_all.checks, 2 * hot_all.admitted) << "the hot key was never scarce";
  EXPECT_GT(all.fallbacks, 0) << "no fault ever reached the clients";
}

}  // namespace
}  // namespace ratelimit
