// Config: the sidecar's settings, read once at start-up from environment variables only.
#include "sidecar/config/config.h"

#include <cstdlib>

namespace ratelimit {

namespace {

Status Invalid(std::string_view name, std::string_view value, std::string_view allowed) {
  std::string msg(name);
  msg += "=\"";
  msg += value;
  msg += "\" is invalid: expected ";
  msg += allowed;
  return Status::InvalidArgument(std::move(msg));
}

// Settings that are each valid but not together.
Status CheckCombinations(const Config& config, const EnvLookup& env) {
  // The shared store's time is the database's clock, which no sidecar can hold still.
  if (config.store == StoreKind::kPostgres && config.test_clock == TestClock::kManual) {
    const char* raw = env("RATE_LIMIT_TEST_CLOCK");
    return Invalid("RATE_LIMIT_TEST_CLOCK", raw ? raw : "",
                   "real (or unset) with RATE_LIMIT_STORE=postgres (the manual test clock drives "
                   "the memory store only; the database's clock decides for the shared store)");
  }
  return Status::Ok();
}

}  // namespace

Result<Config> LoadConfig(const EnvLookup& env) {
  Config config;
  for (const ConfigVariable& variable : ConfigVariables()) {
    const char* raw = env(std::string(variable.name).c_str());
    if (raw == nullptr || *raw == '\0') continue;  // Unset or empty: the default.
    if (Status parsed = variable.parse(raw, config); !parsed.ok()) {
      return Invalid(variable.name, raw, parsed.message());
    }
  }
  if (Status combined = CheckCombinations(config, env); !combined.ok()) return combined;
  // Fixed windows shared exactly are what the older gateway's users migrate for: the allowance
  // (which admits up to P * u more per window) is theirs only when they ask for it.
  const char* allowance = env("RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY");
  if ((allowance == nullptr || *allowance == '\0') && config.algorithm == Algorithm::kFixedWindow) {
    config.lease_unconfirmed_per_key = 0;
  }
  return config;
}

ConfigValues EffectiveConfig(const Config& config, std::string_view redacted_database_url) {
  ConfigValues values;
  for (const ConfigVariable& variable : ConfigVariables()) {
    values.emplace_back(variable.name, variable.redacted ? std::string(redacted_database_url)
                                                         : variable.format(config));
  }
  return values;
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
    for (const ConfigVariable& variable : ConfigVariables()) known |= variable.name == name;
    if (!known) unknown.emplace_back(name);
  }
  return unknown;
}

}  // namespace ratelimit
