// Recorder: a CheckCallback that keeps every answer; and CheckResult printing for gtest.
#ifndef RATELIMIT_TESTS_TESTING_RECORDER_H_
#define RATELIMIT_TESTS_TESTING_RECORDER_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <vector>

#include "schema/check.h"
#include "sidecar/core/engine.h"

namespace ratelimit {

// Lets gtest print results in failure messages instead of dumping their bytes.
inline void PrintTo(const CheckResult& r, std::ostream* os) {
  *os << "{allowed=" << r.allowed << " status=" << CheckStatusName(r.status) << " limit=" << r.limit
      << " remaining=" << r.remaining << " retry_after_ms=" << r.retry_after_ms
      << " reset_after_ms=" << r.reset_after_ms << " source=" << SourceName(r.source) << "}";
}

// Records every answer an engine delivers, in the order it arrived.
class Recorder final : public CheckCallback {
 public:
  struct Answer {
    uint64_t tag;
    CheckResult result;
  };

  void OnCheckDone(uint64_t tag, const CheckResult& result) override {
    answers.push_back(Answer{tag, result});
  }

  std::vector<uint64_t> tags() const {
    std::vector<uint64_t> out;
    for (const Answer& a : answers) out.push_back(a.tag);
    return out;
  }

  std::vector<Answer> answers;
};

// Checks `query` with `engine`, expecting the answer before Check returns (from memory, or a
// refusal), and returns it; a default result with a test failure when there was none.
inline CheckResult AnswerAtOnce(Engine& engine, const CheckQuery& query) {
  Recorder done;
  engine.Check(query, 7, done);
  if (done.answers.size() != 1) {
    ADD_FAILURE() << "the check was not answered before Check returned";
    return CheckResult{};
  }
  return done.answers[0].result;
}

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_RECORDER_H_
