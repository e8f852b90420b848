// Heap allocation counter for the micro-benchmarks: replaces every global operator new/delete.
//
// Every replaceable allocation function of the program, libstdc++ and Google Benchmark included,
// comes through here; deallocation is replaced only so that it pairs with malloc/posix_memalign.
// The replacements live in their own translation unit so that GCC cannot inline them into
// callers, where it would pair an inlined free() with an opaque operator new and warn
// (-Wmismatched-new-delete).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace ratelimit {
namespace {

std::atomic<uint64_t> heap_allocations{0};

}  // namespace

// Declared where it is used, in micro_bench.cc.
uint64_t HeapAllocations() { return heap_allocations.load(std::memory_order_relaxed); }

namespace {

void* CountedAlloc(std::size_t size) {
  heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}

void* CountedAlignedAlloc(std::size_t size, std::align_val_t alignment) {
  heap_allocations.fetch_add(1, std::memory_order_relaxed);
  std::size_t align = static_cast<std::size_t>(alignment);
  if (align < sizeof(void*)) align = sizeof(void*);
  void* p = nullptr;
  return posix_memalign(&p, align, size == 0 ? 1 : size) == 0 ? p : nullptr;
}

}  // namespace
}  // namespace ratelimit

void* operator new(std::size_t size) {
  if (void* p = ratelimit::CountedAlloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* p = ratelimit::CountedAlloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return ratelimit::CountedAlloc(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return ratelimit::CountedAlloc(size);
}
void* operator new(std::size_t size, std::align_val_t alignment) {
  if (void* p = ratelimit::CountedAlignedAlloc(size, alignment)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  if (void* p = ratelimit::CountedAlignedAlloc(size, alignment)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return ratelimit::CountedAlignedAlloc(size, alignment);
}
void* operator new[](std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return ratelimit::CountedAlignedAlloc(size, alignment);
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
