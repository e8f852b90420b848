// Recorder: a CheckCallback that keeps every answer; and CheckResult printing for gtest.
#ifndef RATELIMIT_TESTS_TESTING_RECORDER_H_
#define RATELIMIT_TESTS_TESTING_RECORDER_H_

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

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_RECORDER_H_
