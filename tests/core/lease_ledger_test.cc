// Tests of the LeaseLedger: spending oldest first, expiry in order, scarcity, the fetch flag.
#include "sidecar/core/lease_ledger.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace ratelimit {
namespace {

using Lease = LeaseLedger::Lease;

// Expires `ledger` at `now` and returns what was given back, in order.
std::vector<Lease> ExpireAt(LeaseLedger& ledger, int64_t now) {
  std::vector<Lease> given_back;
  ledger.Expire(now, [&](const Lease& lease) { given_back.push_back(lease); });
  return given_back;
}

TEST(LeaseLedgerTest, SpendTakesFromTheOldestLeaseFirstAndDropsTheLeasesItEmpties) {
  LeaseLedger ledger;
  ledger.Add(5, 5, 100, 10);
  ledger.Add(3, 3, 200, 20);
  EXPECT_EQ(ledger.held(), 8u);
  ledger.Spend(6);  // All of the first, one of the second.
  EXPECT_EQ(ledger.held(), 2u);
  EXPECT_EQ(ledger.oldest_expiry_us(), 200) << "the emptied lease is gone";
  const std::vector<Lease> back = ExpireAt(ledger, 200);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].tokens, 2u);
  EXPECT_EQ(back[0].debit_us, 20);
  EXPECT_TRUE(ledger.empty());
  EXPECT_EQ(ledger.held(), 0u);
}

TEST(LeaseLedgerTest, ExpireGivesBackTheLeasesExpiringByNowOldestFirstWithTheirDebitTimes) {
  LeaseLedger ledger;
  ledger.Add(1, 1, 100, 11);
  ledger.Add(2, 2, 200, 22);
  ledger.Add(4, 4, 300, 33);
  EXPECT_TRUE(ExpireAt(ledger, 99).empty()) << "a lease is spent until its expiry";
  const std::vector<Lease> back = ExpireAt(ledger, 200);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].tokens, 1u);
  EXPECT_EQ(back[0].debit_us, 11);
  EXPECT_EQ(back[1].tokens, 2u);
  EXPECT_EQ(back[1].debit_us, 22);
  EXPECT_EQ(ledger.held(), 4u);
  EXPECT_EQ(ledger.oldest_expiry_us(), 300);
  // At the end of time (a policy change, or giving everything back), every lease goes.
  EXPECT_EQ(ExpireAt(ledger, std::numeric_limits<int64_t>::max()).size(), 1u);
  EXPECT_TRUE(ledger.empty());
}

TEST(LeaseLedgerTest, AGrantSmallerThanAskedMarksTheRowScarceUntilAFullGrantOrAPolicyChange) {
  LeaseLedger ledger;
  EXPECT_FALSE(ledger.scarce());
  ledger.Add(3, 10, 100, 1);
  EXPECT_TRUE(ledger.scarce());
  ledger.Add(10, 10, 200, 2);
  EXPECT_FALSE(ledger.scarce());
  ledger.Add(1, 2, 300, 3);
  ledger.ForgetScarcity();
  EXPECT_FALSE(ledger.scarce());
  EXPECT_EQ(ledger.held(), 14u) << "forgetting scarcity keeps the leases";
}

TEST(LeaseLedgerTest, TheFetchFlagIsWhatTheOwnerSets) {
  LeaseLedger ledger;
  EXPECT_FALSE(ledger.fetching());
  ledger.set_fetching(true);
  EXPECT_TRUE(ledger.fetching());
  ledger.set_fetching(false);
  EXPECT_FALSE(ledger.fetching());
}

}  // namespace
}  // namespace ratelimit
