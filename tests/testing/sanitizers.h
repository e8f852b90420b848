// Whether this test binary runs under AddressSanitizer, for the few tests whose bounds depend on
// it.
#ifndef RATELIMIT_TESTS_TESTING_SANITIZERS_H_
#define RATELIMIT_TESTS_TESTING_SANITIZERS_H_

namespace ratelimit {

// GCC defines __SANITIZE_ADDRESS__; clang 14 answers only __has_feature.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kUnderAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kUnderAddressSanitizer = true;
#else
inline constexpr bool kUnderAddressSanitizer = false;
#endif
#else
inline constexpr bool kUnderAddressSanitizer = false;
#endif

// How much longer a deadline on the sidecar's own work may be under the sanitizers: shadow
// checks on every access make the server a few times slower (measured on the flood test: a
// slowest check of 10 ms in the ordinary build, 45 to 100 ms under ASan+UBSan). A deadline
// stated by the product is asserted as stated in the ordinary build.
inline constexpr int kSanitizerSlowdown = kUnderAddressSanitizer ? 4 : 1;

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_SANITIZERS_H_
