// NewKeyBudget: a token bucket of row inserts per second, bounding the new keys one store adds.
#include "sidecar/pg/new_key_budget.h"

#include <algorithm>
#include <cmath>

namespace ratelimit {

void NewKeyBudget::Refill(uint64_t now_us) {
  if (started_ && now_us > refilled_us_) {
    available_ = std::min<double>(
        per_sec_, available_ + static_cast<double>(now_us - refilled_us_) * per_sec_ / 1e6);
  }
  // A clock that went backwards (it should not) refills nothing rather than a negative amount.
  if (!started_ || now_us > refilled_us_) refilled_us_ = now_us;
  started_ = true;
}

size_t NewKeyBudget::Reserve(size_t wanted, uint64_t now_us) {
  if (!bounded()) return wanted;
  Refill(now_us);
  if (available_ >= per_sec_) reached_ = false;  // A second without a shortfall.
  const size_t granted = std::min(wanted, static_cast<size_t>(std::floor(available_)));
  available_ -= static_cast<double>(granted);
  if (granted < wanted) reached_ = true;
  return granted;
}

void NewKeyBudget::GiveBack(size_t unused) {
  if (!bounded()) return;
  available_ = std::min<double>(per_sec_, available_ + static_cast<double>(unused));
}

}  // namespace ratelimit
