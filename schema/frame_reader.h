// FrameReader: splits a byte stream into size-prefixed frames, refusing oversized ones early.
#ifndef RATELIMIT_SCHEMA_FRAME_READER_H_
#define RATELIMIT_SCHEMA_FRAME_READER_H_

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "schema/status.h"

namespace ratelimit {

// Bytes of the little-endian length that precedes every frame's FlatBuffer.
inline constexpr size_t kFramePrefixBytes = 4;

// Reads the 4-byte little-endian length prefix at `p`.
inline uint32_t ReadFramePrefix(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// Cuts a stream into frames of `prefix + payload` bytes. Complete frames are handed out as views
// of the caller's bytes whenever possible; only the tail of a frame split across reads is copied,
// into storage sized by the prefix after the prefix was checked against the maximum, so a
// hostile length never causes an allocation.
// Thread-safety: none; one reader per stream.
class FrameReader {
 public:
  // REQUIRES: max_payload_bytes >= 1.
  explicit FrameReader(uint32_t max_payload_bytes) : max_payload_(max_payload_bytes) {}

  // Feeds the next `data` of the stream. For each complete frame, in order, calls
  // on_frame(std::span<const uint8_t> frame) with the prefix included; the view is valid only
  // during that call. on_frame returns false to stop: the rest of `data` is then dropped.
  // Returns ProtocolError for a payload length of 0 or above the maximum; the stream is then
  // unusable, since its frame boundaries are lost.
  template <typename OnFrame>
  Status Feed(std::span<const uint8_t> data, OnFrame&& on_frame);

  // Whether part of a frame is waiting for more bytes.
  bool has_partial() const { return !partial_.empty(); }

 private:
  Status CheckLength(uint32_t payload) const;

  const uint32_t max_payload_;
  // A frame being assembled across reads. 8-byte words keep its FlatBuffer aligned.
  std::vector<uint64_t> partial_storage_;
  std::span<uint8_t> partial_;  // Bytes received so far of that frame, in partial_storage_.
  size_t partial_need_ = 0;     // Its total size once known, else 0.
};

template <typename OnFrame>
Status FrameReader::Feed(std::span<const uint8_t> data, OnFrame&& on_frame) {
  // First complete a frame left over from an earlier read.
  while (!partial_.empty() && !data.empty()) {
    const size_t have = partial_.size();
    const size_t want = partial_need_ != 0 ? partial_need_ : kFramePrefixBytes;
    const size_t take = std::min(want - have, data.size());
    std::memcpy(partial_.data() + have, data.data(), take);
    partial_ = std::span<uint8_t>(partial_.data(), have + take);
    data = data.subspan(take);
    if (partial_.size() < want) return Status::Ok();
    if (partial_need_ == 0) {  // The prefix just arrived: check it, then make room for the rest.
      const uint32_t payload = ReadFramePrefix(partial_.data());
      if (Status s = CheckLength(payload); !s.ok()) return s;
      partial_need_ = kFramePrefixBytes + payload;
      partial_storage_.resize((partial_need_ + 7) / 8);
      partial_ = std::span<uint8_t>(reinterpret_cast<uint8_t*>(partial_storage_.data()),
                                    kFramePrefixBytes);
      continue;
    }
    const std::span<const uint8_t> frame = partial_;
    partial_ = {};
    partial_need_ = 0;
    if (!on_frame(frame)) return Status::Ok();
  }
  // Then every complete frame straight from the caller's bytes.
  while (data.size() >= kFramePrefixBytes) {
    const uint32_t payload = ReadFramePrefix(data.data());
    if (Status s = CheckLength(payload); !s.ok()) return s;
    const size_t size = kFramePrefixBytes + payload;
    if (data.size() < size) break;
    if (!on_frame(data.first(size))) return Status::Ok();
    data = data.subspan(size);
  }
  // Keep what is left of the last, incomplete frame (at most its prefix's worth unchecked).
  if (!data.empty()) {
    size_t need = 0;
    size_t room = kFramePrefixBytes;
    if (data.size() >= kFramePrefixBytes) {
      need = kFramePrefixBytes + ReadFramePrefix(data.data());  // Checked in the loop above.
      room = need;
    }
    partial_storage_.resize((room + 7) / 8);
    auto* base = reinterpret_cast<uint8_t*>(partial_storage_.data());
    std::memcpy(base, data.data(), data.size());
    partial_ = std::span<uint8_t>(base, data.size());
    partial_need_ = need;
  }
  return Status::Ok();
}

inline Status FrameReader::CheckLength(uint32_t payload) const {
  if (payload == 0) return Status::ProtocolError("frame length is 0");
  if (payload > max_payload_) {
    return Status::ProtocolError("frame of " + std::to_string(payload) +
                                 " bytes exceeds the maximum of " + std::to_string(max_payload_));
  }
  return Status::Ok();
}

}  // namespace ratelimit

#endif  // RATELIMIT_SCHEMA_FRAME_READER_H_
