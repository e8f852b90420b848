// JSON text: escaping arbitrary bytes into a JSON string, for the sidecar's logs and the CLI.
#ifndef RATELIMIT_SCHEMA_JSON_TEXT_H_
#define RATELIMIT_SCHEMA_JSON_TEXT_H_

#include <string>
#include <string_view>

namespace ratelimit {

// Appends `text` to `out` as the inside of a JSON string literal. Control characters are
// escaped; bytes that are not valid UTF-8 become U+FFFD, so that every line is valid JSON
// whatever a peer or a library put in the text.
void AppendJsonEscaped(std::string& out, std::string_view text);

}  // namespace ratelimit

#endif  // RATELIMIT_SCHEMA_JSON_TEXT_H_
