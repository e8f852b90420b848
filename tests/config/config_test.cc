// Unit tests of LoadConfig, EffectiveConfig and UnknownRateLimitVariables, on a fake environment.
#include "sidecar/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/testing/stderr_capture.h"

namespace ratelimit {
namespace {

using Env = std::map<std::string, std::string>;

Result<Config> Load(const Env& env) {
  return LoadConfig([&env](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

// Every field on one line, so that two configs compare in one EXPECT_EQ with a readable diff.
std::string Describe(const Config& c) {
  std::ostringstream out;
  out << "socket_path=" << c.socket_path << " socket_mode=" << std::oct << c.socket_mode << std::dec
      << " allowed_uids=";
  for (uint32_t uid : c.allowed_uids) out << uid << ",";
  out << " max_connections=" << c.max_connections << " max_frame_bytes=" << c.max_frame_bytes
      << " shutdown_grace_ms=" << c.shutdown_grace_ms << " limit=" << c.default_policy.limit
      << " window_ms=" << c.default_policy.window_ms
      << " algorithm=" << static_cast<int>(c.algorithm) << " store=" << static_cast<int>(c.store)
      << " log_level=" << static_cast<int>(c.log_level) << " mode=" << static_cast<int>(c.mode)
      << " database_url=" << c.database_url << " pg_table=" << c.pg_table.Plain()
      << " pg_create_table=" << c.pg_create_table
      << " pg_key_hash=" << static_cast<int>(c.pg_key_hash)
      << " pg_connections=" << c.pg_connections << " pg_new_keys_per_sec=" << c.pg_new_keys_per_sec
      << " pg_statements=" << static_cast<int>(c.pg_statements)
      << " lease_ttl_ms=" << c.lease_ttl_ms << " fallback=" << static_cast<int>(c.fallback)
      << " expected_replicas=" << c.expected_replicas << " pg_timeout_ms=" << c.pg_timeout_ms
      << " admin_addr="
      << (c.admin_addr ? c.admin_addr->host + ":" + std::to_string(c.admin_addr->port) : "none")
      << " test_clock=" << static_cast<int>(c.test_clock);
  return out.str();
}

std::string Describe(const Env& env) {
  Result<Config> config = Load(env);
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return config.ok() ? Describe(*config) : "error";
}

TEST(ConfigTest, NothingSetGivesTheDocumentedDefaults) {
  Result<Config> config = Load({});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->socket_path, "/var/run/ratelimit/ratelimit.sock");
  EXPECT_EQ(config->socket_mode, 0660u);
  EXPECT_TRUE(config->allowed_uids.empty());
  EXPECT_EQ(config->max_connections, 1024u);
  EXPECT_EQ(config->max_frame_bytes, 65536u);
  EXPECT_EQ(config->shutdown_grace_ms, 5000u);
  EXPECT_EQ(config->default_policy, (Policy{100, 60000}));
  EXPECT_EQ(config->algorithm, Algorithm::kTokenBucket);
  EXPECT_EQ(config->store, StoreKind::kMemory);
  EXPECT_EQ(config->log_level, LogLevel::kInfo);
  EXPECT_EQ(config->mode, StoreMode::kLease);
  EXPECT_EQ(config->lease_ttl_ms, 1000u);
  EXPECT_EQ(config->fallback, FallbackPolicy::kLocal);
  EXPECT_EQ(config->expected_replicas, 1u);
  EXPECT_EQ(config->pg_timeout_ms, 250u);
  EXPECT_EQ(config->database_url, "");
  EXPECT_EQ(config->pg_table.Quoted(), "\"rate_limit_buckets\"");
  EXPECT_TRUE(config->pg_create_table);
  EXPECT_EQ(config->pg_key_hash, KeyHashing::kSha256);
  EXPECT_EQ(config->pg_connections, 2u);
  EXPECT_EQ(config->pg_new_keys_per_sec, 1000u);
  EXPECT_EQ(config->pg_statements, PgStatements::kAuto);
  EXPECT_FALSE(config->admin_addr.has_value());
  EXPECT_EQ(config->test_clock, TestClock::kReal);
}

// The documentation (ConfigVariables()) and the code's defaults must not drift apart: setting each
// variable to its documented default changes nothing.
TEST(ConfigTest, EachDocumentedDefaultEqualsTheDefaultInEffect) {
  const std::string defaults = Describe(Env{});
  Env all;
  for (const ConfigVariable& variable : ConfigVariables()) {
    const Env one = {{std::string(variable.name), std::string(variable.default_value)}};
    EXPECT_EQ(Describe(one), defaults) << variable.name << "=\"" << variable.default_value << "\"";
    all.insert(one.begin(), one.end());
  }
  EXPECT_EQ(Describe(all), defaults);
}

TEST(ConfigTest, EveryDocumentedVariableIsReadAndNothingElse) {
  std::set<std::string> asked;
  const Result<Config> config = LoadConfig([&asked](const char* name) -> const char* {
    asked.insert(name);
    return nullptr;
  });
  ASSERT_TRUE(config.ok());
  std::set<std::string> documented;
  for (const ConfigVariable& variable : ConfigVariables()) {
    EXPECT_TRUE(documented.insert(std::string(variable.name)).second)
        << variable.name << " documented twice";
    EXPECT_FALSE(variable.meaning.empty()) << variable.name;
  }
  EXPECT_EQ(asked, documented);
}

TEST(ConfigTest, EmptyValueMeansDefault) {
  const std::string defaults = Describe(Env{});
  Env all;
  for (const ConfigVariable& variable : ConfigVariables()) {
    EXPECT_EQ(Describe(Env{{std::string(variable.name), ""}}), defaults) << variable.name;
    all[std::string(variable.name)] = "";
  }
  EXPECT_EQ(Describe(all), defaults);
}

// ---- Good values ----

struct GoodCase {
  std::string name;
  std::string value;
  std::function<void(const Config&)> check;
};

std::string PathOfLength(size_t size) {
  std::string path = "/tmp/";
  path += std::string(size - path.size() - 5, 'p');
  path += ".sock";
  return path;
}

std::vector<GoodCase> GoodCases() {
  return {
      {"RATE_LIMIT_SOCKET", "/tmp/rl.sock",
       [](const Config& c) { EXPECT_EQ(c.socket_path, "/tmp/rl.sock"); }},
      {"RATE_LIMIT_SOCKET", PathOfLength(kMaxSocketPathBytes),
       [](const Config& c) { EXPECT_EQ(c.socket_path, PathOfLength(107)); }},
      {"RATE_LIMIT_SOCKET_MODE", "0600", [](const Config& c) { EXPECT_EQ(c.socket_mode, 0600u); }},
      {"RATE_LIMIT_SOCKET_MODE", "777", [](const Config& c) { EXPECT_EQ(c.socket_mode, 0777u); }},
      {"RATE_LIMIT_ALLOWED_UIDS", "1000",
       [](const Config& c) { EXPECT_THAT(c.allowed_uids, testing::ElementsAre(1000u)); }},
      {"RATE_LIMIT_ALLOWED_UIDS", "0,1000,4294967294",
       [](const Config& c) {
         EXPECT_THAT(c.allowed_uids, testing::ElementsAre(0u, 1000u, 4294967294u));
       }},
      {"RATE_LIMIT_MAX_CONNECTIONS", "1",
       [](const Config& c) { EXPECT_EQ(c.max_connections, 1u); }},
      {"RATE_LIMIT_MAX_CONNECTIONS", "1000000",
       [](const Config& c) { EXPECT_EQ(c.max_connections, 1000000u); }},
      {"RATE_LIMIT_MAX_FRAME_BYTES", "1024",
       [](const Config& c) { EXPECT_EQ(c.max_frame_bytes, 1024u); }},
      {"RATE_LIMIT_MAX_FRAME_BYTES", "16777216",
       [](const Config& c) { EXPECT_EQ(c.max_frame_bytes, 16777216u); }},
      {"RATE_LIMIT_SHUTDOWN_GRACE_MS", "0",
       [](const Config& c) { EXPECT_EQ(c.shutdown_grace_ms, 0u); }},
      {"RATE_LIMIT_SHUTDOWN_GRACE_MS", "3600000",
       [](const Config& c) { EXPECT_EQ(c.shutdown_grace_ms, 3600000u); }},
      {"RATE_LIMIT_MAX_REQUESTS", "1",
       [](const Config& c) {
         EXPECT_EQ(c.default_policy, (Policy{1, 60000}));
       }},
      {"RATE_LIMIT_MAX_REQUESTS", "4294967295",
       [](const Config& c) { EXPECT_EQ(c.default_policy.limit, 4294967295u); }},
      {"RATE_LIMIT_WINDOW_MS", "1",
       [](const Config& c) {
         EXPECT_EQ(c.default_policy, (Policy{100, 1}));
       }},
      {"RATE_LIMIT_WINDOW_MS", "4294967295",
       [](const Config& c) { EXPECT_EQ(c.default_policy.window_ms, 4294967295u); }},
      {"RATE_LIMIT_ALGORITHM", "token_bucket",
       [](const Config& c) { EXPECT_EQ(c.algorithm, Algorithm::kTokenBucket); }},
      {"RATE_LIMIT_ALGORITHM", "fixed_window",
       [](const Config& c) { EXPECT_EQ(c.algorithm, Algorithm::kFixedWindow); }},
      {"RATE_LIMIT_MAX_KEYS", "1", [](const Config& c) { EXPECT_EQ(c.max_keys, 1u); }},
      {"RATE_LIMIT_MAX_KEYS", "100000000",
       [](const Config& c) { EXPECT_EQ(c.max_keys, 100000000u); }},
      {"RATE_LIMIT_STORE", "memory",
       [](const Config& c) { EXPECT_EQ(c.store, StoreKind::kMemory); }},
      {"RATE_LIMIT_STORE", "postgres",
       [](const Config& c) { EXPECT_EQ(c.store, StoreKind::kPostgres); }},
      {"RATE_LIMIT_MODE", "strict", [](const Config& c) { EXPECT_EQ(c.mode, StoreMode::kStrict); }},
      {"RATE_LIMIT_MODE", "lease", [](const Config& c) { EXPECT_EQ(c.mode, StoreMode::kLease); }},
      {"RATE_LIMIT_LEASE_TTL_MS", "10", [](const Config& c) { EXPECT_EQ(c.lease_ttl_ms, 10u); }},
      {"RATE_LIMIT_FALLBACK", "local",
       [](const Config& c) { EXPECT_EQ(c.fallback, FallbackPolicy::kLocal); }},
      {"RATE_LIMIT_FALLBACK", "allow",
       [](const Config& c) { EXPECT_EQ(c.fallback, FallbackPolicy::kAllow); }},
      {"RATE_LIMIT_FALLBACK", "deny",
       [](const Config& c) { EXPECT_EQ(c.fallback, FallbackPolicy::kDeny); }},
      {"RATE_LIMIT_PG_TIMEOUT_MS", "10", [](const Config& c) { EXPECT_EQ(c.pg_timeout_ms, 10u); }},
      {"RATE_LIMIT_EXPECTED_REPLICAS", "100000",
       [](const Config& c) { EXPECT_EQ(c.expected_replicas, 100000u); }},
      {"RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", "0",
       [](const Config& c) { EXPECT_EQ(c.lease_unconfirmed_per_key, 0u); }},
      {"RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", "1000",
       [](const Config& c) { EXPECT_EQ(c.lease_unconfirmed_per_key, 1000u); }},
      {"RATE_LIMIT_LEASE_UNCONFIRMED_MAX", "1",
       [](const Config& c) { EXPECT_EQ(c.lease_unconfirmed_max, 1u); }},
      {"RATE_LIMIT_LEASE_UNCONFIRMED_MAX", "1000000",
       [](const Config& c) { EXPECT_EQ(c.lease_unconfirmed_max, 1000000u); }},
      {"RATE_LIMIT_LEASE_TTL_MS", "600000",
       [](const Config& c) { EXPECT_EQ(c.lease_ttl_ms, 600000u); }},
      {"DATABASE_URL", "postgresql://rl@db:5432/app",
       [](const Config& c) { EXPECT_EQ(c.database_url, "postgresql://rl@db:5432/app"); }},
      {"RATE_LIMIT_PG_TABLE", "limits.buckets_v2",
       [](const Config& c) {
         EXPECT_EQ(c.pg_table.Quoted(), "\"limits\".\"buckets_v2\"");
         EXPECT_EQ(c.pg_table.Plain(), "limits.buckets_v2");
       }},
      {"RATE_LIMIT_PG_TABLE", std::string(63, 'a'),
       [](const Config& c) { EXPECT_EQ(c.pg_table.table, std::string(63, 'a')); }},
      {"RATE_LIMIT_PG_CREATE_TABLE", "false",
       [](const Config& c) { EXPECT_FALSE(c.pg_create_table); }},
      {"RATE_LIMIT_PG_KEY_HASH", "none",
       [](const Config& c) { EXPECT_EQ(c.pg_key_hash, KeyHashing::kNone); }},
      {"RATE_LIMIT_PG_CONNECTIONS", "64",
       [](const Config& c) { EXPECT_EQ(c.pg_connections, 64u); }},
      {"RATE_LIMIT_PG_NEW_KEYS_PER_SEC", "0",
       [](const Config& c) { EXPECT_EQ(c.pg_new_keys_per_sec, 0u); }},
      {"RATE_LIMIT_PG_NEW_KEYS_PER_SEC", "1000000",
       [](const Config& c) { EXPECT_EQ(c.pg_new_keys_per_sec, 1000000u); }},
      {"RATE_LIMIT_PG_STATEMENTS", "prepared",
       [](const Config& c) { EXPECT_EQ(c.pg_statements, PgStatements::kPrepared); }},
      {"RATE_LIMIT_PG_STATEMENTS", "unnamed",
       [](const Config& c) { EXPECT_EQ(c.pg_statements, PgStatements::kUnnamed); }},
      {"RATE_LIMIT_LOG_LEVEL", "debug",
       [](const Config& c) { EXPECT_EQ(c.log_level, LogLevel::kDebug); }},
      {"RATE_LIMIT_LOG_LEVEL", "info",
       [](const Config& c) { EXPECT_EQ(c.log_level, LogLevel::kInfo); }},
      {"RATE_LIMIT_LOG_LEVEL", "warn",
       [](const Config& c) { EXPECT_EQ(c.log_level, LogLevel::kWarn); }},
      {"RATE_LIMIT_LOG_LEVEL", "error",
       [](const Config& c) { EXPECT_EQ(c.log_level, LogLevel::kError); }},
      {"RATE_LIMIT_ADMIN_ADDR", "0.0.0.0:9464",
       [](const Config& c) {
         EXPECT_EQ(c.admin_addr, (AdminAddress{"0.0.0.0", 9464}));
       }},
      {"RATE_LIMIT_ADMIN_ADDR", "127.0.0.1:0",
       [](const Config& c) {
         EXPECT_EQ(c.admin_addr, (AdminAddress{"127.0.0.1", 0}));
       }},
      {"RATE_LIMIT_ADMIN_ADDR", "[::1]:65535",
       [](const Config& c) {
         EXPECT_EQ(c.admin_addr, (AdminAddress{"::1", 65535}));
       }},
      {"RATE_LIMIT_ADMIN_ADDR", "localhost:9464",
       [](const Config& c) {
         EXPECT_EQ(c.admin_addr, (AdminAddress{"localhost", 9464}));
       }},
      {"RATE_LIMIT_TEST_CLOCK", "manual",
       [](const Config& c) { EXPECT_EQ(c.test_clock, TestClock::kManual); }},
      {"RATE_LIMIT_TEST_CLOCK", "real",
       [](const Config& c) { EXPECT_EQ(c.test_clock, TestClock::kReal); }},
  };
}

TEST(ConfigTest, EveryVariableAcceptsGoodValues) {
  std::set<std::string> covered;
  for (const GoodCase& c : GoodCases()) {
    SCOPED_TRACE(c.name + "=\"" + c.value + "\"");
    Result<Config> config = Load({{c.name, c.value}});
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    c.check(*config);
    covered.insert(c.name);
  }
  for (const ConfigVariable& variable : ConfigVariables()) {
    EXPECT_TRUE(covered.count(std::string(variable.name))) << variable.name << " has no good case";
  }
}

TEST(ConfigTest, AllVariablesSetTogetherAreAllApplied) {
  const Env env = {
      {"RATE_LIMIT_SOCKET", "/run/rl/s.sock"},  {"RATE_LIMIT_SOCKET_MODE", "0640"},
      {"RATE_LIMIT_ALLOWED_UIDS", "10,20"},     {"RATE_LIMIT_MAX_CONNECTIONS", "7"},
      {"RATE_LIMIT_MAX_FRAME_BYTES", "2048"},   {"RATE_LIMIT_SHUTDOWN_GRACE_MS", "250"},
      {"RATE_LIMIT_MAX_REQUESTS", "5"},         {"RATE_LIMIT_WINDOW_MS", "1000"},
      {"RATE_LIMIT_ALGORITHM", "fixed_window"}, {"RATE_LIMIT_STORE", "memory"},
      {"RATE_LIMIT_LOG_LEVEL", "warn"}};
  Result<Config> config = Load(env);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->socket_path, "/run/rl/s.sock");
  EXPECT_EQ(config->socket_mode, 0640u);
  EXPECT_THAT(config->allowed_uids, testing::ElementsAre(10u, 20u));
  EXPECT_EQ(config->max_connections, 7u);
  EXPECT_EQ(config->max_frame_bytes, 2048u);
  EXPECT_EQ(config->shutdown_grace_ms, 250u);
  EXPECT_EQ(config->default_policy, (Policy{5, 1000}));
  EXPECT_EQ(config->algorithm, Algorithm::kFixedWindow);
  EXPECT_EQ(config->store, StoreKind::kMemory);
  EXPECT_EQ(config->log_level, LogLevel::kWarn);
}

// The allowance of cold keys is off with fixed windows unless it is set: shared windows stay
// exact for the gateway's users; set, it applies to them too.
TEST(ConfigTest, FixedWindowsHaveNoAllowanceUnlessItIsSet) {
  Result<Config> bucket = Load({});
  ASSERT_TRUE(bucket.ok());
  EXPECT_EQ(bucket->lease_unconfirmed_per_key, 1u);
  Result<Config> window = Load({{"RATE_LIMIT_ALGORITHM", "fixed_window"}});
  ASSERT_TRUE(window.ok());
  EXPECT_EQ(window->lease_unconfirmed_per_key, 0u);
  Result<Config> asked = Load(
      {{"RATE_LIMIT_ALGORITHM", "fixed_window"}, {"RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", "2"}});
  ASSERT_TRUE(asked.ok());
  EXPECT_EQ(asked->lease_unconfirmed_per_key, 2u);
  Result<Config> empty = Load(
      {{"RATE_LIMIT_ALGORITHM", "fixed_window"}, {"RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", ""}});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->lease_unconfirmed_per_key, 0u) << "empty means unset";
}

// ---- Bad values ----

struct BadCase {
  std::string name;
  std::string value;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name << "=\"" << c.value << "\""; }

class ConfigBadValueTest : public testing::TestWithParam<BadCase> {};

TEST_P(ConfigBadValueTest, IsInvalidArgumentNamingVariableValueAndWhatIsExpected) {
  const BadCase& c = GetParam();
  Result<Config> config = Load({{c.name, c.value}});
  ASSERT_FALSE(config.ok());
  const Status& status = config.status();
  EXPECT_EQ(status.code(), Status::Code::kInvalidArgument);
  EXPECT_THAT(status.message(), testing::HasSubstr(c.name));
  EXPECT_THAT(status.message(), testing::HasSubstr(c.value));
  EXPECT_THAT(status.message(), testing::HasSubstr("expected"));
  EXPECT_EQ(status.message().find('\n'), std::string::npos) << "one line only";
}

const ConfigVariable& Row(std::string_view name) {
  for (const ConfigVariable& variable : ConfigVariables()) {
    if (variable.name == name) return variable;
  }
  ADD_FAILURE() << name << " has no row";
  return ConfigVariables().front();
}

// The text after "expected" is the row's Allowed text, as --help and the README show it; the
// socket path alone adds the length it refused.
TEST_P(ConfigBadValueTest, ExpectsExactlyWhatTheRowSaysIsAllowed) {
  const BadCase& c = GetParam();
  Result<Config> config = Load({{c.name, c.value}});
  ASSERT_FALSE(config.ok());
  std::string expected =
      c.name + "=\"" + c.value + "\" is invalid: expected " + Row(c.name).allowed;
  if (c.name == "RATE_LIMIT_SOCKET") expected += "; this one has " + std::to_string(c.value.size());
  EXPECT_EQ(config.status().message(), expected);
}

TEST_P(ConfigBadValueTest, IsReportedAmongGoodValues) {
  const BadCase& c = GetParam();
  Env env = {{"RATE_LIMIT_MAX_REQUESTS", "10"}, {"RATE_LIMIT_LOG_LEVEL", "debug"}};
  env[c.name] = c.value;
  Result<Config> config = Load(env);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), testing::HasSubstr(c.name));
}

INSTANTIATE_TEST_SUITE_P(
    Values, ConfigBadValueTest,
    testing::Values(
        // Not numbers, signs, fractions, spaces, trailing garbage.
        BadCase{"RATE_LIMIT_MAX_REQUESTS", "abc"}, BadCase{"RATE_LIMIT_MAX_REQUESTS", "-1"},
        BadCase{"RATE_LIMIT_MAX_REQUESTS", "+5"}, BadCase{"RATE_LIMIT_MAX_REQUESTS", "1.5"},
        BadCase{"RATE_LIMIT_MAX_REQUESTS", " 10"}, BadCase{"RATE_LIMIT_MAX_REQUESTS", "10 "},
        BadCase{"RATE_LIMIT_MAX_REQUESTS", "0x10"}, BadCase{"RATE_LIMIT_MAX_REQUESTS", "1e3"},
        BadCase{"RATE_LIMIT_WINDOW_MS", "10ms"}, BadCase{"RATE_LIMIT_WINDOW_MS", "abc"},
        BadCase{"RATE_LIMIT_WINDOW_MS", "-60000"}, BadCase{"RATE_LIMIT_SHUTDOWN_GRACE_MS", "5s"},
        BadCase{"RATE_LIMIT_SHUTDOWN_GRACE_MS", "-1"},
        BadCase{"RATE_LIMIT_MAX_CONNECTIONS", "many"}, BadCase{"RATE_LIMIT_MAX_FRAME_BYTES", "64k"},
        // Out of range, including values that overflow 32 and 64 bits.
        BadCase{"RATE_LIMIT_MAX_REQUESTS", "0"}, BadCase{"RATE_LIMIT_MAX_REQUESTS", "4294967296"},
        BadCase{"RATE_LIMIT_WINDOW_MS", "0"}, BadCase{"RATE_LIMIT_WINDOW_MS", "4294967296"},
        BadCase{"RATE_LIMIT_WINDOW_MS", "18446744073709551616"},
        BadCase{"RATE_LIMIT_WINDOW_MS", "99999999999999999999999999"},
        BadCase{"RATE_LIMIT_MAX_CONNECTIONS", "0"},
        BadCase{"RATE_LIMIT_MAX_CONNECTIONS", "1000001"},
        BadCase{"RATE_LIMIT_MAX_FRAME_BYTES", "1023"},
        BadCase{"RATE_LIMIT_MAX_FRAME_BYTES", "16777217"},
        BadCase{"RATE_LIMIT_SHUTDOWN_GRACE_MS", "3600001"}, BadCase{"RATE_LIMIT_MAX_KEYS", "0"},
        BadCase{"RATE_LIMIT_MAX_KEYS", "100000001"}, BadCase{"RATE_LIMIT_MAX_KEYS", "1e6"},
        // Unknown words.
        BadCase{"RATE_LIMIT_ALGORITHM", "leaky"}, BadCase{"RATE_LIMIT_ALGORITHM", "token-bucket"},
        BadCase{"RATE_LIMIT_STORE", "redis"}, BadCase{"RATE_LIMIT_MODE", "Lease"},
        BadCase{"RATE_LIMIT_MODE", "eventual"}, BadCase{"RATE_LIMIT_LEASE_TTL_MS", "9"},
        BadCase{"RATE_LIMIT_LEASE_TTL_MS", "600001"}, BadCase{"RATE_LIMIT_LEASE_TTL_MS", "1s"},
        BadCase{"RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", "1001"},
        BadCase{"RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", "-1"},
        BadCase{"RATE_LIMIT_LEASE_UNCONFIRMED_MAX", "0"},
        BadCase{"RATE_LIMIT_LEASE_UNCONFIRMED_MAX", "1000001"},
        BadCase{"RATE_LIMIT_FALLBACK", "open"}, BadCase{"RATE_LIMIT_FALLBACK", "Local"},
        BadCase{"RATE_LIMIT_EXPECTED_REPLICAS", "0"}, BadCase{"RATE_LIMIT_PG_TIMEOUT_MS", "9"},
        BadCase{"RATE_LIMIT_PG_TIMEOUT_MS", "600001"},
        BadCase{"RATE_LIMIT_EXPECTED_REPLICAS", "100001"},
        // Table names that are not plain identifiers, SQL injection attempts among them.
        BadCase{"RATE_LIMIT_PG_TABLE", "buckets; DROP TABLE users"},
        BadCase{"RATE_LIMIT_PG_TABLE", "x\" OR 1=1 --"}, BadCase{"RATE_LIMIT_PG_TABLE", "Buckets"},
        BadCase{"RATE_LIMIT_PG_TABLE", "a.b.c"}, BadCase{"RATE_LIMIT_PG_TABLE", ".buckets"},
        BadCase{"RATE_LIMIT_PG_TABLE", "1buckets"}, BadCase{"RATE_LIMIT_PG_TABLE", "$b"},
        BadCase{"RATE_LIMIT_PG_TABLE", std::string(64, 'a')},
        BadCase{"RATE_LIMIT_PG_CREATE_TABLE", "yes"}, BadCase{"RATE_LIMIT_PG_KEY_HASH", "md5"},
        BadCase{"RATE_LIMIT_PG_CONNECTIONS", "0"}, BadCase{"RATE_LIMIT_PG_CONNECTIONS", "65"},
        BadCase{"RATE_LIMIT_PG_NEW_KEYS_PER_SEC", "1000001"},
        BadCase{"RATE_LIMIT_PG_NEW_KEYS_PER_SEC", "-1"},
        BadCase{"RATE_LIMIT_PG_NEW_KEYS_PER_SEC", "1e3"},
        BadCase{"RATE_LIMIT_PG_STATEMENTS", "named"}, BadCase{"RATE_LIMIT_PG_STATEMENTS", "Auto"},
        BadCase{"RATE_LIMIT_LOG_LEVEL", "verbose"}, BadCase{"RATE_LIMIT_LOG_LEVEL", "trace"},
        // Admin addresses without a port, with a bad port or a host that is no host name.
        BadCase{"RATE_LIMIT_ADMIN_ADDR", "9464"}, BadCase{"RATE_LIMIT_ADMIN_ADDR", ":9464"},
        BadCase{"RATE_LIMIT_ADMIN_ADDR", "0.0.0.0:"},
        BadCase{"RATE_LIMIT_ADMIN_ADDR", "0.0.0.0:65536"},
        BadCase{"RATE_LIMIT_ADMIN_ADDR", "0.0.0.0:-1"}, BadCase{"RATE_LIMIT_ADMIN_ADDR", "::1:80"},
        BadCase{"RATE_LIMIT_ADMIN_ADDR", "[::1:80"}, BadCase{"RATE_LIMIT_ADMIN_ADDR", "[]:80"},
        BadCase{"RATE_LIMIT_ADMIN_ADDR", "host name:80"},
        BadCase{"RATE_LIMIT_ADMIN_ADDR", "http://0.0.0.0:9464"},
        // Socket modes that are not octal 000..777, or that lock the owner out.
        BadCase{"RATE_LIMIT_SOCKET_MODE", "999"}, BadCase{"RATE_LIMIT_SOCKET_MODE", "0800"},
        BadCase{"RATE_LIMIT_SOCKET_MODE", "1000"}, BadCase{"RATE_LIMIT_SOCKET_MODE", "rw-rw----"},
        BadCase{"RATE_LIMIT_SOCKET_MODE", "-660"}, BadCase{"RATE_LIMIT_SOCKET_MODE", "0"},
        BadCase{"RATE_LIMIT_SOCKET_MODE", "0460"},
        // Uid lists.
        BadCase{"RATE_LIMIT_ALLOWED_UIDS", "1,,2"}, BadCase{"RATE_LIMIT_ALLOWED_UIDS", "abc"},
        BadCase{"RATE_LIMIT_ALLOWED_UIDS", "1,"}, BadCase{"RATE_LIMIT_ALLOWED_UIDS", ",1"},
        BadCase{"RATE_LIMIT_ALLOWED_UIDS", "1, 2"}, BadCase{"RATE_LIMIT_ALLOWED_UIDS", "-1"},
        BadCase{"RATE_LIMIT_ALLOWED_UIDS", "4294967295"},
        // A socket path one byte over what sockaddr_un holds.
        BadCase{"RATE_LIMIT_SOCKET", PathOfLength(kMaxSocketPathBytes + 1)}));

TEST(ConfigTest, SocketPathOf107BytesIsAcceptedAnd108Refused) {
  ASSERT_EQ(PathOfLength(107).size(), 107u);
  ASSERT_EQ(PathOfLength(108).size(), 108u);
  EXPECT_TRUE(Load({{"RATE_LIMIT_SOCKET", PathOfLength(107)}}).ok());
  Result<Config> refused = Load({{"RATE_LIMIT_SOCKET", PathOfLength(108)}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), testing::HasSubstr("107"));
}

TEST(ConfigTest, UnknownWordMessageListsTheAllowedWords) {
  Result<Config> config = Load({{"RATE_LIMIT_ALGORITHM", "leaky"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), testing::HasSubstr("token_bucket"));
  EXPECT_THAT(config.status().message(), testing::HasSubstr("fixed_window"));
}

TEST(ConfigTest, OutOfRangeMessageGivesTheRange) {
  Result<Config> config = Load({{"RATE_LIMIT_WINDOW_MS", "4294967296"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), testing::HasSubstr("1 to 4294967295"));
}

// Fixed windows are shared through PostgreSQL too, in either mode.
TEST(ConfigTest, FixedWindowIsAcceptedWithThePostgresStoreInBothModes) {
  for (const char* mode : {"strict", "lease"}) {
    Result<Config> config = Load({{"RATE_LIMIT_STORE", "postgres"},
                                  {"RATE_LIMIT_ALGORITHM", "fixed_window"},
                                  {"RATE_LIMIT_MODE", mode}});
    ASSERT_TRUE(config.ok()) << mode << ": " << config.status().ToString();
    EXPECT_EQ(config->algorithm, Algorithm::kFixedWindow);
    EXPECT_EQ(config->store, StoreKind::kPostgres);
  }
}

// Operators and scripts match these lines: they stay what they have always been, to the byte.
TEST(ConfigTest, ErrorMessagesAreByteForByteTheDocumentedOnes) {
  const std::vector<std::pair<Env, std::string>> cases = {
      {{{"RATE_LIMIT_WINDOW_MS", "abc"}},
       "RATE_LIMIT_WINDOW_MS=\"abc\" is invalid: expected an integer from 1 to 4294967295 "
       "(milliseconds)"},
      {{{"RATE_LIMIT_SOCKET_MODE", "0460"}},
       "RATE_LIMIT_SOCKET_MODE=\"0460\" is invalid: expected an octal file mode from 600 to 777 "
       "(the owner must be able to read and write)"},
      {{{"RATE_LIMIT_ALLOWED_UIDS", "1,"}},
       "RATE_LIMIT_ALLOWED_UIDS=\"1,\" is invalid: expected comma-separated uids, each an "
       "integer from 0 to 4294967294"},
      {{{"RATE_LIMIT_FALLBACK", "open"}},
       "RATE_LIMIT_FALLBACK=\"open\" is invalid: expected one of local, allow, deny"},
      {{{"RATE_LIMIT_PG_TABLE", "Buckets"}},
       "RATE_LIMIT_PG_TABLE=\"Buckets\" is invalid: expected a table name or schema.table, each "
       "part 1 to 63 bytes of a-z, 0-9, _ and $, not starting with a digit or $"},
      {{{"RATE_LIMIT_ADMIN_ADDR", "9464"}},
       "RATE_LIMIT_ADMIN_ADDR=\"9464\" is invalid: expected host:port, where host is an IPv4 "
       "address, [IPv6 address] or host name and port is 0 to 65535 (for example "
       "0.0.0.0:9464)"},
      {{{"RATE_LIMIT_SOCKET", "/tmp/" + std::string(103, 'p')}},
       "RATE_LIMIT_SOCKET=\"/tmp/" + std::string(103, 'p') +
           "\" is invalid: expected a path of at most 107 bytes (the Unix socket limit); this "
           "one has 108"},
      {{{"RATE_LIMIT_TEST_CLOCK", "fake"}},
       "RATE_LIMIT_TEST_CLOCK=\"fake\" is invalid: expected one of real, manual"},
  };
  for (const auto& [env, message] : cases) {
    Result<Config> config = Load(env);
    ASSERT_FALSE(config.ok()) << message;
    EXPECT_EQ(config.status().message(), message);
  }
}

// The manual test clock drives the memory store; the shared store's time is the database's,
// which it cannot hold still, so asking for both stops start-up (exit 2 in main).
TEST(ConfigTest, TheManualTestClockIsRefusedWithThePostgresStore) {
  Result<Config> refused =
      Load({{"RATE_LIMIT_STORE", "postgres"}, {"RATE_LIMIT_TEST_CLOCK", "manual"}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(refused.status().message(),
            "RATE_LIMIT_TEST_CLOCK=\"manual\" is invalid: expected real (or unset) with "
            "RATE_LIMIT_STORE=postgres (the manual test clock drives the memory store only; the "
            "database's clock decides for the shared store)");
  for (const char* clock : {"", "real"}) {
    SCOPED_TRACE(clock);
    Result<Config> accepted =
        Load({{"RATE_LIMIT_STORE", "postgres"}, {"RATE_LIMIT_TEST_CLOCK", clock}});
    ASSERT_TRUE(accepted.ok()) << accepted.status().ToString();
    EXPECT_EQ(accepted->test_clock, TestClock::kReal);
  }
  Result<Config> memory =
      Load({{"RATE_LIMIT_STORE", "memory"}, {"RATE_LIMIT_TEST_CLOCK", "manual"}});
  ASSERT_TRUE(memory.ok()) << memory.status().ToString();
  EXPECT_EQ(memory->test_clock, TestClock::kManual);
}

// Of several bad values, the first in the rows' order is the one reported.
TEST(ConfigTest, TheFirstBadVariableInTableOrderIsReported) {
  Result<Config> config =
      Load({{"RATE_LIMIT_LOG_LEVEL", "loud"}, {"RATE_LIMIT_MAX_CONNECTIONS", "0"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), testing::StartsWith("RATE_LIMIT_MAX_CONNECTIONS="));
}

TEST(ConfigTest, OnlyDatabaseUrlIsRedacted) {
  for (const ConfigVariable& variable : ConfigVariables()) {
    EXPECT_EQ(variable.redacted, variable.name == "DATABASE_URL") << variable.name;
    EXPECT_FALSE(variable.allowed.empty()) << variable.name;
  }
}

// ---- The effective configuration, as logged at start-up ----

EnvLookup Lookup(const Env& env) {
  return [&env](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
}

TEST(EffectiveConfigTest, ListsEveryVariableOnceInTheDocumentedOrder) {
  Result<Config> config = Load({});
  ASSERT_TRUE(config.ok());
  std::vector<std::string_view> names;
  for (const auto& [name, value] : EffectiveConfig(*config, "")) names.push_back(name);
  std::vector<std::string_view> documented;
  for (const ConfigVariable& variable : ConfigVariables()) documented.push_back(variable.name);
  EXPECT_EQ(names, documented);
}

TEST(EffectiveConfigTest, NothingSetShowsEachDocumentedDefault) {
  Result<Config> config = Load({});
  ASSERT_TRUE(config.ok());
  const ConfigValues values = EffectiveConfig(*config, "");
  ASSERT_EQ(values.size(), ConfigVariables().size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(values[i].second, ConfigVariables()[i].default_value) << values[i].first;
  }
}

// What is logged is what is in effect: fed back to LoadConfig, it gives the same Config.
TEST(EffectiveConfigTest, ReadsBackAsTheSameConfig) {
  std::vector<Env> envs;
  for (const GoodCase& c : GoodCases()) envs.push_back({{c.name, c.value}});
  envs.push_back({{"RATE_LIMIT_SOCKET", "/run/rl/s.sock"},
                  {"RATE_LIMIT_SOCKET_MODE", "640"},
                  {"RATE_LIMIT_ALLOWED_UIDS", "10,20"},
                  {"RATE_LIMIT_STORE", "postgres"},
                  {"RATE_LIMIT_MODE", "strict"},
                  {"RATE_LIMIT_PG_TABLE", "s.t"},
                  {"RATE_LIMIT_PG_CREATE_TABLE", "false"},
                  {"RATE_LIMIT_PG_KEY_HASH", "none"},
                  {"RATE_LIMIT_FALLBACK", "deny"},
                  {"RATE_LIMIT_LOG_LEVEL", "error"},
                  {"RATE_LIMIT_ADMIN_ADDR", "[fe80::1]:9464"}});
  for (const Env& env : envs) {
    SCOPED_TRACE(env.begin()->first + "=" + env.begin()->second);
    Result<Config> config = Load(env);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    Env shown;
    for (const auto& [name, value] : EffectiveConfig(*config, config->database_url)) {
      shown[std::string(name)] = value;
    }
    EXPECT_EQ(Describe(shown), Describe(*config));
  }
}

TEST(EffectiveConfigTest, DatabaseUrlIsTheRedactedTextNeverTheConfigs) {
  Result<Config> config = Load({{"DATABASE_URL", "postgresql://u:hunter2@h/db"}});
  ASSERT_TRUE(config.ok());
  for (const auto& [name, value] : EffectiveConfig(*config, "user=u password=*** host=h")) {
    EXPECT_THAT(value, testing::Not(testing::HasSubstr("hunter2"))) << name;
    if (name == "DATABASE_URL") {
      EXPECT_EQ(value, "user=u password=*** host=h");
    }
  }
}

TEST(EffectiveConfigTest, LibpqEnvironmentListsWhatIsSetAndOnlyWhetherPgpasswordIs) {
  const Env env = {{"PGHOST", "db.internal"},
                   {"PGSSLMODE", "verify-full"},
                   {"PGPASSWORD", "hunter2"},
                   {"PGUSER", ""},
                   {"HOME", "/root"}};
  EXPECT_EQ(LibpqEnvironment(Lookup(env)), (ConfigValues{{"PGHOST", "db.internal"},
                                                         {"PGUSER", ""},
                                                         {"PGSSLMODE", "verify-full"},
                                                         {"PGPASSWORD", "(set)"}}));
  EXPECT_EQ(LibpqEnvironment(Lookup({})), (ConfigValues{{"PGPASSWORD", "(unset)"}}));
}

class LogEffectiveConfigTest : public testing::Test {
 protected:
  void SetUp() override {
    SetLogLevel(LogLevel::kInfo);
    ResetLogRepeatLimiter();  // Every test logs the same message; none may be suppressed.
  }
  void TearDown() override { SetLogLevel(LogLevel::kInfo); }
};

TEST_F(LogEffectiveConfigTest, WritesOneInfoLineWithEveryVariableAsAField) {
  Result<Config> config = Load({{"RATE_LIMIT_MAX_REQUESTS", "7"}, {"PGHOST", "db"}});
  ASSERT_TRUE(config.ok());
  StderrCapture capture;
  LogEffectiveConfig(*config, "", Lookup({{"PGHOST", "db"}}));
  const std::vector<std::string> lines = capture.Lines();
  ASSERT_EQ(lines.size(), 1u) << capture.Text();
  const std::optional<JsonFields> fields = ParseJsonLine(lines[0]);
  ASSERT_TRUE(fields.has_value()) << lines[0];
  EXPECT_EQ(Field(*fields, "level"), "info");
  EXPECT_EQ(Field(*fields, "msg"), "effective configuration");
  for (const auto& [name, value] : EffectiveConfig(*config, "")) {
    EXPECT_EQ(Field(*fields, name), value) << name;
  }
  EXPECT_EQ(Field(*fields, "RATE_LIMIT_MAX_REQUESTS"), "7");
  EXPECT_EQ(Field(*fields, "RATE_LIMIT_WINDOW_MS"), "60000") << "defaults are shown too";
  EXPECT_EQ(fields->size(), 3 + ConfigVariables().size())
      << "the memory store reads no PG* variable, so none is shown";
}

TEST_F(LogEffectiveConfigTest, PostgresStoreAddsTheLibpqEnvironmentWithoutAnyPassword) {
  const Env env = {{"RATE_LIMIT_STORE", "postgres"},
                   {"DATABASE_URL", "postgresql://u:hunter2@h/db"},
                   {"PGPASSWORD", "swordfish"},
                   {"PGPORT", "6432"}};
  Result<Config> config = Load(env);
  ASSERT_TRUE(config.ok());
  StderrCapture capture;
  LogEffectiveConfig(*config, "user=u password=*** dbname=db host=h", Lookup(env));
  const std::vector<std::string> lines = capture.Lines();
  ASSERT_EQ(lines.size(), 1u) << capture.Text();
  EXPECT_THAT(lines[0], testing::Not(testing::HasSubstr("hunter2")));
  EXPECT_THAT(lines[0], testing::Not(testing::HasSubstr("swordfish")));
  const std::optional<JsonFields> fields = ParseJsonLine(lines[0]);
  ASSERT_TRUE(fields.has_value()) << lines[0];
  EXPECT_EQ(Field(*fields, "DATABASE_URL"), "user=u password=*** dbname=db host=h");
  EXPECT_EQ(Field(*fields, "RATE_LIMIT_STORE"), "postgres");
  EXPECT_EQ(Field(*fields, "PGPORT"), "6432");
  EXPECT_EQ(Field(*fields, "PGPASSWORD"), "(set)");
  EXPECT_EQ(Field(*fields, "PGHOST"), std::nullopt) << "unset variables are left out";
}

TEST_F(LogEffectiveConfigTest, WritesNothingWhenInfoIsOff) {
  Result<Config> config = Load({});
  ASSERT_TRUE(config.ok());
  SetLogLevel(LogLevel::kWarn);
  StderrCapture capture;
  LogEffectiveConfig(*config, "", Lookup({}));
  EXPECT_EQ(capture.Text(), "");
}

// ---- Unknown variables ----

std::vector<std::string> Unknown(std::vector<const char*> entries) {
  entries.push_back(nullptr);
  return UnknownRateLimitVariables(entries.data());
}

TEST(ConfigTest, UnknownRateLimitVariablesFlagsTyposOnly) {
  EXPECT_THAT(Unknown({"PATH=/usr/bin:/bin", "RATE_LIMIT_TYPO=1", "HOME=/root",
                       "RATE_LIMIT_WINDOW_MS=1000", "RATE_LIMIT_MAX_REQUEST=5",
                       "RATE_LIMIT_SOCKET_PATH=/x", "DATABASE_URL=postgres://", "RATE_LIMIT_BARE"}),
              testing::ElementsAre("RATE_LIMIT_TYPO", "RATE_LIMIT_MAX_REQUEST",
                                   "RATE_LIMIT_SOCKET_PATH", "RATE_LIMIT_BARE"));
}

TEST(ConfigTest, UnknownRateLimitVariablesIgnoresEveryKnownName) {
  std::vector<std::string> storage;
  for (const ConfigVariable& variable : ConfigVariables()) {
    storage.push_back(std::string(variable.name) + "=x");
  }
  std::vector<const char*> entries = {"PATH=/usr/bin", "RATE_LIMIT=1", "LANG=C"};
  for (const std::string& entry : storage) entries.push_back(entry.c_str());
  EXPECT_THAT(Unknown(entries), testing::IsEmpty());
}

TEST(ConfigTest, UnknownRateLimitVariablesOfEmptyOrNullEnvironmentIsEmpty) {
  EXPECT_THAT(Unknown({}), testing::IsEmpty());
  EXPECT_THAT(UnknownRateLimitVariables(nullptr), testing::IsEmpty());
}

}  // namespace
}  // namespace ratelimit
