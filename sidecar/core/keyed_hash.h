// KeyedHash: SipHash with a secret per-process key, so clients cannot choose colliding keys.
#ifndef RATELIMIT_SIDECAR_CORE_KEYED_HASH_H_
#define RATELIMIT_SIDECAR_CORE_KEYED_HASH_H_

#include <cstdint>
#include <string_view>

namespace ratelimit {

// The 128-bit secret of a SipHash instance. Production draws it from the OS at start-up; tests
// pass fixed values.
struct HashKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
};

// SipHash-c-d of `data` under `key` (Aumasson and Bernstein). The rate-limit keys that index the
// bucket table come from clients; with an unkeyed hash such as std::hash, anyone who can choose
// keys can make them all collide and turn every lookup into a walk of one long chain.
template <int kCompressionRounds, int kFinalizationRounds>
uint64_t SipHash(const HashKey& key, std::string_view data);

// SipHash-1-3: the speed/strength trade-off hash tables use (Rust's default hasher).
inline uint64_t KeyedHash(const HashKey& key, std::string_view data) {
  return SipHash<1, 3>(key, data);
}

// A 128-bit keyed digest of a rate-limit key: what the in-memory tables store in place of the
// key itself, so that an entry has the same size whatever the key's length (1 to 512 bytes).
// Two of n live keys share a digest with probability about n^2 / 2^129 (1e-26 for a million),
// and clients, who do not know the secret, cannot aim at a collision.
struct KeyDigest {
  uint64_t lo = 0;
  uint64_t hi = 0;
  bool operator==(const KeyDigest&) const = default;
};

// SipHash-c-d with its 128-bit output (the reference implementation's outlen = 16).
template <int kCompressionRounds, int kFinalizationRounds>
KeyDigest SipHash128(const HashKey& key, std::string_view data);

inline KeyDigest KeyedDigest(const HashKey& key, std::string_view data) {
  return SipHash128<1, 3>(key, data);
}

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_KEYED_HASH_H_
