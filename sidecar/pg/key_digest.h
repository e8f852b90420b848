// KeyDigest: how an API key is stored at rest in the shared table.
#ifndef RATELIMIT_SIDECAR_PG_KEY_DIGEST_H_
#define RATELIMIT_SIDECAR_PG_KEY_DIGEST_H_

#include <string>
#include <string_view>

namespace ratelimit {

// RATE_LIMIT_PG_KEY_HASH: how keys are stored at rest.
enum class KeyHashing { kSha256, kNone };

// The row key for `key`, as lower-case hex of the bytes stored in the table's bytea key column:
// the SHA-256 digest of the key (default: no plaintext API key at rest), or the key's own bytes
// (kNone, for debugging). Hex keeps every byte value safe inside SQL array literals.
std::string RowKeyHex(std::string_view key, KeyHashing hashing);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_KEY_DIGEST_H_
