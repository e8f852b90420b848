// Owning pointers for libpq's connection and result objects.
#ifndef RATELIMIT_SIDECAR_PG_PG_PTR_H_
#define RATELIMIT_SIDECAR_PG_PG_PTR_H_

#include <libpq-fe.h>

#include <memory>

namespace ratelimit {

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

}  // namespace ratelimit

#endif  // RATELIMIT_SIDECAR_PG_PG_PTR_H_
