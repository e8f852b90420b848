// Config docs: --help and the README's configuration table, both written from ConfigVariables().
#include "sidecar/config/config_docs.h"

#include <cstdio>

#include "sidecar/config/config.h"

namespace ratelimit {
namespace {

constexpr std::string_view kEmpty = "(empty)";

// A table cell's text: a '|' would end the cell.
std::string Cell(std::string_view text) {
  std::string cell;
  for (const char c : text) {
    if (c == '|') cell += '\\';
    cell += c;
  }
  return cell;
}

}  // namespace

std::string PlainText(std::string_view markdown) {
  std::string plain;
  for (size_t i = 0; i < markdown.size(); ++i) {
    if (markdown[i] == '[') {
      const size_t middle = markdown.find("](", i);
      const size_t end = markdown.find(')', middle);
      if (end != std::string_view::npos && markdown.find_first_of("[]", i + 1) == middle) {
        plain += PlainText(markdown.substr(i + 1, middle - i - 1));
        i = end;
        continue;
      }
    }
    if (markdown[i] != '`') plain += markdown[i];
  }
  return plain;
}

std::string ConfigHelp() {
  std::string help;
  for (const ConfigVariable& v : ConfigVariables()) {
    const std::string_view shown = v.default_value.empty() ? kEmpty : v.default_value;
    char head[256];
    std::snprintf(head, sizeof(head), "  %-30.*s default %-34.*s ", static_cast<int>(v.name.size()),
                  v.name.data(), static_cast<int>(shown.size()), shown.data());
    help += head + PlainText(v.meaning) + " Allowed: " + v.allowed + ".\n";
  }
  return help;
}

std::string ConfigMarkdownTable() {
  std::string table =
      "| Variable | Default | Allowed | Meaning |\n"
      "|---|---|---|---|\n";
  for (const ConfigVariable& v : ConfigVariables()) {
    const std::string shown =
        v.default_value.empty() ? std::string(kEmpty) : "`" + Cell(v.default_value) + "`";
    table += "| `" + std::string(v.name) + "` | " + shown + " | " + Cell(v.allowed) + " | " +
             Cell(v.meaning) + " |\n";
  }
  return table;
}

}  // namespace ratelimit
