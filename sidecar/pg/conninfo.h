// Conninfo: checks DATABASE_URL without ever echoing it, takes out ORM parameters, redacts it.
#ifndef RATELIMIT_SIDECAR_PG_CONNINFO_H_
#define RATELIMIT_SIDECAR_PG_CONNINFO_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schema/status.h"
#include "sidecar/pg/table_name.h"

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

// The TCP settings every database connection gets unless the conninfo sets them itself: a
// peer gone without a word (a partition, a dead node) is noticed on an idle connection within
// keepalives_idle + keepalives_interval * keepalives_count = 25 s, and on one with data unsent
// or unacknowledged within tcp_user_timeout. A transaction's own deadline is shorter still (see
// LockQueries); these bound what no transaction is waiting on. libpq ignores them on a Unix
// socket; a libpq that knows no tcp_user_timeout (before 12) does not get it.
inline constexpr std::pair<std::string_view, std::string_view> kKeepaliveDefaults[] = {
    {"keepalives", "1"},
    {"keepalives_idle", "10"},
    {"keepalives_interval", "5"},
    {"keepalives_count", "3"},
    {"tcp_user_timeout", "10000"}};

// `conninfo` with each of kKeepaliveDefaults that it does not set added: to a URI's query, or
// as keyword=value pairs; everything it says is kept as written (an operator's value wins,
// even an empty one). Text libpq cannot parse comes back unchanged, for ValidateConninfo.
std::string WithKeepalives(std::string_view conninfo);

// The parameters that Node stacks (Prisma, and the libraries that copy its URLs) keep in the
// DATABASE_URL their application reads, and that libpq refuses as unknown:
//   schema                the table's schema, unless RATE_LIMIT_PG_TABLE names one (TableForUrl)
//   pgbouncer             true or 1 (false or 0): the URL leads to PgBouncer; a hint for how
//                         the sidecar sends its statements
//   connection_limit, pool_timeout, sslaccept, socket_timeout, statement_cache_size
//                         ignored: they tune the ORM's own pool and TLS; the sidecar has its
//                         own variables for what it needs of them (RATE_LIMIT_PG_CONNECTIONS,
//                         RATE_LIMIT_PG_TIMEOUT_MS, libpq's sslmode)
inline constexpr std::string_view kOrmParameters[] = {
    "schema",    "pgbouncer",      "connection_limit",    "pool_timeout",
    "sslaccept", "socket_timeout", "statement_cache_size"};

// DATABASE_URL with the ORM parameters taken out, and what they said.
struct CleanConninfo {
  std::string conninfo;              // For libpq: every other parameter exactly as written.
  std::string schema;                // schema's value, percent-decoded; empty when absent.
  bool pgbouncer = false;            // pgbouncer=true or pgbouncer=1.
  std::vector<std::string> ignored;  // The ignored ones present, each once, in URL order.
};

// Takes kOrmParameters out of `url`: out of a URI's query (names and values percent-decoded as
// libpq decodes them; the credentials, hosts and database name untouched), or out of keyword =
// value pairs. The last of a repeated parameter wins. InvalidArgument, one line that names
// DATABASE_URL and never quotes the URL, when
//   - schema is not a name RATE_LIMIT_PG_TABLE would accept (see TableName), or pgbouncer is
//     none of true, false, 1, 0, or either value is not properly percent-encoded;
//   - a parameter is neither libpq's nor one of these: named when its name is a plain word
//     (letters, digits, _), else only said to be there.
// Text that is not a connection string at all comes back unchanged: ValidateConninfo refuses it.
Result<CleanConninfo> StripOrmParameters(std::string_view url);

// StripOrmParameters(url), or `url` whole when that refuses it: for callers that need no
// verdict (the memory store's start-up line; BuildEngines, after main() refused a bad URL).
CleanConninfo StripOrmParametersOrKeep(std::string_view url);

// `configured` (RATE_LIMIT_PG_TABLE) in the URL's schema, when it names no schema of its own.
TableName TableForUrl(const TableName& configured, const CleanConninfo& url);

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_CONNINFO_H_
