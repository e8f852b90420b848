// Prometheus text for tests: a strict parser of the exposition format and its naming rules.
#include "tests/testing/prometheus_text.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <thread>

namespace ratelimit {
namespace {

// ---------------------------------------------------------------------------------------------
// The exposition format.

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsMetricNameChar(char c) { return IsLetter(c) || c == ':' || IsDigit(c); }
bool IsLabelNameChar(char c) { return IsLetter(c) || IsDigit(c); }

bool ValidMetricName(std::string_view name) {
  if (name.empty() || IsDigit(name[0])) return false;
  return std::all_of(name.begin(), name.end(), IsMetricNameChar);
}

bool ValidLabelName(std::string_view name) {
  if (name.empty() || IsDigit(name[0])) return false;
  return std::all_of(name.begin(), name.end(), IsLabelNameChar);
}

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// A float as the format writes it: decimal digits with an optional fraction and exponent, or
// +Inf, -Inf, Inf, NaN. Stricter than Prometheus itself (no hexadecimal, no "infinity").
bool ParseValue(std::string_view text, double& out) {
  if (text == "+Inf" || text == "Inf") {
    out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (text == "-Inf") {
    out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (text == "NaN") {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  size_t i = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
  size_t digits = 0;
  while (i < text.size() && IsDigit(text[i])) ++i, ++digits;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && IsDigit(text[i])) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    size_t exponent = 0;
    while (i < text.size() && IsDigit(text[i])) ++i, ++exponent;
    if (exponent == 0) return false;
  }
  if (i != text.size()) return false;
  out = std::strtod(std::string(text).c_str(), nullptr);
  return true;
}

bool ValidTimestamp(std::string_view text) {
  if (!text.empty() && text[0] == '-') text.remove_prefix(1);
  return !text.empty() && std::all_of(text.begin(), text.end(), IsDigit);
}

// The line as quoted in an error, cut if long.
std::string Quoted(std::string_view line) {
  constexpr size_t kMax = 160;
  std::string out(line.substr(0, kMax));
  if (line.size() > kMax) out += "...";
  return "`" + out + "`";
}

Status LineError(int line, std::string_view text, const std::string& what) {
  return Status::InvalidArgument("line " + std::to_string(line) + ": " + what + ": " +
                                 Quoted(text));
}

// `labels` as one string, sorted by name: a series' identity. `skip` leaves one label out.
std::string LabelKey(const PromLabels& labels, std::string_view skip = {}) {
  PromLabels sorted;
  for (const auto& label : labels) {
    if (label.first != skip) sorted.push_back(label);
  }
  std::sort(sorted.begin(), sorted.end());
  std::string key;
  for (const auto& [name, value] : sorted) {
    if (!key.empty()) key += ',';
    key += name;
    key += "=\"";
    for (const char c : value) {  // Escaped again, so that no two label sets read the same.
      if (c == '\n') {
        key += "\\n";
        continue;
      }
      if (c == '\\' || c == '"') key += '\\';
      key += c;
    }
    key += '"';
  }
  return key;
}

bool HasLabels(const PromSample& sample, const PromLabels& wanted) {
  for (const auto& want : wanted) {
    if (std::find(sample.labels.begin(), sample.labels.end(), want) == sample.labels.end()) {
      return false;
    }
  }
  return true;
}

// One line, read token by token.
class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}
  void SkipBlanks() {
    while (pos_ < text_.size() && IsBlank(text_[pos_])) ++pos_;
  }
  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }
  void Advance() { ++pos_; }
  // Characters up to the next blank or the end.
  std::string_view Word() {
    const size_t start = pos_;
    while (pos_ < text_.size() && !IsBlank(text_[pos_])) ++pos_;
    return text_.substr(start, pos_ - start);
  }
  template <typename Pred>
  std::string_view While(Pred pred) {
    const size_t start = pos_;
    while (pos_ < text_.size() && pred(text_[pos_])) ++pos_;
    return text_.substr(start, pos_ - start);
  }
  std::string_view Rest() {
    std::string_view rest = text_.substr(std::min(pos_, text_.size()));
    pos_ = text_.size();
    return rest;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

// Unescapes a HELP text: \\ and \n only. Empty optional on any other escape.
std::optional<std::string> UnescapeHelp(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
      continue;
    }
    if (i + 1 >= text.size()) return std::nullopt;
    const char next = text[++i];
    if (next == '\\') {
      out += '\\';
    } else if (next == 'n') {
      out += '\n';
    } else {
      return std::nullopt;
    }
  }
  return out;
}

class Parser {
 public:
  Result<std::vector<PromFamily>> Parse(std::string_view body) {
    int number = 0;
    size_t start = 0;
    while (start < body.size()) {
      ++number;
      const size_t end = body.find('\n', start);
      if (end == std::string_view::npos) {
        return LineError(number, body.substr(start), "the body does not end in a newline");
      }
      if (Status line = Line(number, body.substr(start, end - start)); !line.ok()) return line;
      start = end + 1;
    }
    if (Status closed = CloseCurrent(); !closed.ok()) return closed;
    return std::move(families_);
  }

 private:
  struct State {
    size_t index = 0;  // Into families_.
    int first_line = 0;
    int help_line = 0;
    int type_line = 0;
  };

  Status Line(int number, std::string_view text) {
    Cursor c(text);
    c.SkipBlanks();
    if (c.AtEnd()) return Status::Ok();  // Blank lines are ignored.
    if (c.Peek() == '#') return Comment(number, text, c);
    return Sample(number, text, c);
  }

  Status Comment(int number, std::string_view text, Cursor& c) {
    c.Advance();
    c.SkipBlanks();
    const std::string_view keyword = c.Word();
    if (keyword != "HELP" && keyword != "TYPE") return Status::Ok();  // A plain comment.
    c.SkipBlanks();
    const std::string name(c.Word());
    if (!ValidMetricName(name)) {
      return LineError(number, text, "# " + std::string(keyword) + " without a valid metric name");
    }
    if (Status opened = Open(number, text, name, keyword); !opened.ok()) return opened;
    State& state = states_.at(name);
    PromFamily& family = families_[state.index];
    c.SkipBlanks();
    if (keyword == "HELP") {
      std::optional<std::string> help = UnescapeHelp(c.Rest());
      if (!help) return LineError(number, text, "HELP text with an escape other than \\\\ or \\n");
      family.help = std::move(*help);
      state.help_line = number;
      return Status::Ok();
    }
    const std::string type(c.Word());
    c.SkipBlanks();
    if (!c.AtEnd()) return LineError(number, text, "text after the type");
    static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                                 "untyped"};
    if (!kTypes.count(type)) return LineError(number, text, "unknown type \"" + type + "\"");
    if (type == "counter" && !EndsWith(name, "_total")) {
      return LineError(number, text, "counter " + name + " is not named ..._total");
    }
    family.type = type;
    state.type_line = number;
    return Status::Ok();
  }

  // A # HELP or # TYPE line for `name`: starts its family, or adds to the current one.
  Status Open(int number, std::string_view text, const std::string& name,
              std::string_view keyword) {
    auto found = states_.find(name);
    if (found == states_.end()) {
      if (Status closed = CloseCurrent(); !closed.ok()) return closed;
      families_.push_back(PromFamily{name, "", "", {}});
      current_ = &states_.emplace(name, State{families_.size() - 1, number}).first->second;
      return Status::Ok();
    }
    State& state = found->second;
    if (&state != current_) {
      return LineError(number, text,
                       "family " + name + " began at line " + std::to_string(state.first_line) +
                           " and another family came since: a family's lines must be contiguous");
    }
    const int earlier = keyword == "HELP" ? state.help_line : state.type_line;
    if (earlier != 0) {
      return LineError(number, text,
                       "second # " + std::string(keyword) + " for " + name +
                           " (the first is at line " + std::to_string(earlier) + ")");
    }
    // A sample needs both lines before it, so neither can come after the family's samples.
    return Status::Ok();
  }

  static bool Belongs(const PromFamily& family, std::string_view sample) {
    const std::string& f = family.name;
    auto suffixed = [&](std::string_view suffix) {
      return sample.size() == f.size() + suffix.size() && sample.substr(0, f.size()) == f &&
             sample.substr(f.size()) == suffix;
    };
    if (family.type == "histogram") {
      return suffixed("_bucket") || suffixed("_sum") || suffixed("_count");
    }
    if (family.type == "summary") return sample == f || suffixed("_sum") || suffixed("_count");
    return sample == f;
  }

  Status Sample(int number, std::string_view text, Cursor& c) {
    PromSample sample;
    sample.line = number;
    sample.name = c.While(IsMetricNameChar);
    if (!ValidMetricName(sample.name)) return LineError(number, text, "expected a metric name");
    if (c.Peek() == '{') {
      c.Advance();
      if (Status labels = Labels(number, text, c, sample.labels); !labels.ok()) return labels;
    }
    if (!IsBlank(c.Peek())) {
      return LineError(number, text,
                       c.AtEnd() ? "no value" : "unexpected character after the metric name");
    }
    c.SkipBlanks();
    const std::string_view value = c.Word();
    if (value.empty()) return LineError(number, text, "no value");
    if (!ParseValue(value, sample.value)) {
      return LineError(number, text, "value \"" + std::string(value) + "\" is not a float");
    }
    c.SkipBlanks();
    if (!c.AtEnd()) {
      const std::string_view timestamp = c.Word();
      if (!ValidTimestamp(timestamp)) {
        return LineError(number, text,
                         "\"" + std::string(timestamp) + "\" after the value is not a timestamp");
      }
      c.SkipBlanks();
      if (!c.AtEnd()) return LineError(number, text, "text after the timestamp");
    }
    return Add(number, text, std::move(sample));
  }

  Status Labels(int number, std::string_view text, Cursor& c, PromLabels& labels) {
    while (true) {
      c.SkipBlanks();
      if (c.Peek() == '}') {
        c.Advance();
        return Status::Ok();
      }
      const std::string name(c.While(IsLabelNameChar));
      if (!ValidLabelName(name)) return LineError(number, text, "expected a label name");
      if (name.rfind("__", 0) == 0) {
        return LineError(number, text, "label name " + name + " is reserved (starts with __)");
      }
      for (const auto& label : labels) {
        if (label.first == name) return LineError(number, text, "label " + name + " twice");
      }
      c.SkipBlanks();
      if (c.Peek() != '=') return LineError(number, text, "expected = after label " + name);
      c.Advance();
      c.SkipBlanks();
      if (c.Peek() != '"') return LineError(number, text, "expected \" to open label " + name);
      c.Advance();
      std::string value;
      while (true) {
        if (c.AtEnd()) return LineError(number, text, "label value of " + name + " not closed");
        const char ch = c.Peek();
        c.Advance();
        if (ch == '"') break;
        if (ch != '\\') {
          value += ch;
          continue;
        }
        const char next = c.Peek();
        c.Advance();
        if (next == '\\') {
          value += '\\';
        } else if (next == '"') {
          value += '"';
        } else if (next == 'n') {
          value += '\n';
        } else {
          return LineError(
              number, text,
              "label value of " + name + " has an escape other than \\\\, \\\" or \\n");
        }
      }
      labels.emplace_back(name, std::move(value));
      c.SkipBlanks();
      if (c.Peek() == ',') {
        c.Advance();
      } else if (c.Peek() != '}') {
        return LineError(number, text, "expected , or } after the value of label " + name);
      }
    }
  }

  Status Add(int number, std::string_view text, PromSample sample) {
    if (current_ == nullptr || !Belongs(families_[current_->index], sample.name)) {
      for (const auto& [name, state] : states_) {
        if (&state != current_ && Belongs(families_[state.index], sample.name)) {
          return LineError(number, text,
                           "a sample of family " + name + ", which began at line " +
                               std::to_string(state.first_line) +
                               ", after another family: a family's lines must be contiguous");
        }
      }
      return LineError(number, text,
                       "sample " + sample.name +
                           " belongs to no family declared before it with # HELP and # TYPE");
    }
    State& state = *current_;
    PromFamily& family = families_[state.index];
    if (state.help_line == 0) {
      return LineError(number, text, "sample before the # HELP of " + family.name);
    }
    if (state.type_line == 0) {
      return LineError(number, text, "sample before the # TYPE of " + family.name);
    }
    const bool has_le = std::any_of(sample.labels.begin(), sample.labels.end(),
                                    [](const auto& label) { return label.first == "le"; });
    if (family.type == "histogram") {
      const bool bucket = EndsWith(sample.name, "_bucket");
      if (bucket && !has_le) return LineError(number, text, "a histogram bucket without le");
      if (!bucket && has_le) return LineError(number, text, "le on a histogram's _sum or _count");
      if (sample.name != family.name + "_sum" &&
          !(sample.value >= 0 && std::isfinite(sample.value))) {
        return LineError(number, text, "a histogram count that is negative, infinite or NaN");
      }
    }
    if (family.type == "counter" && !(sample.value >= 0)) {
      return LineError(number, text, "counter " + family.name + " is negative or NaN");
    }
    const std::string key = sample.name + "{" + LabelKey(sample.labels) + "}";
    if (const auto [it, inserted] = series_.emplace(key, number); !inserted) {
      return LineError(number, text,
                       "duplicate series (also at line " + std::to_string(it->second) + ")");
    }
    family.samples.push_back(std::move(sample));
    return Status::Ok();
  }

  // The current family is complete: check that it was declared and, for a histogram, that each
  // of its series is whole.
  Status CloseCurrent() {
    if (current_ == nullptr) return Status::Ok();
    const State& state = *current_;
    current_ = nullptr;
    const PromFamily& family = families_[state.index];
    if (state.help_line == 0) {
      return Status::InvalidArgument("line " + std::to_string(state.first_line) + ": family " +
                                     family.name + " has no # HELP");
    }
    if (state.type_line == 0) {
      return Status::InvalidArgument("line " + std::to_string(state.first_line) + ": family " +
                                     family.name + " has no # TYPE");
    }
    if (family.type == "histogram") return CheckHistogram(family);
    return Status::Ok();
  }

  static Status CheckHistogram(const PromFamily& family) {
    struct Series {
      std::string labels;  // For messages.
      int first_line = 0;
      int last_bucket_line = 0;
      double last_le = -std::numeric_limits<double>::infinity();
      double last_count = 0;
      size_t buckets = 0;
      const PromSample* sum = nullptr;
      const PromSample* count = nullptr;
    };
    std::vector<Series> series;
    std::map<std::string, size_t> index;
    auto error = [&](const PromSample& s, const std::string& what) {
      return Status::InvalidArgument("line " + std::to_string(s.line) + ": " + what + ": " +
                                     Quoted(s.name + "{" + LabelKey(s.labels) + "} ..."));
    };
    for (const PromSample& s : family.samples) {
      const std::string key = LabelKey(s.labels, "le");
      auto [it, added] = index.emplace(key, series.size());
      if (added) series.push_back(Series{"{" + key + "}", s.line});
      Series& one = series[it->second];
      if (s.name == family.name + "_sum") {
        one.sum = &s;
      } else if (s.name == family.name + "_count") {
        one.count = &s;
      } else {
        const auto le_label = std::find_if(s.labels.begin(), s.labels.end(),
                                           [](const auto& label) { return label.first == "le"; });
        double le = 0;
        if (!ParseValue(le_label->second, le) || std::isnan(le)) {
          return error(s, "le=\"" + le_label->second + "\" is not a float");
        }
        if (one.buckets > 0 && !(le > one.last_le)) {
          return error(s, "le of " + family.name + one.labels + " not ascending");
        }
        if (s.value < one.last_count) {
          return error(s, "bucket count of " + family.name + one.labels + " decreases");
        }
        ++one.buckets;
        one.last_le = le;
        one.last_count = s.value;
        one.last_bucket_line = s.line;
      }
    }
    for (const Series& one : series) {
      const std::string name = family.name + one.labels;
      auto at = [](int line) { return "line " + std::to_string(line) + ": "; };
      if (one.buckets == 0) {
        return Status::InvalidArgument(at(one.first_line) + "histogram " + name +
                                       " has no _bucket");
      }
      if (!std::isinf(one.last_le) || one.last_le < 0) {
        return Status::InvalidArgument(at(one.last_bucket_line) + "the last bucket of histogram " +
                                       name + " is not le=\"+Inf\"");
      }
      if (one.count == nullptr) {
        return Status::InvalidArgument(at(one.first_line) + "histogram " + name + " has no _count");
      }
      if (one.count->value != one.last_count) {
        return Status::InvalidArgument(at(one.count->line) + "_count of histogram " + name +
                                       " differs from its +Inf bucket");
      }
      if (one.sum == nullptr) {
        return Status::InvalidArgument(at(one.first_line) + "histogram " + name + " has no _sum");
      }
    }
    return Status::Ok();
  }

  std::vector<PromFamily> families_;
  std::map<std::string, State> states_;  // By family name; addresses stay put.
  State* current_ = nullptr;             // The family whose lines come now.
  std::map<std::string, int> series_;    // name{labels} -> line.
};

}  // namespace

const PromFamily* PromText::Family(std::string_view name) const {
  for (const PromFamily& family : families_) {
    if (family.name == name) return &family;
  }
  return nullptr;
}

std::optional<double> PromText::Value(std::string_view name, const PromLabels& labels) const {
  const std::string wanted = LabelKey(labels);
  for (const PromFamily& family : families_) {
    for (const PromSample& sample : family.samples) {
      if (sample.name == name && LabelKey(sample.labels) == wanted) return sample.value;
    }
  }
  return std::nullopt;
}

double PromText::Sum(std::string_view name, const PromLabels& labels) const {
  double sum = 0;
  for (const PromFamily& family : families_) {
    for (const PromSample& sample : family.samples) {
      if (sample.name == name && HasLabels(sample, labels)) sum += sample.value;
    }
  }
  return sum;
}

size_t PromText::Count(std::string_view name, const PromLabels& labels) const {
  size_t count = 0;
  for (const PromFamily& family : families_) {
    for (const PromSample& sample : family.samples) {
      count += sample.name == name && HasLabels(sample, labels);
    }
  }
  return count;
}

std::string PromText::Dump(std::string_view prefix) const {
  std::string out;
  for (const PromFamily& family : families_) {
    for (const PromSample& sample : family.samples) {
      if (sample.name.rfind(prefix, 0) != 0) continue;
      char value[32];
      std::snprintf(value, sizeof(value), "%.17g", sample.value);
      out += sample.name + "{" + LabelKey(sample.labels) + "} " + value + "\n";
    }
  }
  return out;
}

Result<PromText> ParsePrometheusText(std::string_view body) {
  Result<std::vector<PromFamily>> families = Parser().Parse(body);
  if (!families.ok()) return families.status();
  PromText text;
  text.families_ = std::move(*families);
  return text;
}

}  // namespace ratelimit
