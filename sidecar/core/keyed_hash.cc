// KeyedHash: SipHash with a secret per-process key, so clients cannot choose colliding keys.
#include "sidecar/core/keyed_hash.h"

namespace ratelimit {
namespace {

uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

uint64_t LoadLittleEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

struct SipState {
  uint64_t v0, v1, v2, v3;

  void Round() {
    v0 += v1;
    v1 = Rotl(v1, 13);
    v1 ^= v0;
    v0 = Rotl(v0, 32);
    v2 += v3;
    v3 = Rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = Rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = Rotl(v1, 17);
    v1 ^= v2;
    v2 = Rotl(v2, 32);
  }

  void Compress(uint64_t m, int rounds) {
    v3 ^= m;
    for (int i = 0; i < rounds; ++i) Round();
    v0 ^= m;
  }
};

// Absorbs `data` into `s` (the rounds common to both output lengths), up to the finalization.
template <int kCompressionRounds>
void Absorb(SipState& s, std::string_view data) {
  const size_t whole = data.size() / 8 * 8;
  for (size_t i = 0; i < whole; i += 8) {
    s.Compress(LoadLittleEndian64(data.data() + i), kCompressionRounds);
  }
  // The last block: the remaining bytes, little-endian, and the length's low byte on top.
  uint64_t last = static_cast<uint64_t>(data.size() & 0xff) << 56;
  for (size_t i = data.size(); i > whole; --i) {
    last |= static_cast<uint64_t>(static_cast<uint8_t>(data[i - 1])) << (8 * (i - 1 - whole));
  }
  s.Compress(last, kCompressionRounds);
}

SipState Initial(const HashKey& key) {
  return SipState{0x736f6d6570736575ULL ^ key.k0, 0x646f72616e646f6dULL ^ key.k1,
                  0x6c7967656e657261ULL ^ key.k0, 0x7465646279746573ULL ^ key.k1};
}

}  // namespace

template <int kCompressionRounds, int kFinalizationRounds>
uint64_t SipHash(const HashKey& key, std::string_view data) {
  SipState s = Initial(key);
  Absorb<kCompressionRounds>(s, data);
  s.v2 ^= 0xff;
  for (int i = 0; i < kFinalizationRounds; ++i) s.Round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

template <int kCompressionRounds, int kFinalizationRounds>
KeyDigest SipHash128(const HashKey& key, std::string_view data) {
  SipState s = Initial(key);
  s.v1 ^= 0xee;
  Absorb<kCompressionRounds>(s, data);
  s.v2 ^= 0xee;
  for (int i = 0; i < kFinalizationRounds; ++i) s.Round();
  KeyDigest digest;
  digest.lo = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
  s.v1 ^= 0xdd;
  for (int i = 0; i < kFinalizationRounds; ++i) s.Round();
  digest.hi = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
  return digest;
}

template uint64_t SipHash<1, 3>(const HashKey& key, std::string_view data);
template uint64_t SipHash<2, 4>(const HashKey& key, std::string_view data);
template KeyDigest SipHash128<1, 3>(const HashKey& key, std::string_view data);
template KeyDigest SipHash128<2, 4>(const HashKey& key, std::string_view data);

}  // namespace ratelimit
