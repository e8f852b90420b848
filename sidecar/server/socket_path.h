// Socket path hygiene: clear a stale socket file, refuse to touch anything else.
#ifndef RATELIMIT_SIDECAR_SERVER_SOCKET_PATH_H_
#define RATELIMIT_SIDECAR_SERVER_SOCKET_PATH_H_

#include <string>

#include "schema/status.h"

namespace ratelimit {

// Makes `path` ready to bind:
//   - nothing there: creates missing parent directories (mode 0755), then OK;
//   - a socket that refuses connections (left by a process that died): removes it, then OK;
//   - a socket someone listens on: Unavailable, nothing touched;
//   - anything else (file, directory, symlink): InvalidArgument, nothing touched.
// Blocking, but only on local file-system calls; run before the loop starts.
Status PrepareSocketPath(const std::string& path);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_SOCKET_PATH_H_
