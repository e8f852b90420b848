// KeyDigest: how an API key is stored at rest in the shared table.
#include "sidecar/pg/key_digest.h"

#include <openssl/evp.h>

#include <cstdlib>

namespace ratelimit {
namespace {

std::string Hex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    hex[2 * i] = kDigits[bytes[i] >> 4];
    hex[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return hex;
}

}  // namespace

std::string RowKeyHex(std::string_view key, KeyHashing hashing) {
  if (hashing == KeyHashing::kNone) {
    return Hex(reinterpret_cast<const unsigned char*>(key.data()), key.size());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // EVP_Digest with SHA-256 cannot fail for in-memory input short of memory exhaustion, which
  // OpenSSL reports by returning 0: then fall back to aborting rather than storing plaintext.
  if (EVP_Digest(key.data(), key.size(), digest, &length, EVP_sha256(), nullptr) != 1) abort();
  return Hex(digest, length);
}

}  // namespace ratelimit
