// End-to-end: a sidecar whose database cannot be reached answers by its fallback policy.
#include <string>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

// A window so long that nothing refills while a test runs.
constexpr uint32_t kSlowWindowMs = 600'000'000;

// A sidecar on the postgres store whose database is never there: nothing listens on port 1.
std::unique_ptr<SidecarProcess> StartWithoutDatabase(const std::string& mode,
                                                     const std::string& fallback,
                                                     const std::string& replicas = "1") {
  Result<std::unique_ptr<SidecarProcess>> started =
      SidecarProcess::Start({{"RATE_LIMIT_STORE", "postgres"},
                             {"RATE_LIMIT_MODE", mode},
                             {"RATE_LIMIT_FALLBACK", fallback},
                             {"RATE_LIMIT_EXPECTED_REPLICAS", replicas},
                             {"RATE_LIMIT_MAX_REQUESTS", "100"},
                             {"RATE_LIMIT_WINDOW_MS", std::to_string(kSlowWindowMs)},
                             {"DATABASE_URL", "host=127.0.0.1 port=1 connect_timeout=1"}});
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  return started.ok() ? std::move(*started) : nullptr;
}

struct Tally {
  int allowed = 0;
  int denied = 0;
  int other = 0;  // Not an ok answer from the fallback.
};

Tally CheckMany(Client& client, const std::string& key, int n) {
  Tally t;
  for (int i = 0; i < n; ++i) {
    Result<CheckResult> r = client.Check({.key = key});
    if (!r.ok() || r->status != CheckStatus::kOk || r->source != Source::kFallback) {
      ++t.other;
    } else {
      ++(r->allowed ? t.allowed : t.denied);
    }
  }
  return t;
}

class FallbackE2E : public testing::TestWithParam<std::string> {};  // The mode.

TEST_P(FallbackE2E, LocalAdmitsThisPodsShareOfEachKeyAndSaysNotReady) {
  auto sidecar = StartWithoutDatabase(GetParam(), "local", "4");
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 2000});
  Result<PingResult> ping = client.Ping();
  ASSERT_TRUE(ping.ok()) << ping.status().ToString();
  EXPECT_FALSE(ping->ready);
  for (const std::string key : {"a", "b"}) {
    const Tally t = CheckMany(client, key, 60);
    EXPECT_EQ(t.other, 0) << sidecar->Stderr();
    EXPECT_EQ(t.allowed, 25) << "100 shared by 4 pods";
    EXPECT_EQ(t.denied, 35);
  }
  EXPECT_EQ(sidecar->WaitExit(0), -1) << "the sidecar exited: " << sidecar->Stderr();
}

TEST_P(FallbackE2E, AllowAndDenyAnswerEveryCheckTheirWay) {
  for (const std::string policy : {"allow", "deny"}) {
    SCOPED_TRACE(policy);
    auto sidecar = StartWithoutDatabase(GetParam(), policy);
    ASSERT_TRUE(sidecar);
    Client client({.socket_path = sidecar->socket_path(), .timeout_ms = 2000});
    const Tally t = CheckMany(client, "k", 150);
    EXPECT_EQ(t.other, 0) << sidecar->Stderr();
    EXPECT_EQ(t.allowed, policy == "allow" ? 150 : 0);
    EXPECT_EQ(t.denied, policy == "allow" ? 0 : 150);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, FallbackE2E, testing::Values("lease", "strict"));

}  // namespace
}  // namespace ratelimit
