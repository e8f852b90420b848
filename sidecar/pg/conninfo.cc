// Conninfo: checks DATABASE_URL without ever echoing it, and finds the password to mask.
#include "sidecar/pg/conninfo.h"

#include <libpq-fe.h>

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

}  // namespace ratelimit
