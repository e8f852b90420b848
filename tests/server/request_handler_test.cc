// Unit tests of RequestHandler: frames in, replies out, over a real Limiter and MemoryEngine.
#include "sidecar/server/request_handler.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "flatbuffers/flatbuffers.h"
#include "ratelimit_generated.h"
#include "schema/frame_codec.h"
#include "sidecar/core/limiter.h"
#include "sidecar/core/memory_engine.h"
#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Copy(std::span<const uint8_t> frame) { return Bytes(frame.begin(), frame.end()); }

// Stands in for a connection: keeps every written frame and answers checks the way the real
// connection does, by calling back into the handler from OnCheckDone.
class RecordingContext final : public RequestContext {
 public:
  explicit RecordingContext(RequestHandler& handler) : handler_(handler) {}

  void Write(std::span<const uint8_t> frame) override { frames.push_back(Copy(frame)); }
  uint64_t CheckStarted(uint64_t id) override {
    ++started;
    return id;
  }
  void OnCheckDone(uint64_t tag, const CheckResult& result) override {
    ++done;
    handler_.AnswerCheck(tag, result, *this);
  }

  std::vector<Bytes> frames;
  int started = 0;
  int done = 0;

 private:
  RequestHandler& handler_;
};

// A written frame, decoded into plain values.
struct Reply {
  bool verified = false;
  uint64_t id = 0;
  wire::Body type = wire::Body::NONE;
  CheckResult check;
  uint16_t protocol_version = 0;
  std::string store;
  bool ready = false;
  int error_status = -1;
  std::string error_message;
};

Reply Decode(const Bytes& frame) {
  FrameVerifier verifier;
  Reply reply;
  Result<const wire::Frame*> root = verifier.Verify(frame);
  if (!root.ok()) return reply;
  reply.verified = true;
  reply.id = (*root)->id();
  reply.type = (*root)->body_type();
  if (const auto* check = (*root)->body_as_CheckResponse()) reply.check = ToCheckResult(*check);
  if (const auto* ping = (*root)->body_as_PingResponse()) {
    reply.protocol_version = ping->protocol_version();
    reply.store = ping->store() ? ping->store()->str() : "<null>";
    reply.ready = ping->ready();
  }
  if (const auto* error = (*root)->body_as_ErrorResponse()) {
    reply.error_status = static_cast<int>(error->status());
    reply.error_message = error->message() ? error->message()->str() : "";
  }
  return reply;
}

Bytes FinishFrame(flatbuffers::FlatBufferBuilder& fbb, uint64_t id, wire::Body type,
                  flatbuffers::Offset<void> body) {
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, id, type, body));
  return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

constexpr Policy kDefaultPolicy{3, 1000};

class RequestHandlerTest : public testing::Test {
 protected:
  Status Handle(std::span<const uint8_t> frame) { return handler_.HandleFrame(frame, context_); }

  Bytes Check(uint64_t id, std::string_view key, uint32_t cost = 1, uint32_t limit = 0,
              uint32_t window_ms = 0) {
    return Copy(encoder_.CheckRequest(id, CheckArgs{key, cost, limit, window_ms}));
  }

  Reply LastReply() {
    EXPECT_FALSE(context_.frames.empty());
    return context_.frames.empty() ? Reply{} : Decode(context_.frames.back());
  }

  FakeClock clock_;
  std::unique_ptr<MemoryEngine> engine_ =
      NewMemoryEngine(Algorithm::kTokenBucket, clock_, HashKey{1, 2});
  Limiter limiter_{kDefaultPolicy, *engine_};
  RequestHandler handler_{limiter_};
  RecordingContext context_{handler_};
  FrameEncoder encoder_;
};

TEST_F(RequestHandlerTest, CheckRequestGetsCheckResponseEchoingItsId) {
  ASSERT_TRUE(Handle(Check(42, "user:1")).ok());
  EXPECT_EQ(context_.started, 1);
  EXPECT_EQ(context_.done, 1);
  ASSERT_EQ(context_.frames.size(), 1u);
  const Reply reply = Decode(context_.frames[0]);
  ASSERT_TRUE(reply.verified);
  EXPECT_EQ(reply.id, 42u);
  ASSERT_EQ(reply.type, wire::Body::CheckResponse);
  EXPECT_TRUE(reply.check.allowed);
  EXPECT_EQ(reply.check.status, CheckStatus::kOk);
  EXPECT_EQ(reply.check.limit, kDefaultPolicy.limit);
  EXPECT_EQ(reply.check.remaining, kDefaultPolicy.limit - 1);
  EXPECT_EQ(reply.check.source, Source::kMemory);
}

TEST_F(RequestHandlerTest, ManyIdsAreEachEchoedInOrder) {
  const std::vector<uint64_t> ids = {
      0, 1, 2, 0xffffffffu, 1ull << 32, std::numeric_limits<uint64_t>::max(), 12345678901234567ull};
  for (uint64_t id : ids) {
    ASSERT_TRUE(Handle(Check(id, "key-" + std::to_string(id))).ok());
  }
  EXPECT_EQ(context_.started, static_cast<int>(ids.size()));
  EXPECT_EQ(context_.done, static_cast<int>(ids.size()));
  ASSERT_EQ(context_.frames.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const Reply reply = Decode(context_.frames[i]);
    EXPECT_EQ(reply.id, ids[i]);
    EXPECT_EQ(reply.type, wire::Body::CheckResponse);
    EXPECT_TRUE(reply.check.allowed);
  }
}

TEST_F(RequestHandlerTest, ChecksOfOneKeyAreDecidedByTheLimiter) {
  for (uint64_t id = 1; id <= kDefaultPolicy.limit; ++id) {
    ASSERT_TRUE(Handle(Check(id, "hot")).ok());
    EXPECT_TRUE(LastReply().check.allowed) << "id " << id;
  }
  ASSERT_TRUE(Handle(Check(99, "hot")).ok());
  const Reply denied = LastReply();
  EXPECT_EQ(denied.id, 99u);
  EXPECT_FALSE(denied.check.allowed);
  EXPECT_EQ(denied.check.status, CheckStatus::kOk);
  EXPECT_GT(denied.check.retry_after_ms, 0u);

  // A per-request policy reaches the limiter too.
  ASSERT_TRUE(Handle(Check(100, "other", 5, 10, 1000)).ok());
  EXPECT_TRUE(LastReply().check.allowed);
  EXPECT_EQ(LastReply().check.limit, 10u);
  EXPECT_EQ(LastReply().check.remaining, 5u);
}

TEST_F(RequestHandlerTest, FrameAtAnOddAddressIsAnsweredToo) {
  // FrameReader hands out views of the receive buffer at any offset.
  const Bytes frame = Check(8, "odd");
  std::vector<uint64_t> storage(frame.size() / 8 + 2);
  uint8_t* odd = reinterpret_cast<uint8_t*>(storage.data()) + 3;
  std::copy(frame.begin(), frame.end(), odd);
  ASSERT_TRUE(Handle(std::span<const uint8_t>(odd, frame.size())).ok());
  const Reply reply = LastReply();
  EXPECT_EQ(reply.id, 8u);
  EXPECT_TRUE(reply.check.allowed);
}

TEST_F(RequestHandlerTest, PingRequestGetsPingResponseWithVersionStoreAndReadiness) {
  ASSERT_TRUE(Handle(Copy(encoder_.PingRequest(7))).ok());
  EXPECT_EQ(context_.started, 0);
  ASSERT_EQ(context_.frames.size(), 1u);
  const Reply reply = Decode(context_.frames[0]);
  ASSERT_TRUE(reply.verified);
  EXPECT_EQ(reply.id, 7u);
  ASSERT_EQ(reply.type, wire::Body::PingResponse);
  EXPECT_EQ(reply.protocol_version, kProtocolVersion);
  EXPECT_EQ(reply.store, "memory");
  EXPECT_TRUE(reply.ready);
}

TEST_F(RequestHandlerTest, FrameFailingVerificationGetsErrorResponseAndProtocolError) {
  Bytes garbage = {12, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8};
  const Status status = Handle(garbage);
  EXPECT_EQ(status.code(), Status::Code::kProtocolError);
  EXPECT_EQ(context_.started, 0);
  ASSERT_EQ(context_.frames.size(), 1u);
  const Reply reply = Decode(context_.frames[0]);
  ASSERT_TRUE(reply.verified);
  EXPECT_EQ(reply.type, wire::Body::ErrorResponse);
  EXPECT_EQ(reply.error_status, static_cast<int>(wire::Status::InvalidRequest));
  EXPECT_FALSE(reply.error_message.empty());
}

TEST_F(RequestHandlerTest, CheckRequestWithoutItsRequiredKeyGetsErrorResponse) {
  flatbuffers::FlatBufferBuilder fbb;
  const auto start = fbb.StartTable();
  fbb.AddElement<uint32_t>(wire::CheckRequest::VT_COST, 2, 1);
  const flatbuffers::Offset<void> body(fbb.EndTable(start));
  const Status status = Handle(FinishFrame(fbb, 5, wire::Body::CheckRequest, body));
  EXPECT_EQ(status.code(), Status::Code::kProtocolError);
  EXPECT_EQ(context_.started, 0);
  EXPECT_EQ(LastReply().type, wire::Body::ErrorResponse);
}

struct WrongBodyCase {
  std::string name;
  wire::Body type;
};

void PrintTo(const WrongBodyCase& c, std::ostream* os) { *os << c.name; }

class RequestHandlerWrongBodyTest : public RequestHandlerTest,
                                    public testing::WithParamInterface<WrongBodyCase> {
 protected:
  Bytes Frame(uint64_t id, wire::Body type) {
    flatbuffers::FlatBufferBuilder fbb;
    flatbuffers::Offset<void> body;
    switch (type) {
      case wire::Body::CheckResponse:
        body = wire::CreateCheckResponse(fbb, true).Union();
        break;
      case wire::Body::PingResponse:
        body = wire::CreatePingResponse(fbb, kProtocolVersion, fbb.CreateString("x"), true).Union();
        break;
      case wire::Body::ErrorResponse:
        body = wire::CreateErrorResponse(fbb, wire::Status::Ok, fbb.CreateString("hi")).Union();
        break;
      default:  // A request type without its table, NONE, or an unknown member: no body.
        break;
    }
    return FinishFrame(fbb, id, type, body);
  }
};

TEST_P(RequestHandlerWrongBodyTest, IsRefusedWithErrorResponseEchoingIdAndProtocolError) {
  const Status status = Handle(Frame(31, GetParam().type));
  EXPECT_EQ(status.code(), Status::Code::kProtocolError);
  EXPECT_EQ(context_.started, 0);
  ASSERT_EQ(context_.frames.size(), 1u);
  const Reply reply = Decode(context_.frames[0]);
  ASSERT_TRUE(reply.verified);
  EXPECT_EQ(reply.type, wire::Body::ErrorResponse);
  EXPECT_EQ(reply.id, 31u);
  EXPECT_EQ(reply.error_status, static_cast<int>(wire::Status::InvalidRequest));
}

INSTANTIATE_TEST_SUITE_P(
    Bodies, RequestHandlerWrongBodyTest,
    testing::Values(WrongBodyCase{"CheckResponse", wire::Body::CheckResponse},
                    WrongBodyCase{"PingResponse", wire::Body::PingResponse},
                    WrongBodyCase{"ErrorResponse", wire::Body::ErrorResponse},
                    WrongBodyCase{"None", wire::Body::NONE},
                    // Regression: the Verifier accepts a union type whose table is absent; the
                    // handler once dereferenced the missing CheckRequest and crashed the sidecar.
                    WrongBodyCase{"CheckRequestWithoutBody", wire::Body::CheckRequest},
                    WrongBodyCase{"UnknownUnionMember", static_cast<wire::Body>(42)}),
    [](const auto& p) { return p.param.name; });

struct RefusedCheckCase {
  std::string name;
  std::string key;
  uint32_t cost;
  uint32_t limit;
  uint32_t window_ms;
  CheckStatus expected;
};

void PrintTo(const RefusedCheckCase& c, std::ostream* os) { *os << c.name; }

class RequestHandlerRefusedCheckTest : public RequestHandlerTest,
                                       public testing::WithParamInterface<RefusedCheckCase> {};

// A bad request is the client's mistake, not a broken stream: it gets a CheckResponse and the
// connection stays usable.
TEST_P(RequestHandlerRefusedCheckTest, GetsCheckResponseWithStatusAndConnectionStaysUsable) {
  const RefusedCheckCase& c = GetParam();
  ASSERT_TRUE(Handle(Check(17, c.key, c.cost, c.limit, c.window_ms)).ok());
  EXPECT_EQ(context_.started, 1);
  EXPECT_EQ(context_.done, 1);
  ASSERT_EQ(context_.frames.size(), 1u);
  const Reply refused = Decode(context_.frames[0]);
  EXPECT_EQ(refused.id, 17u);
  ASSERT_EQ(refused.type, wire::Body::CheckResponse);
  EXPECT_FALSE(refused.check.allowed);
  EXPECT_EQ(refused.check.status, c.expected);

  ASSERT_TRUE(Handle(Check(18, "fine")).ok());
  ASSERT_EQ(context_.frames.size(), 2u);
  const Reply next = Decode(context_.frames[1]);
  EXPECT_EQ(next.id, 18u);
  EXPECT_TRUE(next.check.allowed);
}

INSTANTIATE_TEST_SUITE_P(
    Requests, RequestHandlerRefusedCheckTest,
    testing::Values(
        RefusedCheckCase{"EmptyKey", "", 1, 0, 0, CheckStatus::kInvalidRequest},
        RefusedCheckCase{"KeyOf513Bytes", std::string(513, 'k'), 1, 0, 0,
                         CheckStatus::kInvalidRequest},
        RefusedCheckCase{"OnlyLimitGiven", "k", 1, 10, 0, CheckStatus::kInvalidRequest},
        RefusedCheckCase{"OnlyWindowGiven", "k", 1, 0, 10, CheckStatus::kInvalidRequest},
        RefusedCheckCase{"CostAboveLimit", "k", 4, 0, 0, CheckStatus::kCostExceedsLimit}),
    [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace ratelimit
