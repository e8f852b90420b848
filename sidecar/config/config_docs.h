// Config docs: --help and the README's configuration table, both written from ConfigVariables().
#ifndef RATELIMIT_SIDECAR_CONFIG_CONFIG_DOCS_H_
#define RATELIMIT_SIDECAR_CONFIG_CONFIG_DOCS_H_

#include <string>
#include <string_view>

namespace ratelimit {

// One line per variable, e.g.
//   "  RATE_LIMIT_WINDOW_MS           default 60000                              Default policy:
//   window in milliseconds. ... Allowed: an integer from 1 to 4294967295 (milliseconds).\n"
// (one line, wrapped here), "(empty)" for an empty default, the meaning as plain text.
std::string ConfigHelp();

// The README's configuration table in Markdown: a header, then one row per variable with its
// name, default, what is allowed and its meaning. README.md holds exactly this text between its
// config-table markers (scripts/config-table.sh refreshes it; a test compares the two).
std::string ConfigMarkdownTable();

// `markdown` without its markup, for a terminal: `code` loses its backticks and
// [text](target) becomes text.
std::string PlainText(std::string_view markdown);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_CONFIG_CONFIG_DOCS_H_
