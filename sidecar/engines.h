// Engines: the store and the engines one configuration asks for, built by one function.
#ifndef RATELIMIT_SIDECAR_ENGINES_H_
#define RATELIMIT_SIDECAR_ENGINES_H_

#include <uv.h>

#include <cstdint>
#include <memory>

#include "schema/status.h"
#include "sidecar/config/config.h"
#include "sidecar/core/clock.h"
#include "sidecar/core/engine.h"
#include "sidecar/core/fallback.h"
#include "sidecar/core/keyed_hash.h"
#include "sidecar/core/lease_engine.h"
#include "sidecar/core/memory_engine.h"
#include "sidecar/pg/pg_store.h"

namespace ratelimit {

// Randomness drawn once per process: the key of the bucket tables' hash, which must stay
// secret from clients (see KeyedHash), and an independent seed for lease mode's jitter, whose
// draws clients can observe in retry_after_ms.
struct EngineSecrets {
  HashKey hash_key;
  uint64_t jitter_seed = 0;
};

// From getrandom(2); IoError when the kernel cannot provide it.
Result<EngineSecrets> RandomEngineSecrets();

// Everything that decides checks, owned in one place. Members are declared in the order they
// depend on one another, so that they are destroyed in the reverse: the engine before the
// fallback it consults, both before the store under them.
//   memory store:   engine = a MemoryEngine (memory points at it).
//   postgres store: pg_store, fallback (with its local buckets under kLocal), and engine = a
//                   StrictEngine or a LeaseEngine over them (lease points at the latter).
// Thread-safety: the loop thread only. REQUIRES: the store is shut down (PgStore::Shutdown)
// before this is destroyed.
struct Engines {
  std::unique_ptr<PgStore> pg_store;   // The postgres store only.
  std::unique_ptr<Fallback> fallback;  // The postgres store only.
  std::unique_ptr<Engine> engine;      // What the limiter asks.
  MemoryEngine* memory = nullptr;      // engine, for the memory store.
  LeaseEngine* lease = nullptr;        // engine, in lease mode.

  // The buckets held in this process's memory, to be swept of full ones: the memory store's,
  // or the local fallback's; null when there are none.
  MemoryEngine* swept() const {
    if (memory != nullptr) return memory;
    return fallback != nullptr ? fallback->local() : nullptr;
  }
};

// RATE_LIMIT_PG_STATEMENTS as the store runs it: `auto` is prepared statements (parsed once per
// connection: the cheaper on a direct connection, see BENCHMARKS.md) unless the URL says a
// PgBouncer is in between (`pgbouncer=true`), then unnamed ones.
StatementMode ResolveStatements(PgStatements setting, bool url_says_pgbouncer);

// Builds the engines `config` asks for. Nothing starts: the store connects on PgStore::Start.
// `clock` must outlive the result.
Engines BuildEngines(uv_loop_t* loop, const Config& config, Clock& clock,
                     const EngineSecrets& secrets);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_ENGINES_H_
