// Unit tests of FrameVerifier and FrameEncoder: round trips, garbage and alignment.
#include "schema/frame_codec.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "flatbuffers/flatbuffers.h"
#include "ratelimit_generated.h"

namespace ratelimit {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Copy(std::span<const uint8_t> frame) { return Bytes(frame.begin(), frame.end()); }

void WritePrefix(Bytes& frame, uint32_t value) {
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<uint8_t>(value >> (8 * i));
}

void WriteU32(Bytes& frame, size_t at, uint32_t value) {
  for (int i = 0; i < 4; ++i) frame[at + i] = static_cast<uint8_t>(value >> (8 * i));
}

uint32_t ReadU32(const Bytes& frame, size_t at) { return ReadFramePrefix(frame.data() + at); }

// A frame built by hand with a raw builder, for shapes FrameEncoder never produces.
Bytes Finish(flatbuffers::FlatBufferBuilder& fbb, uint64_t id, wire::Body type,
             flatbuffers::Offset<void> body) {
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, id, type, body));
  return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

// Keeps bytes at an 8-byte aligned address (or deliberately off it) for the verifier.
class AlignedBuffer {
 public:
  AlignedBuffer(const Bytes& bytes, size_t misalign)
      : words_((bytes.size() + misalign + 7) / 8 + 1), size_(bytes.size()), misalign_(misalign) {
    if (!bytes.empty()) std::memcpy(data(), bytes.data(), bytes.size());
  }
  uint8_t* data() { return reinterpret_cast<uint8_t*>(words_.data()) + misalign_; }
  std::span<const uint8_t> span() { return {data(), size_}; }

 private:
  std::vector<uint64_t> words_;
  size_t size_;
  size_t misalign_;
};

// Verifies `frame` from an aligned copy; the table stays valid as long as the returned buffer.
struct Verified {
  std::unique_ptr<AlignedBuffer> buffer;
  Result<const wire::Frame*> frame = Status::ProtocolError("not verified");
};

Verified VerifyCopy(FrameVerifier& verifier, const Bytes& frame, size_t misalign = 0) {
  Verified v;
  v.buffer = std::make_unique<AlignedBuffer>(frame, misalign);
  v.frame = verifier.Verify(v.buffer->span());
  return v;
}

// ---- Round trips ----

struct CheckRequestCase {
  std::string name;
  std::string key;
  uint32_t cost;
  uint32_t limit;
  uint32_t window_ms;
};

void PrintTo(const CheckRequestCase& c, std::ostream* os) { *os << c.name; }

std::string AllByteValues(size_t size) {
  std::string key(size, '\0');
  for (size_t i = 0; i < size; ++i) key[i] = static_cast<char>(i % 256);
  return key;
}

class FrameCodecCheckRequestRoundTripTest : public testing::TestWithParam<CheckRequestCase> {};

TEST_P(FrameCodecCheckRequestRoundTripTest, DecodesToTheArgsThatWereEncoded) {
  const CheckRequestCase& c = GetParam();
  FrameEncoder encoder;
  FrameVerifier verifier;
  const uint64_t id = 0xfedcba9876543210ull;
  const Bytes frame =
      Copy(encoder.CheckRequest(id, CheckArgs{c.key, c.cost, c.limit, c.window_ms}));
  Verified v = VerifyCopy(verifier, frame);
  ASSERT_TRUE(v.frame.ok()) << v.frame.status().ToString();
  const wire::Frame& root = **v.frame;
  EXPECT_EQ(root.id(), id);
  ASSERT_EQ(root.body_type(), wire::Body::CheckRequest);
  const CheckArgs args = ToCheckArgs(*root.body_as_CheckRequest());
  EXPECT_EQ(args.key, c.key);
  EXPECT_EQ(args.key.size(), c.key.size());
  EXPECT_EQ(args.cost, c.cost);
  EXPECT_EQ(args.limit, c.limit);
  EXPECT_EQ(args.window_ms, c.window_ms);
}

INSTANTIATE_TEST_SUITE_P(
    Args, FrameCodecCheckRequestRoundTripTest,
    testing::Values(CheckRequestCase{"Plain", "user:42", 1, 0, 0},
                    CheckRequestCase{"CostZeroIsPreserved", "reader", 0, 0, 0},
                    CheckRequestCase{"CostAndPolicy", "k", 7, 100, 60000},
                    CheckRequestCase{"MaxValues", "k", 0xffffffffu, 0xffffffffu, 0xffffffffu},
                    CheckRequestCase{"KeyWithNulBytes", std::string("a\0b\0\0c", 6), 1, 0, 0},
                    CheckRequestCase{"KeyOnlyNul", std::string(1, '\0'), 1, 0, 0},
                    CheckRequestCase{"Key512BytesOfEveryValue", AllByteValues(512), 2, 10, 10}),
    [](const auto& p) { return p.param.name; });

TEST(FrameCodecTest, CheckRequestCostDefaultsToOneWhenNotSet) {
  // A peer that never sets cost (FlatBuffers omits a field equal to its default).
  flatbuffers::FlatBufferBuilder fbb;
  const auto key = fbb.CreateString("k");
  wire::CheckRequestBuilder request(fbb);
  request.add_key(key);
  const Bytes frame = Finish(fbb, 3, wire::Body::CheckRequest, request.Finish().Union());
  FrameVerifier verifier;
  Verified v = VerifyCopy(verifier, frame);
  ASSERT_TRUE(v.frame.ok());
  const CheckArgs args = ToCheckArgs(*(*v.frame)->body_as_CheckRequest());
  EXPECT_EQ(args.key, "k");
  EXPECT_EQ(args.cost, 1u);
  EXPECT_EQ(args.limit, 0u);
  EXPECT_EQ(args.window_ms, 0u);

  // And CheckArgs left at its default encodes to the same meaning.
  FrameEncoder encoder;
  CheckArgs defaults;
  defaults.key = "k";
  Verified w = VerifyCopy(verifier, Copy(encoder.CheckRequest(3, defaults)));
  ASSERT_TRUE(w.frame.ok());
  EXPECT_EQ(ToCheckArgs(*(*w.frame)->body_as_CheckRequest()).cost, 1u);
}

CheckResult MakeResult(bool allowed, CheckStatus status, Source source, uint32_t base) {
  CheckResult r;
  r.allowed = allowed;
  r.status = status;
  r.limit = base + 1;
  r.remaining = base + 2;
  r.retry_after_ms = base + 3;
  r.reset_after_ms = base + 4;
  r.source = source;
  return r;
}

std::vector<CheckResult> AllResults() {
  std::vector<CheckResult> results;
  const CheckStatus statuses[] = {CheckStatus::kOk,
                                  CheckStatus::kInvalidRequest,
                                  CheckStatus::kCostExceedsLimit,
                                  CheckStatus::kStoreUnavailable,
                                  CheckStatus::kOverloaded,
                                  CheckStatus::kShuttingDown};
  const Source sources[] = {Source::kMemory, Source::kLease, Source::kDatabase, Source::kFallback};
  uint32_t base = 0;
  for (CheckStatus status : statuses) {
    for (Source source : sources) {
      results.push_back(MakeResult(base % 2 == 0, status, source, base));
      base += 10;
    }
  }
  results.push_back(CheckResult{});  // Every field at its default: nothing written on the wire.
  CheckResult max = MakeResult(true, CheckStatus::kOk, Source::kLease, 0);
  max.limit = max.remaining = max.retry_after_ms = max.reset_after_ms = 0xffffffffu;
  results.push_back(max);
  return results;
}

TEST(FrameCodecTest, CheckResponseRoundTripsEveryFieldStatusAndSource) {
  FrameEncoder encoder;
  FrameVerifier verifier;
  uint64_t id = 100;
  for (const CheckResult& result : AllResults()) {
    Verified v = VerifyCopy(verifier, Copy(encoder.CheckResponse(id, result)));
    ASSERT_TRUE(v.frame.ok()) << v.frame.status().ToString();
    EXPECT_EQ((*v.frame)->id(), id);
    ASSERT_EQ((*v.frame)->body_type(), wire::Body::CheckResponse);
    EXPECT_EQ(ToCheckResult(*(*v.frame)->body_as_CheckResponse()), result)
        << "status " << CheckStatusName(result.status) << " source " << SourceName(result.source);
    ++id;
  }
}

// CheckResponse frames are written into a layout built once; each must still be exactly what
// the FlatBuffers builder would have produced, field for field, for any values and id.
TEST(FrameCodecTest, CheckResponsesFromTheSharedLayoutMatchTheBuilderForAnyValues) {
  std::mt19937_64 rng(7);
  FrameEncoder encoder;
  FrameVerifier verifier;
  for (int i = 0; i < 10'000; ++i) {
    CheckResult in;
    in.allowed = rng() % 2 == 0;
    in.status = static_cast<CheckStatus>(rng() % 6);
    in.limit = static_cast<uint32_t>(rng());
    in.remaining = static_cast<uint32_t>(rng());
    in.retry_after_ms = static_cast<uint32_t>(rng());
    in.reset_after_ms = static_cast<uint32_t>(rng());
    in.source = static_cast<Source>(rng() % 4);
    const uint64_t id = rng();
    const std::vector<uint8_t> frame = Copy(encoder.CheckResponse(id, in));

    flatbuffers::FlatBufferBuilder builder;
    builder.ForceDefaults(true);
    const auto body = wire::CreateCheckResponse(
        builder, in.allowed, static_cast<wire::Status>(in.status), in.limit, in.remaining,
        in.retry_after_ms, in.reset_after_ms, static_cast<wire::Source>(in.source));
    builder.FinishSizePrefixed(
        wire::CreateFrame(builder, id, wire::Body::CheckResponse, body.Union()));
    ASSERT_EQ(frame, std::vector<uint8_t>(builder.GetBufferPointer(),
                                          builder.GetBufferPointer() + builder.GetSize()))
        << "response " << i;

    Result<const wire::Frame*> root = verifier.Verify(frame);
    ASSERT_TRUE(root.ok());
    EXPECT_EQ((*root)->id(), id);
    EXPECT_EQ(ToCheckResult(*(*root)->body_as_CheckResponse()), in);
  }
}

TEST(FrameCodecTest, PingRequestRoundTrips) {
  FrameEncoder encoder;
  FrameVerifier verifier;
  Verified v = VerifyCopy(verifier, Copy(encoder.PingRequest(77)));
  ASSERT_TRUE(v.frame.ok());
  EXPECT_EQ((*v.frame)->id(), 77u);
  EXPECT_EQ((*v.frame)->body_type(), wire::Body::PingRequest);
  EXPECT_NE((*v.frame)->body_as_PingRequest(), nullptr);
}

TEST(FrameCodecTest, PingResponseRoundTrips) {
  struct Case {
    uint16_t version;
    std::string store;
    bool ready;
  };
  const Case cases[] = {
      {kProtocolVersion, "memory", true}, {0xffff, "postgres", false}, {0, "", true}};
  FrameEncoder encoder;
  FrameVerifier verifier;
  for (const Case& c : cases) {
    Verified v = VerifyCopy(verifier, Copy(encoder.PingResponse(5, c.version, c.store, c.ready)));
    ASSERT_TRUE(v.frame.ok());
    EXPECT_EQ((*v.frame)->id(), 5u);
    const wire::PingResponse* ping = (*v.frame)->body_as_PingResponse();
    ASSERT_NE(ping, nullptr);
    EXPECT_EQ(ping->protocol_version(), c.version);
    ASSERT_NE(ping->store(), nullptr);
    EXPECT_EQ(ping->store()->string_view(), c.store);
    EXPECT_EQ(ping->ready(), c.ready);
  }
}

TEST(FrameCodecTest, ErrorResponseRoundTrips) {
  FrameEncoder encoder;
  FrameVerifier verifier;
  const std::string long_message(1000, 'm');
  for (const auto& [status, message] : std::vector<std::pair<CheckStatus, std::string>>{
           {CheckStatus::kInvalidRequest, "frame failed FlatBuffers verification"},
           {CheckStatus::kOverloaded, long_message},
           {CheckStatus::kShuttingDown, ""}}) {
    Verified v = VerifyCopy(verifier, Copy(encoder.ErrorResponse(9, status, message)));
    ASSERT_TRUE(v.frame.ok());
    EXPECT_EQ((*v.frame)->id(), 9u);
    const wire::ErrorResponse* error = (*v.frame)->body_as_ErrorResponse();
    ASSERT_NE(error, nullptr);
    EXPECT_EQ(static_cast<int>(error->status()), static_cast<int>(status));
    ASSERT_NE(error->message(), nullptr);
    EXPECT_EQ(error->message()->string_view(), message);
  }
}

TEST(FrameCodecTest, EncoderReusedAcrossBodyTypesKeepsEachFrameIntact) {
  FrameEncoder encoder;
  FrameVerifier verifier;
  for (uint64_t id = 0; id < 50; ++id) {
    const std::string key = "key-" + std::to_string(id);
    Verified check = VerifyCopy(verifier, Copy(encoder.CheckRequest(id, CheckArgs{key, 1, 0, 0})));
    ASSERT_TRUE(check.frame.ok());
    EXPECT_EQ(ToCheckArgs(*(*check.frame)->body_as_CheckRequest()).key, key);
    Verified ping = VerifyCopy(verifier, Copy(encoder.PingRequest(id)));
    ASSERT_TRUE(ping.frame.ok());
    EXPECT_EQ((*ping.frame)->id(), id);
  }
}

// ---- Alignment ----

TEST(FrameCodecTest, ValidFrameAtAMisalignedAddressVerifiesAndDecodes) {
  FrameEncoder encoder;
  const std::string key = AllByteValues(300);
  const Bytes frame = Copy(encoder.CheckRequest(42, CheckArgs{key, 3, 50, 1000}));
  for (size_t misalign = 1; misalign < 8; ++misalign) {
    FrameVerifier verifier;
    Verified v = VerifyCopy(verifier, frame, misalign);
    ASSERT_TRUE(v.frame.ok()) << "misaligned by " << misalign << ": "
                              << v.frame.status().ToString();
    EXPECT_EQ((*v.frame)->id(), 42u);
    const CheckArgs args = ToCheckArgs(*(*v.frame)->body_as_CheckRequest());
    EXPECT_EQ(args.key, key);
    EXPECT_EQ(args.cost, 3u);
    EXPECT_EQ(args.limit, 50u);
    EXPECT_EQ(args.window_ms, 1000u);
  }
}

// ---- Garbage ----

TEST(FrameCodecTest, RandomBytesWithAValidLengthPrefixAreRejected) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> byte(0, 255);
  FrameVerifier verifier;
  for (uint32_t payload = 1; payload <= 256; ++payload) {
    for (int round = 0; round < 8; ++round) {
      Bytes frame(4 + payload);
      WritePrefix(frame, payload);
      for (size_t i = 4; i < frame.size(); ++i) frame[i] = static_cast<uint8_t>(byte(rng));
      Verified v = VerifyCopy(verifier, frame, round % 2);
      EXPECT_FALSE(v.frame.ok()) << "payload " << payload << " round " << round;
    }
  }
}

// A valid CheckRequest frame and where its parts sit, to aim corruptions at.
struct Anatomy {
  Bytes frame;
  size_t frame_table = 0;  // Offset of the root Frame table.
  size_t key_string = 0;   // Offset of the key's length field.
};

Anatomy ValidCheckRequest() {
  FrameEncoder encoder;
  FrameVerifier verifier;
  Anatomy a;
  a.frame = Copy(encoder.CheckRequest(1, CheckArgs{"some-reasonably-long-key", 2, 10, 1000}));
  Verified v = VerifyCopy(verifier, a.frame);
  const auto* base = v.buffer->data();
  a.frame_table = reinterpret_cast<const uint8_t*>(*v.frame) - base;
  a.key_string = reinterpret_cast<const uint8_t*>((*v.frame)->body_as_CheckRequest()->key()) - base;
  return a;
}

struct CorruptionCase {
  std::string name;
  std::function<Bytes()> make;
};

void PrintTo(const CorruptionCase& c, std::ostream* os) { *os << c.name; }

std::vector<CorruptionCase> Corruptions() {
  return {
      {"OnlyPartOfThePrefix",
       [] {
         return Bytes{8, 0};
       }},
      {"PrefixWithoutPayload",
       [] {
         return Bytes{0, 0, 0, 0};
       }},
      {"TruncatedWithPrefixAdjusted",
       [] {
         Bytes f = ValidCheckRequest().frame;
         f.resize(f.size() - 8);
         WritePrefix(f, static_cast<uint32_t>(f.size() - 4));
         return f;
       }},
      {"TruncatedToHalfWithPrefixAdjusted",
       [] {
         Bytes f = ValidCheckRequest().frame;
         f.resize(4 + (f.size() - 4) / 2);
         WritePrefix(f, static_cast<uint32_t>(f.size() - 4));
         return f;
       }},
      {"TruncatedWithPrefixUnchanged",
       [] {
         Bytes f = ValidCheckRequest().frame;
         f.pop_back();
         return f;
       }},
      {"PrefixOneLessThanSize",
       [] {
         Bytes f = ValidCheckRequest().frame;
         WritePrefix(f, static_cast<uint32_t>(f.size() - 4 - 1));
         return f;
       }},
      {"PrefixOneMoreThanSize",
       [] {
         Bytes f = ValidCheckRequest().frame;
         WritePrefix(f, static_cast<uint32_t>(f.size() - 4 + 1));
         return f;
       }},
      {"TrailingBytesAfterTheFrame",  // A receive buffer larger than the frame.
       [] {
         Bytes f = ValidCheckRequest().frame;
         f.insert(f.end(), 8, 0);
         return f;
       }},
      {"RootOffsetFarOutsideTheBuffer",
       [] {
         Bytes f = ValidCheckRequest().frame;
         WriteU32(f, 4, 0x7ffffff0u);
         return f;
       }},
      {"RootOffsetJustPastTheEnd",
       [] {
         Bytes f = ValidCheckRequest().frame;
         WriteU32(f, 4, static_cast<uint32_t>(f.size() - 4));
         return f;
       }},
      {"RootOffsetMisaligned",
       [] {
         Bytes f = ValidCheckRequest().frame;
         WriteU32(f, 4, static_cast<uint32_t>(ValidCheckRequest().frame_table - 4 + 1));
         return f;
       }},
      {"VtableOffsetOutsideTheBuffer",
       [] {
         Anatomy a = ValidCheckRequest();
         WriteU32(a.frame, a.frame_table, 0x40000000u);
         return a.frame;
       }},
      {"KeyLengthBeyondTheBuffer",
       [] {
         Anatomy a = ValidCheckRequest();
         WriteU32(a.frame, a.key_string, 0x7fffffffu);
         return a.frame;
       }},
      {"KeyWithoutNulTerminator",
       [] {
         Anatomy a = ValidCheckRequest();
         const uint32_t length = ReadU32(a.frame, a.key_string);
         a.frame[a.key_string + 4 + length] = 'x';
         return a.frame;
       }},
      {"CheckRequestWithoutRequiredKey",
       [] {
         flatbuffers::FlatBufferBuilder fbb;
         // No CheckRequestBuilder: its Finish() would insist on the key.
         const auto start = fbb.StartTable();
         fbb.AddElement<uint32_t>(wire::CheckRequest::VT_COST, 5, 1);
         fbb.AddElement<uint32_t>(wire::CheckRequest::VT_LIMIT, 10, 0);
         const flatbuffers::Offset<void> body(fbb.EndTable(start));
         return Finish(fbb, 1, wire::Body::CheckRequest, body);
       }},
      {"BodyTypeCheckRequestOnAPingRequestTable",
       [] {
         flatbuffers::FlatBufferBuilder fbb;
         const auto body = wire::CreatePingRequest(fbb).Union();
         return Finish(fbb, 1, wire::Body::CheckRequest, body);
       }},
  };
}

class FrameVerifierCorruptionTest : public testing::TestWithParam<CorruptionCase> {};

TEST_P(FrameVerifierCorruptionTest, IsRejectedWithProtocolError) {
  const Bytes frame = GetParam().make();
  for (size_t misalign : {size_t{0}, size_t{1}}) {
    FrameVerifier verifier;
    Verified v = VerifyCopy(verifier, frame, misalign);
    ASSERT_FALSE(v.frame.ok()) << "misaligned by " << misalign;
    EXPECT_EQ(v.frame.status().code(), Status::Code::kProtocolError);
  }
}

INSTANTIATE_TEST_SUITE_P(Hand, FrameVerifierCorruptionTest, testing::ValuesIn(Corruptions()),
                         [](const auto& p) { return p.param.name; });

// Regression: an empty span at an odd address once reached memcpy(nullptr, p, 0).
TEST(FrameCodecTest, EmptyFrameIsRejectedAtAnyAddress) {
  for (size_t misalign : {size_t{0}, size_t{1}}) {
    FrameVerifier verifier;
    Verified v = VerifyCopy(verifier, Bytes{}, misalign);
    ASSERT_FALSE(v.frame.ok()) << "misaligned by " << misalign;
    EXPECT_EQ(v.frame.status().code(), Status::Code::kProtocolError);
  }
}

TEST(FrameCodecTest, VerifierStillAcceptsAValidFrameAfterRejectingGarbage) {
  FrameEncoder encoder;
  FrameVerifier verifier;
  const Bytes good = Copy(encoder.PingRequest(11));
  for (const CorruptionCase& c : Corruptions()) {
    EXPECT_FALSE(VerifyCopy(verifier, c.make(), 1).frame.ok()) << c.name;
    Verified v = VerifyCopy(verifier, good, 1);
    ASSERT_TRUE(v.frame.ok()) << "after " << c.name;
    EXPECT_EQ((*v.frame)->id(), 11u);
  }
}

// ---- Enum clamping ----

TEST(FrameCodecTest, ToCheckResultClampsUnknownEnumValuesIntoTheKnownRange) {
  const uint8_t raw_values[] = {6, 7, 100, 200, 255};
  FrameVerifier verifier;
  for (uint8_t raw : raw_values) {
    flatbuffers::FlatBufferBuilder fbb;
    const auto body = wire::CreateCheckResponse(fbb, true, static_cast<wire::Status>(raw), 10, 5, 0,
                                                100, static_cast<wire::Source>(raw))
                          .Union();
    Verified v = VerifyCopy(verifier, Finish(fbb, 1, wire::Body::CheckResponse, body));
    ASSERT_TRUE(v.frame.ok()) << "raw " << int{raw};
    const CheckResult result = ToCheckResult(*(*v.frame)->body_as_CheckResponse());
    EXPECT_LE(static_cast<int>(result.status), static_cast<int>(CheckStatus::kShuttingDown))
        << "raw " << int{raw};
    EXPECT_LE(static_cast<int>(result.source), static_cast<int>(Source::kFallback))
        << "raw " << int{raw};
    // The other fields are still read.
    EXPECT_TRUE(result.allowed);
    EXPECT_EQ(result.limit, 10u);
    EXPECT_EQ(result.remaining, 5u);
    EXPECT_EQ(result.reset_after_ms, 100u);
  }
}

}  // namespace
}  // namespace ratelimit
