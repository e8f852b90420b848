// DemandEstimate: one key's local demand, in tokens asked per microsecond, smoothed per fetch.
#ifndef RATELIMIT_SIDECAR_CORE_DEMAND_ESTIMATE_H_
#define RATELIMIT_SIDECAR_CORE_DEMAND_ESTIMATE_H_

#include <algorithm>
#include <cstdint>

namespace ratelimit {

// Every check's cost is counted (denied ones too); at each fetch, the demand since the previous
// fetch is blended with the estimate so far: at least half new, and all new once a whole
// refresh interval R has passed, so a ramp is followed within a fetch, and the estimate is
// smoothed over about one R.
//
// Thread-safety: the loop thread only; a value owned by the engine's state of its key.
class DemandEstimate {
 public:
  // Tokens asked per microsecond; 0 until a second fetch has measured something.
  double per_us() const { return per_us_; }

  // A check asked for `cost` tokens.
  void Ask(uint32_t cost) { requested_ += cost; }

  // A fetch is sent at `now`: the demand since the previous one (if any, and if time has
  // passed) is blended into the estimate, and counting starts again.
  void OnFetch(int64_t now, int64_t refresh_us) {
    if (fetched_before_ && now > last_fetch_us_) {
      const double elapsed = static_cast<double>(now - last_fetch_us_);
      const double sample = static_cast<double>(requested_) / elapsed;
      const double alpha = std::clamp(elapsed / static_cast<double>(refresh_us), 0.5, 1.0);
      per_us_ = per_us_ * (1 - alpha) + sample * alpha;
    }
    requested_ = 0;
    last_fetch_us_ = now;
    fetched_before_ = true;
  }

 private:
  double per_us_ = 0;
  uint64_t requested_ = 0;  // Tokens asked for since last_fetch_us_.
  int64_t last_fetch_us_ = 0;
  bool fetched_before_ = false;  // Some fetch was sent: last_fetch_us_ is meaningful.
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CORE_DEMAND_ESTIMATE_H_
