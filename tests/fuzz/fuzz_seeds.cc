// Seed inputs for the connection fuzz target: valid request streams in the target's format.
#include "tests/fuzz/fuzz_seeds.h"

#include <cstdint>
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
  add(255, [&](auto put) { put(encoder.PingRequest(0)); });
  add(254, [&](auto put) {  // Every field set, ids at both ends of their range.
    put(encoder.CheckRequest(
        UINT64_MAX, {.key = "all-fields", .cost = 7, .limit = 4294967295u, .window_ms = 1}));
    put(encoder.CheckRequest(0,
                             {.key = "all-fields", .cost = 1, .limit = 9, .window_ms = 86400000}));
  });
  add(128, [&](auto put) {  // Keys of the longest valid length, and one byte.
    put(encoder.CheckRequest(1, {.key = std::string(512, 'k')}));
    put(encoder.CheckRequest(2, {.key = "k"}));
  });
  add(1, [&](auto put) {  // Odd first byte: fixed window; a bucket drained, then denied.
    for (uint64_t id = 0; id < 15; ++id) put(encoder.CheckRequest(id, {.key = "fixed", .cost = 1}));
  });
  // One pipelined stream of pings and checks of several keys and policies, cut into reads of
  // 1, 3, 5, 13, 37 and 100 bytes: frames split at every kind of point, prefixes included.
  for (const uint8_t chunk : {0, 2, 4, 12, 36, 99}) {
    add(chunk, [&](auto put) {
      for (uint64_t id = 0; id < 24; ++id) {
        if (id % 6 == 0) {
          put(encoder.PingRequest(id));
        } else {
          const uint32_t limit = id % 4 == 0 ? 3 : 0;
          put(encoder.CheckRequest(id, {.key = id % 2 == 0 ? "even" : "odd",
                                        .cost = static_cast<uint32_t>(id % 3),
                                        .limit = limit,
                                        .window_ms = limit != 0 ? 250u : 0u}));
        }
      }
    });
  }
  return seeds;
}

}  // namespace ratelimit
