// Unit tests of RequestStream: bytes in, checks to a real Limiter, answers out to a sink.
#include "sidecar/server/request_stream.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <utility>
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

Bytes Join(const std::vector<Bytes>& frames) {
  Bytes all;
  for (const Bytes& frame : frames) all.insert(all.end(), frame.begin(), frame.end());
  return all;
}

// Stands in for a connection: keeps every queued frame, and counts the Sends.
class RecordingSink final : public FrameSink {
 public:
  void Queue(std::span<const uint8_t> frame) override { frames.push_back(Copy(frame)); }
  void Send() override {
    ++sends;
    sent = frames.size();
  }

  std::vector<Bytes> frames;
  int sends = 0;
  size_t sent = 0;  // Frames queued before the last Send.
};

// The latency clock: every reading is kStepNs after the one before.
constexpr uint64_t kStepNs = 1000;
uint64_t now_ns = 0;
uint64_t TickingNow() { return now_ns += kStepNs; }

// An engine that holds every check until the test answers it, as a database-backed one does.
class HoldingEngine final : public Engine {
 public:
  void Check(const CheckQuery& /*query*/, uint64_t tag, CheckCallback& done) override {
    while (answer_held_on_check && !held.empty()) Answer(0, CheckResult{.allowed = true});
    held.emplace_back(tag, &done);
  }
  std::string_view store_name() const override { return "holding"; }
  bool ready() const override { return true; }

  // Answers the held check at `index` with `result`.
  void Answer(size_t index, const CheckResult& result) {
    auto [tag, done] = held[index];
    held.erase(held.begin() + static_cast<std::ptrdiff_t>(index));
    done->OnCheckDone(tag, result);
  }

  std::vector<std::pair<uint64_t, CheckCallback*>> held;
  bool answer_held_on_check = false;  // A new check first answers those held before it.
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

// The sum of a counter array.
template <size_t N>
uint64_t Total(const Counter (&counters)[N]) {
  uint64_t total = 0;
  for (const Counter& counter : counters) total += counter.value();
  return total;
}

uint64_t LatencyCount(const ServerMetrics& metrics) {
  return metrics.latency.Read().cumulative.back();
}

class RequestStreamTest : public testing::Test {
 protected:
  bool Feed(std::span<const uint8_t> bytes) { return stream_.Feed(bytes); }

  // Checks the limiter decided (it answers each exactly once): counted by decision or status.
  uint64_t Decided() const {
    return Total(metrics_.allowed) + Total(metrics_.denied) + Total(metrics_.refused);
  }

  Bytes Check(uint64_t id, std::string_view key, uint32_t cost = 1, uint32_t limit = 0,
              uint32_t window_ms = 0) {
    return Copy(encoder_.CheckRequest(id, CheckArgs{key, cost, limit, window_ms}));
  }

  // After one bad frame: nothing decided, and the only frame queued is an ErrorResponse with
  // status InvalidRequest for request `id`.
  Reply ExpectOneBadFrameRefused(uint64_t id) {
    EXPECT_EQ(metrics_.bad_frames.value(), 1u);
    EXPECT_EQ(Decided(), 0u);
    EXPECT_EQ(sink_.frames.size(), 1u);
    if (sink_.frames.size() != 1) return Reply{};
    const Reply reply = Decode(sink_.frames[0]);
    EXPECT_TRUE(reply.verified);
    EXPECT_EQ(reply.type, wire::Body::ErrorResponse);
    EXPECT_EQ(reply.id, id);
    EXPECT_EQ(reply.error_status, static_cast<int>(wire::Status::InvalidRequest));
    return reply;
  }

  Reply LastReply() {
    EXPECT_FALSE(sink_.frames.empty());
    return sink_.frames.empty() ? Reply{} : Decode(sink_.frames.back());
  }

  FakeClock clock_;
  std::unique_ptr<MemoryEngine> engine_ =
      NewMemoryEngine(Algorithm::kTokenBucket, clock_, HashKey{1, 2}, 100000);
  Limiter limiter_{kDefaultPolicy, *engine_};
  ServerMetrics metrics_;
  RequestShared shared_{limiter_, metrics_, 4096, &TickingNow};
  RecordingSink sink_;
  RequestStream stream_{shared_, sink_};
  FrameEncoder encoder_;
};

TEST_F(RequestStreamTest, CheckRequestGetsCheckResponseEchoingItsId) {
  ASSERT_TRUE(Feed(Check(42, "user:1")));
  EXPECT_EQ(Decided(), 1u);
  EXPECT_EQ(stream_.pending(), 0u);
  ASSERT_EQ(sink_.frames.size(), 1u);
  const Reply reply = Decode(sink_.frames[0]);
  ASSERT_TRUE(reply.verified);
  EXPECT_EQ(reply.id, 42u);
  ASSERT_EQ(reply.type, wire::Body::CheckResponse);
  EXPECT_TRUE(reply.check.allowed);
  EXPECT_EQ(reply.check.status, CheckStatus::kOk);
  EXPECT_EQ(reply.check.limit, kDefaultPolicy.limit);
  EXPECT_EQ(reply.check.remaining, kDefaultPolicy.limit - 1);
  EXPECT_EQ(reply.check.source, Source::kMemory);
}

TEST_F(RequestStreamTest, ManyIdsAreEachEchoedInOrder) {
  const std::vector<uint64_t> ids = {
      0, 1, 2, 0xffffffffu, 1ull << 32, std::numeric_limits<uint64_t>::max(), 12345678901234567ull};
  for (uint64_t id : ids) {
    ASSERT_TRUE(Feed(Check(id, "key-" + std::to_string(id))));
  }
  EXPECT_EQ(Decided(), ids.size());
  EXPECT_EQ(stream_.pending(), 0u);
  ASSERT_EQ(sink_.frames.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const Reply reply = Decode(sink_.frames[i]);
    EXPECT_EQ(reply.id, ids[i]);
    EXPECT_EQ(reply.type, wire::Body::CheckResponse);
    EXPECT_TRUE(reply.check.allowed);
  }
}

TEST_F(RequestStreamTest, ChecksOfOneKeyAreDecidedByTheLimiter) {
  for (uint64_t id = 1; id <= kDefaultPolicy.limit; ++id) {
    ASSERT_TRUE(Feed(Check(id, "hot")));
    EXPECT_TRUE(LastReply().check.allowed) << "id " << id;
  }
  ASSERT_TRUE(Feed(Check(99, "hot")));
  const Reply denied = LastReply();
  EXPECT_EQ(denied.id, 99u);
  EXPECT_FALSE(denied.check.allowed);
  EXPECT_EQ(denied.check.status, CheckStatus::kOk);
  EXPECT_GT(denied.check.retry_after_ms, 0u);

  // A per-request policy reaches the limiter too.
  ASSERT_TRUE(Feed(Check(100, "other", 5, 10, 1000)));
  EXPECT_TRUE(LastReply().check.allowed);
  EXPECT_EQ(LastReply().check.limit, 10u);
  EXPECT_EQ(LastReply().check.remaining, 5u);
}

TEST_F(RequestStreamTest, FrameAtAnOddAddressIsAnsweredToo) {
  // FrameReader hands out views of the receive buffer at any offset.
  const Bytes frame = Check(8, "odd");
  std::vector<uint64_t> storage(frame.size() / 8 + 2);
  uint8_t* odd = reinterpret_cast<uint8_t*>(storage.data()) + 3;
  std::copy(frame.begin(), frame.end(), odd);
  ASSERT_TRUE(Feed(std::span<const uint8_t>(odd, frame.size())));
  const Reply reply = LastReply();
  EXPECT_EQ(reply.id, 8u);
  EXPECT_TRUE(reply.check.allowed);
}

TEST_F(RequestStreamTest, PingRequestGetsPingResponseWithVersionStoreAndReadiness) {
  ASSERT_TRUE(Feed(Copy(encoder_.PingRequest(7))));
  EXPECT_EQ(Decided(), 0u);
  ASSERT_EQ(sink_.frames.size(), 1u);
  const Reply reply = Decode(sink_.frames[0]);
  ASSERT_TRUE(reply.verified);
  EXPECT_EQ(reply.id, 7u);
  ASSERT_EQ(reply.type, wire::Body::PingResponse);
  EXPECT_EQ(reply.protocol_version, kProtocolVersion);
  EXPECT_EQ(reply.store, "memory");
  EXPECT_TRUE(reply.ready);
}

TEST_F(RequestStreamTest, FrameFailingVerificationGetsErrorResponseAndRefusesTheStream) {
  Bytes garbage = {12, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_FALSE(Feed(garbage));
  EXPECT_FALSE(ExpectOneBadFrameRefused(0).error_message.empty());
}

TEST_F(RequestStreamTest, CheckRequestWithoutItsRequiredKeyGetsErrorResponse) {
  flatbuffers::FlatBufferBuilder fbb;
  const auto start = fbb.StartTable();
  fbb.AddElement<uint32_t>(wire::CheckRequest::VT_COST, 2, 1);
  const flatbuffers::Offset<void> body(fbb.EndTable(start));
  EXPECT_FALSE(Feed(FinishFrame(fbb, 5, wire::Body::CheckRequest, body)));
  EXPECT_EQ(metrics_.bad_frames.value(), 1u);
  EXPECT_EQ(Decided(), 0u);
  EXPECT_EQ(LastReply().type, wire::Body::ErrorResponse);
}

struct WrongBodyCase {
  std::string name;
  wire::Body type;
};

void PrintTo(const WrongBodyCase& c, std::ostream* os) { *os << c.name; }

class RequestStreamWrongBodyTest : public RequestStreamTest,
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

TEST_P(RequestStreamWrongBodyTest, IsRefusedWithErrorResponseEchoingIdAndRefusesTheStream) {
  EXPECT_FALSE(Feed(Frame(31, GetParam().type)));
  ExpectOneBadFrameRefused(31);
}

INSTANTIATE_TEST_SUITE_P(
    Bodies, RequestStreamWrongBodyTest,
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

class RequestStreamRefusedCheckTest : public RequestStreamTest,
                                      public testing::WithParamInterface<RefusedCheckCase> {};

// A bad request is the client's mistake, not a broken stream: it gets a CheckResponse and the
// connection stays usable.
TEST_P(RequestStreamRefusedCheckTest, GetsCheckResponseWithStatusAndConnectionStaysUsable) {
  const RefusedCheckCase& c = GetParam();
  ASSERT_TRUE(Feed(Check(17, c.key, c.cost, c.limit, c.window_ms)));
  EXPECT_EQ(Decided(), 1u);
  EXPECT_EQ(stream_.pending(), 0u);
  ASSERT_EQ(sink_.frames.size(), 1u);
  const Reply refused = Decode(sink_.frames[0]);
  EXPECT_EQ(refused.id, 17u);
  ASSERT_EQ(refused.type, wire::Body::CheckResponse);
  EXPECT_FALSE(refused.check.allowed);
  EXPECT_EQ(refused.check.status, c.expected);

  ASSERT_TRUE(Feed(Check(18, "fine")));
  ASSERT_EQ(sink_.frames.size(), 2u);
  const Reply next = Decode(sink_.frames[1]);
  EXPECT_EQ(next.id, 18u);
  EXPECT_TRUE(next.check.allowed);
}

INSTANTIATE_TEST_SUITE_P(
    Requests, RequestStreamRefusedCheckTest,
    testing::Values(
        RefusedCheckCase{"EmptyKey", "", 1, 0, 0, CheckStatus::kInvalidRequest},
        RefusedCheckCase{"KeyOf513Bytes", std::string(513, 'k'), 1, 0, 0,
                         CheckStatus::kInvalidRequest},
        RefusedCheckCase{"OnlyLimitGiven", "k", 1, 10, 0, CheckStatus::kInvalidRequest},
        RefusedCheckCase{"OnlyWindowGiven", "k", 1, 0, 10, CheckStatus::kInvalidRequest},
        RefusedCheckCase{"CostAboveLimit", "k", 4, 0, 0, CheckStatus::kCostExceedsLimit}),
    [](const auto& p) { return p.param.name; });

TEST_F(RequestStreamTest, EverythingOneFeedAnswersIsQueuedInOrderThenSentOnce) {
  ASSERT_TRUE(Feed(Join({Check(1, "a"), Copy(encoder_.PingRequest(2)), Check(3, "b")})));
  EXPECT_EQ(sink_.sends, 1);
  ASSERT_EQ(sink_.sent, 3u);
  EXPECT_EQ(Decode(sink_.frames[0]).id, 1u);
  EXPECT_EQ(Decode(sink_.frames[1]).type, wire::Body::PingResponse);
  EXPECT_EQ(Decode(sink_.frames[2]).id, 3u);
}

TEST_F(RequestStreamTest, AFrameSplitAcrossFeedsIsAnsweredWhenItsLastByteArrives) {
  const Bytes frame = Check(5, "split");
  for (size_t i = 0; i + 1 < frame.size(); ++i) {
    ASSERT_TRUE(Feed(std::span<const uint8_t>(&frame[i], 1)));
    EXPECT_TRUE(stream_.inside_frame());
  }
  EXPECT_TRUE(sink_.frames.empty());
  ASSERT_TRUE(Feed(std::span<const uint8_t>(&frame.back(), 1)));
  EXPECT_FALSE(stream_.inside_frame());
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_EQ(Decode(sink_.frames[0]).id, 5u);
  EXPECT_EQ(sink_.sends, static_cast<int>(frame.size()));
}

struct BadLengthCase {
  std::string name;
  Bytes bytes;
};

void PrintTo(const BadLengthCase& c, std::ostream* os) { *os << c.name; }

class RequestStreamBadLengthTest : public RequestStreamTest,
                                   public testing::WithParamInterface<BadLengthCase> {};

// A length that cannot be a frame loses the stream's frame boundaries: it is refused before
// its payload arrives, like any other bad frame.
TEST_P(RequestStreamBadLengthTest, IsRefusedWithErrorResponseBeforeItsPayloadArrives) {
  EXPECT_FALSE(Feed(GetParam().bytes));
  EXPECT_FALSE(ExpectOneBadFrameRefused(0).error_message.empty());
  EXPECT_EQ(sink_.sends, 1);
  EXPECT_EQ(sink_.sent, 1u);
}

INSTANTIATE_TEST_SUITE_P(Lengths, RequestStreamBadLengthTest,
                         testing::Values(BadLengthCase{"Zero", {0, 0, 0, 0, 1, 2, 3, 4}},
                                         BadLengthCase{"OneOverTheMaximum",
                                                       {0x01, 0x10, 0, 0}},  // 4097 > 4096.
                                         BadLengthCase{"Huge", {0xff, 0xff, 0xff, 0xff}}),
                         [](const auto& p) { return p.param.name; });

TEST_F(RequestStreamTest, ChecksBeforeABadFrameAreAnsweredAndNothingAfterItIsServed) {
  const Bytes garbage = {12, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_FALSE(Feed(Join({Check(1, "a"), garbage, Check(2, "b")})));
  EXPECT_EQ(Decided(), 1u);
  ASSERT_EQ(sink_.frames.size(), 2u);
  EXPECT_EQ(Decode(sink_.frames[0]).id, 1u);
  EXPECT_EQ(Decode(sink_.frames[1]).type, wire::Body::ErrorResponse);

  // A refused stream serves nothing more, whatever comes.
  EXPECT_FALSE(Feed(Check(3, "c")));
  EXPECT_EQ(sink_.frames.size(), 2u);
  EXPECT_EQ(Decided(), 1u);
  EXPECT_EQ(metrics_.bad_frames.value(), 1u);
}

TEST_F(RequestStreamTest, RefusingTheConnectionQueuesItsStatusAndIsNotABadFrame) {
  stream_.Refuse(CheckStatus::kOverloaded, "too many connections");
  ASSERT_EQ(sink_.frames.size(), 1u);
  const Reply reply = Decode(sink_.frames[0]);
  EXPECT_EQ(reply.type, wire::Body::ErrorResponse);
  EXPECT_EQ(reply.id, 0u);
  EXPECT_EQ(reply.error_status, static_cast<int>(wire::Status::Overloaded));
  EXPECT_EQ(reply.error_message, "too many connections");
  EXPECT_EQ(metrics_.bad_frames.value(), 0u);

  EXPECT_FALSE(Feed(Check(1, "a")));
  EXPECT_EQ(sink_.frames.size(), 1u);
  EXPECT_EQ(Decided(), 0u);
}

TEST_F(RequestStreamTest, ChecksAreCountedByDecisionSourceAndStatus) {
  for (uint64_t id = 1; id <= kDefaultPolicy.limit + 1; ++id) {
    ASSERT_TRUE(Feed(Check(id, "hot")));
  }
  ASSERT_TRUE(Feed(Check(9, "")));
  const auto memory = static_cast<size_t>(Source::kMemory);
  EXPECT_EQ(metrics_.allowed[memory].value(), kDefaultPolicy.limit);
  EXPECT_EQ(metrics_.denied[memory].value(), 1u);
  EXPECT_EQ(metrics_.refused[static_cast<size_t>(CheckStatus::kInvalidRequest)].value(), 1u);
  EXPECT_EQ(Decided(), kDefaultPolicy.limit + 2);
}

TEST_F(RequestStreamTest, ChecksAnsweredDuringTheirFeedShareOneLatencyMeasurement) {
  ASSERT_TRUE(Feed(Join({Check(1, "a"), Check(2, "b"), Check(3, "c")})));
  const Histogram::Reading latency = metrics_.latency.Read();
  EXPECT_EQ(latency.cumulative.back(), 3u);
  // The clock is read when the Feed starts and once more after its Send.
  EXPECT_EQ(latency.sum, 3 * kStepNs);
}

TEST_F(RequestStreamTest, FramesThatAreNotChecksAreNotMeasured) {
  ASSERT_TRUE(Feed(Copy(encoder_.PingRequest(1))));
  EXPECT_FALSE(Feed(Bytes{0, 0, 0, 0}));
  EXPECT_EQ(LatencyCount(metrics_), 0u);
}

// Over an engine that answers later, as the database-backed ones do.
class RequestStreamLaterAnswerTest : public testing::Test {
 protected:
  Bytes Check(uint64_t id, std::string_view key) {
    return Copy(encoder_.CheckRequest(id, CheckArgs{key, 1, 0, 0}));
  }

  HoldingEngine engine_;
  Limiter limiter_{kDefaultPolicy, engine_};
  ServerMetrics metrics_;
  RequestShared shared_{limiter_, metrics_, 4096, &TickingNow};
  RecordingSink sink_;
  RequestStream stream_{shared_, sink_};
  FrameEncoder encoder_;
  const CheckResult allowed_{.allowed = true, .limit = 3, .remaining = 2, .source = Source::kLease};
};

TEST_F(RequestStreamLaterAnswerTest, EachAnswerIsSentAtOnceAndMeasuredFromItsFeed) {
  ASSERT_TRUE(stream_.Feed(Join({Check(1, "a"), Check(2, "b")})));
  EXPECT_EQ(stream_.pending(), 2u);
  EXPECT_TRUE(sink_.frames.empty());
  EXPECT_EQ(sink_.sends, 1);

  engine_.Answer(1, allowed_);  // Check 2 first: answers may come back out of order.
  EXPECT_EQ(stream_.pending(), 1u);
  EXPECT_EQ(sink_.sends, 2);
  ASSERT_EQ(sink_.sent, 1u);
  const Reply second = Decode(sink_.frames[0]);
  EXPECT_EQ(second.id, 2u);
  EXPECT_EQ(second.check, allowed_);

  engine_.Answer(0, allowed_);
  EXPECT_EQ(stream_.pending(), 0u);
  EXPECT_EQ(sink_.sends, 3);
  ASSERT_EQ(sink_.sent, 2u);
  EXPECT_EQ(Decode(sink_.frames[1]).id, 1u);

  // The Feed read the clock once (nothing answered during it); each answer once more.
  const Histogram::Reading latency = metrics_.latency.Read();
  EXPECT_EQ(latency.cumulative.back(), 2u);
  EXPECT_EQ(latency.sum, kStepNs + 2 * kStepNs);
  EXPECT_EQ(metrics_.allowed[static_cast<size_t>(Source::kLease)].value(), 2u);
}

TEST_F(RequestStreamLaterAnswerTest, SlotsAreReusedAndEveryAnswerEchoesItsOwnId) {
  constexpr uint64_t kChecks = 100;
  for (int round = 0; round < 3; ++round) {
    std::vector<Bytes> frames;
    for (uint64_t i = 0; i < kChecks; ++i) frames.push_back(Check(1000 * round + i, "k"));
    ASSERT_TRUE(stream_.Feed(Join(frames)));
    ASSERT_EQ(stream_.pending(), kChecks);
    for (const auto& [tag, done] : engine_.held) EXPECT_LT(tag, kChecks) << "a slot not reused";
    sink_.frames.clear();
    while (!engine_.held.empty()) engine_.Answer(engine_.held.size() - 1, allowed_);
    ASSERT_EQ(sink_.frames.size(), kChecks);
    for (uint64_t i = 0; i < kChecks; ++i) {
      EXPECT_EQ(Decode(sink_.frames[i]).id, 1000 * round + (kChecks - 1 - i));
    }
  }
  EXPECT_EQ(stream_.pending(), 0u);
}

TEST_F(RequestStreamLaterAnswerTest, AnAnswerDuringALaterFeedIsMeasuredAloneAndSentWithIt) {
  ASSERT_TRUE(stream_.Feed(Check(1, "a")));
  engine_.answer_held_on_check = true;
  ASSERT_TRUE(stream_.Feed(Check(2, "b")));  // Answers check 1 while it holds check 2.
  EXPECT_EQ(sink_.sends, 2);
  ASSERT_EQ(sink_.sent, 1u);
  EXPECT_EQ(Decode(sink_.frames[0]).id, 1u);
  EXPECT_EQ(stream_.pending(), 1u);
  const Histogram::Reading latency = metrics_.latency.Read();
  EXPECT_EQ(latency.cumulative.back(), 1u);
  EXPECT_EQ(latency.sum, 2 * kStepNs);  // From the first Feed's start, not the second's.
}

TEST_F(RequestStreamLaterAnswerTest, ChecksReadBeforeABadFrameAreStillAnswered) {
  EXPECT_FALSE(stream_.Feed(Join({Check(1, "a"), Bytes{0, 0, 0, 0}})));
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_EQ(Decode(sink_.frames[0]).type, wire::Body::ErrorResponse);
  EXPECT_EQ(stream_.pending(), 1u);
  engine_.Answer(0, allowed_);
  EXPECT_EQ(stream_.pending(), 0u);
  ASSERT_EQ(sink_.sent, 2u);
  EXPECT_EQ(Decode(sink_.frames[1]).id, 1u);
}

}  // namespace
}  // namespace ratelimit
