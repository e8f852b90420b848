// End-to-end: a flood of unique keys against the memory store, held to RATE_LIMIT_MAX_KEYS.
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/http_client.h"
#include "tests/testing/key_flood.h"

namespace ratelimit {
namespace {

// A cap small enough that the flood (about 300,000 new keys a second) fills the table within
// its first second and then evicts for the rest of it.
constexpr int64_t kMaxKeys = 20'000;
// Bytes one key may cost the sidecar at most: above the README's measured 72 bytes per key of
// the memory store (a 64-byte bucket and an 8-byte slot; see "Key floods" in the README).
constexpr int64_t kBytesPerKeyBound = 100;
// What a flood moves besides the table: connection buffers, the allocator's arenas and free
// lists (the whole growth, table included, measured under 4 MiB). Without the cap the same flood
// grows the sidecar by about 260 MiB in 4 s.
constexpr int64_t kSlackBytes = 16 << 20;
// The bound on the slowest check while the table grows, the flood's and the hot key's.
constexpr double kMaxLatencyUs = 50'000;

TEST(KeyFloodE2E, MemoryStoreHoldsTheCapKeepsHotKeyDecisionsAndNeverStalls) {
  AdminSidecar sidecar = StartWithAdmin(
      {{"RATE_LIMIT_WINDOW_MS", "3600000"}, {"RATE_LIMIT_MAX_KEYS", std::to_string(kMaxKeys)}});
  ASSERT_TRUE(sidecar.process);
  KeyFloodOptions options;
  options.socket_path = sidecar.process->socket_path();
  options.pid = sidecar.process->pid();
  const KeyFloodResult flood = RunKeyFlood(options);
  ExpectFloodContained(flood, options, kMaxKeys, kMaxKeys * kBytesPerKeyBound + kSlackBytes);
  EXPECT_LT(flood.Bench("max_us"), kMaxLatencyUs) << flood.bench_json;
  EXPECT_LT(flood.hot_max_latency_ms * 1000, kMaxLatencyUs);

  // The gauges are published every 250 ms: the first scrape after the flood that shows them.
  const PromLabels memory = {{"store", "memory"}};
  Result<PromText> m = ScrapeUntil(sidecar.port, [&](const PromText& t) {
    return t.Value("ratelimit_evictions_total", memory).value_or(0) > 0 &&
           t.Value("ratelimit_active_buckets", memory).value_or(0) > 0;
  });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  EXPECT_LE(*m->Value("ratelimit_active_buckets", memory), kMaxKeys);
  EXPECT_EQ(m->Value("ratelimit_max_keys", memory), kMaxKeys);
  // Nearly every check is a new key (50 million to pick from), and each one past the cap evicts.
  EXPECT_GE(*m->Value("ratelimit_evictions_total", memory), flood.Bench("checks") / 2 - kMaxKeys);
  EXPECT_NE(sidecar.process->Stderr().find("key table full"), std::string::npos);
}

}  // namespace
}  // namespace ratelimit
