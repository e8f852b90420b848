// Simulated sidecars sharing one table: LeaseEngines on FakeStores answered after a random
// latency against one map of rows, and what a bound check needs of their admissions.
#ifndef RATELIMIT_TESTS_TESTING_LEASE_SIMULATION_H_
#define RATELIMIT_TESTS_TESTING_LEASE_SIMULATION_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "sidecar/core/lease_engine.h"
#include "sidecar/core/shared_bucket.h"
#include "sidecar/core/token_bucket.h"
#include "tests/testing/bucket_steps.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_store.h"

namespace ratelimit {

// The simulated database's clock runs this far ahead of the sidecars'.
inline constexpr int64_t kSimulatedDbOffsetUs = 1'700'000'000'000'000;

// A check in a simulation, made or admitted: when, and how many tokens.
struct Admission {
  int64_t at_us;
  uint32_t cost;
};

// One sidecar of a simulation: a LeaseEngine on its own FakeStore, whose Takes are answered
// `latency` after they start by deciding them against a table shared with the other sidecars.
class SimulatedSidecar final : public CheckCallback {
 public:
  SimulatedSidecar(FakeClock& clock, std::map<std::string, SharedRow>& table, size_t slots,
                   uint64_t seed, int64_t max_latency_us, const LeaseOptions& options)
      : clock_(clock),
        table_(table),
        store_(slots),
        engine_(store_, clock, HashKey{seed, seed + 1}, options),
        rng_(seed),
        max_latency_us_(max_latency_us) {}

  void Check(const std::string& key, uint32_t cost, const Policy& policy) {
    ++checks_;
    const uint64_t tag = next_tag_++;
    costs_[tag] = cost;
    keys_[tag] = key;
    checking_ = tag;
    engine_.Check(CheckQuery{key, cost, policy}, tag, *this);
    checking_ = kNone;
    NoteNewTakes();
  }

  void OnCheckDone(uint64_t tag, const CheckResult& result) override {
    ++answered_;
    if (tag == checking_) ++answered_at_once_;
    auto cost = costs_.find(tag);
    if (cost == costs_.end()) {
      ADD_FAILURE() << "answered twice, or never asked: tag " << tag;
      return;
    }
    if (result.allowed) {
      admitted_[keys_[tag]].push_back(Admission{clock_.NowMicros(), cost->second});
    }
    if (result.status != CheckStatus::kOk) ++refused_;
    costs_.erase(cost);
    keys_.erase(tag);
  }

  // Answers every Take that is due by now, and those due at once that answering starts.
  void Step() {
    NoteNewTakes();
    for (size_t index = 0; index < due_us_.size(); ++index) {
      if (store_.answered(index) || due_us_[index] > clock_.NowMicros()) continue;
      if (fail_per_mille_ > 0 && rng_.UpTo(999) < fail_per_mille_) {
        store_.Fail(index, Status::Unavailable("a simulated failed transaction"));
      } else {
        store_.rows() = table_;
        store_.Decide(index, clock_.NowMicros() + kSimulatedDbOffsetUs);
        table_ = store_.rows();
      }
      NoteNewTakes();
    }
  }

  // Answers everything, however long it takes.
  void Drain() {
    while (store_.in_flight() > 0) {
      for (int64_t& due : due_us_) due = std::min(due, clock_.NowMicros());
      Step();
    }
  }

  // Fails this share of Takes (in thousandths) instead of deciding them: a rolled-back
  // transaction, which changes no row.
  void set_fail_per_mille(uint64_t per_mille) { fail_per_mille_ = per_mille; }

  LeaseEngine& engine() { return engine_; }
  FakeStore& store() { return store_; }
  uint64_t checks() const { return checks_; }
  uint64_t answered() const { return answered_; }
  uint64_t answered_at_once() const { return answered_at_once_; }
  uint64_t refused() const { return refused_; }
  const std::vector<Admission>& admitted(const std::string& key) { return admitted_[key]; }

 private:
  static constexpr uint64_t kNone = ~uint64_t{0};

  void NoteNewTakes() {
    while (due_us_.size() < store_.take_count()) {
      const uint64_t latency = rng_.UpTo(static_cast<uint64_t>(max_latency_us_));
      due_us_.push_back(clock_.NowMicros() + static_cast<int64_t>(latency));
    }
  }

  FakeClock& clock_;
  std::map<std::string, SharedRow>& table_;
  FakeStore store_;
  LeaseEngine engine_;
  Rng rng_;
  int64_t max_latency_us_;
  uint64_t fail_per_mille_ = 0;
  std::vector<int64_t> due_us_;  // Per Take index.
  std::map<uint64_t, uint32_t> costs_;
  std::map<uint64_t, std::string> keys_;
  std::map<std::string, std::vector<Admission>> admitted_;
  uint64_t next_tag_ = 0;
  uint64_t checking_ = kNone;
  uint64_t checks_ = 0;
  uint64_t answered_ = 0;
  uint64_t answered_at_once_ = 0;
  uint64_t refused_ = 0;
};

// The most tokens admitted in any closed interval [s, s + length].
inline uint64_t MostAdmittedWithin(std::vector<Admission> admissions, int64_t length_us) {
  std::sort(admissions.begin(), admissions.end(),
            [](const Admission& a, const Admission& b) { return a.at_us < b.at_us; });
  uint64_t most = 0;
  uint64_t sum = 0;
  size_t first = 0;
  for (const Admission& a : admissions) {
    sum += a.cost;
    while (a.at_us - admissions[first].at_us > length_us) sum -= admissions[first++].cost;
    most = std::max(most, sum);
  }
  return most;
}

// What one perfect token bucket of `policy` admits of `checks`, made in this order.
inline uint64_t PerfectlyAdmitted(const std::vector<Admission>& checks, const Policy& policy) {
  if (checks.empty()) return 0;
  TokenBucket::State bucket = TokenBucket::Fresh(policy, checks.front().at_us);
  uint64_t admitted = 0;
  for (const Admission& c : checks) {
    if (TokenBucket::Decide(bucket, policy, c.cost, c.at_us).allowed) admitted += c.cost;
  }
  return admitted;
}

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_LEASE_SIMULATION_H_
