// FakeStore: a SharedStore whose Takes the test answers by hand, or as a correct database would.
#ifndef RATELIMIT_TESTS_TESTING_FAKE_STORE_H_
#define RATELIMIT_TESTS_TESTING_FAKE_STORE_H_

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schema/status.h"
#include "sidecar/core/shared_bucket.h"
#include "sidecar/core/shared_store.h"

namespace ratelimit {

// Records every Take (its batch, and its TakeDone) without answering it. The test then answers
// pending Takes explicitly, in any order: with canned answers (Answer, Complete), an error
// (Fail), or by applying the batch to an in-memory table of rows with the real ApplyOnRow
// (Decide), so that a test can simulate a correct database.
//
// free_slots() is `slots` minus the Takes still in flight; ready() is whatever the test set. A
// Take that breaks SharedStore's REQUIRES (no free slot, empty batch) is reported as a test
// failure.
//
// Thread-safety: the test's thread only. Every Take is recorded for the store's lifetime, so
// Take indices (0, 1, ... in the order the Takes started) and references returned by batch()
// stay valid. Answering calls the TakeDone before returning, so the engine under test must still
// be alive.
class FakeStore final : public SharedStore {
 public:
  explicit FakeStore(size_t slots = 1) : slots_(slots) {}

  void Take(std::vector<StoreOp> batch, TakeDone done) override {
    if (batch.empty()) ADD_FAILURE() << "Take with an empty batch";
    if (free_slots() == 0) ADD_FAILURE() << "Take without a free slot";
    takes_.push_back(Pending{std::move(batch), std::move(done), false});
  }
  size_t free_slots() const override {
    const size_t busy = in_flight();
    return slots_ > busy ? slots_ - busy : 0;
  }
  bool ready() const override { return ready_; }
  std::string_view name() const override { return "fake"; }

  void set_slots(size_t slots) {
    slots_ = slots;
    NotifyCapacity();
  }
  void set_ready(bool ready) {
    ready_ = ready;
    NotifyCapacity();
  }

  // Takes started so far, answered or not.
  size_t take_count() const { return takes_.size(); }
  // Takes started and not yet answered.
  size_t in_flight() const {
    size_t n = 0;
    for (const Pending& take : takes_) n += take.answered ? 0 : 1;
    return n;
  }
  const std::vector<StoreOp>& batch(size_t index) const { return takes_.at(index).batch; }
  bool answered(size_t index) const { return takes_.at(index).answered; }

  // Answers Take `index` with `answers`. The slot is free again before the TakeDone runs, as
  // with a real session, so the engine may start the next Take from inside it.
  // REQUIRES: Take `index` was started and is not answered yet.
  void Answer(size_t index, Result<std::vector<StoreAnswer>> answers) {
    if (index >= takes_.size() || takes_[index].answered) {
      ADD_FAILURE() << "Answer(" << index << ") of a Take that is not pending";
      return;
    }
    TakeDone done = std::move(takes_[index].done);
    takes_[index].done = nullptr;
    takes_[index].answered = true;
    done(std::move(answers));  // May start Takes: takes_[index] is not touched after this.
  }

  // Answers Take `index` of kCheck operations with one CheckResult each.
  void Complete(size_t index, Result<std::vector<CheckResult>> results) {
    if (!results.ok()) {
      Answer(index, results.status());
      return;
    }
    std::vector<StoreAnswer> answers;
    for (const CheckResult& r : *results) answers.push_back(StoreAnswer{r, 0, 0});
    Answer(index, std::move(answers));
  }

  void Fail(size_t index, Status status) { Answer(index, std::move(status)); }

  // Answers Take `index` as a correct database would at database time `now_us`: the operations
  // on each key, in batch order, applied by ApplyOnRow to that key's row in rows(); a missing
  // row is a full bucket of its first operation's policy (or a full, ended window). A row is stored
  // only when ApplyOnRow says it must be written, so a batch of denials or reads leaves rows() as
  // it was.
  void Decide(size_t index, int64_t now_us) {
    if (index >= takes_.size() || takes_[index].answered) {
      ADD_FAILURE() << "Decide(" << index << ") of a Take that is not pending";
      return;
    }
    const std::vector<StoreOp>& ops = takes_[index].batch;
    std::map<std::string, std::vector<size_t>> by_key;  // Positions in the batch, in order.
    for (size_t i = 0; i < ops.size(); ++i) by_key[ops[i].key].push_back(i);
    std::vector<StoreAnswer> answers(ops.size());
    for (const auto& [key, positions] : by_key) {
      const Policy& first = ops[positions.front()].policy;
      // A fixed window's new row has its window ended, as the real INSERT makes it.
      const bool window = ops[positions.front()].algorithm == Algorithm::kFixedWindow;
      SharedRow row{static_cast<double>(first.limit),
                    window ? now_us - int64_t{first.window_ms} * 1000 : now_us, first.limit,
                    first.window_ms, ops[positions.front()].algorithm};
      if (auto it = rows_.find(key); it != rows_.end()) row = it->second;
      std::vector<const StoreOp*> of_key;
      for (size_t i : positions) of_key.push_back(&ops[i]);
      std::vector<StoreAnswer> decided;
      if (ApplyOnRow(row, of_key, now_us, decided)) rows_[key] = row;
      for (size_t j = 0; j < positions.size(); ++j) answers[positions[j]] = decided.at(j);
    }
    Answer(index, std::move(answers));
  }

  // The simulated table that Decide reads and writes; tests may seed or inspect it.
  std::map<std::string, SharedRow>& rows() { return rows_; }

 private:
  struct Pending {
    std::vector<StoreOp> batch;
    TakeDone done;  // Empty once answered.
    bool answered;
  };

  size_t slots_;
  bool ready_ = true;
  std::deque<Pending> takes_;  // A deque, so batch() references survive later Takes.
  std::map<std::string, SharedRow> rows_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_FAKE_STORE_H_
