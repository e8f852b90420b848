// End-to-end: ratelimit-cli against a real sidecar: output, JSON and exit codes.
#include "gtest/gtest.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

class CliE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(
        {{"RATE_LIMIT_MAX_REQUESTS", "2"}, {"RATE_LIMIT_WINDOW_MS", "600000000"}});
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    sidecar_ = std::move(*started);
  }

  ProcessResult Cli(std::vector<std::string> args, Env env = {}) {
    args.insert(args.begin(), kCliBin);
    if (!env.count("RATE_LIMIT_SOCKET")) env["RATE_LIMIT_SOCKET"] = sidecar_->socket_path();
    return RunProcess(args, env);
  }

  std::unique_ptr<SidecarProcess> sidecar_;
};

TEST_F(CliE2E, CheckExitsZeroWhenAllowedAndOneWhenDenied) {
  ProcessResult first = Cli({"check", "user-1"});
  EXPECT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(first.out.rfind("allowed key=\"user-1\" status=ok limit=2 remaining=1", 0), 0)
      << first.out;
  EXPECT_EQ(Cli({"check", "user-1"}).exit_code, 0);
  ProcessResult denied = Cli({"check", "user-1"});
  EXPECT_EQ(denied.exit_code, 1);
  EXPECT_EQ(denied.out.rfind("denied key=\"user-1\"", 0), 0) << denied.out;
}

TEST_F(CliE2E, JsonOutputCarriesEveryField) {
  ProcessResult r =
      Cli({"check", "json-key", "--json", "--cost", "3", "--limit", "10", "--window-ms", "1000"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"allowed\":true,\"status\":\"ok\",\"limit\":10,\"remaining\":7,"
            "\"retry_after_ms\":0,\"reset_after_ms\":300,\"source\":\"memory\"}\n");
}

TEST_F(CliE2E, CostAboveTheLimitIsADenialWithItsStatus) {
  ProcessResult r = Cli({"check", "k", "--cost", "3", "--json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("\"status\":\"cost_exceeds_limit\""), std::string::npos) << r.out;
}

TEST_F(CliE2E, SocketFlagOverridesTheEnvironment) {
  ProcessResult r =
      Cli({"--socket", sidecar_->socket_path(), "ping"}, {{"RATE_LIMIT_SOCKET", "/nonexistent"}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "pong protocol_version=1 store=memory ready=true\n");
}

TEST_F(CliE2E, ErrorsExitTwoWithAMessage) {
  struct Case {
    std::vector<std::string> args;
    std::string in_stderr;
  };
  const std::vector<Case> cases = {
      {{"--socket", "/tmp/no-such-sidecar.sock", "ping"}, "unavailable"},
      {{"check"}, "check takes exactly one KEY"},
      {{"check", "k", "--cost", "-1"}, "--cost must be"},
      {{"check", "k", "--limit", "5"}, ""},  // InvalidRequest from the sidecar: no decision.
      {{"check", ""}, ""},
      {{"frobnicate"}, "unknown command"},
      {{"check", "k", "--bogus", "1"}, "unknown option"},
      {{}, "missing command"},
  };
  for (const Case& c : cases) {
    std::string joined;
    for (const std::string& a : c.args) joined += a + " ";
    SCOPED_TRACE(joined);
    ProcessResult r = Cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find(c.in_stderr), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace ratelimit
