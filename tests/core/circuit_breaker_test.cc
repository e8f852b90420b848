// Tests of CircuitBreaker: when it opens, how it probes, and how it closes again.
#include "sidecar/core/circuit_breaker.h"

#include <gtest/gtest.h>

namespace ratelimit {
namespace {

using State = CircuitBreaker::State;

// Fails requests until the breaker opens; returns the time it opened at.
uint64_t OpenAt(CircuitBreaker& breaker, uint64_t now_ms) {
  for (uint32_t i = 0; i < CircuitBreaker::kFailureThreshold; ++i) {
    breaker.OnStart(now_ms);
    breaker.OnFailure(now_ms);
  }
  return now_ms;
}

TEST(CircuitBreaker, StaysClosedBelowTheThresholdOfFailuresInARow) {
  CircuitBreaker breaker;
  for (int round = 0; round < 5; ++round) {
    for (uint32_t i = 0; i + 1 < CircuitBreaker::kFailureThreshold; ++i) {
      breaker.OnStart(100);
      EXPECT_FALSE(breaker.OnFailure(100));
    }
    breaker.OnStart(100);
    EXPECT_FALSE(breaker.OnSuccess()) << "a success while closed is no change";
  }
  EXPECT_EQ(breaker.state(), State::kClosed);
  EXPECT_TRUE(breaker.Admits(100));
}

TEST(CircuitBreaker, OpensAtTheThresholdAndRefusesForTheOpenPeriod) {
  CircuitBreaker breaker;
  for (uint32_t i = 0; i + 1 < CircuitBreaker::kFailureThreshold; ++i) {
    breaker.OnStart(1000);
    EXPECT_FALSE(breaker.OnFailure(1000));
  }
  breaker.OnStart(1000);
  EXPECT_TRUE(breaker.OnFailure(1000)) << "closed -> open is a change worth logging";
  EXPECT_EQ(breaker.state(), State::kOpen);
  EXPECT_FALSE(breaker.Admits(1000));
  EXPECT_FALSE(breaker.Admits(1000 + CircuitBreaker::kMinOpenMs - 1));
  EXPECT_TRUE(breaker.Admits(1000 + CircuitBreaker::kMinOpenMs));
}

TEST(CircuitBreaker, OneProbeAtATimeAndNothingQueuesBehindIt) {
  CircuitBreaker breaker;
  const uint64_t t = OpenAt(breaker, 0) + CircuitBreaker::kMinOpenMs;
  ASSERT_TRUE(breaker.Admits(t));
  breaker.OnStart(t);
  EXPECT_EQ(breaker.state(), State::kHalfOpen);
  EXPECT_FALSE(breaker.Admits(t));
  EXPECT_FALSE(breaker.Admits(t + 60000)) << "however long the probe takes";
}

TEST(CircuitBreaker, ASuccessfulProbeClosesIt) {
  CircuitBreaker breaker;
  const uint64_t t = OpenAt(breaker, 0) + CircuitBreaker::kMinOpenMs;
  breaker.OnStart(t);
  EXPECT_TRUE(breaker.OnSuccess());
  EXPECT_EQ(breaker.state(), State::kClosed);
  EXPECT_TRUE(breaker.Admits(t));
  // And the count of failures starts over: one failure alone does not reopen it.
  static_assert(CircuitBreaker::kFailureThreshold > 1);
  breaker.OnStart(t);
  EXPECT_FALSE(breaker.OnFailure(t));
  EXPECT_EQ(breaker.state(), State::kClosed);
}

TEST(CircuitBreaker, FailedProbesDoubleTheOpenPeriodUpToTheMaximum) {
  CircuitBreaker breaker;
  uint64_t now = OpenAt(breaker, 0);
  uint64_t expected = CircuitBreaker::kMinOpenMs;
  for (int probe = 0; probe < 8; ++probe) {
    now += expected;
    ASSERT_FALSE(breaker.Admits(now - 1)) << "probe " << probe;
    ASSERT_TRUE(breaker.Admits(now)) << "probe " << probe;
    breaker.OnStart(now);
    EXPECT_FALSE(breaker.OnFailure(now)) << "still not closed: no change worth logging";
    expected = std::min(expected * 2, CircuitBreaker::kMaxOpenMs);
  }
  EXPECT_EQ(expected, CircuitBreaker::kMaxOpenMs);
  EXPECT_FALSE(breaker.Admits(now + CircuitBreaker::kMaxOpenMs - 1));
  EXPECT_TRUE(breaker.Admits(now + CircuitBreaker::kMaxOpenMs));
}

TEST(CircuitBreaker, AfterClosingTheOpenPeriodStartsOverAtTheMinimum) {
  CircuitBreaker breaker;
  uint64_t now = OpenAt(breaker, 0);
  for (int probe = 0; probe < 4; ++probe) {  // Grow the open period.
    now += CircuitBreaker::kMaxOpenMs;
    breaker.OnStart(now);
    breaker.OnFailure(now);
  }
  now += CircuitBreaker::kMaxOpenMs;
  breaker.OnStart(now);
  breaker.OnSuccess();
  now = OpenAt(breaker, now);
  EXPECT_FALSE(breaker.Admits(now + CircuitBreaker::kMinOpenMs - 1));
  EXPECT_TRUE(breaker.Admits(now + CircuitBreaker::kMinOpenMs));
}

TEST(CircuitBreaker, FailuresOfRequestsStartedBeforeItOpenedDoNotExtendTheOpenPeriod) {
  CircuitBreaker breaker;
  const uint64_t opened = OpenAt(breaker, 0);
  EXPECT_FALSE(breaker.OnFailure(opened + 150));  // A straggler from before it opened.
  EXPECT_TRUE(breaker.Admits(opened + CircuitBreaker::kMinOpenMs));
}

TEST(CircuitBreaker, ASuccessOfARequestStartedBeforeItOpenedClosesIt) {
  CircuitBreaker breaker;
  OpenAt(breaker, 0);
  EXPECT_TRUE(breaker.OnSuccess()) << "the database answered: it is usable";
  EXPECT_TRUE(breaker.Admits(1));
}

}  // namespace
}  // namespace ratelimit
