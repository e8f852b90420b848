// ReadScheduler: how much each connection may read in each loop turn, so floods share fairly.
#ifndef RATELIMIT_SIDECAR_SERVER_READ_SCHEDULER_H_
#define RATELIMIT_SIDECAR_SERVER_READ_SCHEDULER_H_

#include <cstddef>
#include <cstdint>

namespace ratelimit {

// One libuv loop turn serves every readable connection in turn, so a turn that read everything
// the sockets hold would take as long as the work of every flooding connection together, and a
// client sending one request would wait that long for its answer. The scheduler bounds a turn:
// - A quiet connection (its last read emptied its socket) reads at once: while the turn's
//   budget lasts, up to what is left of it (one buffer at most), and kQuietReadBytes even when
//   it is spent. A client that sends a request at a time waits about one turn, whatever the
//   others do, and a pipelining client with no flood around reads all it sent in one read.
// - A backlogged connection (its last read filled its buffer, so more may be waiting) reads
//   at most its allowance per round, and only while the turn's budget (kTurnBudgetBytes, spent
//   by every read) lasts; otherwise it waits for a later turn, its bytes left in the socket.
// - A round ends with the first turn in which no backlogged connection was held back by the
//   budget. The next allowance is the budget shared among the connections that read in the
//   round, from kMinAllowanceBytes to one full buffer: a lone busy connection reads a buffer
//   per turn, a thousand floods read a little each per round.
// Thread-safety: the loop thread only. Pure bookkeeping: no I/O, no clock.
class ReadScheduler {
 public:
  static constexpr size_t kTurnBudgetBytes = 256 * 1024;
  static constexpr size_t kQuietReadBytes = 1024;
  static constexpr size_t kMinAllowanceBytes = 4 * 1024;

  // Each connection's part of the bookkeeping, kept by the connection.
  struct Share {
    bool backlogged = false;
    uint64_t round = 0;  // The round of the last grant,
    size_t bytes = 0;    // and the bytes read in that round.
  };

  // `buffer_bytes` is the most one read may take.
  // REQUIRES: buffer_bytes >= kQuietReadBytes and buffer_bytes >= kMinAllowanceBytes.
  explicit ReadScheduler(size_t buffer_bytes);

  // Begins a loop turn (call before each poll), and a round when the last turn held nobody back.
  void StartTurn();
  // How many bytes `share`'s connection may read now; 0 holds it back for the rest of the turn.
  size_t Grant(Share& share);
  // Records that a read granted `granted` bytes returned `got` (> 0) of them.
  void Spent(Share& share, size_t granted, size_t got);

  size_t allowance() const { return allowance_; }

 private:
  const size_t buffer_bytes_;
  uint64_t round_ = 1;
  size_t allowance_;
  size_t round_readers_ = 0;  // Connections that read in this round.
  size_t budget_left_ = kTurnBudgetBytes;
  bool held_back_ = false;  // A backlogged connection waited for the budget in this turn.
};

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_SERVER_READ_SCHEDULER_H_
