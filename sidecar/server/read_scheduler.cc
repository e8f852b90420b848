// ReadScheduler: how much each connection may read in each loop turn, so floods share fairly.
#include "sidecar/server/read_scheduler.h"

#include <algorithm>

namespace ratelimit {

ReadScheduler::ReadScheduler(size_t buffer_bytes)
    : buffer_bytes_(buffer_bytes), allowance_(buffer_bytes) {}

void ReadScheduler::StartTurn() {
  if (!held_back_) {
    ++round_;
    allowance_ = std::clamp(kTurnBudgetBytes / std::max<size_t>(round_readers_, 1),
                            kMinAllowanceBytes, buffer_bytes_);
    round_readers_ = 0;
  }
  held_back_ = false;
  budget_left_ = kTurnBudgetBytes;
}

size_t ReadScheduler::Grant(Share& share) {
  if (share.round != round_) {
    share.round = round_;
    share.bytes = 0;
  }
  // A quiet connection reads what is left of the turn's budget, one buffer at most (an
  // ordinary pipelined client thus reads all it sent at once), and kQuietReadBytes even when
  // nothing is left.
  if (!share.backlogged) return std::clamp(budget_left_, kQuietReadBytes, buffer_bytes_);
  if (share.bytes >= allowance_) return 0;  // Its part of this round is read.
  if (budget_left_ == 0) {
    held_back_ = true;
    return 0;
  }
  return std::min(allowance_ - share.bytes, buffer_bytes_);
}

void ReadScheduler::Spent(Share& share, size_t granted, size_t got) {
  if (share.bytes == 0) ++round_readers_;
  share.bytes += got;
  share.backlogged = got >= granted;
  budget_left_ -= std::min(got, budget_left_);
}

}  // namespace ratelimit
