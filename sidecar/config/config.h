// Config: the sidecar's settings, read once at start-up from environment variables only.
#ifndef RATELIMIT_SIDECAR_CONFIG_CONFIG_H_
#define RATELIMIT_SIDECAR_CONFIG_CONFIG_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schema/check.h"
#include "schema/status.h"
#include "sidecar/core/fallback.h"
#include "sidecar/core/memory_engine.h"
#include "sidecar/log/log.h"
#include "sidecar/pg/key_digest.h"
#include "sidecar/pg/table_name.h"

namespace ratelimit {

enum class StoreKind { kMemory, kPostgres };
enum class StoreMode { kLease, kStrict };
// RATE_LIMIT_PG_STATEMENTS: how the PostgreSQL store sends its SQL; BuildEngines resolves kAuto.
enum class PgStatements { kAuto, kPrepared, kUnnamed };
// RATE_LIMIT_TEST_CLOCK: the memory store's time source; kManual is for tests only.
enum class TestClock { kReal, kManual };

// RATE_LIMIT_ADMIN_ADDR: where the admin HTTP server (metrics, health) listens. The host is an
// IPv4 literal, a bracketed IPv6 literal or a name resolved once at start-up; port 0 takes a
// free port (logged).
struct AdminAddress {
  std::string host;
  uint16_t port = 0;
  bool operator==(const AdminAddress&) const = default;
};

// The settings, a plain value built once by LoadConfig on the main thread. Every field's default
// is its variable's documented default: ConfigVariables() shows it by formatting Config{}, so a
// default is written here and nowhere else.
struct Config {
  std::string socket_path = "/var/run/ratelimit/ratelimit.sock";
  uint32_t socket_mode = 0660;
  std::vector<uint32_t> allowed_uids;  // Empty: whoever the file mode lets in.
  uint32_t max_connections = 1024;
  uint32_t max_frame_bytes = 65536;
  uint32_t shutdown_grace_ms = 5000;
  Policy default_policy{100, 60000};
  Algorithm algorithm = Algorithm::kTokenBucket;
  uint32_t max_keys = 500000;
  StoreKind store = StoreKind::kMemory;
  // PostgreSQL store only.
  StoreMode mode = StoreMode::kLease;
  uint32_t lease_ttl_ms = 1000;
  uint32_t lease_unconfirmed_per_key = 1;
  uint32_t lease_unconfirmed_max = 4096;
  FallbackPolicy fallback = FallbackPolicy::kLocal;
  uint32_t expected_replicas = 1;
  std::string database_url;  // Empty: libpq's PG* variables and defaults decide.
  TableName pg_table{"", "rate_limit_buckets"};
  bool pg_create_table = true;
  KeyHashing pg_key_hash = KeyHashing::kSha256;
  uint32_t pg_connections = 2;
  uint32_t pg_timeout_ms = 250;
  PgStatements pg_statements = PgStatements::kAuto;
  uint32_t pg_new_keys_per_sec = 1000;  // 0: no bound.
  LogLevel log_level = LogLevel::kInfo;
  std::optional<AdminAddress> admin_addr;   // Empty: no admin server.
  TestClock test_clock = TestClock::kReal;  // kManual: memory store only, tests only.
};

// One environment variable the sidecar reads: the one row from which LoadConfig, EffectiveConfig,
// --help and the README's table all come. The rows are built during static initialisation and
// never change or go away after it: any thread may read them.
struct ConfigVariable {
  std::string_view name;
  std::string default_value;  // Config{}'s setting, as text that `parse` reads back.
  std::string allowed;        // What a value must be: the text after "expected" in its error.
  // What the variable does, as the README shows it: `code` and [links](#anchor) allowed.
  std::string_view meaning;
  bool redacted = false;  // Its value is never shown: EffectiveConfig takes the shown text.
  // Sets the variable's member of `config` from `value`; a bad value gives InvalidArgument with
  // what was expected (`allowed`, sometimes with more detail), not yet naming the variable.
  std::function<Status(std::string_view value, Config& config)> parse;
  // The member's setting in `config`, as text that `parse` reads back as the same setting.
  std::function<std::string(const Config& config)> format;
};

// Every variable, in the order --help, the README and the start-up line list them
// (config_variables.cc). REQUIRES: called from main() on, not from a static initialiser.
const std::vector<ConfigVariable>& ConfigVariables();

// Longest socket path: sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
inline constexpr size_t kMaxSocketPathBytes = 107;

// Returns the value of an environment variable, or nullptr when it is unset.
using EnvLookup = std::function<const char*(const char* name)>;

// Reads every variable through `env`. An unset or empty variable takes its default. A bad value
// yields InvalidArgument with one line naming the variable, the value given and what is
// allowed, e.g.
//   RATE_LIMIT_WINDOW_MS="abc" is invalid: expected an integer from 1 to 4294967295
Result<Config> LoadConfig(const EnvLookup& env);

// The setting in effect of every variable in ConfigVariables(), in that order, as text that
// LoadConfig reads back as the same setting: defaults included, an unset RATE_LIMIT_ADMIN_ADDR
// as "". The redacted variable, DATABASE_URL, is never taken from `config`: its value is
// `redacted_database_url` (RedactConninfo in sidecar/pg, which config does not link).
using ConfigValues = std::vector<std::pair<std::string_view, std::string>>;
ConfigValues EffectiveConfig(const Config& config, std::string_view redacted_database_url);

// The libpq environment variables (PGHOST, PGPORT, PGUSER, PGSSLMODE, ...) that are set, with
// their values, in a fixed order; they fill in what DATABASE_URL leaves out. PGPASSWORD is
// always listed, as "(set)" or "(unset)", never with its value.
ConfigValues LibpqEnvironment(const EnvLookup& env);

// Logs, at info, one line with msg "effective configuration" and one field per variable,
// named after it, e.g. "RATE_LIMIT_MAX_REQUESTS":"100" (see EffectiveConfig), followed, for
// the postgres store, by LibpqEnvironment(env). `redacted_database_url` is what DATABASE_URL
// shows: pass RedactConninfo(config.database_url), never the URL itself.
void LogEffectiveConfig(const Config& config, std::string_view redacted_database_url,
                        const EnvLookup& env);
// The same, reading the process's environment.
void LogEffectiveConfig(const Config& config, std::string_view redacted_database_url);

// Names in `environ`-style "NAME=value" entries that start with RATE_LIMIT_ but are not read by
// this build: most often a typo, worth a warning.
std::vector<std::string> UnknownRateLimitVariables(const char* const* environ_entries);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CONFIG_CONFIG_H_
