// Tests of SipHash against the reference vectors, and of the key's effect.
#include "sidecar/core/keyed_hash.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace ratelimit {
namespace {

// The reference implementation's SipHash-2-4 outputs for key 00 01 .. 0f and the messages
// "", "\x00", "\x00\x01", ... (the first 16 entries of vectors_sip64, read little-endian).
constexpr uint64_t kSip24Vectors[] = {
    0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL,
    0xcf2794e0277187b7ULL, 0x18765564cd99a68dULL, 0xcbc9466e58fee3ceULL, 0xab0200f58b01d137ULL,
    0x93f5f5799a932462ULL, 0x9e0082df0ba9e4b0ULL, 0x7a5dbbc594ddb9f3ULL, 0xf4b32f46226bada7ULL,
    0x751e8fbc860ee5fbULL, 0x14ea5627c0843d90ULL, 0xf723ca908e7af2eeULL, 0xa129ca6149be45e5ULL,
};

TEST(KeyedHashTest, SipHash24MatchesTheReferenceVectors) {
  const HashKey key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  std::string message;
  for (size_t length = 0; length < std::size(kSip24Vectors); ++length) {
    SCOPED_TRACE("length " + std::to_string(length));
    EXPECT_EQ((SipHash<2, 4>(key, message)), kSip24Vectors[length]);
    message.push_back(static_cast<char>(length));
  }
}

// The reference implementation's SipHash-2-4 128-bit outputs for the same key and the messages
// "", "\x00", "\x00\x01", "\x00\x01\x02" (vectors_sip128, each half read little-endian).
constexpr KeyDigest kSip24Vectors128[] = {
    {0xe6a825ba047f81a3ULL, 0x930255c71472f66dULL},
    {0x44af996bd8c187daULL, 0x45fc229b11597634ULL},
    {0xc75da4a48d227781ULL, 0xe4ff0af6de8ba3fcULL},
    {0x4ea967520cb6709cULL, 0x51ed8529b0b6335fULL},
};

TEST(KeyedHashTest, SipHash24With128BitOutputMatchesTheReferenceVectors) {
  const HashKey key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  std::string message;
  for (size_t length = 0; length < std::size(kSip24Vectors128); ++length) {
    SCOPED_TRACE("length " + std::to_string(length));
    const KeyDigest digest = SipHash128<2, 4>(key, message);
    EXPECT_EQ(digest.lo, kSip24Vectors128[length].lo);
    EXPECT_EQ(digest.hi, kSip24Vectors128[length].hi);
    message.push_back(static_cast<char>(length));
  }
}

TEST(KeyedHashTest, DigestsOfDifferentKeysDifferInBothHalves) {
  const HashKey key{5, 6};
  std::set<uint64_t> lows, highs;
  for (int i = 0; i < 1000; ++i) {
    const KeyDigest digest = KeyedDigest(key, "api-key-" + std::to_string(i));
    lows.insert(digest.lo);
    highs.insert(digest.hi);
  }
  EXPECT_EQ(lows.size(), 1000u);
  EXPECT_EQ(highs.size(), 1000u);
}

TEST(KeyedHashTest, DifferentSecretsGiveDifferentHashesForTheSameKeys) {
  const HashKey a{1, 2};
  const HashKey b{1, 3};
  int same = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = "api-key-" + std::to_string(i);
    same += KeyedHash(a, key) == KeyedHash(b, key) ? 1 : 0;
  }
  EXPECT_EQ(same, 0);
}

TEST(KeyedHashTest, EveryByteAndTheLengthCount) {
  const HashKey key{42, 43};
  std::set<uint64_t> seen;
  const std::string inputs[] = {
      "",   std::string(1, '\0'), std::string(2, '\0'), "a",        "b", "ab",
      "ba", "abcdefgh",           "abcdefgi",           "abcdefghi"};
  for (const std::string& input : inputs) seen.insert(KeyedHash(key, input));
  EXPECT_EQ(seen.size(), std::size(inputs));
}

}  // namespace
}  // namespace ratelimit
