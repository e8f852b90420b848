// Tests of the StrictEngine: batching by load, delivery of answers, refusals, store failures.
#include "sidecar/core/strict_engine.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "tests/testing/fake_store.h"
#include "tests/testing/recorder.h"

namespace ratelimit {

namespace {

constexpr Policy kPolicy{1'000'000, 1000};
constexpr int64_t kNowUs = 1'700'000'000'000'000;

std::string KeyOf(uint64_t tag) { return "k" + std::to_string(tag); }

// The answer the echo store gives for a check of key KeyOf(tag): recognisable per check, and
// with source Memory so that tests see the engine stamp its own source.
CheckResult EchoResult(const StoreOp& check) {
  CheckResult r;
  r.allowed = true;
  r.limit = check.policy.limit;
  r.remaining = static_cast<uint32_t>(std::stoul(check.key.substr(1)));
  r.reset_after_ms = 17;
  r.source = Source::kMemory;
  return r;
}

// What the engine must deliver for the check with `tag` when the echo store answered it.
CheckResult DeliveredEcho(uint64_t tag) {
  CheckResult r = EchoResult(StoreOp{KeyOf(tag), 1, kPolicy});
  r.source = Source::kDatabase;
  return r;
}

CheckResult Unavailable(uint32_t limit = kPolicy.limit) {
  return Refusal(CheckStatus::kStoreUnavailable, limit, Source::kDatabase);
}

std::vector<uint64_t> Range(uint64_t first, uint64_t count) {
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < count; ++i) out.push_back(first + i);
  return out;
}

class StrictEngineTest : public testing::Test {
 protected:
  // Checks key KeyOf(tag) with cost 1.
  void Check(uint64_t tag, CheckCallback& done) {
    const std::string key = KeyOf(tag);  // Dies before the answer: the engine must copy it.
    engine_.Check(CheckQuery{key, 1, kPolicy}, tag, done);
  }
  void Check(uint64_t tag) { Check(tag, recorder_); }

  // Answers Take `index` with one EchoResult per check of its batch.
  void Echo(size_t index) {
    std::vector<CheckResult> results;
    for (const StoreOp& check : store_.batch(index)) results.push_back(EchoResult(check));
    store_.Complete(index, std::move(results));
  }

  // The tags of Take `index`'s batch, recovered from the keys.
  std::vector<uint64_t> BatchTags(size_t index) const {
    std::vector<uint64_t> out;
    for (const StoreOp& check : store_.batch(index)) {
      out.push_back(std::stoull(check.key.substr(1)));
    }
    return out;
  }

  FakeStore store_;
  StrictEngine engine_{store_};
  Recorder recorder_;
};

TEST_F(StrictEngineTest, CheckWithAFreeSlotStartsATakeAtOnceWithABatchOfOne) {
  engine_.Check(CheckQuery{"k7", 3, Policy{5, 250}}, 7, recorder_);
  ASSERT_EQ(store_.take_count(), 1u);
  ASSERT_EQ(store_.batch(0).size(), 1u);
  EXPECT_EQ(store_.batch(0)[0].key, "k7");
  EXPECT_EQ(store_.batch(0)[0].cost, 3u);
  EXPECT_EQ(store_.batch(0)[0].policy, (Policy{5, 250}));
  EXPECT_EQ(engine_.queued(), 0u);
  EXPECT_TRUE(recorder_.answers.empty()) << "answered before the store decided";

  Echo(0);
  ASSERT_EQ(recorder_.answers.size(), 1u);
  EXPECT_EQ(recorder_.answers[0].tag, 7u);
  CheckResult expected = EchoResult(store_.batch(0)[0]);
  expected.source = Source::kDatabase;
  EXPECT_EQ(recorder_.answers[0].result, expected);
}

TEST_F(StrictEngineTest, UnderLightLoadEachCheckIsItsOwnTake) {
  for (uint64_t tag = 0; tag < 5; ++tag) {
    Check(tag);
    ASSERT_EQ(store_.take_count(), tag + 1);
    EXPECT_EQ(BatchTags(tag), std::vector<uint64_t>{tag});
    Echo(tag);
  }
  EXPECT_EQ(recorder_.tags(), Range(0, 5));
}

TEST_F(StrictEngineTest, ChecksWaitingForABusySlotGoTogetherInOneTakeInArrivalOrder) {
  Check(0);
  for (uint64_t tag = 1; tag <= 6; ++tag) Check(tag);
  EXPECT_EQ(store_.take_count(), 1u) << "a Take started without a free slot";
  EXPECT_EQ(engine_.queued(), 6u);
  EXPECT_TRUE(recorder_.answers.empty());

  Echo(0);
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(BatchTags(1), Range(1, 6)) << "the whole queue, in arrival order, in one Take";
  EXPECT_EQ(engine_.queued(), 0u);
  EXPECT_EQ(recorder_.tags(), std::vector<uint64_t>{0});

  Echo(1);
  EXPECT_EQ(store_.take_count(), 2u);
  ASSERT_EQ(recorder_.tags(), Range(0, 7));
  for (const Recorder::Answer& a : recorder_.answers) EXPECT_EQ(a.result, DeliveredEcho(a.tag));
}

TEST_F(StrictEngineTest, AQueueLongerThanMaxBatchIsSplitIntoFullBatchesAndTheRest) {
  constexpr size_t kMax = StoreBatcher::kMaxBatch;
  Check(0);
  for (uint64_t tag = 1; tag <= kMax + 5; ++tag) Check(tag);
  EXPECT_EQ(engine_.queued(), kMax + 5);

  Echo(0);
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(BatchTags(1), Range(1, kMax));
  EXPECT_EQ(engine_.queued(), 5u);

  Echo(1);
  ASSERT_EQ(store_.take_count(), 3u);
  EXPECT_EQ(BatchTags(2), Range(kMax + 1, 5));
  EXPECT_EQ(engine_.queued(), 0u);

  Echo(2);
  EXPECT_EQ(store_.take_count(), 3u);
  ASSERT_EQ(recorder_.tags(), Range(0, kMax + 6)) << "each check answered once, in order";
  for (const Recorder::Answer& a : recorder_.answers) EXPECT_EQ(a.result, DeliveredEcho(a.tag));
}

TEST_F(StrictEngineTest, WithTwoSlotsTwoTakesRunAtOnce) {
  store_.set_slots(2);
  Check(0);
  Check(1);
  ASSERT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(store_.in_flight(), 2u);
  EXPECT_EQ(BatchTags(0), std::vector<uint64_t>{0});
  EXPECT_EQ(BatchTags(1), std::vector<uint64_t>{1});

  Check(2);
  Check(3);
  EXPECT_EQ(store_.take_count(), 2u);
  EXPECT_EQ(engine_.queued(), 2u);

  // The second session finishes first: its slot takes the queue.
  Echo(1);
  ASSERT_EQ(store_.take_count(), 3u);
  EXPECT_EQ(BatchTags(2), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(recorder_.tags(), std::vector<uint64_t>{1});

  Echo(0);
  Echo(2);
  EXPECT_EQ(recorder_.tags(), (std::vector<uint64_t>{1, 0, 2, 3}));
  for (const Recorder::Answer& a : recorder_.answers) EXPECT_EQ(a.result, DeliveredEcho(a.tag));
}

// A hot key is in at most one transaction of the engine at a time, so the engine's own sessions
// never queue on its row lock; other keys still use the free session.
TEST_F(StrictEngineTest, AKeyInFlightWaitsForTheNextTakeWhileOtherKeysUseAFreeSlot) {
  store_.set_slots(2);
  Recorder done;
  engine_.Check(CheckQuery{KeyOf(7), 1, kPolicy}, 0, done);
  ASSERT_EQ(store_.take_count(), 1u);
  engine_.Check(CheckQuery{KeyOf(7), 1, kPolicy}, 1, done);
  EXPECT_EQ(store_.take_count(), 1u) << "the second check of a key in flight must wait";
  engine_.Check(CheckQuery{KeyOf(8), 1, kPolicy}, 2, done);
  ASSERT_EQ(store_.take_count(), 2u) << "another key takes the free slot";
  ASSERT_EQ(store_.batch(1).size(), 1u);
  EXPECT_EQ(store_.batch(1)[0].key, KeyOf(8));
  engine_.Check(CheckQuery{KeyOf(7), 1, kPolicy}, 3, done);

  Echo(0);  // KeyOf(7) is free again: both waiting checks of it go together, in order.
  ASSERT_EQ(store_.take_count(), 3u);
  ASSERT_EQ(store_.batch(2).size(), 2u);
  Echo(1);
  Echo(2);
  EXPECT_EQ(done.tags(), (std::vector<uint64_t>{0, 2, 1, 3}));
}

TEST_F(StrictEngineTest, EachAnswerReachesItsOwnCallbackAndTagExactlyOnce) {
  store_.set_slots(2);
  Recorder a;
  Recorder b;
  Recorder c;
  Check(10, a);  // Take 0.
  Check(20, b);  // Take 1.
  Check(11, a);  // Queued, with the rest.
  Check(30, c);
  Check(21, b);
  Check(12, a);
  Check(31, c);
  Echo(0);  // Take 2: 11, 30, 21, 12, 31.
  ASSERT_EQ(store_.take_count(), 3u);
  EXPECT_EQ(BatchTags(2), (std::vector<uint64_t>{11, 30, 21, 12, 31}));
  Echo(2);
  Echo(1);

  EXPECT_EQ(a.tags(), (std::vector<uint64_t>{10, 11, 12}));
  EXPECT_EQ(b.tags(), (std::vector<uint64_t>{21, 20}));
  EXPECT_EQ(c.tags(), (std::vector<uint64_t>{30, 31}));
  for (const Recorder* r : {&a, &b, &c}) {
    for (const Recorder::Answer& answer : r->answers) {
      EXPECT_EQ(answer.result, DeliveredEcho(answer.tag)) << "tag " << answer.tag;
    }
  }
  EXPECT_TRUE(recorder_.answers.empty());
}

TEST_F(StrictEngineTest, AFailedOrMalformedTakeAnswersItsWholeBatchWithStoreUnavailable) {
  struct Case {
    const char* name;
    bool fail;            // Answer with an error Status...
    size_t result_count;  // ...or with this many results for a batch of three.
  };
  const Case kCases[] = {
      {"error status", true, 0},
      {"no results", false, 0},
      {"one result too few", false, 2},
      {"one result too many", false, 4},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    FakeStore store;
    StrictEngine engine(store);
    Recorder done;
    const Policy kPolicies[] = {{5, 100}, {6, 100}, {7, 100}, {8, 100}};
    for (uint64_t tag = 0; tag < 4; ++tag) {
      engine.Check(CheckQuery{"key", 1, kPolicies[tag]}, tag, done);
    }
    store.Complete(0, std::vector<CheckResult>{EchoResult(StoreOp{"k0", 1, kPolicies[0]})});
    ASSERT_EQ(store.take_count(), 2u);
    ASSERT_EQ(store.batch(1).size(), 3u);
    if (c.fail) {
      store.Fail(1, Status::Unavailable("connection lost"));
    } else {
      std::vector<CheckResult> results(c.result_count, EchoResult(StoreOp{"k9", 1, kPolicies[1]}));
      store.Complete(1, std::move(results));
    }
    ASSERT_EQ(done.tags(), Range(0, 4)) << "every check answered exactly once";
    for (uint64_t tag = 1; tag < 4; ++tag) {
      EXPECT_EQ(done.answers[tag].result, Unavailable(kPolicies[tag].limit)) << "tag " << tag;
    }
    EXPECT_EQ(store.take_count(), 2u);
    EXPECT_TRUE(engine.ready()) << "one failed Take does not make the store unready";
  }
}

TEST_F(StrictEngineTest, AFailedTakeDoesNotAffectTheNextBatch) {
  Check(0);
  Check(1);
  store_.Fail(0, Status::Unavailable("serialization failure"));
  ASSERT_EQ(store_.take_count(), 2u);
  Echo(1);
  ASSERT_EQ(recorder_.tags(), Range(0, 2));
  EXPECT_EQ(recorder_.answers[0].result, Unavailable());
  EXPECT_EQ(recorder_.answers[1].result, DeliveredEcho(1));
}

TEST_F(StrictEngineTest, StoreNotReadyRefusesAtOnceWithoutATake) {
  store_.set_ready(false);
  EXPECT_FALSE(engine_.ready());
  engine_.Check(CheckQuery{"key", 1, Policy{9, 1000}}, 5, recorder_);
  ASSERT_EQ(recorder_.answers.size(), 1u) << "answered before Check returned";
  EXPECT_EQ(recorder_.answers[0].tag, 5u);
  EXPECT_EQ(recorder_.answers[0].result, Unavailable(9));
  EXPECT_EQ(store_.take_count(), 0u);
  EXPECT_EQ(engine_.queued(), 0u);

  store_.set_ready(true);
  Check(6);
  EXPECT_EQ(store_.take_count(), 1u) << "the engine recovers when the store does";
}

TEST_F(StrictEngineTest, QueuedChecksAreAnsweredWhenTheStoreGoesAwayBeforeTheirTurn) {
  struct Case {
    const char* name;
    bool in_flight_fails;
  };
  for (const Case& c :
       {Case{"the Take in flight succeeds", false}, Case{"the Take in flight fails", true}}) {
    SCOPED_TRACE(c.name);
    FakeStore store;
    StrictEngine engine(store);
    Recorder done;
    for (uint64_t tag = 0; tag < 4; ++tag) {
      engine.Check(CheckQuery{KeyOf(tag), 1, kPolicy}, tag, done);
    }
    ASSERT_EQ(engine.queued(), 3u);
    store.set_ready(false);  // The store says so: the waiting checks are answered at once.
    EXPECT_EQ(done.tags(), (std::vector<uint64_t>{1, 2, 3}));

    if (c.in_flight_fails) {
      store.Fail(0, Status::Unavailable("connection lost"));
    } else {
      store.Complete(0, std::vector<CheckResult>{EchoResult(store.batch(0)[0])});
    }
    ASSERT_EQ(done.tags(), (std::vector<uint64_t>{1, 2, 3, 0})) << "no check is left hanging";
    EXPECT_EQ(done.answers[3].result, c.in_flight_fails ? Unavailable() : DeliveredEcho(0));
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(done.answers[i].result, Unavailable());
    EXPECT_EQ(store.take_count(), 1u) << "no Take started on a store that is not ready";
    EXPECT_EQ(engine.queued(), 0u);
  }
}

TEST_F(StrictEngineTest, ChecksBeyondMaxQueuedAreRefusedAsOverloaded) {
  constexpr size_t kMaxQueued = StoreBatcher::kMaxQueued;
  Check(0);  // In flight.
  for (uint64_t tag = 1; tag <= kMaxQueued; ++tag) Check(tag);
  ASSERT_EQ(engine_.queued(), kMaxQueued);
  EXPECT_TRUE(recorder_.answers.empty());

  for (uint64_t tag = kMaxQueued + 1; tag <= kMaxQueued + 3; ++tag) {
    engine_.Check(CheckQuery{KeyOf(tag), 1, Policy{42, 1000}}, tag, recorder_);
    ASSERT_EQ(recorder_.answers.size(), tag - kMaxQueued) << "refused before Check returned";
    EXPECT_EQ(recorder_.answers.back().tag, tag);
    EXPECT_EQ(recorder_.answers.back().result,
              Refusal(CheckStatus::kOverloaded, 42, Source::kDatabase));
  }
  EXPECT_EQ(engine_.queued(), kMaxQueued);
  EXPECT_EQ(store_.take_count(), 1u);

  // Once a batch leaves the queue there is room again.
  Echo(0);
  EXPECT_EQ(engine_.queued(), kMaxQueued - StoreBatcher::kMaxBatch);
  const uint64_t kLate = kMaxQueued + 4;
  Check(kLate);
  EXPECT_EQ(recorder_.answers.back().tag, 0u) << "the late check was queued, not refused";

  // Drain: every accepted check is decided exactly once, in arrival order.
  for (size_t index = 1; index < store_.take_count(); ++index) Echo(index);
  EXPECT_EQ(engine_.queued(), 0u);
  std::vector<uint64_t> expected_tags;
  for (uint64_t tag = kMaxQueued + 1; tag <= kMaxQueued + 3; ++tag) expected_tags.push_back(tag);
  expected_tags.push_back(0);
  for (uint64_t tag = 1; tag <= kMaxQueued; ++tag) expected_tags.push_back(tag);
  expected_tags.push_back(kLate);
  ASSERT_EQ(recorder_.tags(), expected_tags);
  for (const Recorder::Answer& a : recorder_.answers) {
    if (a.tag > kMaxQueued && a.tag != kLate) continue;
    ASSERT_EQ(a.result, DeliveredEcho(a.tag)) << "tag " << a.tag;
  }
}

TEST_F(StrictEngineTest, ChecksOfOneKeyInOneBatchAreDecidedInArrivalOrder) {
  const Policy kThree{3, 1000};
  engine_.Check(CheckQuery{"other", 1, kThree}, 100, recorder_);  // Keeps the slot busy.
  for (uint64_t tag = 0; tag < 5; ++tag) {
    engine_.Check(CheckQuery{"shared", 1, kThree}, tag, recorder_);
  }
  store_.Decide(0, kNowUs);
  ASSERT_EQ(store_.take_count(), 2u);
  ASSERT_EQ(store_.batch(1).size(), 5u);
  store_.Decide(1, kNowUs);

  ASSERT_EQ(recorder_.tags(), (std::vector<uint64_t>{100, 0, 1, 2, 3, 4}));
  const bool kAllowed[] = {true, true, true, false, false};
  const uint32_t kRemaining[] = {2, 1, 0, 0, 0};
  for (uint64_t tag = 0; tag < 5; ++tag) {
    SCOPED_TRACE("tag " + std::to_string(tag));
    const CheckResult& r = recorder_.answers[tag + 1].result;
    EXPECT_EQ(r.status, CheckStatus::kOk);
    EXPECT_EQ(r.allowed, kAllowed[tag]);
    EXPECT_EQ(r.remaining, kRemaining[tag]);
    EXPECT_EQ(r.source, Source::kDatabase);
  }
}

// Many checks of one key through two sessions against a simulated database: the global bucket
// stays exact however the checks were batched.
TEST_F(StrictEngineTest, AdmitsExactlyTheLimitWhateverTheBatching) {
  store_.set_slots(2);
  const Policy kTen{10, 60'000};
  for (uint64_t tag = 0; tag < 100; ++tag) {
    engine_.Check(CheckQuery{"api-key", 1, kTen}, tag, recorder_);
    if (tag % 7 == 6 && store_.in_flight() > 0) {
      for (size_t index = 0; index < store_.take_count(); ++index) {
        if (!store_.answered(index)) {
          store_.Decide(index, kNowUs);
          break;
        }
      }
    }
  }
  for (size_t index = 0; index < store_.take_count(); ++index) {
    if (!store_.answered(index)) store_.Decide(index, kNowUs);
  }
  EXPECT_GT(store_.take_count(), 2u);
  EXPECT_LT(store_.take_count(), 100u) << "checks were not batched";
  ASSERT_EQ(recorder_.answers.size(), 100u);
  int allowed = 0;
  for (const Recorder::Answer& a : recorder_.answers) allowed += a.result.allowed ? 1 : 0;
  EXPECT_EQ(allowed, 10);
}

TEST_F(StrictEngineTest, ACheckMadeFromInsideACallbackIsDecided) {
  // Answers each check by checking the next tag, up to `last`.
  class Chain final : public CheckCallback {
   public:
    Chain(StrictEngine& engine, uint64_t last) : engine_(engine), last_(last) {}
    void OnCheckDone(uint64_t tag, const CheckResult& result) override {
      answers.push_back(Recorder::Answer{tag, result});
      if (tag < last_) engine_.Check(CheckQuery{KeyOf(tag + 1), 1, kPolicy}, tag + 1, *this);
    }
    std::vector<Recorder::Answer> answers;

   private:
    StrictEngine& engine_;
    uint64_t last_;
  };
  Chain chain(engine_, 3);
  engine_.Check(CheckQuery{KeyOf(0), 1, kPolicy}, 0, chain);
  for (size_t index = 0; index < 4; ++index) {
    ASSERT_EQ(store_.take_count(), index + 1);
    Echo(index);
  }
  ASSERT_EQ(chain.answers.size(), 4u);
  for (uint64_t tag = 0; tag < 4; ++tag) {
    EXPECT_EQ(chain.answers[tag].tag, tag);
    EXPECT_EQ(chain.answers[tag].result, DeliveredEcho(tag));
  }
}

// A check queued while the store is ready but busy with work that is not a Take (PgStore's
// garbage collection, a session reconnecting) starts when the store announces a freed slot.
TEST_F(StrictEngineTest, ACheckQueuedWhileTheStoreIsBusyElsewhereStartsWhenASlotFrees) {
  store_.set_slots(0);  // The only session is busy with work that is not a Take.
  Check(0);
  EXPECT_EQ(store_.take_count(), 0u);
  EXPECT_EQ(engine_.queued(), 1u);

  store_.set_slots(1);  // That work is done; no check arrives after it.
  EXPECT_EQ(store_.take_count(), 1u) << "the queued check hangs until another check arrives";
  if (store_.take_count() == 1) Echo(0);
  EXPECT_EQ(recorder_.tags(), std::vector<uint64_t>{0});
}

TEST_F(StrictEngineTest, StoreNameAndReadinessComeFromTheStore) {
  EXPECT_EQ(engine_.store_name(), "fake");
  EXPECT_TRUE(engine_.ready());
  store_.set_ready(false);
  EXPECT_FALSE(engine_.ready());
  store_.set_ready(true);
  EXPECT_TRUE(engine_.ready());
}

}  // namespace
}  // namespace ratelimit
