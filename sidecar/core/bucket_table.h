// BucketTable: per-key state in memory, at most a fixed number of keys, never rehashed.
#ifndef RATELIMIT_SIDECAR_CORE_BUCKET_TABLE_H_
#define RATELIMIT_SIDECAR_CORE_BUCKET_TABLE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sidecar/core/keyed_hash.h"

namespace ratelimit {

// A hash table from key to State, holding at most max_keys() keys.
//
// Keys are stored as their 128-bit KeyedDigest, not as text: an entry has the same size whatever
// the key's length, so max_keys bounds the memory (clients choose the keys, and a key may be 512
// bytes long), and clients, who do not know the secret, cannot choose keys that collide.
//
// Every hash slot is allocated up front, at construction, for max_keys keys: the table never
// rehashes, so no lookup ever waits behind a copy of the whole table however fast keys arrive.
// An entry is one allocation of about 64 bytes (see the README's bytes per key), made when its
// key is inserted and freed when it is erased, so memory follows the keys held.
//
// When the table is full, the owner makes room with EvictOne, which samples kEvictionSample
// entries near a random slot (constant time, as caches do) and forgets one of them (see there).
// Sweep forgets, a slice of the table at a time, states the owner calls idle.
// Thread-safety: none; the loop thread only.
template <typename State>
class BucketTable {
 public:
  static constexpr size_t kEvictionSample = 8;
  // Returned by an eviction cost function for a state that must not be evicted now.
  static constexpr double kNeverEvict = std::numeric_limits<double>::infinity();

  // Keys are digested under `hash_key`, which must be secret from clients. max_keys >= 1.
  BucketTable(const HashKey& hash_key, size_t max_keys)
      : secret_(hash_key),
        max_keys_(std::max<size_t>(1, max_keys)),
        random_(hash_key.k0 ^ (hash_key.k1 << 1) ^ 0x9e3779b97f4a7c15ULL) {
    map_.reserve(max_keys_);  // Every slot now: inserting up to max_keys never rehashes.
  }

  KeyDigest DigestOf(std::string_view key) const { return KeyedDigest(secret_, key); }

  State* Find(std::string_view key) { return Find(DigestOf(key)); }
  State* Find(const KeyDigest& digest) {
    auto it = map_.find(digest);
    return it == map_.end() ? nullptr : &it->second;
  }

  // Stores `state` for a key that is not in the table; the state keeps its address until
  // erased. REQUIRES: !full() (make room first with EvictOne); the key is absent.
  State& Insert(std::string_view key, const State& state) { return Insert(DigestOf(key), state); }
  State& Insert(const KeyDigest& digest, const State& state) {
    return map_.emplace(digest, state).first->second;
  }

  void Erase(std::string_view key) { Erase(DigestOf(key)); }
  void Erase(const KeyDigest& digest) { map_.erase(digest); }

  size_t size() const { return map_.size(); }
  size_t max_keys() const { return max_keys_; }
  bool full() const { return map_.size() >= max_keys_; }
  // Hash slots a full Sweep pass visits: fixed at construction.
  size_t slot_count() const { return map_.bucket_count(); }

  // Calls fn(state) for every state, in no particular order. `fn` must not insert or erase.
  template <typename Fn>
  void ForEach(Fn&& fn) {
    for (auto& entry : map_) fn(entry.second);
  }

  // Visits up to `max_slots` hash slots, continuing where the previous call stopped, and erases
  // every state for which idle(state) is true. Returns how many were erased. A full pass over
  // the table takes slot_count() / max_slots calls.
  template <typename IsIdle>
  size_t Sweep(size_t max_slots, IsIdle&& idle) {
    const size_t slots = map_.bucket_count();
    if (cursor_ >= slots) cursor_ = 0;  // A pass ended.
    const size_t end = std::min(slots, cursor_ + max_slots);
    doomed_.clear();
    for (size_t slot = cursor_; slot < end; ++slot) {
      for (auto it = map_.cbegin(slot); it != map_.cend(slot); ++it) {
        if (idle(it->second)) doomed_.push_back(it->first);
      }
    }
    cursor_ = end;
    for (const KeyDigest& digest : doomed_) map_.erase(digest);
    return doomed_.size();
  }

  // Forgets one entry of a sample of up to kEvictionSample entries read from slots drawn at
  // random, and returns true; false when the sample held no entry that may go.
  //   - Recency first: only the least recently used half of the sample may go (by
  //     last_used(state), any monotonic time), so that a key in steady use is almost never a
  //     candidate, however many new keys arrive: it is younger than most of the table.
  //   - Then the candidate that costs least to forget (cost(state); kNeverEvict: never),
  //     the older on a tie.
  // on_evict(state) runs before the entry goes.
  template <typename LastUsed, typename Cost, typename OnEvict>
  bool EvictOne(LastUsed&& last_used, Cost&& cost, OnEvict&& on_evict) {
    struct Candidate {
      Entry* entry;
      int64_t used;
      double cost;
    };
    Candidate sample[kEvictionSample];
    size_t n = 0;
    const size_t slots = map_.bucket_count();
    for (size_t drawn = 0; drawn < kMaxSlotsSampled && n < kEvictionSample; ++drawn) {
      // Each slot drawn at random, not a run of neighbours: evicting the entry that follows a
      // run of empty slots, again and again, would make the runs grow.
      const size_t slot = NextRandom() % slots;
      for (auto it = map_.begin(slot); it != map_.end(slot) && n < kEvictionSample; ++it) {
        const double c = cost(it->second);
        if (c != kNeverEvict) sample[n++] = Candidate{&*it, last_used(it->second), c};
      }
    }
    if (n == 0) return false;
    std::sort(sample, sample + n,
              [](const Candidate& a, const Candidate& b) { return a.used < b.used; });
    const Candidate* victim =
        std::min_element(sample, sample + (n + 1) / 2,
                         [](const Candidate& a, const Candidate& b) { return a.cost < b.cost; });
    on_evict(victim->entry->second);
    map_.erase(victim->entry->first);
    return true;
  }

 private:
  using Entry = std::pair<const KeyDigest, State>;
  // The digest is already a keyed random function of the key: its low half is the slot hash.
  // noexcept, so that the table does not store a copy of it in each entry.
  struct Hash {
    size_t operator()(const KeyDigest& digest) const noexcept { return digest.lo; }
  };
  // How many slots a sample draws at most: about a third are empty when the table is full.
  static constexpr size_t kMaxSlotsSampled = 64;

  uint64_t NextRandom() {  // SplitMix64.
    uint64_t z = (random_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  const HashKey secret_;
  const size_t max_keys_;
  std::unordered_map<KeyDigest, State, Hash> map_;
  size_t cursor_ = 0;
  uint64_t random_;
  std::vector<KeyDigest> doomed_;  // Reused by Sweep to avoid allocating per call.
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_BUCKET_TABLE_H_
