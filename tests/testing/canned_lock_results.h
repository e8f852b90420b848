// CannedLockResults: what a batch transaction's lock pipeline returns, built without a server.
#ifndef RATELIMIT_TESTS_TESTING_CANNED_LOCK_RESULTS_H_
#define RATELIMIT_TESTS_TESTING_CANNED_LOCK_RESULTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sidecar/pg/batch_transaction.h"
#include "tests/testing/fake_db_session.h"

namespace ratelimit {

using CannedRows = std::vector<std::vector<std::optional<std::string>>>;

// One result per LockPipeline statement: `rows` locked (key, tokens, updated_us, capacity,
// window_ms and algorithm, as text; nullopt is NULL; a row without its algorithm is a token
// bucket's, "0"), and the database time `now_us`, or no row for it.
inline std::vector<PgResultPtr> CannedLockResults(const CannedRows& rows,
                                                  std::optional<int64_t> now_us) {
  std::vector<PgResultPtr> results(LockPipeline::kStatements);
  results[LockPipeline::kBegin] = CommandResult();
  results[LockPipeline::kTimeouts] = CannedResult(2, {{"200", "200"}});
  results[LockPipeline::kInsert] = CommandResult();
  CannedRows with_algorithm = rows;
  for (auto& row : with_algorithm) {
    if (row.size() == LockPipeline::kAlgorithm) row.push_back("0");
  }
  results[LockPipeline::kLock] = CannedResult(LockPipeline::kAlgorithm + 1, with_algorithm);
  results[LockPipeline::kClock] =
      now_us ? CannedResult(1, {{std::to_string(*now_us)}}) : CannedResult(1, {});
  return results;
}

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_CANNED_LOCK_RESULTS_H_
