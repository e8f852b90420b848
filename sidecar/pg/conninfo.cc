// Conninfo: checks DATABASE_URL without ever echoing it, takes out ORM parameters, redacts it.
#include "sidecar/pg/conninfo.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <optional>
#include <utility>

namespace ratelimit {
namespace {

struct OptionsDeleter {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};
using OptionsPtr = std::unique_ptr<PQconninfoOption, OptionsDeleter>;

OptionsPtr Parse(const std::string& conninfo) {
  char* error = nullptr;
  OptionsPtr options(PQconninfoParse(conninfo.c_str(), &error));
  PQfreemem(error);  // Deliberately unused: it may quote the password.
  return options;
}

}  // namespace

Status ValidateConninfo(const std::string& conninfo) {
  if (conninfo.empty() || Parse(conninfo) != nullptr) return Status::Ok();
  return Status::InvalidArgument(
      "DATABASE_URL is invalid: expected a libpq connection string or URI (the value is not "
      "shown: it may hold a password)");
}

std::string ConninfoPassword(const std::string& conninfo) {
  if (OptionsPtr options = Parse(conninfo)) {
    for (PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
      if (std::string(o->keyword) == "password" && o->val != nullptr && *o->val != '\0') {
        return o->val;
      }
    }
  }
  const char* env = std::getenv("PGPASSWORD");
  return env != nullptr ? env : "";
}

namespace {

// Appends `value` as libpq's conninfo syntax needs it: bare when that is unambiguous, else in
// single quotes with ' and \ escaped.
void AppendConninfoValue(std::string& out, std::string_view value) {
  const bool bare = !value.empty() && value.find_first_of(" \t\n\r\f\v'\\=") == std::string::npos;
  if (bare) {
    out += value;
    return;
  }
  out += '\'';
  for (const char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
}

// Whether a dbname would be read as a connection string by a libpq call that expands it.
bool LooksLikeConninfo(std::string_view value) {
  return value.find('=') != std::string_view::npos || value.starts_with("postgresql://") ||
         value.starts_with("postgres://");
}

}  // namespace

std::string RedactConninfo(std::string_view conninfo) {
  if (conninfo.empty()) return "";
  OptionsPtr options = Parse(std::string(conninfo));
  if (options == nullptr) return std::string(kUnparseableConninfo);
  std::string out;
  for (PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string_view keyword = o->keyword;
    // libpq marks secrets with dispchar "*"; the names are listed too, so that a libpq that
    // forgot one still hides it.
    const bool secret = (o->dispchar != nullptr && std::string_view(o->dispchar) == "*") ||
                        keyword == "password" || keyword == "sslpassword";
    if (!out.empty()) out += ' ';
    out += keyword;
    out += '=';
    if (secret) {
      out += "***";
    } else if (keyword == "dbname" && LooksLikeConninfo(o->val)) {
      AppendConninfoValue(out, RedactConninfo(o->val));
    } else {
      AppendConninfoValue(out, o->val);
    }
  }
  return out;
}

namespace {

bool IsNumericAddress(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

ConnParams ParseConnParams(const std::string& conninfo) {
  ConnParams params;
  std::string host;
  bool has_hostaddr = false;
  if (OptionsPtr options = Parse(conninfo)) {
    for (PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      params.keywords.emplace_back(o->keyword);
      params.values.emplace_back(o->val);
      if (params.keywords.back() == "host") host = o->val;
      if (params.keywords.back() == "hostaddr" && *o->val != '\0') has_hostaddr = true;
    }
  }
  if (host.empty()) {
    const char* env = std::getenv("PGHOST");
    if (env != nullptr) host = env;
  }
  if (!has_hostaddr && !host.empty() && host[0] != '/' && host[0] != '@' &&
      host.find(',') == std::string::npos && !IsNumericAddress(host)) {
    params.host_to_resolve = host;
  }
  return params;
}

namespace {

// One parameter of a connection string: its name and value as libpq would read them, and the
// span of text that holds it.
struct Param {
  std::optional<std::string> name;   // nullopt: malformed, left for libpq to refuse.
  std::optional<std::string> value;  // nullopt: not properly percent-encoded.
  size_t begin = 0;
  size_t end = 0;
};

constexpr std::string_view kUriPrefixes[] = {"postgresql://", "postgres://"};

size_t UriPrefixLength(std::string_view url) {
  for (const std::string_view prefix : kUriPrefixes) {
    if (url.starts_with(prefix)) return prefix.size();
  }
  return 0;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A URI component decoded as libpq decodes it; nullopt for a broken escape or %00.
std::optional<std::string> PercentDecode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    const int hi = i + 1 < text.size() ? HexDigit(text[i + 1]) : -1;
    const int lo = i + 2 < text.size() ? HexDigit(text[i + 2]) : -1;
    if (hi < 0 || lo < 0 || hi + lo == 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// Where a URI's query begins (past its '?'), found the way libpq finds it: the credentials end
// at the first '@' before any '/' (so a password may hold a '?'), a bracketed IPv6 host may too,
// and the database name ends at the first '?'. npos when there is no query.
size_t UriQueryBegin(std::string_view uri) {
  size_t p = uri.find_first_of("@/", UriPrefixLength(uri));
  p = p != std::string_view::npos && uri[p] == '@' ? p + 1 : UriPrefixLength(uri);
  for (; p < uri.size(); ++p) {
    if (uri[p] == '[') {
      p = uri.find(']', p);
      if (p == std::string_view::npos) return p;
    } else if (uri[p] == '/' || uri[p] == '?') {
      p = uri.find('?', p);
      return p == std::string_view::npos ? p : p + 1;
    }
  }
  return std::string_view::npos;
}

// The name=value parameters of a URI's query; an empty list when it has none.
std::vector<Param> UriParams(std::string_view uri) {
  std::vector<Param> params;
  const size_t begin = UriQueryBegin(uri);
  if (begin == std::string_view::npos) return params;
  for (size_t p = begin; p <= uri.size();) {
    const size_t end = std::min(uri.find('&', p), uri.size());
    const std::string_view text = uri.substr(p, end - p);
    Param param;
    param.begin = p;
    param.end = end;
    if (const size_t eq = text.find('='); eq != std::string_view::npos) {
      param.name = PercentDecode(text.substr(0, eq));
      param.value = PercentDecode(text.substr(eq + 1));
    }
    params.push_back(std::move(param));
    p = end + 1;
  }
  return params;
}

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// One value of a keyword = value string starting at `p`, unquoted as libpq does it; `p` ends
// past it. nullopt for an unterminated quote.
std::optional<std::string> KeywordValue(std::string_view text, size_t& p) {
  std::string value;
  const bool quoted = p < text.size() && text[p] == '\'';
  if (quoted) ++p;
  for (; p < text.size(); ++p) {
    if (quoted && text[p] == '\'') {
      ++p;
      return value;
    }
    if (!quoted && IsSpace(text[p])) return value;
    if (text[p] == '\\' && ++p == text.size()) break;
    value += text[p];
  }
  if (quoted) return std::nullopt;
  return value;
}

// The pairs of a keyword = value string, read as libpq reads them; nullopt when libpq would
// refuse its syntax. Each pair's span runs to the next pair, so that cutting it out takes the
// whitespace after it too.
std::optional<std::vector<Param>> KeywordValueParams(std::string_view text) {
  std::vector<Param> params;
  size_t p = 0;
  const auto skip_space = [&] {
    while (p < text.size() && IsSpace(text[p])) ++p;
  };
  for (skip_space(); p < text.size(); skip_space()) {
    if (!params.empty()) params.back().end = p;
    Param param;
    param.begin = p;
    while (p < text.size() && text[p] != '=' && !IsSpace(text[p])) ++p;
    param.name = std::string(text.substr(param.begin, p - param.begin));
    skip_space();
    if (p == text.size() || text[p] != '=') return std::nullopt;
    ++p;
    skip_space();
    param.value = KeywordValue(text, p);
    if (!param.value) return std::nullopt;
    params.push_back(std::move(param));
  }
  if (!params.empty()) params.back().end = text.size();
  return params;
}

bool IsLibpqParameter(const std::string& name) {
  // Besides its options, libpq reads requiressl (an old spelling of sslmode) and, in URIs, ssl.
  if (name == "requiressl" || name == "ssl") return true;
  OptionsPtr options = Parse("");
  for (PQconninfoOption* o = options.get(); o != nullptr && o->keyword != nullptr; ++o) {
    if (name == o->keyword) return true;
  }
  return false;
}

bool IsPlainWord(const std::string& name) {
  return !name.empty() && name.size() <= 63 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
  });
}

Status InvalidUrl(const std::string& what) {
  return Status::InvalidArgument("DATABASE_URL is invalid: " + what +
                                 " (the value is not shown: it may hold a password)");
}

std::string OrmParameterList() {
  std::string list;
  for (const std::string_view name : kOrmParameters) {
    list += list.empty() ? "" : ", ";
    list += name;
  }
  return list;
}

// Reads `param` into `clean` when it is one of kOrmParameters: true when it is one (to be taken
// out of the URL), false when it is libpq's (to be kept).
Result<bool> TakeOrmParameter(const Param& param, CleanConninfo& clean) {
  if (!param.name) return false;  // Malformed: ValidateConninfo refuses it.
  const std::string& name = *param.name;
  if (name == "schema") {
    if (!param.value || (!param.value->empty() && !IsTableNamePart(*param.value))) {
      return InvalidUrl(
          "its schema parameter must be a schema name of 1 to 63 bytes of a-z, 0-9, _ and $, "
          "not starting with a digit or $, as RATE_LIMIT_PG_TABLE accepts");
    }
    clean.schema = *param.value;
    return true;
  }
  if (name == "pgbouncer") {
    if (!param.value || (*param.value != "true" && *param.value != "false" && *param.value != "1" &&
                         *param.value != "0")) {
      return InvalidUrl("its pgbouncer parameter must be one of true, false, 1, 0");
    }
    clean.pgbouncer = *param.value == "true" || *param.value == "1";
    return true;
  }
  if (std::find(std::begin(kOrmParameters), std::end(kOrmParameters), name) !=
      std::end(kOrmParameters)) {
    if (std::find(clean.ignored.begin(), clean.ignored.end(), name) == clean.ignored.end()) {
      clean.ignored.push_back(name);
    }
    return true;
  }
  if (IsLibpqParameter(name)) return false;
  return InvalidUrl((IsPlainWord(name) ? "unknown parameter \"" + name + "\""
                                       : std::string("a parameter with an unknown name")) +
                    ": neither libpq's nor one of " + OrmParameterList());
}

}  // namespace

Result<CleanConninfo> StripOrmParameters(std::string_view url) {
  const bool uri = UriPrefixLength(url) > 0;
  std::optional<std::vector<Param>> params = uri ? UriParams(url) : KeywordValueParams(url);
  CleanConninfo clean;
  if (!params) {  // Not a connection string: left whole for ValidateConninfo.
    clean.conninfo = std::string(url);
    return clean;
  }
  std::string kept;  // The query's parameters (URI) or the pairs (with what follows each) left.
  size_t kept_count = 0;
  for (const Param& param : *params) {
    Result<bool> orm = TakeOrmParameter(param, clean);
    if (!orm.ok()) return orm.status();
    if (*orm) continue;
    if (uri && kept_count > 0) kept += '&';
    kept += url.substr(param.begin, param.end - param.begin);
    ++kept_count;
  }
  if (params->empty()) {
    clean.conninfo = std::string(url);
  } else if (!uri) {
    clean.conninfo = std::string(url.substr(0, params->front().begin)) + kept;
  } else {
    // Without the '?' when nothing is left of the query.
    const size_t query = params->front().begin;
    clean.conninfo = std::string(url.substr(0, kept_count == 0 ? query - 1 : query)) + kept;
  }
  return clean;
}

CleanConninfo StripOrmParametersOrKeep(std::string_view url) {
  Result<CleanConninfo> clean = StripOrmParameters(url);
  if (clean.ok()) return std::move(*clean);
  CleanConninfo whole;
  whole.conninfo = std::string(url);
  return whole;
}

std::string WithKeepalives(std::string_view conninfo) {
  OptionsPtr options = Parse(std::string(conninfo));
  if (options == nullptr && !conninfo.empty()) return std::string(conninfo);
  const auto is_set = [&](std::string_view keyword) {
    for (PQconninfoOption* o = options.get(); o != nullptr && o->keyword != nullptr; ++o) {
      if (keyword == o->keyword) return o->val != nullptr;
    }
    return false;
  };
  const bool uri = UriPrefixLength(conninfo) > 0;
  std::string out(conninfo);
  // A URI's query may be absent ('?' to add), empty ("db?": nothing to add) or hold parameters.
  const size_t query = uri ? UriQueryBegin(conninfo) : 0;
  bool first =
      uri ? query == std::string_view::npos || query == conninfo.size() || conninfo.back() == '&'
          : out.empty();
  if (uri && query == std::string_view::npos) out += '?';
  for (const auto& [keyword, value] : kKeepaliveDefaults) {
    if (is_set(keyword) || !IsLibpqParameter(std::string(keyword))) continue;
    if (!first) out += uri ? '&' : ' ';
    first = false;
    out.append(keyword).append("=").append(value);
  }
  if (uri && out.back() == '?' && query == std::string_view::npos) out.pop_back();
  return out;
}

TableName TableForUrl(const TableName& configured, const CleanConninfo& url) {
  TableName table = configured;
  if (table.schema.empty()) table.schema = url.schema;
  return table;
}

}  // namespace ratelimit
