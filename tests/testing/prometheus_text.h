// Prometheus text for tests: a strict parser of the exposition format and its naming rules.
#ifndef RATELIMIT_TESTS_TESTING_PROMETHEUS_TEXT_H_
#define RATELIMIT_TESTS_TESTING_PROMETHEUS_TEXT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schema/status.h"

namespace ratelimit {

// Label names and values as read (values unescaped), in the order of the line.
using PromLabels = std::vector<std::pair<std::string, std::string>>;

struct PromSample {
  std::string name;  // As written: for a histogram, the family name plus _bucket, _sum or _count.
  PromLabels labels;
  double value = 0;
  int line = 0;  // 1-based line of the body.
};

struct PromFamily {
  std::string name;
  std::string help;  // Unescaped.
  std::string type;  // counter, gauge, histogram, summary or untyped.
  std::vector<PromSample> samples;
};

// A parsed /metrics body: its families in the order of the body.
class PromText {
 public:
  const std::vector<PromFamily>& families() const { return families_; }
  // The family named `name`, or null.
  const PromFamily* Family(std::string_view name) const;
  // The value of the sample called `name` whose labels are exactly `labels` (in any order);
  // nullopt when there is none.
  std::optional<double> Value(std::string_view name, const PromLabels& labels = {}) const;
  // The sum of the samples called `name` that carry at least `labels`, and how many there are.
  double Sum(std::string_view name, const PromLabels& labels = {}) const;
  size_t Count(std::string_view name, const PromLabels& labels = {}) const;
  // The samples whose names start with `prefix`, one `name{labels} value` a line, for failure
  // messages.
  std::string Dump(std::string_view prefix = "") const;

 private:
  friend Result<PromText> ParsePrometheusText(std::string_view body);
  std::vector<PromFamily> families_;
};

// Parses a body in the text exposition format 0.0.4 and checks what that format and the
// Prometheus naming conventions require:
//   - every line ends in a newline; blank lines and other comments are allowed;
//   - metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and do
//     not start with "__"; no label twice on one sample;
//   - label values escape only \\, \" and \n, HELP texts only \\ and \n;
//   - values are floats, +Inf, -Inf or NaN, optionally followed by an integer timestamp;
//   - every family has exactly one # HELP and one # TYPE, both before its samples; a family's
//     lines (HELP, TYPE, samples) are contiguous; every sample belongs to the family declared
//     last (for a histogram, name_bucket, name_sum and name_count);
//   - counters are named ..._total and their values are not negative (nor NaN);
//   - each histogram series (its labels without le) has _bucket samples whose le are floats,
//     strictly ascending in the order written and ending in +Inf, with counts that never
//     decrease, a _count equal to the +Inf bucket, and a _sum; le appears on no other sample;
//   - no two samples have one name and one label set.
// A violation is an InvalidArgument naming the 1-based line and quoting it.
Result<PromText> ParsePrometheusText(std::string_view body);

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_PROMETHEUS_TEXT_H_
