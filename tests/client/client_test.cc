// Client and Pipeline: timeouts, reconnection, thread-safety and malformed replies.
#include "ratelimit/client.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "tests/testing/raw_socket.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

std::unique_ptr<SidecarProcess> StartSidecar(Env env = {}) {
  Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(std::move(env));
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  return started.ok() ? std::move(*started) : nullptr;
}

TEST(Client, NoSidecarIsUnavailable) {
  TempDir dir;
  Client client({.socket_path = dir.File("absent.sock"), .timeout_ms = 100});
  Result<CheckResult> r = client.Check({.key = "k"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kUnavailable);
}

TEST(Client, ASidecarThatNeverAnswersTimesOut) {
  TempDir dir;
  FakeServer silent(dir.File("silent.sock"), [](RawSocket& s) { s.WaitForClose(10000); });
  Client client({.socket_path = dir.File("silent.sock"), .timeout_ms = 100});
  Result<CheckResult> r = client.Check({.key = "k"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kTimedOut) << r.status().ToString();
}

TEST(Client, AMalformedReplyIsAProtocolError) {
  TempDir dir;
  FakeServer liar(dir.File("liar.sock"), [](RawSocket& s) {
    if (!s.ReadFrame().ok()) return;
    const std::vector<uint8_t> garbage = {16, 0, 0, 0,  1,  2,  3,  4,  5,  6,
                                          7,  8, 9, 10, 11, 12, 13, 14, 15, 16};
    s.SendAll(garbage);
    s.WaitForClose(10000);
  });
  Client client({.socket_path = dir.File("liar.sock"), .timeout_ms = 1000});
  Result<CheckResult> r = client.Check({.key = "k"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kProtocolError) << r.status().ToString();
}

TEST(Client, AReplyWithAnotherIdIsAProtocolError) {
  TempDir dir;
  FakeServer confused(dir.File("confused.sock"), [](RawSocket& s) {
    if (!s.ReadFrame().ok()) return;
    FrameEncoder encoder;
    s.SendAll(encoder.CheckResponse(987654321, CheckResult{.allowed = true}));
    s.WaitForClose(10000);
  });
  Client client({.socket_path = dir.File("confused.sock"), .timeout_ms = 1000});
  Result<CheckResult> r = client.Check({.key = "k"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kProtocolError);
  EXPECT_NE(r.status().message().find("does not match"), std::string::npos);
}

TEST(Client, AnOversizedRequestFailsBeforeAnythingIsSent) {
  auto sidecar = StartSidecar();
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path(), .max_frame_bytes = 1024});
  const std::string key(2000, 'k');
  Result<CheckResult> r = client.Check({.key = key});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(client.Check({.key = "fine"}).ok());  // The connection is still good.
}

TEST(Client, ReconnectsByItselfAfterTheSidecarRestarts) {
  TempDir dir;
  const std::string path = dir.File("restart.sock");
  auto first = StartSidecar({{"RATE_LIMIT_SOCKET", path}});
  ASSERT_TRUE(first);
  Client client({.socket_path = path});
  ASSERT_TRUE(client.Check({.key = "k"}).ok());  // Leaves a pooled connection to the first.
  first->Signal(SIGTERM);
  ASSERT_EQ(first->WaitExit(), 0);
  EXPECT_FALSE(client.Check({.key = "k"}).ok());  // Nobody there.

  auto second = StartSidecar({{"RATE_LIMIT_SOCKET", path}});
  ASSERT_TRUE(second);
  Result<CheckResult> r = client.Check({.key = "k"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->remaining, 99u);  // A fresh sidecar: a fresh bucket.
}

TEST(Client, APooledConnectionClosedBySidecarIsReplacedWithoutLosingTheRequest) {
  TempDir dir;
  const std::string path = dir.File("pool.sock");
  auto first = StartSidecar({{"RATE_LIMIT_SOCKET", path}});
  ASSERT_TRUE(first);
  Client client({.socket_path = path});
  ASSERT_TRUE(client.Ping().ok());
  first->Signal(SIGTERM);
  ASSERT_EQ(first->WaitExit(), 0);
  auto second = StartSidecar({{"RATE_LIMIT_SOCKET", path}});
  ASSERT_TRUE(second);
  // The pooled connection points at the dead sidecar; the first call after the restart must
  // still succeed, because the request provably never reached anyone.
  Result<CheckResult> r = client.Check({.key = "k"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
}

TEST(Client, EveryCallSucceedsAfterARestartThatLeftManyPooledConnectionsStale) {
  TempDir dir;
  const std::string path = dir.File("stale.sock");
  auto first = StartSidecar({{"RATE_LIMIT_SOCKET", path}});
  ASSERT_TRUE(first);
  Client client({.socket_path = path, .timeout_ms = 5000});
  // Freeze the sidecar so that concurrent calls cannot finish and each opens its own connection;
  // once thawed they all complete and leave 4 connections in the pool.
  first->Signal(SIGSTOP);
  std::vector<std::thread> callers;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] { ok += client.Check({.key = "warm"}).ok() ? 1 : 0; });
  }
  usleep(200000);
  first->Signal(SIGCONT);
  for (std::thread& t : callers) t.join();
  ASSERT_EQ(ok.load(), 4);

  first->Signal(SIGTERM);
  ASSERT_EQ(first->WaitExit(), 0);
  auto second = StartSidecar({{"RATE_LIMIT_SOCKET", path}});
  ASSERT_TRUE(second);
  for (int call = 0; call < 4; ++call) {
    Result<CheckResult> r = client.Check({.key = "k"});
    EXPECT_TRUE(r.ok()) << "call " << call << ": " << r.status().ToString();
  }
}

TEST(Client, ConcurrentCallsFromManyThreadsAdmitExactlyTheLimit) {
  auto sidecar =
      StartSidecar({{"RATE_LIMIT_MAX_REQUESTS", "1500"}, {"RATE_LIMIT_WINDOW_MS", "600000000"}});
  ASSERT_TRUE(sidecar);
  Client client({.socket_path = sidecar->socket_path()});
  std::atomic<int> allowed{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 400; ++i) {
        Result<CheckResult> r = client.Check({.key = "shared"});
        if (!r.ok()) {
          ++errors;
        } else if (r->allowed) {
          ++allowed;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(allowed.load(), 1500);
}

TEST(Pipeline, AHundredThousandRequestsInOneFlushDoNotDeadlock) {
  auto sidecar = StartSidecar();
  ASSERT_TRUE(sidecar);
  Result<std::unique_ptr<Pipeline>> pipeline =
      Pipeline::Connect({.socket_path = sidecar->socket_path(), .timeout_ms = 5000});
  ASSERT_TRUE(pipeline.ok());
  constexpr uint64_t kCount = 100000;
  for (uint64_t id = 0; id < kCount; ++id) {
    ASSERT_TRUE((*pipeline)->QueueCheck(id, {.key = "many", .cost = 0}).ok());
  }
  // Far more answers than socket buffers hold: Flush must read while it writes.
  ASSERT_TRUE((*pipeline)->Flush().ok());
  EXPECT_EQ((*pipeline)->queued_bytes(), 0u);
  for (uint64_t i = 0; i < kCount; ++i) {
    Result<Reply> reply = (*pipeline)->Receive();
    ASSERT_TRUE(reply.ok()) << "reply " << i << ": " << reply.status().ToString();
    ASSERT_EQ(reply->id, i);  // The memory store answers in order.
  }
}

}  // namespace
}  // namespace ratelimit
