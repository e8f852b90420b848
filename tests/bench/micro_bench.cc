// Micro-benchmarks of the in-process hot path: bucket math, memory and lease engines, codec and
// dispatch.
//
// Every benchmark measures and prints; none asserts a time. The engine and request-path ones also
// report allocs_per_check, counted by heap_counter.cc: the steady state (every key known, every
// buffer grown) is meant to allocate nothing.
#include <benchmark/benchmark.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schema/frame_codec.h"
#include "schema/frame_reader.h"
#include "sidecar/core/lease_engine.h"
#include "sidecar/core/limiter.h"
#include "sidecar/core/memory_engine.h"
#include "sidecar/core/token_bucket.h"
#include "sidecar/server/request_stream.h"
#include "sidecar/server/server_metrics.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_store.h"

namespace ratelimit {

// Heap allocations so far, counted by the global operator new that heap_counter.cc replaces.
uint64_t HeapAllocations();

namespace {

// One token per microsecond: with the clock moving 1 us per check, refill keeps up with any
// number of keys, so (nearly) every check is allowed and takes the same path.
constexpr Policy kGenerousPolicy{1'000'000, 1'000};

// The sidecar's default max_frame_bytes (see ServerOptions).
constexpr uint32_t kMaxFrameBytes = 65536;

// `count` distinct keys of kKeyBytes each ("user:00000000042"), in one block so that building a
// million of them costs one allocation and views of them stay put.
class KeySet {
 public:
  static constexpr size_t kKeyBytes = 16;

  explicit KeySet(size_t count) : count_(count), bytes_(count * kKeyBytes, '0') {
    static constexpr std::string_view kPrefix = "user:";
    for (size_t i = 0; i < count; ++i) {
      char* key = &bytes_[i * kKeyBytes];
      kPrefix.copy(key, kPrefix.size());
      for (size_t digit = kKeyBytes, rest = i; digit > kPrefix.size() && rest != 0; rest /= 10) {
        key[--digit] = static_cast<char>('0' + rest % 10);
      }
    }
  }

  size_t size() const { return count_; }
  std::string_view operator[](size_t i) const {
    return std::string_view(bytes_).substr(i * kKeyBytes, kKeyBytes);
  }

 private:
  size_t count_;
  std::string bytes_;
};

// Receives engine decisions and keeps just enough of them to prove they happened.
class CountingCallback final : public CheckCallback {
 public:
  void OnCheckDone(uint64_t /*tag*/, const CheckResult& result) override {
    ++done_;
    allowed_ += result.allowed ? 1 : 0;
  }
  uint64_t done() const { return done_; }
  uint64_t allowed() const { return allowed_; }

 private:
  uint64_t done_ = 0;
  uint64_t allowed_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The bucket arithmetic alone.

void BM_TokenBucketDecide(benchmark::State& state) {
  FakeClock clock;
  TokenBucket::State bucket = TokenBucket::Fresh(kGenerousPolicy, clock.NowMicros());
  uint64_t allowed = 0;
  for (auto _ : state) {
    clock.AdvanceMicros(1);
    CheckResult result = TokenBucket::Decide(bucket, kGenerousPolicy, 1, clock.NowMicros());
    benchmark::DoNotOptimize(result);
    allowed += result.allowed ? 1 : 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allowed_fraction"] =
      static_cast<double>(allowed) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_TokenBucketDecide);

// ---------------------------------------------------------------------------------------------
// The memory engine over a table of a given size.

// An engine already holding a bucket for each of `key_count` keys, and where the cycle through
// them stopped. Google Benchmark calls a benchmark several times while it sizes the iteration
// count; filling a million keys takes longer than a run, so the fixture outlives the call.
struct EngineFixture {
  explicit EngineFixture(size_t key_count)
      : keys(key_count),
        engine(NewMemoryEngine(Algorithm::kTokenBucket, clock, HashKey{0x1234, 0x5678}, 1000000)) {
    CountingCallback sink;
    for (size_t i = 0; i < keys.size(); ++i) {
      clock.AdvanceMicros(1);
      engine->Check(CheckQuery{keys[i], 1, kGenerousPolicy}, i, sink);
    }
  }

  FakeClock clock;
  KeySet keys;
  std::unique_ptr<MemoryEngine> engine;
  size_t next = 0;
};

// Keeps one fixture at a time: a table is freed when the next size starts (the last at exit).
EngineFixture& EngineFixtureFor(size_t key_count) {
  static std::unique_ptr<EngineFixture> fixture;
  if (fixture == nullptr || fixture->keys.size() != key_count) {
    fixture.reset();
    fixture = std::make_unique<EngineFixture>(key_count);
  }
  return *fixture;
}

void BM_MemoryEngineCheck(benchmark::State& state) {
  EngineFixture& f = EngineFixtureFor(static_cast<size_t>(state.range(0)));
  MemoryEngine& engine = *f.engine;
  const size_t key_count = f.keys.size();
  auto check_next = [&](CountingCallback& sink) {
    f.clock.AdvanceMicros(1);
    engine.Check(CheckQuery{f.keys[f.next], 1, kGenerousPolicy}, f.next, sink);
    f.next = f.next + 1 == key_count ? 0 : f.next + 1;
  };
  CountingCallback warm_up;
  for (int i = 0; i < 1000; ++i) check_next(warm_up);  // Every key exists; warm the caches.

  CountingCallback sink;
  const uint64_t allocations_before = HeapAllocations();
  for (auto _ : state) check_next(sink);
  const uint64_t allocations = HeapAllocations() - allocations_before;

  const auto checks = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations());
  state.counters["keys"] = static_cast<double>(engine.size());
  state.counters["allocs_per_check"] = static_cast<double>(allocations) / checks;
  state.counters["allowed_fraction"] =
      static_cast<double>(sink.allowed()) / static_cast<double>(sink.done());
}
BENCHMARK(BM_MemoryEngineCheck)->Arg(1)->Arg(1'000)->Arg(100'000)->Arg(1'000'000);

// Checks of keys never seen before, each of which stores a bucket: into a table with room
// (Arg 0), or into a full table of RATE_LIMIT_MAX_KEYS = Arg keys, where each new key first
// evicts one (a flood of unique keys). The table is sized up front, so neither case rehashes.
void BM_MemoryEngineNewKey(benchmark::State& state) {
  static const KeySet kFlood(2'000'000);
  const size_t cap = state.range(0) == 0 ? kFlood.size() : static_cast<size_t>(state.range(0));
  FakeClock clock;
  auto engine = NewMemoryEngine(Algorithm::kTokenBucket, clock, HashKey{0x1234, 0x5678}, cap);
  CountingCallback sink;
  size_t next = 0;
  if (state.range(0) != 0) {
    for (; next < cap; ++next) engine->Check(CheckQuery{kFlood[next], 1, kGenerousPolicy}, 0, sink);
  }
  for (auto _ : state) {
    clock.AdvanceMicros(1);
    engine->Check(CheckQuery{kFlood[next], 1, kGenerousPolicy}, next, sink);
    next = next + 1 == kFlood.size() ? 0 : next + 1;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["keys"] = static_cast<double>(engine->size());
  state.counters["evictions"] = static_cast<double>(engine->metrics().evictions.value());
}
BENCHMARK(BM_MemoryEngineNewKey)->Arg(0)->Arg(10'000)->Arg(500'000)->Iterations(1'000'000);

// ---------------------------------------------------------------------------------------------
// The lease engine: checks of one hot key answered from leases, beside the memory engine's.

// A correct database that answers each Take as soon as the check that started it has returned
// (FakeStore::Decide, the real row arithmetic), on a database clock that runs with the engine's.
// Leases then refill as they would against PostgreSQL, only without its latency, so what is
// measured is the cost of a check served from a lease plus the amortized cost of fetching them.
void BM_LeaseEngineCheck(benchmark::State& state) {
  FakeClock clock;
  FakeStore store;
  LeaseEngine engine(store, clock, HashKey{0x1234, 0x5678}, LeaseOptions{1000});
  const std::string key = "user:hot";
  size_t answered = 0;
  CountingCallback sink;
  auto check = [&] {
    clock.AdvanceMicros(1);
    engine.Check(CheckQuery{key, 1, kGenerousPolicy}, 0, sink);
    if (store.take_count() > answered) store.Decide(answered++, clock.NowMicros());
  };
  for (int i = 0; i < 1'000'000; ++i) check();  // Past the first leases: demand is known.

  const uint64_t allocations_before = HeapAllocations();
  const uint64_t fetches_before = engine.metrics().fetches.value();
  const uint64_t done_before = sink.done();
  for (auto _ : state) check();
  const uint64_t allocations = HeapAllocations() - allocations_before;

  const auto checks = static_cast<double>(state.iterations());
  if (sink.done() - done_before != static_cast<uint64_t>(state.iterations())) {
    state.SkipWithError("not every check was answered");
    return;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs_per_check"] = static_cast<double>(allocations) / checks;
  state.counters["fetches_per_1k_checks"] =
      static_cast<double>(engine.metrics().fetches.value() - fetches_before) * 1000 / checks;
  state.counters["allowed_fraction"] =
      static_cast<double>(sink.allowed()) / static_cast<double>(sink.done());
}
BENCHMARK(BM_LeaseEngineCheck);

// ---------------------------------------------------------------------------------------------
// The codec on its own.

// A copy of some bytes in 8-byte-aligned storage, as frames sit in a read buffer that FrameReader
// hands out: the verifier then reads them in place instead of copying them to scratch.
class AlignedBytes {
 public:
  explicit AlignedBytes(std::span<const uint8_t> bytes)
      : words_((bytes.size() + 7) / 8), size_(bytes.size()) {
    std::memcpy(words_.data(), bytes.data(), bytes.size());
  }

  std::span<const uint8_t> span() const {
    return {reinterpret_cast<const uint8_t*>(words_.data()), size_};
  }

 private:
  std::vector<uint64_t> words_;
  size_t size_;
};

void BM_FrameDecodeVerify(benchmark::State& state) {
  FrameEncoder encoder;
  const std::span<const uint8_t> encoded =
      encoder.CheckRequest(42, CheckArgs{"tenant-7:user-42", 1, 0, 0});
  const AlignedBytes aligned(encoded);
  const std::span<const uint8_t> frame = aligned.span();
  FrameVerifier verifier;
  for (auto _ : state) {
    Result<const wire::Frame*> verified = verifier.Verify(frame);
    if (!verified.ok()) {
      state.SkipWithError("the encoded CheckRequest failed verification");
      break;
    }
    CheckArgs args = ToCheckArgs(*(*verified)->body_as_CheckRequest());
    benchmark::DoNotOptimize(args);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["frame_bytes"] = static_cast<double>(frame.size());
}
BENCHMARK(BM_FrameDecodeVerify);

void BM_ResponseEncode(benchmark::State& state) {
  CheckResult result;
  result.allowed = true;
  result.limit = 100;
  result.remaining = 42;
  result.reset_after_ms = 580;
  FrameEncoder encoder;
  uint64_t id = 0;
  size_t frame_bytes = 0;
  for (auto _ : state) {
    std::span<const uint8_t> frame = encoder.CheckResponse(++id, result);
    benchmark::DoNotOptimize(frame.data());
    benchmark::ClobberMemory();
    frame_bytes = frame.size();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["frame_bytes"] = static_cast<double>(frame_bytes);
}
BENCHMARK(BM_ResponseEncode);

// ---------------------------------------------------------------------------------------------
// Bytes in to bytes out, as a connection sees them, without sockets or a loop.

// Takes answers as Connection does, appending every reply frame to one reused buffer.
class BufferingSink final : public FrameSink {
 public:
  void Queue(std::span<const uint8_t> frame) override {
    out_.insert(out_.end(), frame.begin(), frame.end());
  }
  void Send() override {}

  std::vector<uint8_t>& out() { return out_; }

 private:
  std::vector<uint8_t> out_;
};

// Checks answered so far, whatever the decision: as /metrics counts them.
uint64_t Answered(const ServerMetrics& metrics) {
  uint64_t answered = 0;
  for (size_t i = 0; i < kSourceCount; ++i) {
    answered += metrics.allowed[i].value() + metrics.denied[i].value();
  }
  for (const Counter& refused : metrics.refused) answered += refused.value();
  return answered;
}

// N CheckRequest frames back to back, each for its own key, under the default policy.
AlignedBytes EncodeRequests(const KeySet& keys) {
  FrameEncoder encoder;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < keys.size(); ++i) {
    std::span<const uint8_t> frame = encoder.CheckRequest(i + 1, CheckArgs{keys[i], 1, 0, 0});
    bytes.insert(bytes.end(), frame.begin(), frame.end());
  }
  return AlignedBytes(bytes);
}

// One iteration feeds a batch of N frames, as one read of a pipelining client would deliver.
void BM_RequestPathInProcess(benchmark::State& state) {
  const auto batch = static_cast<size_t>(state.range(0));
  const KeySet keys(batch);
  const AlignedBytes requests = EncodeRequests(keys);
  const std::span<const uint8_t> input = requests.span();

  FakeClock clock;
  std::unique_ptr<MemoryEngine> engine =
      NewMemoryEngine(Algorithm::kTokenBucket, clock, HashKey{0x1234, 0x5678}, 1000000);
  Limiter limiter(kGenerousPolicy, *engine);
  ServerMetrics metrics;
  RequestShared shared{limiter, metrics, kMaxFrameBytes, &uv_hrtime};
  BufferingSink sink;
  RequestStream stream(shared, sink);

  bool open = true;
  auto run_batch = [&] {
    sink.out().clear();
    clock.AdvanceMicros(static_cast<int64_t>(batch));  // 1 us per check.
    open = stream.Feed(input) && open;
  };
  // The first batch stores every key and grows every buffer; the steady state starts after it.
  for (int i = 0; i < 3; ++i) run_batch();
  const uint64_t answered_before = Answered(metrics);

  const uint64_t allocations_before = HeapAllocations();
  for (auto _ : state) {
    run_batch();
    benchmark::DoNotOptimize(sink.out().data());
  }
  const uint64_t allocations = HeapAllocations() - allocations_before;

  const auto checks = static_cast<uint64_t>(state.iterations()) * batch;
  if (!open || stream.pending() != 0 || Answered(metrics) - answered_before != checks) {
    state.SkipWithError("not every request was answered");
    return;
  }
  state.SetItemsProcessed(static_cast<int64_t>(checks));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(input.size()));
  state.counters["allocs_per_check"] =
      static_cast<double>(allocations) / static_cast<double>(checks);
  state.counters["out_bytes_per_check"] =
      static_cast<double>(sink.out().size()) / static_cast<double>(batch);
}
BENCHMARK(BM_RequestPathInProcess)->Arg(1)->Arg(64)->Arg(1024);

}  // namespace
}  // namespace ratelimit
