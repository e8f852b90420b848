// End-to-end: SIGTERM and SIGINT stop the sidecar cleanly, answering what it has read.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "schema/frame_codec.h"
#include "tests/testing/raw_socket.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

class ShutdownE2E : public ::testing::TestWithParam<int> {};

TEST_P(ShutdownE2E, SignalRemovesTheSocketAndExitsZero) {
  Result<std::unique_ptr<SidecarProcess>> sidecar = SidecarProcess::Start();
  ASSERT_TRUE(sidecar.ok()) << sidecar.status().ToString();
  ASSERT_TRUE(Client({.socket_path = (*sidecar)->socket_path()}).Check({.key = "k"}).ok());
  (*sidecar)->Signal(GetParam());
  EXPECT_EQ((*sidecar)->WaitExit(), 0) << (*sidecar)->Stderr();
  EXPECT_EQ(access((*sidecar)->socket_path().c_str(), F_OK), -1);
  EXPECT_NE((*sidecar)->Stderr().find("\"msg\":\"stopped\""), std::string::npos);
}

TEST_P(ShutdownE2E, IdleConnectionsDoNotDelayExit) {
  Result<std::unique_ptr<SidecarProcess>> sidecar =
      SidecarProcess::Start({{"RATE_LIMIT_SHUTDOWN_GRACE_MS", "600000"}});
  ASSERT_TRUE(sidecar.ok());
  std::vector<RawSocket> idle;
  for (int i = 0; i < 20; ++i) {
    Result<RawSocket> s = RawSocket::Connect((*sidecar)->socket_path());
    ASSERT_TRUE(s.ok());
    idle.push_back(std::move(*s));
  }
  (*sidecar)->Signal(GetParam());
  // With nothing to answer, the sidecar closes idle connections at once, far inside the grace.
  EXPECT_EQ((*sidecar)->WaitExit(20000), 0) << (*sidecar)->Stderr();
  for (RawSocket& s : idle) EXPECT_TRUE(s.WaitForClose(1000));
}

INSTANTIATE_TEST_SUITE_P(Signals, ShutdownE2E, ::testing::Values(SIGTERM, SIGINT),
                         [](const auto& param_info) {
                           return std::string(sigabbrev_np(param_info.param));
                         });

TEST(ShutdownE2ETest, RequestsReadBeforeTheSignalAreAnsweredThenTheConnectionEnds) {
  Result<std::unique_ptr<SidecarProcess>> sidecar = SidecarProcess::Start();
  ASSERT_TRUE(sidecar.ok());
  Result<std::unique_ptr<Pipeline>> pipeline =
      Pipeline::Connect({.socket_path = (*sidecar)->socket_path(), .timeout_ms = 5000});
  ASSERT_TRUE(pipeline.ok());
  // Freeze the sidecar, queue requests in the socket, then signal and thaw it. Whatever it reads
  // must be answered correctly; then the connection ends with EOF, never garbage or a reset.
  (*sidecar)->Signal(SIGSTOP);
  std::set<uint64_t> sent;
  for (uint64_t id = 1; id <= 200; ++id) {
    ASSERT_TRUE((*pipeline)->QueueCheck(id, {.key = "drain"}).ok());
    sent.insert(id);
  }
  ASSERT_TRUE((*pipeline)->Flush().ok());
  (*sidecar)->Signal(SIGTERM);
  (*sidecar)->Signal(SIGCONT);
  std::set<uint64_t> answered;
  while (true) {
    Result<Reply> reply = (*pipeline)->Receive();
    if (!reply.ok()) {
      EXPECT_EQ(reply.status().code(), Status::Code::kClosed) << reply.status().ToString();
      break;
    }
    ASSERT_EQ(reply->kind, Reply::Kind::kCheck);
    EXPECT_TRUE(sent.count(reply->id));
    EXPECT_TRUE(answered.insert(reply->id).second) << "answered twice: " << reply->id;
  }
  EXPECT_EQ((*sidecar)->WaitExit(), 0) << (*sidecar)->Stderr();
}

TEST(ShutdownE2ETest, AClientThatNeverReadsIsClosedAfterTheGracePeriod) {
  Result<std::unique_ptr<SidecarProcess>> sidecar =
      SidecarProcess::Start({{"RATE_LIMIT_SHUTDOWN_GRACE_MS", "300"}});
  ASSERT_TRUE(sidecar.ok());
  Result<RawSocket> stuck = RawSocket::Connect((*sidecar)->socket_path());
  ASSERT_TRUE(stuck.ok());
  // Requests whose answers overflow the socket buffers, from a client that reads nothing: the
  // sidecar is left with answers it cannot deliver, so only the grace period ends it.
  std::thread flood = FloodWithoutReading(stuck->fd(), "stuck");
  usleep(200000);  // Let the sidecar fill its output and stop reading.
  (*sidecar)->Signal(SIGTERM);
  EXPECT_EQ((*sidecar)->WaitExit(20000), 0) << (*sidecar)->Stderr();
  EXPECT_NE((*sidecar)->Stderr().find("grace period over"), std::string::npos);
  shutdown(stuck->fd(), SHUT_RDWR);
  flood.join();
}

// A second signal does not wait for the grace period: the sidecar exits at once, non-zero, and
// still removes its socket file so that the next one can start.
TEST(ShutdownE2ETest, ASecondSignalExitsAtOnce) {
  Result<std::unique_ptr<SidecarProcess>> sidecar =
      SidecarProcess::Start({{"RATE_LIMIT_SHUTDOWN_GRACE_MS", "600000"}});
  ASSERT_TRUE(sidecar.ok());
  Result<RawSocket> stuck = RawSocket::Connect((*sidecar)->socket_path());
  ASSERT_TRUE(stuck.ok());
  std::thread flood = FloodWithoutReading(stuck->fd(), "stuck");
  usleep(200000);  // The sidecar now holds answers it cannot deliver: a 10-minute grace.
  (*sidecar)->Signal(SIGTERM);
  usleep(200000);
  EXPECT_EQ((*sidecar)->WaitExit(0), -1) << "the first signal did not wait for the client";
  (*sidecar)->Signal(SIGTERM);  // Exits well inside the 10 minutes the first one would take.
  EXPECT_EQ((*sidecar)->WaitExit(10000), 1) << (*sidecar)->Stderr();
  EXPECT_NE((*sidecar)->Stderr().find("second signal"), std::string::npos);
  struct stat st;
  EXPECT_NE(stat((*sidecar)->socket_path().c_str(), &st), 0) << "the socket file was left";
  shutdown(stuck->fd(), SHUT_RDWR);
  flood.join();
}

}  // namespace
}  // namespace ratelimit
