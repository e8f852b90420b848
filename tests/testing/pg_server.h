// Control of the test's own PostgreSQL server, for fault-injection and soak tests.
#ifndef RATELIMIT_TESTS_TESTING_PG_SERVER_H_
#define RATELIMIT_TESTS_TESTING_PG_SERVER_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "schema/status.h"
#include "tests/testing/sidecar_process.h"

namespace ratelimit {

// Runs `argv` from the directory `cwd` as the OS user of PostgreSQL servers: `postgres` under
// root (PostgreSQL refuses root, and its tools need a working directory that user may read),
// else this process's user. Waits up to `timeout_ms`, as RunProcess.
ProcessResult RunAsServerUser(const std::vector<std::string>& argv, const std::string& cwd,
                              int timeout_ms);

// The server that scripts/with-postgres.sh started for this test process (its data directory and
// binaries come from RATELIMIT_TEST_PG_DATA and RATELIMIT_TEST_PG_BIN). Stopping or freezing a
// server breaks every other test using it, so only tests registered with
// ratelimit_private_pg_test() (each run in a with-postgres.sh of its own) may use this class.
// Under root, pg_ctl runs as the `postgres` OS user. Every call is bounded in time.
// Thread-safety: any thread, one call at a time.
class PgServer {
 public:
  // How long pg_ctl may take to stop or start the server (crash recovery included).
  static constexpr int kPgCtlTimeoutS = 30;
  // How long the processes may take to show that a SIGSTOP or SIGCONT took effect.
  static constexpr int kSignalTimeoutMs = 5000;

  // The server of this process's environment; ok() is false when none is described there.
  static PgServer FromEnvironment();
  bool ok() const { return !data_dir_.empty() && !bin_dir_.empty(); }

  // pg_ctl stop -m immediate: every backend dies at once, as in a crash. Returns once the
  // postmaster is gone. A frozen server is thawed first (a stopped postmaster cannot stop).
  [[nodiscard]] Status StopImmediate();
  // pg_ctl start -w: returns once the server accepts connections (after crash recovery). The
  // server goes on logging to RATELIMIT_TEST_PG_LOG.
  [[nodiscard]] Status Start();
  // SIGSTOP to the postmaster and every one of its children: connections stay open and nothing
  // answers. Thaw() sends SIGCONT to the same processes.
  [[nodiscard]] Status Freeze();
  [[nodiscard]] Status Thaw();

  // Whatever a test did, leaves the server running and answering: thaws it, and starts it if
  // it is not running. For a test's clean-up, so that a failed test does not break the next.
  [[nodiscard]] Status EnsureRunning();
  // True when postmaster.pid names a live process.
  bool Running() const;
  // The postmaster's pid from postmaster.pid; -1 when there is none.
  pid_t PostmasterPid() const;

 private:
  PgServer(std::string data_dir, std::string bin_dir);

  // Runs pg_ctl with `args` as the server's OS user; its output is in the error.
  Status PgCtl(const std::vector<std::string>& args, const std::string& what) const;
  // Sends SIGCONT to `frozen_` and to the postmaster's children; forgets `frozen_`.
  Status ContinueAll();

  std::string data_dir_;
  std::string bin_dir_;
  std::string log_path_;
  std::vector<pid_t> frozen_;  // What Freeze stopped, postmaster first.
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_PG_SERVER_H_
