// StderrCapture and ParseJsonLine: what the sidecar logged, read back and parsed in a test.
#ifndef RATELIMIT_TESTS_TESTING_STDERR_CAPTURE_H_
#define RATELIMIT_TESTS_TESTING_STDERR_CAPTURE_H_

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ratelimit {

// Points file descriptor 2 at a temporary file while alive, so that a test reads back exactly
// the bytes that write(STDERR_FILENO, ...) produced. Not for tests that run threads which log
// after the capture ends.
class StderrCapture {
 public:
  StderrCapture() : file_(std::tmpfile()), saved_(dup(STDERR_FILENO)) {
    if (file_ == nullptr || saved_ < 0) std::abort();
    std::fflush(stderr);
    if (dup2(fileno(file_), STDERR_FILENO) < 0) std::abort();
  }
  ~StderrCapture() {
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    std::fclose(file_);
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  // Everything written so far.
  std::string Text() const {
    std::string text;
    char buf[4096];
    for (off_t at = 0;;) {
      const ssize_t n = pread(fileno(file_), buf, sizeof(buf), at);
      if (n <= 0) return text;
      text.append(buf, static_cast<size_t>(n));
      at += n;
    }
  }

  // Text() split at '\n', without the newlines; a last line without one is kept as is.
  std::vector<std::string> Lines() const {
    std::vector<std::string> lines;
    const std::string text = Text();
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      lines.push_back(text.substr(start, end - start));
      start = end + 1;
    }
    return lines;
  }

  // How many times `what` was written so far.
  size_t Count(std::string_view what) const {
    const std::string text = Text();
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

 private:
  std::FILE* file_;
  int saved_;
};

// One log line's fields in order, each value as JSON text would give it: strings unescaped
// (\uXXXX as UTF-8), numbers and true/false as written.
using JsonFields = std::vector<std::pair<std::string, std::string>>;

namespace json_internal {

inline void AppendUtf8(std::string& out, unsigned code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xc0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3f));
  } else {
    out += static_cast<char>(0xe0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code & 0x3f));
  }
}

// Reads a JSON string literal at text[at] ('"'), advancing `at` past it.
inline std::optional<std::string> ReadString(std::string_view text, size_t& at) {
  if (at >= text.size() || text[at] != '"') return std::nullopt;
  std::string out;
  for (++at; at < text.size(); ++at) {
    const char c = text[at];
    if (c == '"') {
      ++at;
      return out;
    }
    if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;  // Must be escaped.
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++at >= text.size()) return std::nullopt;
    switch (text[at]) {
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        if (at + 4 >= text.size()) return std::nullopt;
        const std::string hex(text.substr(at + 1, 4));
        char* end = nullptr;
        const unsigned long code = std::strtoul(hex.c_str(), &end, 16);
        if (end != hex.c_str() + 4) return std::nullopt;
        AppendUtf8(out, static_cast<unsigned>(code));
        at += 4;
        break;
      }
      default:
        return std::nullopt;
    }
  }
  return std::nullopt;
}

}  // namespace json_internal

// Parses one flat JSON object of string, integer and boolean values, as Log writes them;
// nullopt when `line` is not exactly that.
inline std::optional<JsonFields> ParseJsonLine(std::string_view line) {
  JsonFields fields;
  size_t at = 0;
  if (line.empty() || line[at++] != '{') return std::nullopt;
  while (true) {
    std::optional<std::string> key = json_internal::ReadString(line, at);
    if (!key || at >= line.size() || line[at++] != ':') return std::nullopt;
    std::string value;
    if (at < line.size() && line[at] == '"') {
      std::optional<std::string> text = json_internal::ReadString(line, at);
      if (!text) return std::nullopt;
      value = *text;
    } else {
      const size_t end = line.find_first_of(",}", at);
      if (end == std::string_view::npos) return std::nullopt;
      value = std::string(line.substr(at, end - at));
      const bool number =
          !value.empty() && value.find_first_not_of("-0123456789") == std::string::npos;
      if (!number && value != "true" && value != "false") return std::nullopt;
      at = end;
    }
    fields.emplace_back(std::move(*key), std::move(value));
    if (at >= line.size()) return std::nullopt;
    if (line[at] == '}') return at + 1 == line.size() ? std::optional(fields) : std::nullopt;
    if (line[at++] != ',') return std::nullopt;
  }
}

// The value of field `key`, or nullopt.
inline std::optional<std::string> Field(const JsonFields& fields, std::string_view key) {
  for (const auto& [k, v] : fields) {
    if (k == key) return v;
  }
  return std::nullopt;
}

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_STDERR_CAPTURE_H_
