// Config: the sidecar's settings, read once at start-up from environment variables only.
#include "sidecar/config/config.h"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <span>

namespace ratelimit {

const std::vector<ConfigVariable> kConfigVariables = {
    {"RATE_LIMIT_SOCKET", "/var/run/ratelimit/ratelimit.sock",
     "Unix socket path the sidecar listens on (at most 107 bytes)"},
    {"RATE_LIMIT_SOCKET_MODE", "0660", "file mode of the socket, octal"},
    {"RATE_LIMIT_ALLOWED_UIDS", "",
     "comma-separated peer uids allowed to connect; empty allows any uid the file mode admits"},
    {"RATE_LIMIT_MAX_CONNECTIONS", "1024", "client connections served at once; more are refused"},
    {"RATE_LIMIT_MAX_FRAME_BYTES", "65536",
     "largest frame payload accepted, in bytes (1024 to 16777216)"},
    {"RATE_LIMIT_SHUTDOWN_GRACE_MS", "5000",
     "on SIGTERM/SIGINT, how long to wait for answers to drain before closing connections"},
    {"RATE_LIMIT_MAX_REQUESTS", "100", "default policy: tokens per window (bucket capacity)"},
    {"RATE_LIMIT_WINDOW_MS", "60000", "default policy: window in milliseconds"},
    {"RATE_LIMIT_ALGORITHM", "token_bucket", "token_bucket or fixed_window"},
    {"RATE_LIMIT_STORE", "memory", "where buckets live: memory (this pod only) or postgres"},
    {"RATE_LIMIT_MODE", "lease",
     "postgres store: lease (checks answered from leased tokens in memory) or strict (every "
     "check decided in the database)"},
    {"RATE_LIMIT_LEASE_TTL_MS", "1000",
     "lease mode: how long a lease may be spent before its unused tokens go back (10 to 600000)"},
    {"DATABASE_URL", "", "postgres store: libpq connection string or URI; PG* variables apply"},
    {"RATE_LIMIT_PG_TABLE", "rate_limit_buckets",
     "postgres store: table name, optionally schema.table (a-z, 0-9, _, $; 63 bytes a part)"},
    {"RATE_LIMIT_PG_CREATE_TABLE", "true",
     "postgres store: create the table if missing (false: apply schema/postgres.sql yourself)"},
    {"RATE_LIMIT_PG_KEY_HASH", "sha256",
     "postgres store: keys at rest as SHA-256 digests (sha256) or as sent (none, debugging)"},
    {"RATE_LIMIT_PG_CONNECTIONS", "2", "postgres store: database sessions (1 to 64)"},
    {"RATE_LIMIT_PG_TIMEOUT_MS", "250",
     "postgres store: a transaction not answered this soon fails over to the fallback and its "
     "session reconnects (10 to 600000)"},
    {"RATE_LIMIT_FALLBACK", "local",
     "postgres store, while the database cannot decide: local (a per-pod bucket of limit / "
     "RATE_LIMIT_EXPECTED_REPLICAS), allow or deny"},
    {"RATE_LIMIT_EXPECTED_REPLICAS", "1",
     "pods sharing the limits, for the local fallback's share (1 to 100000)"},
    {"RATE_LIMIT_LOG_LEVEL", "info", "debug, info, warn or error"},
    {"RATE_LIMIT_ADMIN_ADDR", "",
     "host:port of the admin HTTP server (/metrics, /healthz, /readyz); empty disables it"},
};

namespace {

Status Invalid(std::string_view name, std::string_view value, std::string_view allowed) {
  std::string msg(name);
  msg += "=\"";
  msg += value;
  msg += "\" is invalid: expected ";
  msg += allowed;
  return Status::InvalidArgument(std::move(msg));
}

// Parses a base-`base` unsigned integer in [min, max]; the whole string must be digits.
Status ParseUint(std::string_view name, std::string_view value, uint64_t min, uint64_t max,
                 int base, std::string_view allowed, uint32_t& out) {
  uint64_t parsed = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, parsed, base);
  if (ec != std::errc() || ptr != end || parsed < min || parsed > max) {
    return Invalid(name, value, allowed);
  }
  out = static_cast<uint32_t>(parsed);
  return Status::Ok();
}

Status ParseInteger(std::string_view name, std::string_view value, uint64_t min, uint64_t max,
                    std::string_view unit, uint32_t& out) {
  std::string allowed = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  if (!unit.empty()) allowed += " (" + std::string(unit) + ")";
  return ParseUint(name, value, min, max, 10, allowed, out);
}

template <typename T>
struct Word {
  std::string_view word;
  T value;
};

// The words of each variable that takes one: what LoadConfig reads and EffectiveConfig writes.
constexpr Word<Algorithm> kAlgorithms[] = {{"token_bucket", Algorithm::kTokenBucket},
                                           {"fixed_window", Algorithm::kFixedWindow}};
constexpr Word<StoreKind> kStores[] = {{"memory", StoreKind::kMemory},
                                       {"postgres", StoreKind::kPostgres}};
constexpr Word<StoreMode> kModes[] = {{"lease", StoreMode::kLease}, {"strict", StoreMode::kStrict}};
constexpr Word<bool> kBooleans[] = {{"true", true}, {"false", false}};
constexpr Word<KeyHashing> kKeyHashings[] = {{"sha256", KeyHashing::kSha256},
                                             {"none", KeyHashing::kNone}};
constexpr Word<FallbackPolicy> kFallbacks[] = {{"local", FallbackPolicy::kLocal},
                                               {"allow", FallbackPolicy::kAllow},
                                               {"deny", FallbackPolicy::kDeny}};
constexpr Word<LogLevel> kLogLevels[] = {{"debug", LogLevel::kDebug},
                                         {"info", LogLevel::kInfo},
                                         {"warn", LogLevel::kWarn},
                                         {"error", LogLevel::kError}};

template <typename T>
std::string WordFor(std::span<const Word<T>> words, T value) {
  for (const Word<T>& w : words) {
    if (w.value == value) return std::string(w.word);
  }
  return "?";  // Unreachable while every enumerator has its word.
}

template <typename T>
Status ParseWord(std::string_view name, std::string_view value, std::span<const Word<T>> words,
                 T& out) {
  std::string allowed = "one of";
  for (const Word<T>& w : words) {
    if (w.word == value) {
      out = w.value;
      return Status::Ok();
    }
    allowed += allowed.size() == 6 ? " " : ", ";
    allowed += w.word;
  }
  return Invalid(name, value, allowed);
}

Status ParseUidList(std::string_view name, std::string_view value, std::vector<uint32_t>& out) {
  constexpr std::string_view kAllowed =
      "comma-separated uids, each an integer from 0 to 4294967294";
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view item = value.substr(start, comma - start);
    uint32_t uid = 0;
    if (!ParseUint(name, item, 0, std::numeric_limits<uint32_t>::max() - 1, 10, kAllowed, uid)
             .ok()) {
      return Invalid(name, value, kAllowed);
    }
    out.push_back(uid);
    start = comma + 1;
  }
  return Status::Ok();
}

Status ParseSocketPath(std::string_view name, std::string_view value, std::string& out) {
  if (value.size() > kMaxSocketPathBytes || value.find('\0') != std::string_view::npos) {
    return Invalid(name, value,
                   "a path of at most " + std::to_string(kMaxSocketPathBytes) +
                       " bytes (the Unix socket limit); this one has " +
                       std::to_string(value.size()));
  }
  out = std::string(value);
  return Status::Ok();
}

// host:port, host an IPv4 literal, [IPv6 literal] or a DNS name; port 0 to 65535.
Status ParseAdminAddress(std::string_view name, std::string_view value,
                         std::optional<AdminAddress>& out) {
  constexpr std::string_view kAllowed =
      "host:port, where host is an IPv4 address, [IPv6 address] or host name and port is 0 to "
      "65535 (for example 0.0.0.0:9464)";
  const size_t colon = value.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return Invalid(name, value, kAllowed);
  std::string_view host = value.substr(0, colon);
  uint32_t port = 0;
  if (!ParseUint(name, value.substr(colon + 1), 0, 65535, 10, kAllowed, port).ok()) {
    return Invalid(name, value, kAllowed);
  }
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return Invalid(name, value, kAllowed);
    host = host.substr(1, host.size() - 2);
    for (const char c : host) {
      const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                      c == ':' || c == '.';
      if (!ok) return Invalid(name, value, kAllowed);
    }
  } else {
    if (host.size() > 253) return Invalid(name, value, kAllowed);
    for (const char c : host) {
      const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      c == '-' || c == '.';
      if (!ok) return Invalid(name, value, kAllowed);
    }
  }
  out = AdminAddress{std::string(host), static_cast<uint16_t>(port)};
  return Status::Ok();
}

}  // namespace

Result<Config> LoadConfig(const EnvLookup& env) {
  Config config;
  // Runs `parse` on the variable's value when it is set and not empty.
  auto with = [&env](const char* name, auto&& parse) -> Status {
    const char* raw = env(name);
    if (raw == nullptr || *raw == '\0') return Status::Ok();
    return parse(name, std::string_view(raw));
  };
  constexpr uint64_t kU32Max = std::numeric_limits<uint32_t>::max();

  Status statuses[] = {
      with("RATE_LIMIT_SOCKET",
           [&](auto name, auto v) { return ParseSocketPath(name, v, config.socket_path); }),
      with("RATE_LIMIT_SOCKET_MODE",
           [&](auto name, auto v) {
             constexpr std::string_view kAllowed =
                 "an octal file mode from 600 to 777 (the owner must be able to read and write)";
             Status parsed = ParseUint(name, v, 0, 0777, 8, kAllowed, config.socket_mode);
             if (parsed.ok() && (config.socket_mode & 0600) != 0600) {
               return Invalid(name, v, kAllowed);
             }
             return parsed;
           }),
      with("RATE_LIMIT_ALLOWED_UIDS",
           [&](auto name, auto v) { return ParseUidList(name, v, config.allowed_uids); }),
      with("RATE_LIMIT_MAX_CONNECTIONS",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 1, 1000000, "connections", config.max_connections);
           }),
      with("RATE_LIMIT_MAX_FRAME_BYTES",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 1024, 16777216, "bytes", config.max_frame_bytes);
           }),
      with("RATE_LIMIT_SHUTDOWN_GRACE_MS",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 0, 3600000, "milliseconds", config.shutdown_grace_ms);
           }),
      with("RATE_LIMIT_MAX_REQUESTS",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 1, kU32Max, "tokens", config.default_policy.limit);
           }),
      with("RATE_LIMIT_WINDOW_MS",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 1, kU32Max, "milliseconds",
                                 config.default_policy.window_ms);
           }),
      with("RATE_LIMIT_ALGORITHM",
           [&](auto name, auto v) {
             return ParseWord<Algorithm>(name, v, kAlgorithms, config.algorithm);
           }),
      with("RATE_LIMIT_STORE",
           [&](auto name, auto v) { return ParseWord<StoreKind>(name, v, kStores, config.store); }),
      with("RATE_LIMIT_MODE",
           [&](auto name, auto v) { return ParseWord<StoreMode>(name, v, kModes, config.mode); }),
      with("RATE_LIMIT_LEASE_TTL_MS",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 10, 600000, "milliseconds", config.lease_ttl_ms);
           }),
      with("DATABASE_URL",
           [&](auto, auto v) {
             config.database_url = std::string(v);
             return Status::Ok();
           }),
      with("RATE_LIMIT_PG_TABLE",
           [&](auto name, auto v) {
             Result<TableName> table = ParseTableName(v);
             if (!table.ok()) return Invalid(name, v, table.status().message());
             config.pg_table = *table;
             return Status::Ok();
           }),
      with("RATE_LIMIT_PG_CREATE_TABLE",
           [&](auto name, auto v) {
             return ParseWord<bool>(name, v, kBooleans, config.pg_create_table);
           }),
      with("RATE_LIMIT_PG_KEY_HASH",
           [&](auto name, auto v) {
             return ParseWord<KeyHashing>(name, v, kKeyHashings, config.pg_key_hash);
           }),
      with("RATE_LIMIT_PG_CONNECTIONS",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 1, 64, "sessions", config.pg_connections);
           }),
      with("RATE_LIMIT_PG_TIMEOUT_MS",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 10, 600000, "milliseconds", config.pg_timeout_ms);
           }),
      with("RATE_LIMIT_FALLBACK",
           [&](auto name, auto v) {
             return ParseWord<FallbackPolicy>(name, v, kFallbacks, config.fallback);
           }),
      with("RATE_LIMIT_EXPECTED_REPLICAS",
           [&](auto name, auto v) {
             return ParseInteger(name, v, 1, 100000, "pods", config.expected_replicas);
           }),
      with("RATE_LIMIT_LOG_LEVEL",
           [&](auto name, auto v) {
             return ParseWord<LogLevel>(name, v, kLogLevels, config.log_level);
           }),
      with("RATE_LIMIT_ADMIN_ADDR",
           [&](auto name, auto v) { return ParseAdminAddress(name, v, config.admin_addr); }),
  };
  for (Status& status : statuses) {
    if (!status.ok()) return std::move(status);
  }
  if (config.store == StoreKind::kPostgres && config.algorithm == Algorithm::kFixedWindow) {
    const char* raw = env("RATE_LIMIT_ALGORITHM");
    return Invalid("RATE_LIMIT_ALGORITHM", raw ? raw : "",
                   "token_bucket with RATE_LIMIT_STORE=postgres (fixed_window is memory-only)");
  }
  return config;
}

ConfigValues EffectiveConfig(const Config& config, std::string_view redacted_database_url) {
  const auto number = [](uint64_t n) { return std::to_string(n); };
  char mode[16];
  std::snprintf(mode, sizeof(mode), "%04o", config.socket_mode);
  std::string uids;
  for (const uint32_t uid : config.allowed_uids) {
    if (!uids.empty()) uids += ',';
    uids += number(uid);
  }
  std::string admin;
  if (config.admin_addr) {
    const std::string& host = config.admin_addr->host;
    admin = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    admin += ":" + number(config.admin_addr->port);
  }
  // In kConfigVariables' order; config_test checks that every variable is here, once.
  return {
      {"RATE_LIMIT_SOCKET", config.socket_path},
      {"RATE_LIMIT_SOCKET_MODE", mode},
      {"RATE_LIMIT_ALLOWED_UIDS", uids},
      {"RATE_LIMIT_MAX_CONNECTIONS", number(config.max_connections)},
      {"RATE_LIMIT_MAX_FRAME_BYTES", number(config.max_frame_bytes)},
      {"RATE_LIMIT_SHUTDOWN_GRACE_MS", number(config.shutdown_grace_ms)},
      {"RATE_LIMIT_MAX_REQUESTS", number(config.default_policy.limit)},
      {"RATE_LIMIT_WINDOW_MS", number(config.default_policy.window_ms)},
      {"RATE_LIMIT_ALGORITHM", WordFor<Algorithm>(kAlgorithms, config.algorithm)},
      {"RATE_LIMIT_STORE", WordFor<StoreKind>(kStores, config.store)},
      {"RATE_LIMIT_MODE", WordFor<StoreMode>(kModes, config.mode)},
      {"RATE_LIMIT_LEASE_TTL_MS", number(config.lease_ttl_ms)},
      {"DATABASE_URL", std::string(redacted_database_url)},
      {"RATE_LIMIT_PG_TABLE", config.pg_table.Plain()},
      {"RATE_LIMIT_PG_CREATE_TABLE", WordFor<bool>(kBooleans, config.pg_create_table)},
      {"RATE_LIMIT_PG_KEY_HASH", WordFor<KeyHashing>(kKeyHashings, config.pg_key_hash)},
      {"RATE_LIMIT_PG_CONNECTIONS", number(config.pg_connections)},
      {"RATE_LIMIT_PG_TIMEOUT_MS", number(config.pg_timeout_ms)},
      {"RATE_LIMIT_FALLBACK", WordFor<FallbackPolicy>(kFallbacks, config.fallback)},
      {"RATE_LIMIT_EXPECTED_REPLICAS", number(config.expected_replicas)},
      {"RATE_LIMIT_LOG_LEVEL", WordFor<LogLevel>(kLogLevels, config.log_level)},
      {"RATE_LIMIT_ADMIN_ADDR", admin},
  };
}

ConfigValues LibpqEnvironment(const EnvLookup& env) {
  // libpq's environment variables (its documentation, "Environment Variables"), PGPASSWORD
  // apart. None of these holds a secret: key and certificate settings are file names.
  static constexpr const char* kLibpqVariables[] = {
      "PGHOST",
      "PGHOSTADDR",
      "PGPORT",
      "PGDATABASE",
      "PGUSER",
      "PGPASSFILE",
      "PGSERVICE",
      "PGSERVICEFILE",
      "PGOPTIONS",
      "PGAPPNAME",
      "PGCONNECT_TIMEOUT",
      "PGTARGETSESSIONATTRS",
      "PGLOADBALANCEHOSTS",
      "PGCLIENTENCODING",
      "PGSSLMODE",
      "PGREQUIRESSL",
      "PGSSLCOMPRESSION",
      "PGSSLCERT",
      "PGSSLKEY",
      "PGSSLCERTMODE",
      "PGSSLROOTCERT",
      "PGSSLCRL",
      "PGSSLCRLDIR",
      "PGSSLSNI",
      "PGSSLMINPROTOCOLVERSION",
      "PGSSLMAXPROTOCOLVERSION",
      "PGREQUIREPEER",
      "PGREQUIREAUTH",
      "PGCHANNELBINDING",
      "PGGSSENCMODE",
      "PGKRBSRVNAME",
      "PGGSSLIB",
      "PGGSSDELEGATION",
      "PGSYSCONFDIR",
      "PGDATESTYLE",
      "PGTZ",
      "PGGEQO",
  };
  ConfigValues values;
  for (const char* name : kLibpqVariables) {
    if (const char* value = env(name); value != nullptr) values.emplace_back(name, value);
  }
  const char* password = env("PGPASSWORD");
  values.emplace_back("PGPASSWORD", password != nullptr ? "(set)" : "(unset)");
  return values;
}

void LogEffectiveConfig(const Config& config, std::string_view redacted_database_url,
                        const EnvLookup& env) {
  if (!LogEnabled(LogLevel::kInfo)) return;
  Log line(LogLevel::kInfo, "effective configuration");
  for (const auto& [name, value] : EffectiveConfig(config, redacted_database_url)) {
    line.Str(name, value);
  }
  if (config.store != StoreKind::kPostgres) return;  // Nothing else reads PG*.
  for (const auto& [name, value] : LibpqEnvironment(env)) line.Str(name, value);
}

void LogEffectiveConfig(const Config& config, std::string_view redacted_database_url) {
  LogEffectiveConfig(config, redacted_database_url,
                     [](const char* name) -> const char* { return std::getenv(name); });
}

std::vector<std::string> UnknownRateLimitVariables(const char* const* environ_entries) {
  constexpr std::string_view kPrefix = "RATE_LIMIT_";
  std::vector<std::string> unknown;
  for (const char* const* entry = environ_entries; entry && *entry; ++entry) {
    std::string_view text(*entry);
    std::string_view name = text.substr(0, text.find('='));
    if (!name.starts_with(kPrefix)) continue;  // DATABASE_URL is read but never flagged.
    bool known = false;
    for (const ConfigVariable& variable : kConfigVariables) known |= variable.name == name;
    if (!known) unknown.emplace_back(name);
  }
  return unknown;
}

}  // namespace ratelimit
