// Unit tests of FrameReader: splitting a byte stream into size-prefixed frames.
#include "schema/frame_reader.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "schema/frame_codec.h"

namespace ratelimit {
namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint32_t kMax = 65536;

// A real frame as the encoder builds it, copied out of the encoder.
Bytes CheckFrame(uint64_t id, std::string_view key, uint32_t cost = 1) {
  FrameEncoder encoder;
  const std::span<const uint8_t> frame = encoder.CheckRequest(id, CheckArgs{key, cost, 0, 0});
  return Bytes(frame.begin(), frame.end());
}

// A frame with an arbitrary payload: the reader only cares about the prefix.
Bytes RawFrame(uint32_t payload_size, uint8_t fill) {
  Bytes frame(kFramePrefixBytes + payload_size, fill);
  frame[0] = payload_size & 0xff;
  frame[1] = (payload_size >> 8) & 0xff;
  frame[2] = (payload_size >> 16) & 0xff;
  frame[3] = (payload_size >> 24) & 0xff;
  return frame;
}

Bytes Prefix(uint32_t payload_size) {
  return Bytes{static_cast<uint8_t>(payload_size & 0xff),
               static_cast<uint8_t>((payload_size >> 8) & 0xff),
               static_cast<uint8_t>((payload_size >> 16) & 0xff),
               static_cast<uint8_t>((payload_size >> 24) & 0xff)};
}

Bytes Concat(const std::vector<Bytes>& parts) {
  Bytes all;
  for (const Bytes& part : parts) all.insert(all.end(), part.begin(), part.end());
  return all;
}

// Collects every frame handed out, copied, and whether each came out 8-byte aligned.
struct Collector {
  std::vector<Bytes> frames;
  std::vector<bool> aligned;

  auto Callback() {
    return [this](std::span<const uint8_t> frame) {
      frames.emplace_back(frame.begin(), frame.end());
      aligned.push_back(reinterpret_cast<uintptr_t>(frame.data()) % 8 == 0);
      return true;
    };
  }
};

// Feeds `stream` to a fresh reader in the pieces cut at `cuts` (ascending offsets).
std::vector<Bytes> FeedInPieces(const Bytes& stream, const std::vector<size_t>& cuts) {
  FrameReader reader(kMax);
  Collector collector;
  size_t start = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(stream.size());
  for (size_t end : ends) {
    const Status s = reader.Feed(std::span<const uint8_t>(stream.data() + start, end - start),
                                 collector.Callback());
    EXPECT_TRUE(s.ok()) << s.ToString();
    start = end;
  }
  EXPECT_FALSE(reader.has_partial());
  return collector.frames;
}

TEST(FrameReaderTest, OneFrameInOneReadIsHandedOutWhole) {
  const Bytes frame = CheckFrame(7, "user:1");
  FrameReader reader(kMax);
  Collector collector;
  ASSERT_TRUE(reader.Feed(frame, collector.Callback()).ok());
  ASSERT_EQ(collector.frames.size(), 1u);
  EXPECT_EQ(collector.frames[0], frame);
  EXPECT_FALSE(reader.has_partial());
}

TEST(FrameReaderTest, ManyFramesInOneReadComeOutInOrder) {
  std::vector<Bytes> frames;
  for (uint64_t id = 1; id <= 20; ++id) frames.push_back(CheckFrame(id, std::string(id, 'k')));
  FrameReader reader(kMax);
  Collector collector;
  ASSERT_TRUE(reader.Feed(Concat(frames), collector.Callback()).ok());
  EXPECT_EQ(collector.frames, frames);
  EXPECT_FALSE(reader.has_partial());
}

TEST(FrameReaderTest, FramesAreByteIdenticalToWhatWasEncoded) {
  FrameEncoder encoder;
  std::vector<Bytes> frames;
  auto keep = [&frames](std::span<const uint8_t> f) { frames.emplace_back(f.begin(), f.end()); };
  keep(encoder.CheckRequest(1, CheckArgs{"a", 3, 10, 1000}));
  keep(encoder.PingRequest(2));
  keep(encoder.PingResponse(3, kProtocolVersion, "memory", true));
  keep(encoder.ErrorResponse(4, CheckStatus::kInvalidRequest, "bad"));
  CheckResult result;
  result.allowed = true;
  result.limit = 10;
  result.remaining = 9;
  keep(encoder.CheckResponse(5, result));
  const Bytes stream = Concat(frames);

  // Whole, and split in the middle of the stream so that one frame is assembled by the reader.
  EXPECT_EQ(FeedInPieces(stream, {}), frames);
  EXPECT_EQ(FeedInPieces(stream, {stream.size() / 2}), frames);
}

TEST(FrameReaderTest, SplitAtEveryByteBoundaryYieldsTheSameFrames) {
  const std::vector<Bytes> frames = {CheckFrame(1, "alpha"), CheckFrame(2, "b", 0),
                                     CheckFrame(3, std::string(40, 'z'))};
  const Bytes stream = Concat(frames);
  // One cut anywhere, including inside every 4-byte prefix.
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    EXPECT_EQ(FeedInPieces(stream, {cut}), frames) << "cut at " << cut;
  }
  // Two cuts anywhere: a frame may span three reads, a prefix may be split twice.
  for (size_t first = 0; first <= stream.size(); ++first) {
    for (size_t second = first; second <= stream.size(); ++second) {
      ASSERT_EQ(FeedInPieces(stream, {first, second}), frames)
          << "cuts at " << first << " and " << second;
    }
  }
}

TEST(FrameReaderTest, ByteAtATimeFeedingYieldsTheSameFrames) {
  const std::vector<Bytes> frames = {CheckFrame(1, "one"), CheckFrame(2, "two"), RawFrame(1, 0xab),
                                     CheckFrame(3, "three")};
  const Bytes stream = Concat(frames);
  std::vector<size_t> cuts;
  for (size_t i = 1; i < stream.size(); ++i) cuts.push_back(i);
  EXPECT_EQ(FeedInPieces(stream, cuts), frames);
}

TEST(FrameReaderTest, HasPartialOnlyWhileAFrameIsIncomplete) {
  const Bytes frame = CheckFrame(1, "key");
  FrameReader reader(kMax);
  Collector collector;
  EXPECT_FALSE(reader.has_partial());
  ASSERT_TRUE(reader.Feed(std::span(frame).first(2), collector.Callback()).ok());
  EXPECT_TRUE(reader.has_partial());
  ASSERT_TRUE(reader.Feed(std::span(frame).subspan(2, 5), collector.Callback()).ok());
  EXPECT_TRUE(reader.has_partial());
  EXPECT_TRUE(collector.frames.empty());
  ASSERT_TRUE(reader.Feed(std::span(frame).subspan(7), collector.Callback()).ok());
  EXPECT_FALSE(reader.has_partial());
  ASSERT_EQ(collector.frames.size(), 1u);
  EXPECT_EQ(collector.frames[0], frame);
}

TEST(FrameReaderTest, PartialFrameAssembledAcrossReadsIsEightByteAligned) {
  const Bytes frame = CheckFrame(9, "aligned-key");
  // Feed from an odd address too, so alignment cannot come from the caller's buffer.
  Bytes shifted(1, 0);
  shifted.insert(shifted.end(), frame.begin(), frame.end());
  const std::span<const uint8_t> stream(shifted.data() + 1, frame.size());
  for (size_t cut = 1; cut < frame.size(); ++cut) {
    FrameReader reader(kMax);
    Collector collector;
    ASSERT_TRUE(reader.Feed(stream.first(cut), collector.Callback()).ok());
    ASSERT_TRUE(reader.Feed(stream.subspan(cut), collector.Callback()).ok());
    ASSERT_EQ(collector.frames.size(), 1u) << "cut at " << cut;
    EXPECT_EQ(collector.frames[0], frame) << "cut at " << cut;
    EXPECT_TRUE(collector.aligned[0]) << "cut at " << cut;
  }
}

TEST(FrameReaderTest, OnFrameReturningFalseStopsDelivery) {
  const std::vector<Bytes> frames = {CheckFrame(1, "a"), CheckFrame(2, "b"), CheckFrame(3, "c")};
  FrameReader reader(kMax);
  int calls = 0;
  ASSERT_TRUE(reader
                  .Feed(Concat(frames),
                        [&calls](std::span<const uint8_t>) {
                          ++calls;
                          return calls < 2;
                        })
                  .ok());
  EXPECT_EQ(calls, 2);
}

TEST(FrameReaderTest, OnFrameReturningFalseStopsDeliveryOfAnAssembledFrame) {
  const std::vector<Bytes> frames = {CheckFrame(1, "a"), CheckFrame(2, "b")};
  const Bytes stream = Concat(frames);
  FrameReader reader(kMax);
  int calls = 0;
  auto stop_at_first = [&calls](std::span<const uint8_t>) {
    ++calls;
    return false;
  };
  // The first frame is completed from the leftover of the first read, then delivery stops.
  ASSERT_TRUE(reader.Feed(std::span(stream).first(3), stop_at_first).ok());
  ASSERT_TRUE(reader.Feed(std::span(stream).subspan(3), stop_at_first).ok());
  EXPECT_EQ(calls, 1);
}

TEST(FrameReaderTest, FrameOfExactlyTheMaximumIsAccepted) {
  constexpr uint32_t kSmallMax = 100;
  const Bytes frame = RawFrame(kSmallMax, 0x5a);
  for (size_t cut : {size_t{0}, size_t{2}, size_t{4}, size_t{50}}) {
    FrameReader reader(kSmallMax);
    Collector collector;
    ASSERT_TRUE(reader.Feed(std::span(frame).first(cut), collector.Callback()).ok());
    ASSERT_TRUE(reader.Feed(std::span(frame).subspan(cut), collector.Callback()).ok());
    ASSERT_EQ(collector.frames.size(), 1u) << "cut at " << cut;
    EXPECT_EQ(collector.frames[0], frame);
  }
}

struct BadPrefixCase {
  std::string name;
  uint32_t max;
  uint32_t payload;
};

void PrintTo(const BadPrefixCase& c, std::ostream* os) { *os << c.name; }

class FrameReaderBadPrefixTest : public testing::TestWithParam<BadPrefixCase> {};

// Only the prefix is fed: the refusal must not wait for a payload that may never come, and the
// reader must not reserve the declared size (0xFFFFFFFF would be a 4 GiB allocation).
TEST_P(FrameReaderBadPrefixTest, IsRefusedAsSoonAsThePrefixArrives) {
  const BadPrefixCase& c = GetParam();
  const Bytes prefix = Prefix(c.payload);
  for (size_t cut = 0; cut <= kFramePrefixBytes; ++cut) {
    FrameReader reader(c.max);
    int calls = 0;
    auto count = [&calls](std::span<const uint8_t>) {
      ++calls;
      return true;
    };
    Status first = reader.Feed(std::span(prefix).first(cut), count);
    Status s = first.ok() ? reader.Feed(std::span(prefix).subspan(cut), count) : first;
    EXPECT_EQ(s.code(), Status::Code::kProtocolError) << "cut at " << cut;
    EXPECT_EQ(calls, 0);
  }
}

TEST_P(FrameReaderBadPrefixTest, IsRefusedAfterEarlierGoodFrames) {
  const BadPrefixCase& c = GetParam();
  const Bytes stream = Concat({RawFrame(1, 1), RawFrame(2, 2), Prefix(c.payload)});
  FrameReader reader(c.max);
  Collector collector;
  const Status s = reader.Feed(stream, collector.Callback());
  EXPECT_EQ(s.code(), Status::Code::kProtocolError);
  EXPECT_EQ(collector.frames.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Lengths, FrameReaderBadPrefixTest,
                         testing::Values(BadPrefixCase{"Zero", kMax, 0},
                                         BadPrefixCase{"MaxPlusOne", kMax, kMax + 1},
                                         BadPrefixCase{"SmallMaxPlusOne", 16, 17},
                                         BadPrefixCase{"FourGiBWithSmallMax", 64, 0xFFFFFFFFu},
                                         BadPrefixCase{"FourGiBWithDefaultMax", kMax, 0xFFFFFFFFu}),
                         [](const auto& p) { return p.param.name; });

TEST(FrameReaderTest, RefusalMessageNamesTheLengthAndTheMaximum) {
  FrameReader reader(1000);
  const Status s = reader.Feed(Prefix(1001), [](std::span<const uint8_t>) { return true; });
  ASSERT_EQ(s.code(), Status::Code::kProtocolError);
  EXPECT_NE(s.message().find("1001"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("1000"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace ratelimit
