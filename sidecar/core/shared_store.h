// SharedStore: the interface of a store whose buckets are shared with other sidecars.
#ifndef RATELIMIT_SIDECAR_CORE_SHARED_STORE_H_
#define RATELIMIT_SIDECAR_CORE_SHARED_STORE_H_

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "sidecar/core/check.h"
#include "sidecar/core/status.h"

namespace ratelimit {

// One check as a shared store sees it. The key is owned: the store answers after the request
// that carried it is gone.
struct StoreCheck {
  std::string key;
  uint32_t cost = 1;
  Policy policy;
};

// The answers to one Take, in the order of its batch; or why the store could not decide.
using TakeDone = std::function<void(Result<std::vector<CheckResult>> results)>;

// Buckets kept where every sidecar sees them (PostgreSQL), phrased in domain terms so that the
// engine above it is tested against a fake and the real store against a real database.
// Thread-safety: the loop thread only.
class SharedStore {
 public:
  virtual ~SharedStore() = default;

  // Decides `batch` atomically, in one transaction: each check against the shared bucket of its
  // key, in batch order, so that several checks of one key are decided one after another. A
  // denial changes nothing. Calls `done` exactly once, later, on the loop thread.
  // REQUIRES: free_slots() > 0; batch is not empty.
  virtual void Take(std::vector<StoreCheck> batch, TakeDone done) = 0;

  // How many more Takes may be in flight now (one per idle, connected database session).
  virtual size_t free_slots() const = 0;

  // Whether the store can decide at all (a session is connected and the table is usable).
  virtual bool ready() const = 0;

  // The store's name as reported by PingResponse.store.
  virtual std::string_view name() const = 0;

  // Registers who to tell when a slot frees up or readiness changes for a reason other than a
  // Take completing (a session connected, background work ended), so waiting checks start.
  void set_on_capacity(std::function<void()> listener) { on_capacity_ = std::move(listener); }

 protected:
  void NotifyCapacity() {
    if (on_capacity_) on_capacity_();
  }

 private:
  std::function<void()> on_capacity_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_SHARED_STORE_H_
