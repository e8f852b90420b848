// A private PgBouncer (Debian's /usr/sbin/pgbouncer) in front of the test's PostgreSQL.
#ifndef RATELIMIT_TESTS_TESTING_PGBOUNCER_SERVER_H_
#define RATELIMIT_TESTS_TESTING_PGBOUNCER_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "schema/status.h"
#include "tests/testing/temp_dir.h"

namespace ratelimit {

// What the pooler is to be; the defaults are the transaction pooling that fleets run.
struct PgBouncerOptions {
  // The PostgreSQL server behind it: a host name, an address or a Unix socket directory, and a
  // port. Empty/0: PGHOST and PGPORT, which scripts/with-postgres.sh exports.
  std::string upstream_host = "";
  int upstream_port = 0;
  // The role the tests connect as (trusted, like the test server trusts it). Empty: PGUSER, else
  // postgres.
  std::string user = "";
  std::string pool_mode = "transaction";  // session | transaction | statement
  int default_pool_size = 3;              // Server connections per database and user.
  int max_client_conn = 200;
};

// A PgBouncer process of the test's own, listening on 127.0.0.1 and a free port, and on a Unix
// socket in a temporary directory that also holds its generated ini, user list and log. Every
// database name is passed through to the same name on the upstream server (`* = host=...`).
//
// Always stopped: by Stop(), by the destructor, and, should the test process die without
// running destructors, by the kernel (the process gets SIGKILL when the thread that started it
// ends: PR_SET_PDEATHSIG). Under root it runs as the `postgres` OS user (PgBouncer, like
// PostgreSQL, refuses to run as root), and its directory belongs to that user.
//
// Thread-safety: one thread at a time; REQUIRES: Start() (and Restart()) are called on a thread
// that lives as long as the server should (the test's main thread), because the server dies
// with that thread. Owns the process and the directory.
class PgBouncerServer {
 public:
  // How long a start may take until the port accepts connections, and a stop until the process
  // is gone (then it is killed).
  static constexpr int kStartTimeoutMs = 10000;
  static constexpr int kStopTimeoutMs = 5000;

  // Writes the configuration, picks a free port and starts the process; returns once the port
  // accepts TCP connections. An error (with the end of the pooler's log) when the binary is
  // missing, the process exits or the port never opens.
  static Result<std::unique_ptr<PgBouncerServer>> Start(PgBouncerOptions options = {});
  ~PgBouncerServer();
  PgBouncerServer(const PgBouncerServer&) = delete;
  PgBouncerServer& operator=(const PgBouncerServer&) = delete;

  // SIGTERM (PgBouncer 1.18: immediate shutdown, every client connection closed at once), then
  // waits for the process to end; SIGKILL after kStopTimeoutMs. Idempotent.
  [[nodiscard]] Status Stop();
  // Starts the process again with the same configuration and port, as after Start(). REQUIRES:
  // stopped.
  [[nodiscard]] Status Restart();
  bool Running() const { return pid_ > 0; }

  int port() const { return port_; }
  // libpq keyword/value conninfo of `dbname` through the pooler (TCP, 127.0.0.1).
  std::string Url(const std::string& dbname = "postgres") const;
  // The pooler's log so far.
  std::string Log() const;

  // The path of the pgbouncer binary; the tests skip (or fail under RATELIMIT_REQUIRE_PG=1)
  // when it is not installed.
  static constexpr char kBinary[] = "/usr/sbin/pgbouncer";

 private:
  explicit PgBouncerServer(PgBouncerOptions options) : options_(std::move(options)) {}

  // Writes the ini for port_; the user list once.
  Status WriteConfig();
  // Spawns the process and waits until the port accepts connections.
  Status Launch();

  const PgBouncerOptions options_;
  TempDir dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  uid_t run_uid_ = 0;  // The OS user the process runs as (the postgres user under root).
  gid_t run_gid_ = 0;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_PGBOUNCER_SERVER_H_
