// Tests of the DenialCache: "denied until T", lifted by a grant, forgotten by a new policy.
#include "sidecar/core/denial_cache.h"

#include <gtest/gtest.h>

namespace ratelimit {
namespace {

TEST(DenialCacheTest, ANewKeyIsNotDeniedAndADenialHoldsUntilItsTimeAndNotAtIt) {
  DenialCache denial;
  EXPECT_FALSE(denial.Denies(0));
  EXPECT_EQ(denial.until_us(), 0);
  denial.OnDenied(1000);
  for (int64_t now : {0, 999}) EXPECT_TRUE(denial.Denies(now)) << now;
  EXPECT_FALSE(denial.Denies(1000));
  EXPECT_EQ(denial.until_us(), 1000);
  EXPECT_FALSE(denial.granted_last());
}

TEST(DenialCacheTest, AGrantLiftsTheDenialAndIsRememberedUntilTheNextDenial) {
  DenialCache denial;
  denial.OnDenied(1000);
  denial.OnGranted();
  EXPECT_FALSE(denial.Denies(0));
  EXPECT_TRUE(denial.granted_last());
  denial.OnDenied(2000);
  EXPECT_TRUE(denial.Denies(1500));
  EXPECT_FALSE(denial.granted_last());
}

TEST(DenialCacheTest, ANewPolicyForgetsTheDenialButNotWhetherTheLastFetchWasGranted) {
  DenialCache denial;
  denial.OnGranted();
  denial.OnDenied(5000);
  denial.Forget();
  EXPECT_FALSE(denial.Denies(0));
  EXPECT_FALSE(denial.granted_last());
  denial.OnGranted();
  denial.Forget();
  EXPECT_TRUE(denial.granted_last());
}

}  // namespace
}  // namespace ratelimit
