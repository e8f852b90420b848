// Tests of the BucketTable: lookups, the incremental Sweep, slots fixed up front, and eviction.
#include "sidecar/core/bucket_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace ratelimit {
namespace {

std::string Key(int i) { return "key-" + std::to_string(i); }

constexpr size_t kMaxKeys = 100'000;

TEST(BucketTableTest, FindOfAMissingKeyReturnsNull) {
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
  EXPECT_EQ(table.Find("absent"), nullptr);
  EXPECT_EQ(table.size(), 0u);
}

TEST(BucketTableTest, InsertThenFindReturnsAMutableState) {
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
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
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
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
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
  std::string buffer = "borrowed";
  table.Insert(buffer, 7);
  buffer.assign("overwritten-and-longer-than-before");
  ASSERT_NE(table.Find("borrowed"), nullptr);
  EXPECT_EQ(*table.Find("borrowed"), 7);
  EXPECT_EQ(table.Find(buffer), nullptr);
}

TEST(BucketTableTest, EraseRemovesOnlyThatKey) {
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
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
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
  for (int i = 0; i < 1000; ++i) table.Insert(Key(i), i);
  const size_t erased = table.Sweep(1'000'000, [](int state) { return state % 3 == 0; });
  EXPECT_EQ(erased, 334u);
  EXPECT_EQ(table.size(), 666u);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(table.Find(Key(i)) == nullptr, i % 3 == 0) << Key(i);
  }
}

TEST(BucketTableTest, SweepWithNoBudgetVisitsNothing) {
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
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
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
  EXPECT_EQ(table.Sweep(16, [](int) { return true; }), 0u);
  EXPECT_EQ(table.Sweep(16, [](int) { return true; }), 0u);
}

// Each call continues where the previous one stopped: one pass visits every state exactly once,
// and the next pass starts over.
TEST(BucketTableTest, SweepContinuesWhereItStopped) {
  for (const size_t budget : {size_t{1}, size_t{7}, size_t{64}}) {
    SCOPED_TRACE("budget " + std::to_string(budget));
    constexpr int kKeys = 500;
    BucketTable<int> table(HashKey{1, 2}, kKeys);
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

// Every slot is allocated at construction: inserting up to max_keys never rehashes (no check
// ever waits behind a copy of the whole table), and sweeping or erasing never shrinks it.
TEST(BucketTableTest, SlotsAreAllocatedUpFrontAndNeverChange) {
  BucketTable<int> table(HashKey{1, 2}, 20'000);
  const size_t slots = table.slot_count();
  ASSERT_GE(slots, 20'000u);
  std::vector<int*> addresses;
  for (int i = 0; i < 20'000; ++i) {
    EXPECT_FALSE(table.full());
    addresses.push_back(&table.Insert(Key(i), i));
  }
  EXPECT_TRUE(table.full());
  EXPECT_EQ(table.slot_count(), slots);
  for (int i = 0; i < 20'000; i += 997) EXPECT_EQ(table.Find(Key(i)), addresses[i]);
  size_t erased = 0;
  for (int calls = 0; table.size() > 0 && calls < 100'000; ++calls) {
    erased += table.Sweep(64, [](int) { return true; });
  }
  EXPECT_EQ(erased, 20'000u);
  EXPECT_EQ(table.slot_count(), slots);
  table.Insert("again", 1);
  EXPECT_EQ(*table.Find("again"), 1);
}

// The text of a key is not stored: a 512-byte key takes the same entry as a 1-byte one, and
// keys that differ in any byte are still told apart.
TEST(BucketTableTest, LongKeysAreHeldAsDigests) {
  BucketTable<int> table(HashKey{1, 2}, kMaxKeys);
  std::string long_key(512, 'x');
  table.Insert(long_key, 1);
  long_key.back() = 'y';
  table.Insert(long_key, 2);
  EXPECT_EQ(*table.Find(std::string(511, 'x') + "x"), 1);
  EXPECT_EQ(*table.Find(std::string(511, 'x') + "y"), 2);
  EXPECT_EQ(table.Find(std::string(511, 'x')), nullptr);
}

// Erasing some states of a slot must not disturb the others that share it.
TEST(BucketTableTest, SweepErasesIdleStatesAmongBusyOnesInTheSameSlots) {
  BucketTable<int> table(HashKey{1, 2}, 5000);
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

// A state for the eviction tests: when it was last used and what forgetting it costs.
struct Aged {
  int id = 0;
  int64_t used = 0;
  double cost = 0;
};

// Runs one EvictOne on `table`, recording what it sampled; returns the evicted id, or -1.
struct EvictionProbe {
  std::vector<Aged> sampled;
  int evicted = -1;

  bool Run(BucketTable<Aged>& table) {
    sampled.clear();
    evicted = -1;
    return table.EvictOne([](const Aged& a) { return a.used; },
                          [this](const Aged& a) {
                            sampled.push_back(a);
                            return a.cost;
                          },
                          [this](const Aged& a) { evicted = a.id; });
  }
};

TEST(BucketTableTest, EvictOneOfAnEmptyTableEvictsNothing) {
  BucketTable<Aged> table(HashKey{1, 2}, 10);
  EvictionProbe probe;
  EXPECT_FALSE(probe.Run(table));
  EXPECT_EQ(probe.evicted, -1);
}

// Exactly the rule: among the less recently used half of the sample, the cheapest goes (the
// older on a tie); never one of the more recently used half.
TEST(BucketTableTest, EvictOneTakesTheCheapestOfTheOlderHalfOfItsSample) {
  BucketTable<Aged> table(HashKey{7, 8}, 4000);
  for (int i = 0; i < 4000; ++i) {
    // Ages and costs unrelated to each other, and all distinct.
    table.Insert(Key(i), Aged{i, (i * 7919) % 4000, ((i * 104729) % 4001) / 4001.0});
  }
  EvictionProbe probe;
  for (int round = 0; round < 500; ++round) {
    ASSERT_TRUE(probe.Run(table));
    ASSERT_EQ(probe.sampled.size(), BucketTable<Aged>::kEvictionSample);
    std::vector<Aged> by_age = probe.sampled;
    std::sort(by_age.begin(), by_age.end(),
              [](const Aged& a, const Aged& b) { return a.used < b.used; });
    const auto cheapest =
        std::min_element(by_age.begin(), by_age.begin() + by_age.size() / 2,
                         [](const Aged& a, const Aged& b) { return a.cost < b.cost; });
    EXPECT_EQ(probe.evicted, cheapest->id) << "round " << round;
    EXPECT_EQ(table.Find(Key(probe.evicted)), nullptr);
  }
  EXPECT_EQ(table.size(), 3500u);
}

// Keys used more recently than most of the table are never candidates: a flood of once-used
// keys does not push out the hot keys, even when the hot keys cost the least to forget.
TEST(BucketTableTest, RecentlyUsedKeysSurviveAFloodOfEvictions) {
  BucketTable<Aged> table(HashKey{3, 4}, 10'000);
  int64_t now = 0;
  for (int i = 0; i < 10'000; ++i) table.Insert(Key(i), Aged{i, ++now, 1.0});
  EvictionProbe probe;
  for (int i = 10'000; i < 50'000; ++i) {
    for (int hot = 0; hot < 10; ++hot) {  // The hot keys are used between every new key.
      Aged* state = table.Find(Key(hot));
      ASSERT_NE(state, nullptr) << "hot key " << hot << " evicted at new key " << i;
      state->used = ++now;
      state->cost = 0.0;  // The cheapest to forget of all: recency alone protects them.
    }
    ASSERT_TRUE(probe.Run(table));
    table.Insert(Key(i), Aged{i, ++now, 1.0});
  }
  EXPECT_EQ(table.size(), 10'000u);
}

TEST(BucketTableTest, StatesThatMustNotGoAreNeverEvicted) {
  BucketTable<Aged> table(HashKey{5, 6}, 1000);
  for (int i = 0; i < 1000; ++i) {
    table.Insert(Key(i), Aged{i, i, i % 2 == 0 ? BucketTable<Aged>::kNeverEvict : 0.5});
  }
  EvictionProbe probe;
  for (int round = 0; round < 200; ++round) {
    ASSERT_TRUE(probe.Run(table));
    EXPECT_EQ(probe.evicted % 2, 1);
  }
  EXPECT_EQ(table.size(), 800u);

  BucketTable<Aged> stuck(HashKey{5, 6}, 10);
  for (int i = 0; i < 10; ++i) stuck.Insert(Key(i), Aged{i, i, BucketTable<Aged>::kNeverEvict});
  EXPECT_FALSE(probe.Run(stuck));
  EXPECT_EQ(stuck.size(), 10u);
}

}  // namespace
}  // namespace ratelimit
