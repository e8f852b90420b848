// Socket path hygiene: clear a stale socket file, refuse to touch anything else.
#include "sidecar/server/socket_path.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace ratelimit {
namespace {

std::string Errno(const std::string& what, int err) { return what + ": " + strerror(err); }

Status MakeParents(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    const std::string dir = path.substr(0, slash);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return Status::IoError(Errno("cannot create directory " + dir, errno));
    }
  }
  return Status::Ok();
}

// Whether a process accepts connections on the socket at `path`.
Result<bool> SomeoneListens(const std::string& path) {
  // Non-blocking: a blocking connect waits as long as the listener's backlog stays full.
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::IoError(Errno("socket", errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  close(fd);
  if (rc == 0 || err == EAGAIN) return true;  // EAGAIN: listening, with a full backlog.
  if (err == ECONNREFUSED) return false;
  return Status::IoError(Errno("cannot probe existing socket " + path, err));
}

}  // namespace

Status PrepareSocketPath(const std::string& path) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("socket path must be 1 to " +
                                   std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return Status::IoError(Errno("cannot inspect " + path, errno));
    return MakeParents(path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status::InvalidArgument(path + " exists and is not a socket; refusing to remove it");
  }
  Result<bool> listening = SomeoneListens(path);
  if (!listening.ok()) return listening.status();
  if (*listening) {
    return Status::Unavailable("another process is already listening on " + path);
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::IoError(Errno("cannot remove stale socket " + path, errno));
  }
  return Status::Ok();
}

}  // namespace ratelimit
