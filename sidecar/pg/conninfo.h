// Conninfo: checks DATABASE_URL without ever echoing it, finds the password to mask, redacts it.
#ifndef RATELIMIT_SIDECAR_PG_CONNINFO_H_
#define RATELIMIT_SIDECAR_PG_CONNINFO_H_

#include <string>
#include <string_view>
#include <vector>

#include "schema/status.h"

namespace ratelimit {

// OK when libpq can parse `conninfo` (keyword/value string or URI; empty is fine: libpq's PG*
// variables apply). The error never contains the value, nor libpq's message, which quotes the
// text it failed on and so may quote a password.
Status ValidateConninfo(const std::string& conninfo);

// The password libpq will send: the conninfo's, else $PGPASSWORD; empty when there is none.
std::string ConninfoPassword(const std::string& conninfo);

// `conninfo` (keyword/value string or URI) as a keyword/value string that is safe to log: every
// setting libpq parsed, in libpq's order, with each secret (password, sslpassword: whatever
// libpq marks as one) shown as ***, e.g.
//   postgresql://u:secret@h:5432/db?sslmode=require -> user=u password=*** host=h port=5432
//   dbname=db sslmode=require
// A dbname that is itself a connection string is redacted the same way. Empty for an empty
// conninfo. Never the input: text libpq cannot parse gives kUnparseableConninfo.
inline constexpr std::string_view kUnparseableConninfo = "(unparseable)";
std::string RedactConninfo(std::string_view conninfo);

// A conninfo split into keyword/value pairs for PQconnectStartParams, so that a host name can
// be resolved off the event loop first: libpq resolves names with a blocking getaddrinfo.
struct ConnParams {
  std::vector<std::string> keywords;
  std::vector<std::string> values;
  // The one host name to resolve and pass as hostaddr; empty when there is nothing to resolve
  // (a socket directory, a numeric address, hostaddr given, or several hosts, which libpq
  // then resolves itself).
  std::string host_to_resolve;
};
// REQUIRES: ValidateConninfo(conninfo) is OK.
ConnParams ParseConnParams(const std::string& conninfo);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_CONNINFO_H_
