// MemoryEngine: decides checks against buckets held in this process only.
#include "sidecar/core/memory_engine.h"

#include "sidecar/core/bucket_table.h"
#include "sidecar/core/fixed_window.h"
#include "sidecar/core/token_bucket.h"

namespace ratelimit {
namespace {

// One implementation per bucket algorithm; Algo supplies State, Fresh, Decide and IsFull.
template <typename Algo>
class MemoryEngineImpl final : public MemoryEngine {
 public:
  MemoryEngineImpl(Clock& clock, const HashKey& hash_key, size_t max_keys)
      : clock_(clock), table_(hash_key, max_keys) {
    metrics_.max_keys.Set(static_cast<int64_t>(table_.max_keys()));
  }

  CheckResult Decide(const CheckQuery& query) final { return DecideHere(query); }

  void Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) override {
    done.OnCheckDone(tag, DecideHere(query));
  }

  std::string_view store_name() const override { return "memory"; }
  bool ready() const override { return true; }

  size_t Sweep(size_t max_slots) override {
    const int64_t now = clock_.NowMicros();
    const size_t erased = table_.Sweep(
        max_slots, [now](const typename Algo::State& state) { return Algo::IsFull(state, now); });
    metrics_.buckets.Set(static_cast<int64_t>(table_.size()));
    return erased;
  }

  size_t size() const override { return table_.size(); }
  size_t slot_count() const override { return table_.slot_count(); }

 private:
  // A read (cost 0) never changes state: it answers from a copy, so it neither stores a new key
  // nor restarts an expired fixed window nor rescales a bucket to the reader's policy. A check
  // that takes tokens always leaves a bucket that is not full, which is therefore kept.
  // Inlined into Check, the hot path, which then costs no call more than deciding in place.
  [[gnu::always_inline]] CheckResult DecideHere(const CheckQuery& query) {
    const int64_t now = clock_.NowMicros();
    const KeyDigest digest = table_.DigestOf(query.key);  // Once: Find and Insert share it.
    typename Algo::State* stored = table_.Find(digest);
    CheckResult result;
    if (stored != nullptr && query.cost > 0) {
      result = Algo::Decide(*stored, query.policy, query.cost, now);
    } else {
      typename Algo::State state = stored ? *stored : Algo::Fresh(query.policy, now);
      result = Algo::Decide(state, query.policy, query.cost, now);
      if (stored == nullptr && query.cost > 0) {
        if (table_.full()) Evict(now);
        table_.Insert(digest, state);
        metrics_.buckets.Set(static_cast<int64_t>(table_.size()));
      }
    }
    result.source = Source::kMemory;
    return result;
  }

  // Makes room for one key (every bucket may go, so one always does).
  [[gnu::noinline]] void Evict(int64_t now) {
    using State = typename Algo::State;
    if (table_.EvictOne([](const State& state) { return Algo::LastUsedUs(state); },
                        [now](const State& state) { return Algo::ForgetCost(state, now); },
                        [](const State&) {})) {
      metrics_.evictions.Add();
    }
  }

  Clock& clock_;
  BucketTable<typename Algo::State> table_;
};

}  // namespace

std::unique_ptr<MemoryEngine> NewMemoryEngine(Algorithm algorithm, Clock& clock,
                                              const HashKey& hash_key, size_t max_keys) {
  switch (algorithm) {
    case Algorithm::kTokenBucket:
      return std::make_unique<MemoryEngineImpl<TokenBucket>>(clock, hash_key, max_keys);
    case Algorithm::kFixedWindow:
      return std::make_unique<MemoryEngineImpl<FixedWindow>>(clock, hash_key, max_keys);
  }
  return nullptr;
}

}  // namespace ratelimit
