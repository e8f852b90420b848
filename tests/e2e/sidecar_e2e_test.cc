// End-to-end: the real sidecar answers checks over its socket with the documented semantics.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "schema/frame_codec.h"
#include "tests/testing/raw_socket.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

// A window so long that nothing refills while a test runs (one token per 10 minutes).
constexpr uint32_t kSlowWindowMs = 600'000'000;

std::unique_ptr<SidecarProcess> StartSidecar(Env env = {}) {
  Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(std::move(env));
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  return started.ok() ? std::move(*started) : nullptr;
}

TEST(SidecarE2E, BurstAdmitsExactlyTheDefaultLimit) {
  auto sidecar = StartSidecar(
      {{"RATE_LIMIT_MAX_REQUESTS", "50"}, {"RATE_LIMIT_WINDOW_MS", std::to_string(kSlowWindowMs)}});
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path()});
  int allowed = 0;
  for (int i = 0; i < 80; ++i) {
    Result<CheckResult> r = client.Check({.key = "burst"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, CheckStatus::kOk);
    EXPECT_EQ(r->source, Source::kMemory);
    EXPECT_EQ(r->limit, 50u);
    if (r->allowed) {
      ++allowed;
      EXPECT_EQ(r->remaining, 50u - allowed);
      EXPECT_EQ(r->retry_after_ms, 0u);
    } else {
      EXPECT_EQ(r->remaining, 0u);
      EXPECT_GT(r->retry_after_ms, 0u);
    }
  }
  EXPECT_EQ(allowed, 50);
}

TEST(SidecarE2E, PipelinedBurstAdmitsExactlyTheLimitAndEchoesEveryId) {
  auto sidecar = StartSidecar();
  ASSERT_TRUE(sidecar);
  Result<std::unique_ptr<Pipeline>> pipeline =
      Pipeline::Connect({.socket_path = sidecar->socket_path()});
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().ToString();
  // Ids the client picks freely: scattered, not sequential. Pings interleaved with checks.
  std::mt19937_64 rng(42);
  std::set<uint64_t> check_ids;
  std::set<uint64_t> ping_ids;
  for (int i = 0; i < 5000; ++i) {
    const uint64_t id = rng();
    if (i % 100 == 0) {
      (*pipeline)->QueuePing(id);
      ping_ids.insert(id);
    } else {
      ASSERT_TRUE(
          (*pipeline)
              ->QueueCheck(id, {.key = "pipelined", .limit = 1000, .window_ms = kSlowWindowMs})
              .ok());
      check_ids.insert(id);
    }
  }
  ASSERT_TRUE((*pipeline)->Flush().ok());
  int allowed = 0;
  std::set<uint64_t> seen_checks;
  std::set<uint64_t> seen_pings;
  for (size_t i = 0; i < check_ids.size() + ping_ids.size(); ++i) {
    Result<Reply> reply = (*pipeline)->Receive();
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    if (reply->kind == Reply::Kind::kPing) {
      seen_pings.insert(reply->id);
      EXPECT_EQ(reply->ping.store, "memory");
    } else {
      ASSERT_EQ(reply->kind, Reply::Kind::kCheck);
      seen_checks.insert(reply->id);
      allowed += reply->check.allowed ? 1 : 0;
    }
  }
  EXPECT_EQ(seen_checks, check_ids);
  EXPECT_EQ(seen_pings, ping_ids);
  EXPECT_EQ(allowed, 1000);
}

TEST(SidecarE2E, RequestPolicyOverridesTheDefaultPerKey) {
  auto sidecar = StartSidecar({{"RATE_LIMIT_MAX_REQUESTS", "100"}});
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path()});
  for (int i = 0; i < 3; ++i) {
    Result<CheckResult> r = client.Check({.key = "small", .limit = 3, .window_ms = kSlowWindowMs});
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->allowed);
    EXPECT_EQ(r->limit, 3u);
    EXPECT_EQ(r->remaining, 2u - i);
  }
  Result<CheckResult> denied =
      client.Check({.key = "small", .limit = 3, .window_ms = kSlowWindowMs});
  ASSERT_TRUE(denied.ok());
  EXPECT_FALSE(denied->allowed);
  // Another key with the default policy is untouched.
  Result<CheckResult> other = client.Check({.key = "other"});
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->allowed);
  EXPECT_EQ(other->limit, 100u);
  EXPECT_EQ(other->remaining, 99u);
}

TEST(SidecarE2E, CostZeroReadsAndCostAboveLimitIsRefused) {
  auto sidecar = StartSidecar({{"RATE_LIMIT_MAX_REQUESTS", "10"}});
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path()});
  ASSERT_TRUE(client.Check({.key = "k", .cost = 4}).ok());
  Result<CheckResult> read = client.Check({.key = "k", .cost = 0});
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(read->allowed);
  EXPECT_EQ(read->remaining, 6u);
  Result<CheckResult> too_big = client.Check({.key = "k", .cost = 11});
  ASSERT_TRUE(too_big.ok());
  EXPECT_FALSE(too_big->allowed);
  EXPECT_EQ(too_big->status, CheckStatus::kCostExceedsLimit);
  Result<CheckResult> after = client.Check({.key = "k", .cost = 0});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->remaining, 6u);  // The refusal took nothing.
}

TEST(SidecarE2E, InvalidRequestsGetInvalidRequestAndTheConnectionStaysOpen) {
  auto sidecar = StartSidecar();
  ASSERT_TRUE(sidecar);
  Result<std::unique_ptr<Pipeline>> pipeline =
      Pipeline::Connect({.socket_path = sidecar->socket_path()});
  ASSERT_TRUE(pipeline.ok());
  const std::string long_key(513, 'k');
  const std::vector<CheckArgs> invalid = {
      {.key = ""},
      {.key = long_key},
      {.key = "k", .limit = 5},
      {.key = "k", .window_ms = 5},
  };
  uint64_t id = 1;
  for (const CheckArgs& args : invalid) ASSERT_TRUE((*pipeline)->QueueCheck(id++, args).ok());
  ASSERT_TRUE((*pipeline)->QueueCheck(id, {.key = "valid"}).ok());
  ASSERT_TRUE((*pipeline)->Flush().ok());
  for (uint64_t expected = 1; expected <= id; ++expected) {
    Result<Reply> reply = (*pipeline)->Receive();
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_EQ(reply->kind, Reply::Kind::kCheck);
    EXPECT_EQ(reply->id, expected);
    if (expected < id) {
      EXPECT_EQ(reply->check.status, CheckStatus::kInvalidRequest) << "request " << expected;
      EXPECT_FALSE(reply->check.allowed);
    } else {
      EXPECT_EQ(reply->check.status, CheckStatus::kOk);
      EXPECT_TRUE(reply->check.allowed);
    }
  }
}

TEST(SidecarE2E, FixedWindowAlgorithmDeniesWithTheRestOfTheWindow) {
  auto sidecar = StartSidecar({{"RATE_LIMIT_ALGORITHM", "fixed_window"},
                               {"RATE_LIMIT_MAX_REQUESTS", "2"},
                               {"RATE_LIMIT_WINDOW_MS", "600000"}});
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path()});
  EXPECT_TRUE(client.Check({.key = "fw"})->allowed);
  EXPECT_TRUE(client.Check({.key = "fw"})->allowed);
  Result<CheckResult> denied = client.Check({.key = "fw"});
  ASSERT_TRUE(denied.ok());
  EXPECT_FALSE(denied->allowed);
  EXPECT_LE(denied->retry_after_ms, 600000u);
  EXPECT_GT(denied->retry_after_ms, 590000u);  // The window began moments ago.
}

TEST(SidecarE2E, PingReportsProtocolStoreAndReadiness) {
  auto sidecar = StartSidecar();
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path()});
  Result<PingResult> ping = client.Ping();
  ASSERT_TRUE(ping.ok());
  EXPECT_EQ(ping->protocol_version, 1);
  EXPECT_EQ(ping->store, "memory");
  EXPECT_TRUE(ping->ready);
}

TEST(SidecarE2E, SocketFileGetsTheConfiguredMode) {
  for (const auto& [value, mode] :
       std::vector<std::pair<std::string, mode_t>>{{"", 0660}, {"0600", 0600}, {"666", 0666}}) {
    SCOPED_TRACE("RATE_LIMIT_SOCKET_MODE=" + value);
    auto sidecar = StartSidecar({{"RATE_LIMIT_SOCKET_MODE", value}});
    ASSERT_TRUE(sidecar);
    struct stat st {};
    ASSERT_EQ(stat(sidecar->socket_path().c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, mode);
  }
}

TEST(SidecarE2E, ConnectionsPastTheCapAreRefusedCleanly) {
  auto sidecar = StartSidecar({{"RATE_LIMIT_MAX_CONNECTIONS", "2"}});
  ASSERT_TRUE(sidecar);
  const ClientOptions options{.socket_path = sidecar->socket_path()};
  // The start-up ping's connection may still count for a moment: retry until both are served.
  auto open_served = [&options]() -> std::unique_ptr<Pipeline> {
    for (int attempt = 0; attempt < 100; ++attempt) {
      Result<std::unique_ptr<Pipeline>> p = Pipeline::Connect(options);
      if (p.ok()) {
        (*p)->QueuePing(1);
        Result<Reply> reply =
            (*p)->Flush().ok() ? (*p)->Receive() : Result<Reply>(Status::Closed("flush"));
        if (reply.ok() && reply->kind == Reply::Kind::kPing) return std::move(*p);
      }
      usleep(10000);
    }
    return nullptr;
  };
  std::unique_ptr<Pipeline> first = open_served();
  std::unique_ptr<Pipeline> second = open_served();
  ASSERT_TRUE(first && second);
  Client third(options);
  Result<PingResult> refused = third.Ping();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kUnavailable);
  EXPECT_NE(refused.status().message().find("too many connections"), std::string::npos);
  // On the wire: one ErrorResponse saying Overloaded, then the close, before any request.
  Result<RawSocket> raw = RawSocket::Connect(options.socket_path);
  ASSERT_TRUE(raw.ok());
  Result<std::vector<uint8_t>> error = raw->ReadFrame();
  ASSERT_TRUE(error.ok()) << error.status().ToString();
  FrameVerifier verifier;
  Result<const wire::Frame*> root = verifier.Verify(*error);
  ASSERT_TRUE(root.ok());
  ASSERT_EQ((*root)->body_type(), wire::Body::ErrorResponse);
  EXPECT_EQ((*root)->body_as_ErrorResponse()->status(), wire::Status::Overloaded);
  EXPECT_TRUE(raw->WaitForClose());
  // The connections inside the cap never noticed.
  for (Pipeline* served : {first.get(), second.get()}) {
    ASSERT_TRUE(served->QueueCheck(2, {.key = "inside-the-cap"}).ok());
    ASSERT_TRUE(served->Flush().ok());
    Result<Reply> reply = served->Receive();
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    EXPECT_EQ(reply->kind, Reply::Kind::kCheck);
    EXPECT_TRUE(reply->check.allowed);
  }
  EXPECT_NE(sidecar->Stderr().find("connection refused: too many connections"), std::string::npos);

  first.reset();  // Closing one frees a place.
  bool served = false;
  for (int attempt = 0; attempt < 100 && !served; ++attempt) {
    served = Client(options).Ping().ok();
    if (!served) usleep(10000);
  }
  EXPECT_TRUE(served);
}

// Sets this process's RLIMIT_NOFILE for the sidecars it starts (they inherit it), and puts the
// old limits back on destruction. A lowered hard limit comes back only with CAP_SYS_RESOURCE;
// without it, it stays lowered for the rest of this process, which is still enough for every
// test in this file.
class ScopedFdLimit {
 public:
  ScopedFdLimit(rlim_t soft, rlim_t hard) {
    ok_ = getrlimit(RLIMIT_NOFILE, &saved_) == 0 && hard <= saved_.rlim_max;
    const rlimit lowered{soft, hard};
    ok_ = ok_ && setrlimit(RLIMIT_NOFILE, &lowered) == 0;
  }
  ~ScopedFdLimit() {
    if (setrlimit(RLIMIT_NOFILE, &saved_) != 0) {
      rlimit soft_only{};
      getrlimit(RLIMIT_NOFILE, &soft_only);
      soft_only.rlim_cur = std::min(saved_.rlim_cur, soft_only.rlim_max);
      setrlimit(RLIMIT_NOFILE, &soft_only);
    }
  }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

// The soft and hard "Max open files" of a running process, from /proc/PID/limits.
std::pair<std::string, std::string> FdLimitsOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream fields(line.substr(std::string("Max open files").size()));
    std::pair<std::string, std::string> limits;
    fields >> limits.first >> limits.second;
    return limits;
  }
  return {};
}

TEST(SidecarE2E, StartUpRaisesTheOpenFileLimitToTheHardLimit) {
  std::unique_ptr<SidecarProcess> sidecar;
  {
    ScopedFdLimit limit(256, 2048);
    ASSERT_TRUE(limit.ok()) << "cannot set RLIMIT_NOFILE to 256/2048 here";
    sidecar = StartSidecar();
  }
  ASSERT_TRUE(sidecar);
  EXPECT_EQ(FdLimitsOf(sidecar->pid()), std::make_pair(std::string("2048"), std::string("2048")));
  const std::string err = sidecar->Stderr();
  EXPECT_NE(err.find(R"("msg":"raised the open file limit","old_soft":256,"new_soft":2048,)"
                     R"("hard":2048})"),
            std::string::npos)
      << err;
  // The default cap of 1024 connections fits in 2048 descriptors: no warning.
  EXPECT_EQ(err.find("does not fit"), std::string::npos) << err;
}

TEST(SidecarE2E, AConnectionCapThatCannotFitTheOpenFileLimitIsWarnedAbout) {
  std::unique_ptr<SidecarProcess> sidecar;
  {
    ScopedFdLimit limit(256, 2048);
    ASSERT_TRUE(limit.ok()) << "cannot set RLIMIT_NOFILE to 256/2048 here";
    sidecar = StartSidecar({{"RATE_LIMIT_MAX_CONNECTIONS", "2048"}});
  }
  ASSERT_TRUE(sidecar);
  const std::string err = sidecar->Stderr();
  const size_t warning = err.find(
      R"("level":"warn","msg":"RATE_LIMIT_MAX_CONNECTIONS does not fit in the open file limit)");
  ASSERT_NE(warning, std::string::npos) << err;
  const std::string line = err.substr(warning, err.find('\n', warning) - warning);
  EXPECT_NE(line.find(R"("max_connections":2048,)"), std::string::npos) << line;
  EXPECT_NE(line.find(R"("open_file_limit":2048})"), std::string::npos) << line;
  // A warning, not a refusal to start: the sidecar serves.
  EXPECT_TRUE(Client({.socket_path = sidecar->socket_path()}).Check({.key = "k"}).ok());
}

TEST(SidecarE2E, OnlyAllowedUidsAreServed) {
  const std::string me = std::to_string(getuid());
  const std::string other = std::to_string(getuid() + 4242);
  Result<std::unique_ptr<SidecarProcess>> refusing =
      SidecarProcess::Start({{"RATE_LIMIT_ALLOWED_UIDS", other}}, /*wait_for_ping=*/false);
  ASSERT_TRUE(refusing.ok()) << refusing.status().ToString();
  Status refusal;
  for (int attempt = 0; attempt < 500; ++attempt) {  // Until it listens: bind precedes listen.
    refusal = Client({.socket_path = (*refusing)->socket_path()}).Ping().status();
    if (refusal.code() != Status::Code::kUnavailable) break;
    usleep(10000);
  }
  EXPECT_EQ(refusal.code(), Status::Code::kProtocolError) << refusal.ToString();
  EXPECT_NE(refusal.message().find("RATE_LIMIT_ALLOWED_UIDS"), std::string::npos);

  auto allowing = StartSidecar({{"RATE_LIMIT_ALLOWED_UIDS", other + "," + me}});
  ASSERT_TRUE(allowing);
  EXPECT_TRUE(Client({.socket_path = allowing->socket_path()}).Check({.key = "k"}).ok());
}

TEST(SidecarE2E, BadEnvironmentStopsStartUpWithOneClearLine) {
  struct Case {
    std::string variable;
    std::string value;
  };
  const std::vector<Case> cases = {
      {"RATE_LIMIT_WINDOW_MS", "abc"},
      {"RATE_LIMIT_MAX_REQUESTS", "0"},
      {"RATE_LIMIT_MAX_REQUESTS", "4294967296"},
      {"RATE_LIMIT_ALGORITHM", "leaky_bucket"},
      {"RATE_LIMIT_STORE", "redis"},
      {"RATE_LIMIT_SOCKET_MODE", "0999"},
      {"RATE_LIMIT_MAX_FRAME_BYTES", "12"},
      {"RATE_LIMIT_SOCKET", "/tmp/" + std::string(110, 's')},
      {"RATE_LIMIT_LOG_LEVEL", "loud"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.variable + "=" + c.value);
    TempDir dir;
    Env env = {{"RATE_LIMIT_SOCKET", dir.File("rl.sock")}};
    env[c.variable] = c.value;
    ProcessResult result = RunProcess({kSidecarBin}, env);
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
    EXPECT_NE(result.err.find(c.variable), std::string::npos) << result.err;
    EXPECT_NE(result.err.find(c.value.substr(0, 20)), std::string::npos) << result.err;
    EXPECT_NE(result.err.find("expected"), std::string::npos) << result.err;
    EXPECT_EQ(access(dir.File("rl.sock").c_str(), F_OK), -1);  // Nothing was created.
  }
}

TEST(SidecarE2E, AStaleSocketIsReplacedButOtherFilesAreNeverDeleted) {
  TempDir dir;
  const std::string path = dir.File("rl.sock");
  {
    // A sidecar killed with SIGKILL leaves its socket file behind.
    auto crashed = StartSidecar({{"RATE_LIMIT_SOCKET", path}});
    ASSERT_TRUE(crashed);
    crashed->Signal(SIGKILL);
    crashed->WaitExit();
  }
  ASSERT_EQ(access(path.c_str(), F_OK), 0);
  auto replacement = StartSidecar({{"RATE_LIMIT_SOCKET", path}});
  ASSERT_TRUE(replacement);

  // A second sidecar on a live socket refuses to start and leaves the first one serving.
  ProcessResult second = RunProcess({kSidecarBin}, {{"RATE_LIMIT_SOCKET", path}});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("already listening"), std::string::npos) << second.err;
  EXPECT_TRUE(Client({.socket_path = path}).Ping().ok());

  // A regular file at the path is refused and kept intact.
  const std::string file = dir.File("not-a-socket");
  FILE* f = fopen(file.c_str(), "w");
  fputs("precious", f);
  fclose(f);
  ProcessResult refused = RunProcess({kSidecarBin}, {{"RATE_LIMIT_SOCKET", file}});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("not a socket"), std::string::npos) << refused.err;
  EXPECT_EQ(ReadFile(file), "precious");
}

}  // namespace
}  // namespace ratelimit
