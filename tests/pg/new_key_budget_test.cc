// NewKeyBudget with made-up times: reservations, what is given back, refill, no bound.
#include "sidecar/pg/new_key_budget.h"

#include <gtest/gtest.h>

namespace ratelimit {
namespace {

constexpr uint64_t kStartUs = 1'000'000'000;  // Any monotonic time.

TEST(NewKeyBudget, StartsWithOneSecondsWorthAndGrantsNoMore) {
  NewKeyBudget budget(200);
  EXPECT_EQ(budget.Reserve(150, kStartUs), 150u);
  EXPECT_FALSE(budget.reached());
  EXPECT_EQ(budget.Reserve(150, kStartUs), 50u) << "the burst is one second's worth";
  EXPECT_TRUE(budget.reached());
  EXPECT_EQ(budget.Reserve(10, kStartUs), 0u);
}

TEST(NewKeyBudget, RefillsAtItsRateUpToOneSecondsWorth) {
  NewKeyBudget budget(200);
  EXPECT_EQ(budget.Reserve(200, kStartUs), 200u);
  EXPECT_EQ(budget.Reserve(200, kStartUs + 100'000), 20u) << "0.1 s of 200/s";
  EXPECT_EQ(budget.Reserve(200, kStartUs + 102'000), 0u) << "0.4 of a row is not one";
  EXPECT_EQ(budget.Reserve(200, kStartUs + 105'000), 1u);
  EXPECT_EQ(budget.Reserve(1000, kStartUs + 60'000'000), 200u) << "an idle minute: one burst";
}

TEST(NewKeyBudget, WhatAnInsertDidNotUseGoesBack) {
  NewKeyBudget budget(100);
  const size_t reserved = budget.Reserve(100, kStartUs);
  ASSERT_EQ(reserved, 100u);
  budget.GiveBack(reserved - 30);  // The INSERT added 30 rows: the other keys had rows.
  EXPECT_EQ(budget.Reserve(100, kStartUs), 70u);
  budget.GiveBack(70);
  budget.GiveBack(70);  // More than was taken: never above the burst.
  EXPECT_EQ(budget.Reserve(1000, kStartUs), 100u);
}

TEST(NewKeyBudget, ReservationsOfConcurrentTransactionsShareOneBucket) {
  NewKeyBudget budget(100);
  const size_t first = budget.Reserve(80, kStartUs);
  const size_t second = budget.Reserve(80, kStartUs);
  EXPECT_EQ(first + second, 100u);
  budget.GiveBack(first);  // The first inserted nothing.
  EXPECT_EQ(budget.Reserve(80, kStartUs), 80u);
}

TEST(NewKeyBudget, TheBoundStaysReachedUntilTheBucketIsFullAgain) {
  NewKeyBudget budget(100);
  EXPECT_EQ(budget.Reserve(150, kStartUs), 100u);
  EXPECT_TRUE(budget.reached());
  EXPECT_EQ(budget.Reserve(10, kStartUs + 500'000), 10u) << "granted in full...";
  EXPECT_TRUE(budget.reached()) << "...but the flood goes on";
  EXPECT_EQ(budget.Reserve(10, kStartUs + 2'000'000), 10u);
  EXPECT_FALSE(budget.reached()) << "a full bucket: the flood is over";
}

TEST(NewKeyBudget, ZeroMeansNoBound) {
  NewKeyBudget budget(0);
  EXPECT_FALSE(budget.bounded());
  EXPECT_EQ(budget.Reserve(1'000'000, kStartUs), 1'000'000u);
  EXPECT_EQ(budget.Reserve(1'000'000, kStartUs), 1'000'000u);
  EXPECT_FALSE(budget.reached());
}

TEST(NewKeyBudget, AClockGoingBackwardsRefillsNothing) {
  NewKeyBudget budget(100);
  EXPECT_EQ(budget.Reserve(100, kStartUs), 100u);
  EXPECT_EQ(budget.Reserve(100, kStartUs - 500'000), 0u);
  EXPECT_EQ(budget.Reserve(100, kStartUs + 500'000), 50u);
}

}  // namespace
}  // namespace ratelimit
