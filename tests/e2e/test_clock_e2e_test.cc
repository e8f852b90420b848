// End-to-end: RATE_LIMIT_TEST_CLOCK=manual, a real sidecar whose time moves only over HTTP.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "tests/testing/http_client.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

constexpr char kLoopback[] = "127.0.0.1";
// Real time let pass while the test clock stands: far more than the whole policy window below,
// so a sidecar on the real clock would have refilled and ended its windows meanwhile.
constexpr auto kRealPause = std::chrono::milliseconds(150);
constexpr Policy kPolicy{2, 100};

Result<HttpResponse> Advance(uint16_t port, const std::string& query, const char* method = "POST") {
  return HttpRequest(kLoopback, port, method, "/test/clock/advance" + query);
}

// Advances by `ms`, which must be accepted.
void AdvanceOk(uint16_t port, int64_t ms) {
  Result<HttpResponse> r = Advance(port, "?ms=" + std::to_string(ms));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->status, 200) << r->body;
}

class TestClockE2eTest : public testing::Test {
 public:
  void StartManual(const char* algorithm) {
    sidecar_ = StartWithAdmin({{"RATE_LIMIT_TEST_CLOCK", "manual"},
                               {"RATE_LIMIT_ALGORITHM", algorithm},
                               {"RATE_LIMIT_MAX_REQUESTS", std::to_string(kPolicy.limit)},
                               {"RATE_LIMIT_WINDOW_MS", std::to_string(kPolicy.window_ms)}});
    ASSERT_NE(sidecar_.port, 0);
    client_ =
        std::make_unique<Client>(ClientOptions{.socket_path = sidecar_.process->socket_path()});
  }

  // Checks the key "k" at the sidecar's default policy.
  CheckResult Check(uint32_t cost) {
    Result<CheckResult> r = client_->Check({.key = "k", .cost = cost});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r.ok() ? r->status : CheckStatus::kOk, CheckStatus::kOk);
    return r.ok() ? *r : CheckResult{};
  }

  AdminSidecar sidecar_;
  std::unique_ptr<Client> client_;
};

// One check after advancing the test clock, and its expected answer.
struct Step {
  int64_t advance_ms;
  uint32_t cost;
  bool allowed;
  uint32_t remaining;
  uint32_t retry_after_ms;
  uint32_t reset_after_ms;
};

// Runs `steps` in order, letting kRealPause of real time pass after the first.
void RunSteps(TestClockE2eTest& test, uint16_t port, const std::vector<Step>& steps) {
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& step = steps[i];
    SCOPED_TRACE("step " + std::to_string(i));
    ASSERT_NO_FATAL_FAILURE(AdvanceOk(port, step.advance_ms));
    const CheckResult r = test.Check(step.cost);
    EXPECT_EQ(r.allowed, step.allowed);
    EXPECT_EQ(r.remaining, step.remaining);
    EXPECT_EQ(r.retry_after_ms, step.retry_after_ms);
    EXPECT_EQ(r.reset_after_ms, step.reset_after_ms);
    if (i == 0) std::this_thread::sleep_for(kRealPause);
  }
}

// 2 tokens per 100 ms: one every 50 ms.
TEST_F(TestClockE2eTest, ATokenBucketRefillsOnlyWhenTheClockIsAdvanced) {
  ASSERT_NO_FATAL_FAILURE(StartManual("token_bucket"));
  RunSteps(*this, sidecar_.port,
           {
               {0, 2, true, 0, 0, 100},
               {0, 1, false, 0, 50, 100},  // After the real pause: nothing refilled.
               {49, 1, false, 0, 1, 51},
               {1, 1, true, 0, 0, 100},
               {0, 1, false, 0, 50, 100},  // An advance of 0 moves nothing.
           });
}

TEST_F(TestClockE2eTest, AFixedWindowEndsOnlyWhenTheClockIsAdvanced) {
  ASSERT_NO_FATAL_FAILURE(StartManual("fixed_window"));
  RunSteps(*this, sidecar_.port,
           {
               {0, 2, true, 0, 0, 100},
               {0, 1, false, 0, 100, 100},  // After the real pause: the window still runs.
               {99, 1, false, 0, 1, 1},
               {1, 1, true, 1, 0, 100},              // The next window.
               {2'147'483'648, 2, true, 0, 0, 100},  // Many windows later, a fresh one.
           });
}

TEST_F(TestClockE2eTest, TheEndpointRefusesWhatIsNotAnAdvanceAndSaysWhy) {
  ASSERT_NO_FATAL_FAILURE(StartManual("token_bucket"));
  EXPECT_TRUE(Check(2).allowed);  // Empty: a clock moved by 1 ms or more would show in reset.
  for (const char* query : {"", "?ms=", "?ms=abc", "?ms=-1", "?ms=+1", "?ms=1.5", "?ms=2147483649",
                            "?ms=1e3", "?ms=99999999999999999999999", "?other=1"}) {
    SCOPED_TRACE(query);
    Result<HttpResponse> r = Advance(sidecar_.port, query);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(r->body,
              "ms must be an integer from 0 to 2147483648 (milliseconds), as in POST "
              "/test/clock/advance?ms=1000\n");
  }
  Result<HttpResponse> get = Advance(sidecar_.port, "?ms=1", "GET");
  ASSERT_TRUE(get.ok()) << get.status().ToString();
  EXPECT_EQ(get->status, 405);
  EXPECT_EQ(get->Header("Allow"), "POST");
  // None of those moved the clock.
  const CheckResult after = Check(0);
  EXPECT_EQ(after.remaining, 0u);
  EXPECT_EQ(after.reset_after_ms, 100u);

  const std::string log = sidecar_.process->Stderr();
  EXPECT_NE(log.find("\"level\":\"warn\",\"msg\":\"RATE_LIMIT_TEST_CLOCK=manual"),
            std::string::npos)
      << log;
}

TEST(TestClockOffE2eTest, WithoutTheVariableThereIsNoSuchEndpointAndTimeIsReal) {
  AdminSidecar sidecar = StartWithAdmin({{"RATE_LIMIT_MAX_REQUESTS", "1"},
                                         {"RATE_LIMIT_WINDOW_MS", "100"},
                                         {"RATE_LIMIT_ALGORITHM", "fixed_window"}});
  ASSERT_NE(sidecar.port, 0);
  for (const char* method : {"POST", "GET"}) {
    Result<HttpResponse> r = Advance(sidecar.port, "?ms=1000", method);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 404) << method;
  }
  Client client({.socket_path = sidecar.process->socket_path()});
  Result<CheckResult> first = client.Check({.key = "k"});
  ASSERT_TRUE(first.ok() && first->allowed);
  std::this_thread::sleep_for(kRealPause);
  Result<CheckResult> later = client.Check({.key = "k"});
  ASSERT_TRUE(later.ok());
  EXPECT_TRUE(later->allowed) << "the real clock did not end the window";
  EXPECT_EQ(sidecar.process->Stderr().find("RATE_LIMIT_TEST_CLOCK=manual"), std::string::npos);
}

TEST(TestClockOffE2eTest, TheManualClockWithThePostgresStoreStopsStartUpWithExit2) {
  TempDir dir;
  ProcessResult result = RunProcess({kSidecarBin}, {{"RATE_LIMIT_SOCKET", dir.File("rl.sock")},
                                                    {"RATE_LIMIT_STORE", "postgres"},
                                                    {"RATE_LIMIT_TEST_CLOCK", "manual"}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("RATE_LIMIT_TEST_CLOCK=\\\"manual\\\" is invalid: expected real (or "
                            "unset) with RATE_LIMIT_STORE=postgres"),
            std::string::npos)
      << result.err;
}

}  // namespace
}  // namespace ratelimit
