// Config variables: every environment variable the sidecar reads, declared once, one row each.
#include <cstdint>
#include <functional>
#include <utility>

#include "sidecar/config/config.h"
#include "sidecar/config/config_parsers.h"

namespace ratelimit {
namespace {

// The words of each variable that takes one: what LoadConfig reads and EffectiveConfig writes.
constexpr Word<Algorithm> kAlgorithms[] = {{"token_bucket", Algorithm::kTokenBucket},
                                           {"fixed_window", Algorithm::kFixedWindow}};
constexpr Word<StoreKind> kStores[] = {{"memory", StoreKind::kMemory},
                                       {"postgres", StoreKind::kPostgres}};
constexpr Word<StoreMode> kModes[] = {{"lease", StoreMode::kLease}, {"strict", StoreMode::kStrict}};
constexpr Word<bool> kBooleans[] = {{"true", true}, {"false", false}};
constexpr Word<KeyHashing> kKeyHashings[] = {{"sha256", KeyHashing::kSha256},
                                             {"none", KeyHashing::kNone}};
constexpr Word<PgStatements> kStatements[] = {{"auto", PgStatements::kAuto},
                                              {"prepared", PgStatements::kPrepared},
                                              {"unnamed", PgStatements::kUnnamed}};
constexpr Word<FallbackPolicy> kFallbacks[] = {{"local", FallbackPolicy::kLocal},
                                               {"allow", FallbackPolicy::kAllow},
                                               {"deny", FallbackPolicy::kDeny}};
constexpr Word<LogLevel> kLogLevels[] = {{"debug", LogLevel::kDebug},
                                         {"info", LogLevel::kInfo},
                                         {"warn", LogLevel::kWarn},
                                         {"error", LogLevel::kError}};
constexpr Word<TestClock> kTestClocks[] = {{"real", TestClock::kReal},
                                           {"manual", TestClock::kManual}};

// One row: `parser` reads the variable's text into `member` and writes it back as text, and its
// bounds give the allowed text. `member` is whatever makes `std::invoke(member, config)` a
// reference to the field, for a Config and a const Config alike: a pointer to a data member, or
// a generic lambda for a nested field. The default text is Config{}'s field, formatted.
template <typename Parser, typename Member>
ConfigVariable MakeVariable(std::string_view name, Parser parser, Member member,
                            std::string_view meaning) {
  ConfigVariable variable;
  variable.name = name;
  variable.allowed = parser.Allowed();
  variable.meaning = meaning;
  variable.parse = [parser, member](std::string_view value, Config& config) -> Status {
    Result<typename Parser::Value> parsed = parser.Parse(value);
    if (!parsed.ok()) return parsed.status();
    std::invoke(member, config) = std::move(*parsed);
    return Status::Ok();
  };
  variable.format = [parser, member](const Config& config) {
    return parser.Format(std::invoke(member, config));
  };
  variable.default_value = variable.format(Config{});
  return variable;
}

ConfigVariable Redacted(ConfigVariable variable) {
  variable.redacted = true;
  return variable;
}

constexpr uint32_t kU32Max = UINT32_MAX;

// Every row, in the order of the design's list: serving, policy, store, failure, operations.
// Built during static initialisation, before main() reads it, and never destroyed.
const std::vector<ConfigVariable>& kVariables = *new std::vector<ConfigVariable>{
    // Serving: the socket and its clients.
    MakeVariable("RATE_LIMIT_SOCKET", SocketPath{}, &Config::socket_path,
                 "Unix socket to listen on. Missing parent directories are created."),
    MakeVariable("RATE_LIMIT_SOCKET_MODE", FileMode{}, &Config::socket_mode,
                 "File mode of the socket."),
    MakeVariable("RATE_LIMIT_ALLOWED_UIDS", UidList{}, &Config::allowed_uids,
                 "Peer uids allowed to connect (checked with `SO_PEERCRED`); empty allows "
                 "whoever the file mode lets in."),
    MakeVariable("RATE_LIMIT_MAX_CONNECTIONS", IntegerIn{1, 1000000, "connections"},
                 &Config::max_connections,
                 "Connections served at once; more get an `ErrorResponse` (`Overloaded`) and "
                 "are closed."),
    MakeVariable("RATE_LIMIT_MAX_FRAME_BYTES", IntegerIn{1024, 16777216, "bytes"},
                 &Config::max_frame_bytes,
                 "Largest frame payload accepted. Larger frames are refused before any of them "
                 "is buffered."),
    MakeVariable("RATE_LIMIT_SHUTDOWN_GRACE_MS", IntegerIn{0, 3600000, "milliseconds"},
                 &Config::shutdown_grace_ms,
                 "On SIGTERM/SIGINT, how long connections may take to receive their last "
                 "answers before they are closed."),
    // The default policy, for checks that name none.
    MakeVariable(
        "RATE_LIMIT_MAX_REQUESTS", IntegerIn{1, kU32Max, "tokens"},
        [](auto& c) -> auto& { return c.default_policy.limit; },
        "Default policy: bucket capacity (tokens per window). Same meaning as in the older "
        "Node gateway."),
    MakeVariable(
        "RATE_LIMIT_WINDOW_MS", IntegerIn{1, kU32Max, "milliseconds"},
        [](auto& c) -> auto& { return c.default_policy.window_ms; },
        "Default policy: window in milliseconds. Same meaning as in the older Node gateway."),
    MakeVariable("RATE_LIMIT_ALGORITHM", OneOf<Algorithm>{kAlgorithms}, &Config::algorithm,
                 "`token_bucket` or `fixed_window` (the older gateway's limiter, reproduced "
                 "exactly; with `RATE_LIMIT_STORE=postgres` too, one window per key shared by "
                 "all sidecars, see [fixed windows in "
                 "PostgreSQL](#fixed-windows-in-postgresql)); see [what a check "
                 "means](#what-a-check-means)."),
    MakeVariable("RATE_LIMIT_MAX_KEYS", IntegerIn{1, 100000000, "keys"}, &Config::max_keys,
                 "The most keys held in memory by each table (the memory store's buckets, the "
                 "local fallback's; lease state holds a quarter as many): a new key that finds "
                 "the table full evicts one. See [key floods](#key-floods)."),
    // Where buckets live, and how the PostgreSQL store uses its table.
    MakeVariable("RATE_LIMIT_STORE", OneOf<StoreKind>{kStores}, &Config::store,
                 "Where buckets live: `memory` (this pod only) or `postgres` (shared by every "
                 "sidecar on the table)."),
    MakeVariable("RATE_LIMIT_MODE", OneOf<StoreMode>{kModes}, &Config::mode,
                 "PostgreSQL store: `lease` (checks answered in memory from tokens leased from "
                 "the shared bucket; see [lease mode](#lease-mode-the-default)) or `strict` "
                 "(every check decided in the database)."),
    MakeVariable("RATE_LIMIT_LEASE_TTL_MS", IntegerIn{10, 600000, "milliseconds"},
                 &Config::lease_ttl_ms,
                 "Lease mode: how long a lease may be spent after it was asked for; then its "
                 "unused tokens go back. The bound of [lease mode](#lease-mode-the-default) "
                 "grows by `rate * ttl`."),
    MakeVariable("RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY", IntegerIn{0, 1000, "tokens"},
                 &Config::lease_unconfirmed_per_key,
                 "Lease mode: the most tokens of a key this sidecar admits before the database "
                 "has confirmed them (`u`), so that a key holding no lease is answered from "
                 "memory too; its debit goes with the next transaction. `0`: every check of a "
                 "key holding no lease waits for the database. The bound of "
                 "[lease mode](#lease-mode-the-default) grows by `P * u`. Unset with "
                 "`RATE_LIMIT_ALGORITHM=fixed_window`: `0`, so that shared windows stay exact."),
    MakeVariable("RATE_LIMIT_LEASE_UNCONFIRMED_MAX", IntegerIn{1, 1000000, "tokens"},
                 &Config::lease_unconfirmed_max,
                 "Lease mode: the most tokens admitted unconfirmed at once, all keys together "
                 "(and at most an eighth of the keys lease state holds: such keys are not "
                 "evicted); past it, checks of keys holding no lease wait for the database."),
    Redacted(MakeVariable(
        "DATABASE_URL",
        AnyText{"a libpq connection string or URI (checked at start-up with the postgres "
                "store)"},
        &Config::database_url,
        "PostgreSQL store: a libpq connection string or URI; libpq's `PG*` variables "
        "(`PGHOST`, `PGPASSWORD`, ...) apply as well. ORM parameters (Prisma's `schema`, "
        "`pgbouncer`, `connection_limit`, ...) are accepted; see [URLs from "
        "ORMs](#database_url-as-orms-write-it). TCP keepalives are added unless it sets them "
        "(see [failure behaviour](#failure-behaviour)). Logged without the ORM parameters, "
        "with the keepalives, every secret shown as `***`.")),
    MakeVariable("RATE_LIMIT_PG_TABLE", TableNameText{}, &Config::pg_table,
                 "PostgreSQL store: the table, optionally schema-qualified (`schema.table`); "
                 "without a schema, `DATABASE_URL`'s `schema` parameter names it, else the "
                 "`search_path` decides."),
    MakeVariable("RATE_LIMIT_PG_CREATE_TABLE", OneOf<bool>{kBooleans}, &Config::pg_create_table,
                 "PostgreSQL store: create the table if it is missing; `false` for operators "
                 "who apply `schema/postgres.sql` themselves."),
    MakeVariable("RATE_LIMIT_PG_KEY_HASH", OneOf<KeyHashing>{kKeyHashings}, &Config::pg_key_hash,
                 "PostgreSQL store: keys at rest are SHA-256 digests; `none` stores the key's "
                 "bytes (debugging only)."),
    MakeVariable("RATE_LIMIT_PG_CONNECTIONS", IntegerIn{1, 64, "sessions"}, &Config::pg_connections,
                 "PostgreSQL store: database sessions per sidecar."),
    MakeVariable("RATE_LIMIT_PG_TIMEOUT_MS", IntegerIn{10, 600000, "milliseconds"},
                 &Config::pg_timeout_ms,
                 "PostgreSQL store: a transaction not answered this soon fails over to the "
                 "fallback, and its session reconnects. A connection attempt gets at least "
                 "1000 ms."),
    MakeVariable("RATE_LIMIT_PG_STATEMENTS", OneOf<PgStatements>{kStatements},
                 &Config::pg_statements,
                 "PostgreSQL store: `prepared` statements (parsed once per connection), "
                 "`unnamed` ones (parsed in each transaction: what a transaction-pooling pooler "
                 "such as PgBouncer 1.18 needs), or `auto`: unnamed if `DATABASE_URL` says "
                 "`pgbouncer=true`, else prepared until a pooler is seen to lose them, then "
                 "unnamed; see [poolers](#poolers-pgbouncer)."),
    MakeVariable("RATE_LIMIT_PG_NEW_KEYS_PER_SEC", IntegerIn{0, 1000000, "rows per second"},
                 &Config::pg_new_keys_per_sec,
                 "PostgreSQL store: the most rows one sidecar inserts per second for keys that "
                 "have none (a burst of one second's worth); beyond it, a new key's check is "
                 "answered by the fallback policy. `0`: no bound. See [key "
                 "floods](#key-floods)."),
    // While the database cannot decide.
    MakeVariable("RATE_LIMIT_FALLBACK", OneOf<FallbackPolicy>{kFallbacks}, &Config::fallback,
                 "PostgreSQL store: how checks are answered while the database cannot decide "
                 "them: `local`, `allow` or `deny` (see [failure "
                 "behaviour](#failure-behaviour))."),
    MakeVariable("RATE_LIMIT_EXPECTED_REPLICAS", IntegerIn{1, 100000, "pods"},
                 &Config::expected_replicas,
                 "The number of pods sharing the limits: the `local` fallback gives each pod "
                 "`limit / replicas` of each key's bucket."),
    // Operations.
    MakeVariable("RATE_LIMIT_LOG_LEVEL", OneOf<LogLevel>{kLogLevels}, &Config::log_level,
                 "Lines less severe than this are not written. Logs are JSON lines on stderr."),
    MakeVariable("RATE_LIMIT_ADMIN_ADDR", HostPort{}, &Config::admin_addr,
                 "`host:port` of the admin HTTP server (`/metrics`, `/healthz`, `/readyz`; see "
                 "[Operating](#operating)); a host name is resolved once at start-up, and port "
                 "`0` takes a free one (logged). Empty: no admin server, no TCP port opened. "
                 "In Kubernetes set `0.0.0.0:9464`."),
    // Tests only.
    MakeVariable("RATE_LIMIT_TEST_CLOCK", OneOf<TestClock>{kTestClocks}, &Config::test_clock,
                 "Tests only, never in production. `manual`: the memory store's clock "
                 "starts at the real time and then stands still, moving only when `POST "
                 "/test/clock/advance?ms=N` on the admin server says so (see [a test clock]"
                 "(#a-test-clock-for-tests-of-a-real-sidecar)); refused with "
                 "`RATE_LIMIT_STORE=postgres`, whose time is the database's."),
};

}  // namespace

const std::vector<ConfigVariable>& ConfigVariables() { return kVariables; }

}  // namespace ratelimit
