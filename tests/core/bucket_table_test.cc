// Tests of the BucketTable: lookups by string_view, and the incremental, resumable Sweep.
#include "sidecar/core/bucket_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

namespace ratelimit {
namespace {

std::string Key(int i) { return "key-" + std::to_string(i); }

TEST(BucketTableTest, FindOfAMissingKeyReturnsNull) {
  BucketTable<int> table(HashKey{1, 2});
  EXPECT_EQ(table.Find("absent"), nullptr);
  EXPECT_EQ(table.size(), 0u);
}

TEST(BucketTableTest, InsertThenFindReturnsAMutableState) {
  BucketTable<int> table(HashKey{1, 2});
  table.Insert("a", 1);
  table.Insert("b", 2);
  ASSERT_NE(table.Find("a"), nullptr);
  EXPECT_EQ(*table.Find("a"), 1);
  *table.Find("a") = 10;
  EXPECT_EQ(*table.Find("a"), 10);
  EXPECT_EQ(*table.Find("b"), 2);
  EXPECT_EQ(table.size(), 2u);
}

TEST(BucketTableTest, KeysAreComparedByAllTheirBytes) {
  BucketTable<int> table(HashKey{1, 2});
  table.Insert(std::string_view("a\0b", 3), 1);
  table.Insert(std::string_view("a\0c", 3), 2);
  table.Insert("a", 3);
  EXPECT_EQ(*table.Find(std::string_view("a\0b", 3)), 1);
  EXPECT_EQ(*table.Find(std::string_view("a\0c", 3)), 2);
  EXPECT_EQ(*table.Find("a"), 3);
  EXPECT_EQ(table.Find(std::string_view("a\0", 2)), nullptr);
  EXPECT_EQ(table.size(), 3u);
}

TEST(BucketTableTest, InsertCopiesTheBorrowedKey) {
  BucketTable<int> table(HashKey{1, 2});
  std::string buffer = "borrowed";
  table.Insert(buffer, 7);
  buffer.assign("overwritten-and-longer-than-before");
  ASSERT_NE(table.Find("borrowed"), nullptr);
  EXPECT_EQ(*table.Find("borrowed"), 7);
  EXPECT_EQ(table.Find(buffer), nullptr);
}

TEST(BucketTableTest, EraseRemovesOnlyThatKey) {
  BucketTable<int> table(HashKey{1, 2});
  table.Insert("a", 1);
  table.Insert("b", 2);
  table.Erase("a");
  EXPECT_EQ(table.Find("a"), nullptr);
  EXPECT_EQ(*table.Find("b"), 2);
  EXPECT_EQ(table.size(), 1u);
  table.Erase("a");  // Erasing a missing key is a no-op.
  table.Erase("never");
  EXPECT_EQ(table.size(), 1u);
}

TEST(BucketTableTest, SweepErasesExactlyTheIdleStates) {
  BucketTable<int> table(HashKey{1, 2});
  for (int i = 0; i < 1000; ++i) table.Insert(Key(i), i);
  const size_t erased = table.Sweep(1'000'000, [](int state) { return state % 3 == 0; });
  EXPECT_EQ(erased, 334u);
  EXPECT_EQ(table.size(), 666u);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(table.Find(Key(i)) == nullptr, i % 3 == 0) << Key(i);
  }
}

TEST(BucketTableTest, SweepWithNoBudgetVisitsNothing) {
  BucketTable<int> table(HashKey{1, 2});
  for (int i = 0; i < 10; ++i) table.Insert(Key(i), i);
  int visited = 0;
  EXPECT_EQ(table.Sweep(0,
                        [&](int) {
                          ++visited;
                          return true;
                        }),
            0u);
  EXPECT_EQ(visited, 0);
  EXPECT_EQ(table.size(), 10u);
}

TEST(BucketTableTest, SweepOfAnEmptyTableErasesNothing) {
  BucketTable<int> table(HashKey{1, 2});
  EXPECT_EQ(table.Sweep(16, [](int) { return true; }), 0u);
  EXPECT_EQ(table.Sweep(16, [](int) { return true; }), 0u);
}

// Each call continues where the previous one stopped: one pass visits every state exactly once,
// and the next pass starts over.
TEST(BucketTableTest, SweepContinuesWhereItStopped) {
  for (const size_t budget : {size_t{1}, size_t{7}, size_t{64}}) {
    SCOPED_TRACE("budget " + std::to_string(budget));
    constexpr int kKeys = 500;
    BucketTable<int> table(HashKey{1, 2});
    for (int i = 0; i < kKeys; ++i) table.Insert(Key(i), i);

    std::map<int, int> visits;
    int calls = 0;
    auto record = [&](int state) {
      ++visits[state];
      return false;
    };
    while (static_cast<int>(visits.size()) < kKeys && calls < 100 * kKeys) {
      EXPECT_EQ(table.Sweep(budget, record), 0u);
      ++calls;
    }
    ASSERT_EQ(static_cast<int>(visits.size()), kKeys);
    for (const auto& [state, count] : visits) {
      EXPECT_EQ(count, 1) << "state " << state << " visited twice in one pass";
    }
    EXPECT_GT(calls, 1) << "a small budget covered the whole table at once";
    EXPECT_EQ(table.size(), static_cast<size_t>(kKeys));

    // Further calls finish the pass and run a second one, which visits everything once more.
    auto all_visited_twice = [&] {
      for (const auto& [state, count] : visits) {
        if (count < 2) return false;
      }
      return true;
    };
    for (int i = 0; i < 2 * calls + 2 && !all_visited_twice(); ++i) {
      (void)table.Sweep(budget, record);
    }
    for (const auto& [state, count] : visits) {
      EXPECT_EQ(count, 2) << "state " << state << " in the second pass";
    }
  }
}

TEST(BucketTableTest, SweepSurvivesRehashBetweenCalls) {
  BucketTable<int> table(HashKey{1, 2});
  for (int i = 0; i < 100; ++i) table.Insert(Key(i), i);
  // Leave the cursor in the middle of the table.
  for (int i = 0; i < 3; ++i) (void)table.Sweep(16, [](int) { return false; });

  // Grow the table well past its slot count, so it rehashes, then sweep it down to nothing.
  for (int i = 100; i < 20'000; ++i) table.Insert(Key(i), i);
  std::set<int> erased;
  size_t erased_count = 0;
  for (int calls = 0; table.size() > 0 && calls < 100'000; ++calls) {
    erased_count += table.Sweep(64, [&](int state) {
      EXPECT_TRUE(erased.insert(state).second) << "state " << state << " offered twice";
      return true;
    });
  }
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(erased_count, 20'000u);
  EXPECT_EQ(erased.size(), 20'000u);

  // The emptied table is still usable.
  table.Insert("again", 1);
  EXPECT_EQ(*table.Find("again"), 1);
  EXPECT_EQ(table.Sweep(1'000'000, [](int) { return true; }), 1u);
  EXPECT_EQ(table.size(), 0u);
}

// Erasing some states of a slot must not disturb the others that share it.
TEST(BucketTableTest, SweepErasesIdleStatesAmongBusyOnesInTheSameSlots) {
  BucketTable<int> table(HashKey{1, 2});
  for (int i = 0; i < 5000; ++i) table.Insert(Key(i), i);
  size_t erased = 0;
  for (int calls = 0; calls < 10'000 && erased < 2500; ++calls) {
    erased += table.Sweep(3, [](int state) { return state % 2 == 1; });
  }
  EXPECT_EQ(erased, 2500u);
  for (int i = 0; i < 5000; ++i) {
    const int* state = table.Find(Key(i));
    if (i % 2 == 1) {
      EXPECT_EQ(state, nullptr) << Key(i);
    } else {
      ASSERT_NE(state, nullptr) << Key(i);
      EXPECT_EQ(*state, i);
    }
  }
}

// After a burst of keys goes idle the table gives its slots back, so that a pass budgeted from
// slot_count() stays short and the slot array does not stay at its peak size.
TEST(BucketTableTest, ATableEmptiedByABurstGivesItsSlotsBack) {
  BucketTable<int> table(HashKey{1, 2});
  for (int i = 0; i < 100'000; ++i) table.Insert(Key(i), 0);
  const size_t peak_slots = table.slot_count();
  ASSERT_GE(peak_slots, 100'000u);
  for (int pass = 0; pass < 2 && table.size() > 0; ++pass) {
    for (size_t visited = 0; visited <= peak_slots; visited += 4096) {
      table.Sweep(4096, [](int) { return true; });
    }
  }
  EXPECT_EQ(table.size(), 0u);
  EXPECT_LT(table.slot_count(), peak_slots / 10);

  // A thousand keys that then go idle are all found by 50 calls of slot_count() / 50 slots.
  for (int i = 0; i < 1000; ++i) table.Insert(Key(i), 1);
  const size_t budget = (table.slot_count() + 49) / 50;
  size_t erased = 0;
  for (int call = 0; call < 50; ++call) erased += table.Sweep(budget, [](int) { return true; });
  EXPECT_EQ(erased, 1000u);
}

// A table whose keys are erased one by one (not by Sweep) gives its slots back when asked, and
// only once it is sparse; states that stay keep their addresses.
TEST(BucketTableTest, ShrinkIfSparseGivesSlotsBackOnlyWhenFewKeysAreLeft) {
  BucketTable<int> table(HashKey{3, 4});
  for (int i = 0; i < 100'000; ++i) table.Insert(Key(i), i);
  const size_t peak_slots = table.slot_count();
  table.ShrinkIfSparse();
  EXPECT_EQ(table.slot_count(), peak_slots) << "full tables keep their slots";
  int* kept = table.Find(Key(7));
  for (int i = 0; i < 100'000; ++i) {
    if (i != 7) table.Erase(Key(i));
  }
  EXPECT_EQ(table.slot_count(), peak_slots) << "erasing alone never gives slots back";
  table.ShrinkIfSparse();
  EXPECT_LT(table.slot_count(), peak_slots / 100);
  EXPECT_EQ(table.Find(Key(7)), kept);
  EXPECT_EQ(*kept, 7);
}

}  // namespace
}  // namespace ratelimit
