// Unit tests of PrepareSocketPath: stale sockets are cleared, nothing else is ever removed.
#include "sidecar/server/socket_path.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "tests/testing/temp_dir.h"

namespace ratelimit {
namespace {

// lstat's file type at `path`, or 0 when nothing is there.
mode_t TypeAt(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & S_IFMT;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

// A Unix stream socket bound at `path`, listening if asked; closed (never unlinked) on Close().
class BoundSocket {
 public:
  BoundSocket(const std::string& path, bool listening) {
    fd_ = socket(AF_UNIX, SOCK_STREAM, 0);
    EXPECT_GE(fd_, 0) << strerror(errno);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    EXPECT_LT(path.size(), sizeof(addr.sun_path));
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);
    if (listening) {
      EXPECT_EQ(listen(fd_, 16), 0) << strerror(errno);
    }
  }
  ~BoundSocket() { Close(); }
  BoundSocket(const BoundSocket&) = delete;
  BoundSocket& operator=(const BoundSocket&) = delete;

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

TEST(PrepareSocketPathTest, MissingPathIsOk) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  const Status status = PrepareSocketPath(path);
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(TypeAt(path), 0u);
}

TEST(PrepareSocketPathTest, MissingParentDirectoriesAreCreated) {
  TempDir dir;
  const std::string path = dir.File("a/b/c/s.sock");
  const Status status = PrepareSocketPath(path);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(TypeAt(dir.File("a")), static_cast<mode_t>(S_IFDIR));
  EXPECT_EQ(TypeAt(dir.File("a/b")), static_cast<mode_t>(S_IFDIR));
  EXPECT_EQ(TypeAt(dir.File("a/b/c")), static_cast<mode_t>(S_IFDIR));
  EXPECT_EQ(TypeAt(path), 0u) << "the socket itself is left to bind()";
  // And the path is then usable.
  BoundSocket bound(path, /*listening=*/true);
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFSOCK));
}

TEST(PrepareSocketPathTest, RegularFileIsRefusedAndKeptWithItsContent) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  WriteFile(path, "precious data\n");
  const Status status = PrepareSocketPath(path);
  EXPECT_EQ(status.code(), Status::Code::kInvalidArgument) << status.ToString();
  EXPECT_NE(status.message().find(path), std::string::npos) << status.message();
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFREG));
  EXPECT_EQ(ReadFile(path), "precious data\n");
}

TEST(PrepareSocketPathTest, EmptyRegularFileIsRefusedAndKept) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  WriteFile(path, "");
  EXPECT_EQ(PrepareSocketPath(path).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFREG));
}

TEST(PrepareSocketPathTest, DirectoryIsRefusedAndKept) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  ASSERT_EQ(mkdir(path.c_str(), 0755), 0);
  WriteFile(path + "/inside", "x");
  EXPECT_EQ(PrepareSocketPath(path).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFDIR));
  EXPECT_EQ(ReadFile(path + "/inside"), "x");
}

TEST(PrepareSocketPathTest, SymlinkIsRefusedAndKept) {
  TempDir dir;
  const std::string target = dir.File("target");
  WriteFile(target, "t");
  const std::string path = dir.File("s.sock");
  ASSERT_EQ(symlink(target.c_str(), path.c_str()), 0);
  EXPECT_EQ(PrepareSocketPath(path).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFLNK));
  EXPECT_EQ(ReadFile(target), "t");
}

TEST(PrepareSocketPathTest, SymlinkToAStaleSocketIsRefusedAndBothKept) {
  TempDir dir;
  const std::string target = dir.File("real.sock");
  BoundSocket(target, /*listening=*/false).Close();
  const std::string path = dir.File("s.sock");
  ASSERT_EQ(symlink(target.c_str(), path.c_str()), 0);
  EXPECT_EQ(PrepareSocketPath(path).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFLNK));
  EXPECT_EQ(TypeAt(target), static_cast<mode_t>(S_IFSOCK));
}

TEST(PrepareSocketPathTest, DanglingSymlinkIsRefusedAndKept) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  ASSERT_EQ(symlink(dir.File("nowhere").c_str(), path.c_str()), 0);
  EXPECT_EQ(PrepareSocketPath(path).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFLNK));
}

TEST(PrepareSocketPathTest, StaleSocketNobodyListensOnIsRemoved) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  BoundSocket(path, /*listening=*/true).Close();  // A process that died without unlinking.
  ASSERT_EQ(TypeAt(path), static_cast<mode_t>(S_IFSOCK));
  const Status status = PrepareSocketPath(path);
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(TypeAt(path), 0u);
}

TEST(PrepareSocketPathTest, BoundButNeverListeningSocketIsRemoved) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  BoundSocket(path, /*listening=*/false).Close();
  const Status status = PrepareSocketPath(path);
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(TypeAt(path), 0u);
}

TEST(PrepareSocketPathTest, SocketSomeoneListensOnIsUnavailableAndKept) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  BoundSocket live(path, /*listening=*/true);
  const Status status = PrepareSocketPath(path);
  EXPECT_EQ(status.code(), Status::Code::kUnavailable) << status.ToString();
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFSOCK));
  // Asking twice changes nothing either.
  EXPECT_EQ(PrepareSocketPath(path).code(), Status::Code::kUnavailable);
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFSOCK));
}

// Regression: the probe once used a blocking connect(), and on Linux connecting to a Unix stream
// socket whose accept backlog is full blocks until the listener accepts, so a live but busy
// sidecar at the path hung the new one's start-up forever. The call runs in a child process with
// a 1-second alarm, so that such a hang fails this test instead of stalling the suite.
TEST(PrepareSocketPathDeathTest, SocketWithAFullBacklogIsUnavailableWithoutBlocking) {
  TempDir dir;
  const std::string path = dir.File("s.sock");
  const int listener = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 0), 0);
  std::vector<int> queued;  // Connections nobody accepts, until the backlog is full.
  for (int i = 0; i < 64; ++i) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    queued.push_back(fd);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) break;
  }
  ASSERT_EQ(errno, EAGAIN) << "the backlog never filled up";

  EXPECT_EXIT(
      {
        alarm(1);
        const Status status = PrepareSocketPath(path);
        std::_Exit(status.code() == Status::Code::kUnavailable ? 0 : 1);
      },
      testing::ExitedWithCode(0), "");
  EXPECT_EQ(TypeAt(path), static_cast<mode_t>(S_IFSOCK));
  for (int fd : queued) close(fd);
  close(listener);
}

TEST(PrepareSocketPathTest, PathTooLongForSockaddrIsInvalidArgument) {
  TempDir dir;
  std::string path = dir.path() + "/";
  path += std::string(108 - path.size(), 'x');
  ASSERT_EQ(path.size(), 108u);
  EXPECT_EQ(PrepareSocketPath(path).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(PrepareSocketPath("").code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace ratelimit
