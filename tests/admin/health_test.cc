// Tests of Health: liveness from the loop's beats, readiness from listening, store and policy.
#include "sidecar/admin/health.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace ratelimit {
namespace {

constexpr uint64_t kStall = Health::kStallMs;

TEST(HealthTest, LivenessFailsOnlyOnceTheLoopHasNotBeatenForTheStallTime) {
  struct Case {
    std::string why;
    std::optional<uint64_t> beat_ms;  // nullopt: no beat yet.
    uint64_t now_ms;
    bool alive;
  };
  const Case cases[] = {
      {"before the first beat, however late", std::nullopt, 1'000'000'000, true},
      {"just after a beat", 10'000, 10'000, true},
      {"one ms short of the stall time", 10'000, 10'000 + kStall - 1, true},
      {"at the stall time", 10'000, 10'000 + kStall, false},
      {"long after the last beat", 10'000, 10'000 + 10 * kStall, false},
      {"a clock reading from before the beat", 10'000, 9'000, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.why);
    Health health("memory", false);
    if (c.beat_ms) health.Beat(*c.beat_ms);
    const Health::Answer answer = health.Liveness(c.now_ms);
    EXPECT_EQ(answer.ok, c.alive);
    ASSERT_FALSE(answer.body.empty());
    EXPECT_EQ(answer.body.back(), '\n');
    if (c.alive) {
      EXPECT_EQ(answer.body, "ok\n");
    } else {
      EXPECT_EQ(answer.body, "event loop stalled: no turn for " +
                                 std::to_string(c.now_ms - *c.beat_ms) + " ms\n");
    }
  }
}

TEST(HealthTest, ANewBeatMakesAStalledLoopAliveAgain) {
  Health health("memory", false);
  health.Beat(1000);
  EXPECT_FALSE(health.Liveness(1000 + kStall).ok);
  health.Beat(1000 + kStall);
  EXPECT_TRUE(health.Liveness(1000 + kStall + 1).ok);
}

TEST(HealthTest, ReadinessNeedsTheSocketAndAStoreOrAFallbackThatServesAndEndsAtShutdown) {
  struct Case {
    std::string store;
    bool fallback_serves;
    bool listening;
    bool store_ready;
    bool stopping;
    bool ready;
    std::string body;
  };
  const Case cases[] = {
      {"memory", false, false, true, false, false, "not ready: the socket is not listening yet\n"},
      {"memory", false, true, true, false, true, "ready\n"},
      {"memory", false, true, true, true, false, "not ready: shutting down\n"},
      {"postgres", true, false, false, false, false,
       "not ready: the socket is not listening yet\n"},
      {"postgres", true, true, true, false, true, "ready\n"},
      {"postgres", true, true, false, false, true,
       "ready: the postgres store is not ready; the fallback answers\n"},
      {"postgres", false, true, true, false, true, "ready\n"},
      {"postgres", false, true, false, false, false,
       "not ready: the postgres store is not ready and RATE_LIMIT_FALLBACK=deny\n"},
      {"postgres", true, true, false, true, false, "not ready: shutting down\n"},
      {"postgres", false, false, false, true, false, "not ready: shutting down\n"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.store + (c.fallback_serves ? " fallback serves" : " fallback refuses") +
                 (c.listening ? ", listening" : "") + (c.store_ready ? ", store ready" : "") +
                 (c.stopping ? ", stopping" : ""));
    Health health(c.store, c.fallback_serves);
    health.SetListening(c.listening);
    health.SetStoreReady(c.store_ready);
    if (c.stopping) health.SetStopping();
    const Health::Answer answer = health.Readiness();
    EXPECT_EQ(answer.ok, c.ready);
    EXPECT_EQ(answer.body, c.body);
  }
}

TEST(HealthTest, ReadinessFollowsTheStoreBothWays) {
  Health health("postgres", false);
  health.SetListening(true);
  EXPECT_FALSE(health.Readiness().ok) << "a store is not ready until said so";
  health.SetStoreReady(true);
  EXPECT_TRUE(health.Readiness().ok);
  health.SetStoreReady(false);
  EXPECT_FALSE(health.Readiness().ok);
  health.SetStoreReady(true);
  health.SetListening(false);
  EXPECT_FALSE(health.Readiness().ok);
}

}  // namespace
}  // namespace ratelimit
