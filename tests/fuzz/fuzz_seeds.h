// Seed inputs for the connection fuzz target: valid request streams in the target's format.
#ifndef RATELIMIT_TESTS_FUZZ_FUZZ_SEEDS_H_
#define RATELIMIT_TESTS_FUZZ_FUZZ_SEEDS_H_

#include <cstdint>
#include <vector>

namespace ratelimit {

// Each seed is one chunk-size byte followed by a stream of frames: checks, pings, overrides.
std::vector<std::vector<uint8_t>> FuzzSeeds();

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_FUZZ_FUZZ_SEEDS_H_
