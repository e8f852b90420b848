// BucketTable: per-key bucket state in memory, holding only keys whose bucket is not full.
#ifndef RATELIMIT_SIDECAR_CORE_BUCKET_TABLE_H_
#define RATELIMIT_SIDECAR_CORE_BUCKET_TABLE_H_

#include <algorithm>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sidecar/core/keyed_hash.h"

namespace ratelimit {

// A hash table from key to State with lookups by string_view (no copy of the key), a keyed hash
// (see KeyedHash) so that clients cannot choose keys that collide, and an
// incremental sweep that forgets states a predicate calls idle, a slice of the table at a time,
// so memory follows the number of active keys without ever pausing the loop for long.
// Thread-safety: none; the loop thread only.
template <typename State>
class BucketTable {
 public:
  // Keys are hashed with SipHash under `hash_key`, which must be secret from clients.
  explicit BucketTable(const HashKey& hash_key) : map_(0, Hash{hash_key}) {}

  State* Find(std::string_view key) {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second;
  }

  void Insert(std::string_view key, const State& state) { map_.emplace(std::string(key), state); }

  void Erase(std::string_view key) {
    auto it = map_.find(key);
    if (it != map_.end()) map_.erase(it);
  }

  size_t size() const { return map_.size(); }

  // Gives the slots back when the table holds far fewer keys than slots (after a burst of keys
  // went away), as a Sweep pass does at its end. States keep their addresses.
  void ShrinkIfSparse() {
    if (map_.bucket_count() > kMinSlotsToShrink && map_.size() * 4 < map_.bucket_count()) {
      map_.rehash(0);  // As few slots as the remaining keys need.
      cursor_ = 0;
    }
  }

  // Calls fn(key, state) for every key, in no particular order. `fn` must not insert or erase.
  template <typename Fn>
  void ForEach(Fn&& fn) {
    for (auto& [key, state] : map_) fn(std::string_view(key), state);
  }

  // Hash slots a full Sweep pass visits. Shrinks again after the table emptied (see Sweep).
  size_t slot_count() const { return map_.bucket_count(); }

  // Visits up to `max_slots` hash slots, continuing where the previous call stopped, and erases
  // every state for which idle(state) is true. Returns how many were erased. A full pass over
  // the table takes slot_count() / max_slots calls. At the end of a pass, a table holding far
  // fewer keys than slots (after a burst of keys went idle) gives the slots back.
  template <typename IsIdle>
  size_t Sweep(size_t max_slots, IsIdle&& idle) {
    const size_t slots = map_.bucket_count();
    if (cursor_ >= slots) cursor_ = 0;  // The table was rehashed smaller, or a pass ended.
    const size_t end = std::min(slots, cursor_ + max_slots);
    doomed_.clear();
    for (size_t slot = cursor_; slot < end; ++slot) {
      for (auto it = map_.cbegin(slot); it != map_.cend(slot); ++it) {
        if (idle(it->second)) doomed_.push_back(it->first);  // Views stay valid until erased.
      }
    }
    cursor_ = end;
    for (std::string_view key : doomed_) Erase(key);
    if (end == slots) ShrinkIfSparse();
    return doomed_.size();
  }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view key) const { return KeyedHash(secret, key); }
    HashKey secret;
  };

  static constexpr size_t kMinSlotsToShrink = 1024;

  std::unordered_map<std::string, State, Hash, std::equal_to<>> map_;
  size_t cursor_ = 0;
  std::vector<std::string_view> doomed_;  // Reused by Sweep to avoid allocating per call.
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_BUCKET_TABLE_H_
