// Engines: the store and the engines one configuration asks for, built by one function.
#include "sidecar/engines.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "sidecar/core/strict_engine.h"
#include "sidecar/pg/conninfo.h"

namespace ratelimit {

Result<EngineSecrets> RandomEngineSecrets() {
  EngineSecrets secrets;
  if (getrandom(&secrets, sizeof(secrets), 0) != static_cast<ssize_t>(sizeof(secrets))) {
    return Status::IoError(std::string("getrandom: ") + std::strerror(errno));
  }
  return secrets;
}

namespace {

// Lease state is about four times the size of a bucket (it holds the key's text, its leases,
// its demand and denial), so lease mode holds a quarter as many keys, in the same memory.
size_t LeaseKeys(uint32_t max_keys) { return std::max<size_t>(1, max_keys / 4); }
// Key text budgeted per lease key on average: longer keys mean fewer keys.
constexpr size_t kLeaseKeyBytes = 64;

// The strict or lease engine over `engines`' store and fallback.
std::unique_ptr<Engine> SharedEngine(const Config& config, Clock& clock,
                                     const EngineSecrets& secrets, Engines& engines) {
  if (config.mode == StoreMode::kStrict) {
    return std::make_unique<StrictEngine>(*engines.pg_store, engines.fallback.get(),
                                          config.algorithm);
  }
  auto lease = std::make_unique<LeaseEngine>(
      *engines.pg_store, clock, secrets.hash_key,
      LeaseOptions{.ttl_ms = config.lease_ttl_ms,
                   .jitter_seed = secrets.jitter_seed,
                   .max_keys = LeaseKeys(config.max_keys),
                   .max_key_bytes = LeaseKeys(config.max_keys) * kLeaseKeyBytes,
                   .new_keys_per_sec = config.pg_new_keys_per_sec,
                   .algorithm = config.algorithm,
                   .unconfirmed_per_key = config.lease_unconfirmed_per_key,
                   .unconfirmed_max = config.lease_unconfirmed_max},
      engines.fallback.get());
  engines.lease = lease.get();
  return lease;
}

}  // namespace

StatementMode ResolveStatements(PgStatements setting, bool url_says_pgbouncer) {
  switch (setting) {
    case PgStatements::kPrepared:
      return StatementMode::kPrepared;
    case PgStatements::kUnnamed:
      return StatementMode::kUnnamed;
    case PgStatements::kAuto:
    default:
      return url_says_pgbouncer ? StatementMode::kUnnamed : StatementMode::kPrepared;
  }
}

Engines BuildEngines(uv_loop_t* loop, const Config& config, Clock& clock,
                     const EngineSecrets& secrets) {
  Engines engines;
  if (config.store != StoreKind::kPostgres) {
    auto memory = NewMemoryEngine(config.algorithm, clock, secrets.hash_key, config.max_keys);
    engines.memory = memory.get();
    engines.engine = std::move(memory);
    return engines;
  }
  const CleanConninfo url = StripOrmParametersOrKeep(config.database_url);
  engines.pg_store = std::make_unique<PgStore>(
      loop, PgStoreOptions{
                .conninfo = url.conninfo,
                .table = TableForUrl(config.pg_table, url),
                .create_table = config.pg_create_table,
                .key_hashing = config.pg_key_hash,
                .connections = config.pg_connections,
                .timeout_ms = config.pg_timeout_ms,
                .statements = ResolveStatements(config.pg_statements, url.pgbouncer),
                .adapt_statements = config.pg_statements == PgStatements::kAuto,
                .new_keys_per_sec = config.pg_new_keys_per_sec,
            });
  engines.fallback = std::make_unique<Fallback>(
      config.fallback,
      config.fallback == FallbackPolicy::kLocal
          ? NewMemoryEngine(config.algorithm, clock, secrets.hash_key, config.max_keys)
          : nullptr,
      config.expected_replicas);
  engines.engine = SharedEngine(config, clock, secrets, engines);
  return engines;
}

}  // namespace ratelimit
