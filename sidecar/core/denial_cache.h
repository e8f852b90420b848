// DenialCache: "denied until T" for one key, remembered when the store granted it nothing.
#ifndef RATELIMIT_SIDECAR_CORE_DENIAL_CACHE_H_
#define RATELIMIT_SIDECAR_CORE_DENIAL_CACHE_H_

#include <cstdint>

namespace ratelimit {

// When the store grants nothing, the key is "denied until" the time the store says min_grant
// tokens will be there, plus a random extra of up to the time min_grant takes to refill (at most
// R; see DenialJitter); until then checks are denied in memory, with retry_after_ms counting
// down to it, so a flood of denied traffic costs the database nothing. Without the extra, every
// sidecar denied on a hot key would come back at the same moment, and whichever answer travels
// fastest would win every round; with it, who asks first is a fair draw; and a sidecar granted
// tokens last time draws from the upper half of the range, one denied from the lower, so that
// the losers of a round ask first in the next. So a denial lasts at most about 2R longer than
// `cost` tokens alone would take.
//
// Thread-safety: the loop thread only; a value owned by the engine's state of its key.
class DenialCache {
 public:
  // Whether checks are denied in memory at `now`.
  bool Denies(int64_t now) const { return until_us_ > now; }
  // Local clock; 0 when there is no denial.
  int64_t until_us() const { return until_us_; }
  // Whether the last fetch decided was granted tokens (the jitter's upper half).
  bool granted_last() const { return granted_last_; }

  // The store granted tokens.
  void OnGranted() {
    until_us_ = 0;
    granted_last_ = true;
  }
  // The store granted nothing: denied until `until_us` (jitter included).
  void OnDenied(int64_t until_us) {
    until_us_ = until_us;
    granted_last_ = false;
  }
  // A new policy: the denial of the old one no longer holds.
  void Forget() { until_us_ = 0; }

 private:
  int64_t until_us_ = 0;
  bool granted_last_ = false;
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_DENIAL_CACHE_H_
