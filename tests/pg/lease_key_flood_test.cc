// Lease mode on a real PostgreSQL under a flood of unique keys, held to RATE_LIMIT_MAX_KEYS.
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/http_client.h"
#include "tests/testing/key_flood.h"
#include "tests/testing/pg_test_support.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

// Smaller than the memory store's test: a new key that the database takes costs a transaction's
// share (about 5,000 new keys a second on two cores), so the lease state (a quarter of the cap)
// fills within the flood's first second only if the cap is well below that; the fallback's
// buckets, which answer the new keys beyond RATE_LIMIT_PG_NEW_KEYS_PER_SEC at memory speed, fill
// at once.
constexpr int64_t kMaxKeys = 5'000;
// Bytes one key may cost at most in each capped table, above the README's measured figures (see
// "Key floods" there): the lease state (a quarter of the cap; about 290 bytes, the key's text
// beyond 15 bytes, a 64-byte bucket and an 8-byte slot: about 365 for this test's keys), and the
// fallback's buckets (72 bytes), which answer the new keys the database does not take.
constexpr int64_t kLeaseBytesPerKeyBound = 500;
constexpr int64_t kBucketBytesPerKeyBound = 100;
// What a flood moves besides the tables: connection buffers, the database sessions' buffers, the
// allocator's arenas and free lists.
constexpr int64_t kSlackBytes = 16 << 20;
// The bound on the slowest check while the tables grow, held here by the checks answered
// from memory: the hot key's, from its lease or its denial. A new key's check waits for the
// database to say that it has no row (then the fallback answers it): the flood's own checks queue
// for the database, 256 at a time, as in strict mode, and are not bounded by the tables.
constexpr double kMaxMemoryAnswerMs = 50;

TEST(LeaseKeyFlood, LeaseModeHoldsTheCapKeepsHotKeyDecisionsAndNeverStalls) {
  REQUIRE_TEST_DATABASE();
  const std::string table = "lease_key_flood";
  pg_test::DropTable(table);
  AdminSidecar sidecar =
      StartWithAdmin({{"RATE_LIMIT_STORE", "postgres"},
                      {"RATE_LIMIT_MODE", "lease"},
                      {"DATABASE_URL", TestDatabaseUrl() + " application_name=lease_key_flood"},
                      {"RATE_LIMIT_PG_TABLE", table},
                      {"RATE_LIMIT_WINDOW_MS", "3600000"},
                      {"RATE_LIMIT_MAX_KEYS", std::to_string(kMaxKeys)}});
  ASSERT_TRUE(sidecar.process);
  ASSERT_TRUE(pg_test::WaitUntil([&] {
    return pg_test::PingsReady(sidecar.process->socket_path());
  })) << sidecar.process->Stderr();
  KeyFloodOptions options;
  options.socket_path = sidecar.process->socket_path();
  options.pid = sidecar.process->pid();
  const KeyFloodResult flood = RunKeyFlood(options);
  ExpectFloodContained(
      flood, options, kMaxKeys,
      kMaxKeys / 4 * kLeaseBytesPerKeyBound + kMaxKeys * kBucketBytesPerKeyBound + kSlackBytes);
  EXPECT_LT(flood.hot_max_latency_ms, kMaxMemoryAnswerMs) << flood.Describe();

  // The gauges are published every 250 ms: the first scrape after the flood that shows evictions.
  auto evictions = [](const PromText& t) {
    return t.Value("ratelimit_evictions_total", {{"store", "lease"}}).value_or(0) +
           t.Value("ratelimit_evictions_total", {{"store", "fallback"}}).value_or(0);
  };
  Result<PromText> m =
      ScrapeUntil(sidecar.port, [&](const PromText& t) { return evictions(t) > 0; });
  ASSERT_TRUE(m.ok()) << m.status().ToString() << "\n" << DumpNow(sidecar.port);
  // The lease state holds a quarter of RATE_LIMIT_MAX_KEYS (see the README's variable table).
  EXPECT_EQ(m->Value("ratelimit_max_keys", {{"store", "lease"}}), kMaxKeys / 4);
  EXPECT_EQ(m->Value("ratelimit_max_keys", {{"store", "fallback"}}), kMaxKeys);
  for (const char* store : {"lease", "fallback"}) {
    EXPECT_LE(m->Value("ratelimit_active_buckets", {{"store", store}}).value_or(0),
              m->Value("ratelimit_max_keys", {{"store", store}}).value_or(0))
        << store;
  }
  EXPECT_NE(sidecar.process->Stderr().find("key table full"), std::string::npos);
}

}  // namespace
}  // namespace ratelimit
