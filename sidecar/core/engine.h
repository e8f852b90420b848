// Engine: the interface every store (memory, strict, lease) implements to decide checks.
#ifndef RATELIMIT_SIDECAR_CORE_ENGINE_H_
#define RATELIMIT_SIDECAR_CORE_ENGINE_H_

#include <cstdint>
#include <string_view>

#include "schema/check.h"

namespace ratelimit {

// Receives decisions. `tag` is whatever the caller passed to Engine::Check.
class CheckCallback {
 public:
  virtual void OnCheckDone(uint64_t tag, const CheckResult& result) = 0;

 protected:
  ~CheckCallback() = default;
};

// Decides validated queries against some store of buckets.
// Thread-safety: the loop thread only.
class Engine {
 public:
  virtual ~Engine() = default;

  // Decides `query` and calls done.OnCheckDone(tag, result) exactly once: before returning, or
  // later on the loop thread. The engine copies what it keeps of `query` (the key is borrowed).
  // REQUIRES: the query is validated (see Limiter); `done` stays alive until it is called.
  virtual void Check(const CheckQuery& query, uint64_t tag, CheckCallback& done) = 0;

  // The store's name as reported by PingResponse.store ("memory", "postgres").
  virtual std::string_view store_name() const = 0;

  // Whether checks can currently be decided by the store.
  virtual bool ready() const = 0;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_ENGINE_H_
