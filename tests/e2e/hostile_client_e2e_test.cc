// End-to-end: broken or hostile clients get an error and lose only their own connection.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "gtest/gtest.h"
#include "ratelimit/client.h"
#include "schema/frame_codec.h"
#include "tests/testing/raw_socket.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {
namespace {

std::vector<uint8_t> Prefix(uint32_t length) {
  return {static_cast<uint8_t>(length), static_cast<uint8_t>(length >> 8),
          static_cast<uint8_t>(length >> 16), static_cast<uint8_t>(length >> 24)};
}

std::vector<uint8_t> Bytes(std::span<const uint8_t> span) { return {span.begin(), span.end()}; }

class HostileClientE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<SidecarProcess>> started = SidecarProcess::Start(
        {{"RATE_LIMIT_MAX_FRAME_BYTES", "4096"}, {"RATE_LIMIT_MAX_REQUESTS", "1000000"}});
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    sidecar_ = std::move(*started);
    Result<std::unique_ptr<Pipeline>> healthy = Pipeline::Connect(Options());
    ASSERT_TRUE(healthy.ok());
    healthy_ = std::move(*healthy);
    ExpectHealthyConnectionServed();
  }

  ClientOptions Options() const { return {.socket_path = sidecar_->socket_path()}; }

  // The connection opened before the attack still gets correct answers.
  void ExpectHealthyConnectionServed() {
    const uint64_t id = ++healthy_id_;
    ASSERT_TRUE(healthy_->QueueCheck(id, {.key = "healthy"}).ok());
    ASSERT_TRUE(healthy_->Flush().ok());
    Result<Reply> reply = healthy_->Receive();
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    EXPECT_EQ(reply->id, id);
    EXPECT_TRUE(reply->check.allowed);
  }

  // Sends `bytes` on a fresh connection and expects an ErrorResponse, then the close.
  void ExpectErrorThenClose(const std::vector<uint8_t>& bytes, const std::string& why) {
    SCOPED_TRACE(why);
    Result<RawSocket> raw = RawSocket::Connect(sidecar_->socket_path());
    ASSERT_TRUE(raw.ok());
    ASSERT_TRUE(raw->SendAll(bytes));
    Result<std::vector<uint8_t>> frame = raw->ReadFrame();
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    Result<const wire::Frame*> root = verifier_.Verify(*frame);
    ASSERT_TRUE(root.ok());
    ASSERT_EQ((*root)->body_type(), wire::Body::ErrorResponse);
    EXPECT_EQ((*root)->body_as_ErrorResponse()->status(), wire::Status::InvalidRequest);
    EXPECT_TRUE(raw->WaitForClose());
    ExpectHealthyConnectionServed();
  }

  std::unique_ptr<SidecarProcess> sidecar_;
  std::unique_ptr<Pipeline> healthy_;
  uint64_t healthy_id_ = 0;
  FrameVerifier verifier_;
  FrameEncoder encoder_;
};

TEST_F(HostileClientE2E, OversizedFrameIsRefusedBeforeItsPayloadArrives) {
  ExpectErrorThenClose(Prefix(4097), "length just over the maximum, no payload sent");
  ExpectErrorThenClose(Prefix(0xFFFFFFFF), "length of 4 GiB");
  ExpectErrorThenClose(Prefix(0), "length 0");
}

TEST_F(HostileClientE2E, FramesThatFailVerificationAreRefused) {
  std::vector<uint8_t> garbage = Prefix(64);
  for (int i = 0; i < 64; ++i) garbage.push_back(static_cast<uint8_t>(i * 37 + 11));
  ExpectErrorThenClose(garbage, "random payload");

  std::vector<uint8_t> truncated = Bytes(encoder_.CheckRequest(1, {.key = "k"}));
  truncated.resize(truncated.size() - 4);
  const std::vector<uint8_t> prefix = Prefix(static_cast<uint32_t>(truncated.size() - 4));
  std::copy(prefix.begin(), prefix.end(), truncated.begin());
  ExpectErrorThenClose(truncated, "valid frame cut short with a matching prefix");
}

TEST_F(HostileClientE2E, ResponsesSentToTheSidecarAreRefused) {
  ExpectErrorThenClose(Bytes(encoder_.CheckResponse(5, CheckResult{})), "CheckResponse");
  ExpectErrorThenClose(Bytes(encoder_.PingResponse(5, 1, "x", true)), "PingResponse");
  ExpectErrorThenClose(Bytes(encoder_.ErrorResponse(5, CheckStatus::kOk, "x")), "ErrorResponse");
}

TEST_F(HostileClientE2E, RequestsBeforeABadFrameAreStillAnswered) {
  Result<RawSocket> raw = RawSocket::Connect(sidecar_->socket_path());
  ASSERT_TRUE(raw.ok());
  std::vector<uint8_t> bytes = Bytes(encoder_.CheckRequest(7, {.key = "first"}));
  const std::vector<uint8_t> bad = Prefix(0xFFFF0000);
  bytes.insert(bytes.end(), bad.begin(), bad.end());
  ASSERT_TRUE(raw->SendAll(bytes));
  Result<std::vector<uint8_t>> answer = raw->ReadFrame();
  ASSERT_TRUE(answer.ok());
  Result<const wire::Frame*> root = verifier_.Verify(*answer);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ((*root)->id(), 7u);
  EXPECT_EQ((*root)->body_type(), wire::Body::CheckResponse);
  Result<std::vector<uint8_t>> error = raw->ReadFrame();
  ASSERT_TRUE(error.ok());
  EXPECT_EQ((*verifier_.Verify(*error))->body_type(), wire::Body::ErrorResponse);
  EXPECT_TRUE(raw->WaitForClose());
}

TEST_F(HostileClientE2E, ClientsVanishingMidFrameOrMidResponseCostNothing) {
  for (int round = 0; round < 50; ++round) {
    {  // Half a frame, then gone.
      Result<RawSocket> raw = RawSocket::Connect(sidecar_->socket_path());
      ASSERT_TRUE(raw.ok());
      std::vector<uint8_t> frame = Bytes(encoder_.CheckRequest(1, {.key = "half"}));
      frame.resize(frame.size() / 2);
      ASSERT_TRUE(raw->SendAll(frame));
    }
    {  // Many requests, then gone before reading a single answer.
      Result<RawSocket> raw = RawSocket::Connect(sidecar_->socket_path());
      ASSERT_TRUE(raw.ok());
      std::vector<uint8_t> burst;
      for (uint64_t id = 0; id < 2000; ++id) {
        const auto frame = encoder_.CheckRequest(id, {.key = "vanish"});
        burst.insert(burst.end(), frame.begin(), frame.end());
      }
      ASSERT_TRUE(raw->SendAll(burst));
    }
    {  // Connect and leave at once.
      Result<RawSocket> raw = RawSocket::Connect(sidecar_->socket_path());
      ASSERT_TRUE(raw.ok());
    }
  }
  ExpectHealthyConnectionServed();
  EXPECT_EQ(kill(sidecar_->pid(), 0), 0);  // Still running.
}

TEST_F(HostileClientE2E, AClientThatNeverReadsDoesNotStallOthers) {
  Result<RawSocket> flooder = RawSocket::Connect(sidecar_->socket_path());
  ASSERT_TRUE(flooder.ok());
  // Write requests without ever reading answers, from a thread, until the sidecar stops reading
  // (backpressure) and our send blocks; a bounded amount either way.
  std::thread flood = FloodWithoutReading(flooder->fd(), "flood");
  usleep(200000);
  for (int i = 0; i < 20; ++i) ExpectHealthyConnectionServed();
  shutdown(flooder->fd(), SHUT_RDWR);  // Wakes the flood thread's blocked send with an error.
  flood.join();
  flooder->Close();
  ExpectHealthyConnectionServed();
}

}  // namespace
}  // namespace ratelimit
