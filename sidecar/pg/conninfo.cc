// Conninfo: checks DATABASE_URL without ever echoing it, finds the password to mask, redacts it.
#include "sidecar/pg/conninfo.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>

#include <cstdlib>
#include <memory>

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

}  // namespace ratelimit
