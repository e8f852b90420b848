// Tests of ReadScheduler: quiet clients read at once, floods share each turn's budget fairly.
#include "sidecar/server/read_scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace ratelimit {
namespace {

constexpr size_t kBuffer = 64 * 1024;

// A connection of the simulation: its share, how much its client has sent that is still in the
// socket, and how much it has read so far.
struct Peer {
  ReadScheduler::Share share;
  size_t in_socket = 0;
  size_t read = 0;
};

// One loop turn as libuv runs it: every readable connection in order, each reading as long as
// its grant is not 0 and its read filled what was granted (at most 32 reads, as libuv does).
// Returns the bytes read in the turn.
size_t Turn(ReadScheduler& reads, std::vector<Peer>& peers) {
  reads.StartTurn();
  size_t total = 0;
  for (Peer& p : peers) {
    for (int i = 0; i < 32 && p.in_socket > 0; ++i) {
      const size_t granted = reads.Grant(p.share);
      if (granted == 0) break;  // Held back: UV_ENOBUFS.
      const size_t got = std::min(granted, p.in_socket);
      reads.Spent(p.share, granted, got);
      p.in_socket -= got;
      p.read += got;
      total += got;
      if (got < granted) break;  // The socket is empty.
    }
  }
  return total;
}

TEST(ReadScheduler, AQuietConnectionReadsAtOnceWhateverTheBudgetLeft) {
  ReadScheduler reads(kBuffer);
  std::vector<Peer> floods(200);
  for (Peer& p : floods) p.in_socket = size_t{1} << 30;
  Turn(reads, floods);  // The floods are backlogged now.
  reads.StartTurn();
  for (Peer& p : floods) {  // Spend the whole budget of this turn.
    while (size_t granted = reads.Grant(p.share)) reads.Spent(p.share, granted, granted);
  }
  ReadScheduler::Share quiet;  // Never filled a read.
  EXPECT_EQ(reads.Grant(quiet), ReadScheduler::kQuietReadBytes);
}

TEST(ReadScheduler, ALoneBusyConnectionReadsAWholeBufferEveryTurn) {
  ReadScheduler reads(kBuffer);
  std::vector<Peer> one(1);
  one[0].in_socket = size_t{1} << 30;
  Turn(reads, one);  // Becomes backlogged; the next round's allowance follows.
  for (int turn = 0; turn < 10; ++turn) {
    EXPECT_GE(Turn(reads, one), kBuffer) << "turn " << turn;
  }
  EXPECT_EQ(reads.allowance(), kBuffer);
}

TEST(ReadScheduler, ATurnReadsAtMostItsBudgetPlusOneBuffer) {
  ReadScheduler reads(kBuffer);
  std::vector<Peer> floods(1000);
  for (Peer& p : floods) p.in_socket = size_t{1} << 30;
  // In the first turn every connection is quiet (1 KiB at once each, budget or not), and is
  // backlogged from then on: quiet reads cost at most kQuietReadBytes per connection and turn.
  EXPECT_LE(Turn(reads, floods),
            ReadScheduler::kTurnBudgetBytes + kBuffer + 1000 * ReadScheduler::kQuietReadBytes);
  for (int turn = 1; turn < 200; ++turn) {
    ASSERT_LE(Turn(reads, floods), ReadScheduler::kTurnBudgetBytes + kBuffer) << "turn " << turn;
  }
}

TEST(ReadScheduler, AllowanceIsTheBudgetSharedByTheRoundsReaders) {
  struct Case {
    size_t readers;
    size_t allowance;
  };
  for (const Case& c : std::vector<Case>{
           {1, kBuffer},
           {4, kBuffer},  // 64 KiB each: exactly the budget.
           {16, ReadScheduler::kTurnBudgetBytes / 16},
           {1000, ReadScheduler::kMinAllowanceBytes},  // 262 B each would be too little a read.
       }) {
    SCOPED_TRACE(c.readers);
    ReadScheduler reads(kBuffer);
    std::vector<Peer> floods(c.readers);
    for (Peer& p : floods) p.in_socket = size_t{1} << 30;
    for (int turn = 0; turn < 400; ++turn) Turn(reads, floods);
    EXPECT_EQ(reads.allowance(), c.allowance);
  }
}

TEST(ReadScheduler, EveryFloodReadsItsShareBeforeAnyReadsMuchMore) {
  ReadScheduler reads(kBuffer);
  std::vector<Peer> floods(1000);
  for (Peer& p : floods) p.in_socket = size_t{1} << 30;
  for (int turn = 0; turn < 2000; ++turn) {
    Turn(reads, floods);
    const auto [least, most] = std::minmax_element(
        floods.begin(), floods.end(), [](const Peer& a, const Peer& b) { return a.read < b.read; });
    // Within one round each reads at most its allowance (plus one read that filled it): no
    // connection gets ahead of another by more than about two allowances and a buffer.
    ASSERT_LE(most->read - least->read, 2 * reads.allowance() + kBuffer) << "turn " << turn;
  }
  for (const Peer& p : floods) EXPECT_GT(p.read, 0u);
}

TEST(ReadScheduler, AConnectionWhoseReadEmptiedItsSocketIsQuietAgain) {
  ReadScheduler reads(kBuffer);
  ReadScheduler::Share share;
  reads.StartTurn();
  size_t granted = reads.Grant(share);
  reads.Spent(share, granted, granted);  // Filled: more may be waiting.
  EXPECT_TRUE(share.backlogged);
  reads.StartTurn();
  granted = reads.Grant(share);
  ASSERT_GT(granted, 0u);
  reads.Spent(share, granted, granted / 2);  // Emptied the socket.
  EXPECT_FALSE(share.backlogged);
  ReadScheduler::Share fresh;
  EXPECT_EQ(reads.Grant(share), reads.Grant(fresh)) << "granted as any quiet connection";
}

TEST(ReadScheduler, AQuietConnectionReadsAWholeBufferWhileTheBudgetLasts) {
  ReadScheduler reads(kBuffer);
  reads.StartTurn();
  ReadScheduler::Share quiet;
  EXPECT_EQ(reads.Grant(quiet), kBuffer) << "a pipelining client reads all it sent at once";
  ReadScheduler::Share other;
  reads.Spent(other, ReadScheduler::kTurnBudgetBytes - 10 * 1024,
              ReadScheduler::kTurnBudgetBytes - 10 * 1024);
  EXPECT_EQ(reads.Grant(quiet), 10u * 1024) << "what is left of the budget";
}

TEST(ReadScheduler, AHeldBackConnectionReadsInALaterTurn) {
  ReadScheduler reads(kBuffer);
  std::vector<Peer> floods(100);
  for (Peer& p : floods) p.in_socket = size_t{1} << 30;
  Turn(reads, floods);
  std::vector<size_t> before;
  for (const Peer& p : floods) before.push_back(p.read);
  // The budget is 256 KiB a turn: 100 floods cannot all read in one turn, but every one of
  // them reads again within a few turns.
  for (int turn = 0; turn < 100; ++turn) Turn(reads, floods);
  for (size_t i = 0; i < floods.size(); ++i) EXPECT_GT(floods[i].read, before[i]) << i;
}

}  // namespace
}  // namespace ratelimit
