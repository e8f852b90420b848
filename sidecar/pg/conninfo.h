// Conninfo: checks DATABASE_URL without ever echoing it, and finds the password to mask.
#ifndef RATELIMIT_SIDECAR_PG_CONNINFO_H_
#define RATELIMIT_SIDECAR_PG_CONNINFO_H_

#include <string>

#include "sidecar/core/status.h"

namespace ratelimit {

// OK when libpq can parse `conninfo` (keyword/value string or URI; empty is fine: libpq's PG*
// variables apply). The error never contains the value, nor libpq's message, which quotes the
// text it failed on and so may quote a password.
Status ValidateConninfo(const std::string& conninfo);

// The password libpq will send: the conninfo's, else $PGPASSWORD; empty when there is none.
std::string ConninfoPassword(const std::string& conninfo);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_CONNINFO_H_
