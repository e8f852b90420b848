// Control of the test's own PostgreSQL server, for fault-injection and soak tests.
#ifndef RATELIMIT_TESTS_TESTING_PG_SERVER_H_
#define RATELIMIT_TESTS_TESTING_PG_SERVER_H_

#include <string>

#include "sidecar/core/status.h"

namespace ratelimit {

// The server that scripts/with-postgres.sh started for this test process (its data directory and
// binaries come from RATELIMIT_TEST_PG_DATA and RATELIMIT_TEST_PG_BIN). Stopping or freezing a
// server breaks every other test using it, so only tests registered with
// ratelimit_private_pg_test() (each run in a with-postgres.sh of its own) may use this class.
// Under root, pg_ctl runs as the `postgres` OS user. Every call is bounded in time.
// Thread-safety: any thread, one call at a time.
class PgServer {
 public:
  // The server of this process's environment; ok() is false when none is described there.
  static PgServer FromEnvironment();
  bool ok() const { return !data_dir_.empty() && !bin_dir_.empty(); }

  // pg_ctl stop -m immediate: every backend dies at once, as in a crash. Returns once the
  // postmaster is gone.
  [[nodiscard]] Status StopImmediate();
  // pg_ctl start -w: returns once the server accepts connections (after crash recovery).
  [[nodiscard]] Status Start();
  // SIGSTOP to the postmaster and every one of its children: connections stay open and nothing
  // answers. Thaw() sends SIGCONT to the same processes.
  [[nodiscard]] Status Freeze();
  [[nodiscard]] Status Thaw();

 private:
  PgServer(std::string data_dir, std::string bin_dir);

  std::string data_dir_;
  std::string bin_dir_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_PG_SERVER_H_
