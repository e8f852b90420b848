// Smoke run of ratelimit-bench against a real sidecar: exit status, summary and JSON keys.
#include "gtest/gtest.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

// The one smoke run: a 1-second load (after a 1-second floor measurement) against a real
// sidecar; exit status, the readable summary with its ratios, and the JSON keys.
TEST(BenchSmoke, OneSecondRunPrintsASummaryRatiosToTheFloorAndEveryJsonKey) {
  Result<std::unique_ptr<SidecarProcess>> sidecar = SidecarProcess::Start();
  ASSERT_TRUE(sidecar.ok()) << sidecar.status().ToString();
  ProcessResult r = RunProcess(
      {kBenchBin, "--socket", (*sidecar)->socket_path(), "--connections", "2", "--depth", "8",
       "--duration-s", "1", "--keys", "100", "--key-dist", "zipf", "--floor", "--json"},
      {}, 30000);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("floor (raw echo):"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checks/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("vs floor: p50 "), std::string::npos) << r.out;
  const std::string last = r.out.substr(r.out.rfind('{'));  // The sidecar's, printed last.
  for (const char* key :
       {"\"checks\":", "\"allowed\":", "\"denied\":", "\"errors\":0,", "\"checks_per_s\":",
        "\"p50_us\":", "\"p90_us\":", "\"p99_us\":", "\"p999_us\":", "\"max_us\":"}) {
    EXPECT_NE(last.find(key), std::string::npos) << key << " missing from " << last;
  }
}

TEST(BenchSmoke, BadOptionsExitTwoWithAMessage) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--depth", "0"}, {"--key-dist", "pareto"}, {"--connections"}, {"--bogus", "1"}}) {
    std::vector<std::string> argv = {kBenchBin};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = RunProcess(argv, {});
    EXPECT_EQ(r.exit_code, 2) << args[0];
    EXPECT_NE(r.err.find("ratelimit-bench:"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace ratelimit
