// The process's limit on open files, raised at start-up so the connection cap is what binds.
#ifndef RATELIMIT_SIDECAR_SERVER_FD_LIMIT_H_
#define RATELIMIT_SIDECAR_SERVER_FD_LIMIT_H_

#include <cstdint>

#include "schema/status.h"

namespace ratelimit {

// Descriptors the sidecar holds besides client connections and database sessions: stdio, the
// listener, libuv's epoll, signal and wake-up descriptors, name resolution, and connections
// being refused. Generous on purpose; it only decides when start-up warns.
inline constexpr uint64_t kFdsBesidesConnections = 32;

struct FdLimit {
  uint64_t old_soft = 0;  // RLIMIT_NOFILE's soft limit before.
  uint64_t soft = 0;      // The soft limit now.
  uint64_t hard = 0;      // The hard limit, which an unprivileged process cannot raise.
};

// Raises the soft RLIMIT_NOFILE to the hard limit, since the usual default soft limit (1024)
// would make accept fail with EMFILE long before RATE_LIMIT_MAX_CONNECTIONS, and libuv then
// drops the connections waiting in the backlog without a word. IoError, with the limits
// unchanged, when they cannot be read or set.
Result<FdLimit> RaiseFdLimit();

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_FD_LIMIT_H_
