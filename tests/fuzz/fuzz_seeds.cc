// Seed inputs for the connection fuzz target: valid request streams in the target's format.
#include "tests/fuzz/fuzz_seeds.h"

#include <string>

#include "schema/frame_codec.h"

namespace ratelimit {

std::vector<std::vector<uint8_t>> FuzzSeeds() {
  FrameEncoder encoder;
  std::vector<std::vector<uint8_t>> seeds;
  auto add = [&](uint8_t chunk, auto&& build) {
    std::vector<uint8_t> seed = {chunk};
    build([&](std::span<const uint8_t> frame) {
      seed.insert(seed.end(), frame.begin(), frame.end());
    });
    seeds.push_back(std::move(seed));
  };
  add(255, [&](auto put) { put(encoder.CheckRequest(1, {.key = "k"})); });
  add(7, [&](auto put) {
    for (uint64_t id = 0; id < 12; ++id) put(encoder.CheckRequest(id, {.key = "burst"}));
  });
  add(0, [&](auto put) {
    put(encoder.PingRequest(9));
    put(encoder.CheckRequest(10, {.key = "override", .cost = 3, .limit = 5, .window_ms = 100}));
    put(encoder.CheckRequest(11, {.key = "override", .cost = 0, .limit = 7, .window_ms = 50}));
  });
  add(31, [&](auto put) {
    put(encoder.CheckRequest(1, {.key = "", .cost = 2}));
    put(encoder.CheckRequest(2, {.key = std::string(513, 'x')}));
    put(encoder.CheckRequest(3, {.key = "k", .cost = 4000000000u}));
    put(encoder.CheckRequest(4, {.key = "k", .limit = 5}));
  });
  add(3, [&](auto put) { put(encoder.CheckResponse(5, CheckResult{.allowed = true})); });
  add(64, [&](auto put) {
    put(encoder.CheckRequest(1, {.key = std::string("\0nul\xff", 5)}));
    put(encoder.ErrorResponse(2, CheckStatus::kOverloaded, "x"));
  });
  return seeds;
}

}  // namespace ratelimit
