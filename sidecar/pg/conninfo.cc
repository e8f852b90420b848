// Conninfo: checks DATABASE_URL without ever echoing it, and finds the password to mask.
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
