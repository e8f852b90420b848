// ratelimit-bench --hot-limit against a real sidecar: the hot key's tally in the summary and JSON.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/key_flood.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

// One bench run of 1 s beside a load on 1000 other keys; its JSON line, with a failure recorded
// when it did not exit 0 or printed no JSON.
std::string RunWithHotKey(const std::string& socket, const std::vector<std::string>& hot) {
  std::vector<std::string> argv = {kBenchBin, "--socket", socket, "--connections", "2", "--depth",
                                   "8",       "--keys",   "1000", "--duration-s",  "1", "--json"};
  argv.insert(argv.end(), hot.begin(), hot.end());
  ProcessResult r = RunProcess(argv, {}, 30000);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("  hot key: checks "), std::string::npos) << r.out;
  const size_t brace = r.out.rfind('{');
  return brace == std::string::npos ? "" : r.out.substr(brace);
}

TEST(BenchHotKey, ASpentHotKeyIsAllowedExactlyItsLimitThenDeniedEveryTime) {
  Result<std::unique_ptr<SidecarProcess>> sidecar = SidecarProcess::Start();
  ASSERT_TRUE(sidecar.ok()) << sidecar.status().ToString();
  const std::string json =
      RunWithHotKey((*sidecar)->socket_path(), {"--hot-limit", "5", "--hot-per-s", "100"});
  SCOPED_TRACE(json);
  const double checks = JsonNumber(json, "hot_checks").value_or(-1);
  EXPECT_GE(checks, 90) << "100 a second for 1 s";
  EXPECT_LE(checks, 101);
  EXPECT_EQ(JsonNumber(json, "hot_allowed"), 5);
  EXPECT_EQ(JsonNumber(json, "hot_denied"), checks - 5);
  EXPECT_EQ(JsonNumber(json, "hot_allowed_after_denial"), 0);
  EXPECT_EQ(JsonNumber(json, "hot_errors"), 0);
  EXPECT_EQ(JsonNumber(json, "hot_fallback"), 0) << "the memory store has no fallback";
}

// A bucket of 1 per 20 ms checked every 10 ms is allowed again after each denial: the tally
// tells such allowances apart, which is how a run shows that a hot key's decisions changed.
TEST(BenchHotKey, AllowancesAfterADenialAreCountedApart) {
  Result<std::unique_ptr<SidecarProcess>> sidecar = SidecarProcess::Start();
  ASSERT_TRUE(sidecar.ok()) << sidecar.status().ToString();
  const std::string json =
      RunWithHotKey((*sidecar)->socket_path(),
                    {"--hot-limit", "1", "--hot-window-ms", "20", "--hot-per-s", "100"});
  SCOPED_TRACE(json);
  EXPECT_EQ(JsonNumber(json, "hot_allowed"), 1);
  EXPECT_GT(JsonNumber(json, "hot_allowed_after_denial").value_or(0), 20);
}

// With no database to reach, every check of the PostgreSQL store is the fallback policy's.
TEST(BenchHotKey, AnswersFromTheFallbackAreCounted) {
  Result<std::unique_ptr<SidecarProcess>> sidecar =
      SidecarProcess::Start({{"RATE_LIMIT_STORE", "postgres"},
                             {"RATE_LIMIT_FALLBACK", "deny"},
                             {"DATABASE_URL", "host=127.0.0.1 port=1 connect_timeout=1"}});
  ASSERT_TRUE(sidecar.ok()) << sidecar.status().ToString();
  const std::string json =
      RunWithHotKey((*sidecar)->socket_path(), {"--hot-limit", "5", "--hot-per-s", "100"});
  SCOPED_TRACE(json);
  EXPECT_GE(JsonNumber(json, "hot_checks").value_or(-1), 90);
  EXPECT_EQ(JsonNumber(json, "hot_fallback"), JsonNumber(json, "hot_checks"));
  EXPECT_EQ(JsonNumber(json, "hot_allowed"), 0);
}

TEST(BenchHotKey, BadHotKeyOptionsExitTwoWithAMessage) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--hot-limit", "0"}, {"--hot-per-s", "0"}, {"--hot-window-ms", "x"}}) {
    std::vector<std::string> argv = {kBenchBin};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = RunProcess(argv, {});
    EXPECT_EQ(r.exit_code, 2) << args[0];
    EXPECT_NE(r.err.find("ratelimit-bench: " + args[0]), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace ratelimit
