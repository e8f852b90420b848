// The process's limit on open files, raised at start-up so the connection cap is what binds.
#include "sidecar/server/fd_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ratelimit {

Result<FdLimit> RaiseFdLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return Status::IoError(std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno));
  }
  FdLimit result{.old_soft = limit.rlim_cur, .soft = limit.rlim_cur, .hard = limit.rlim_max};
  if (limit.rlim_cur == limit.rlim_max) return result;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return Status::IoError("setrlimit(RLIMIT_NOFILE) to " + std::to_string(limit.rlim_max) + ": " +
                           std::strerror(errno));
  }
  result.soft = limit.rlim_max;
  return result;
}

}  // namespace ratelimit
