// Algorithm: which arithmetic decides a key's checks, token bucket or fixed window.
#ifndef RATELIMIT_SIDECAR_CORE_ALGORITHM_H_
#define RATELIMIT_SIDECAR_CORE_ALGORITHM_H_

#include <cstdint>

namespace ratelimit {

// RATE_LIMIT_ALGORITHM. The values are stored in the shared table's `algorithm` column
// (schema/postgres.sql): they never change meaning.
enum class Algorithm : uint8_t { kTokenBucket = 0, kFixedWindow = 1 };

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_ALGORITHM_H_
