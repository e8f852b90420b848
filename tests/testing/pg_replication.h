// ReplicatedPg: a primary and a streaming standby of the test's own, killed, promoted, rejoined.
#ifndef RATELIMIT_TESTS_TESTING_PG_REPLICATION_H_
#define RATELIMIT_TESTS_TESTING_PG_REPLICATION_H_

#include <memory>
#include <string>
#include <vector>

#include "schema/status.h"
#include "tests/testing/temp_dir.h"

namespace ratelimit {

// Whether a commit on the primary waits for the standby to have flushed it
// (synchronous_standby_names naming the standby, synchronous_commit=on) or not.
enum class Replication { kSynchronous, kAsynchronous };

// Two PostgreSQL 15 servers, nodes 0 and 1, in a temporary directory of their own, each on
// 127.0.0.1 and a free port that it keeps whatever its role: node 0 starts as the primary
// (initdb, trust authentication, replication allowed from 127.0.0.1), node 1 as its hot standby,
// made by `pg_basebackup -R` and streaming under the application_name "node1". A test kills the
// primary, promotes the standby and brings the old primary back as the new primary's standby,
// as an operator or an HA manager would. Binaries from RATELIMIT_TEST_PG_BIN, else
// /usr/lib/postgresql/15/bin; under root the servers run as the `postgres` OS user.
//
// With synchronous replication the primary's synchronous_standby_names names its standby; a
// promoted node has none until a standby rejoins it (RejoinAsStandby), as an HA manager does:
// else the new primary's commits would wait for a standby that is not there.
//
// Every call is bounded in time (pg_ctl's -t, a timeout on every process). The destructor stops
// both servers (immediate) and removes every file. Thread-safety: one thread at a time.
class ReplicatedPg {
 public:
  static constexpr int kPgCtlTimeoutS = 30;

  // Starts the primary and the standby and returns once the standby streams (and, when
  // synchronous, is the primary's synchronous standby).
  static Result<std::unique_ptr<ReplicatedPg>> Start(Replication replication);
  ~ReplicatedPg();
  ReplicatedPg(const ReplicatedPg&) = delete;
  ReplicatedPg& operator=(const ReplicatedPg&) = delete;

  // The node that is the primary now; -1 between KillPrimary and Promote.
  int primary() const { return primary_; }
  // The node that follows the primary, or is to be promoted; -1 while it is down.
  int standby() const { return standby_; }
  int port(int node) const { return nodes_[node].port; }
  // libpq keyword/value conninfo of one node over TCP, as user postgres, database postgres.
  std::string Conninfo(int node) const;
  // Everything the node's server logged so far (across its restarts and rebuilds).
  std::string Log(int node) const;
  Replication replication() const { return replication_; }

  // pg_ctl stop -m immediate on the primary: its backends die at once, as in a crash.
  [[nodiscard]] Status KillPrimary();
  // The standby stops receiving WAL (primary_conninfo emptied and reloaded): from now on the
  // primary's commits are not replicated, the "lag" of an asynchronous standby made as long
  // as the test wants. REQUIRES: asynchronous replication (a synchronous primary would wait).
  [[nodiscard]] Status DetachStandby();
  // Waits until the standby has replayed all the WAL it received: its tables then hold the
  // primary's last replicated state.
  [[nodiscard]] Status WaitForReplay();
  // WaitForReplay, then `pg_ctl promote -w`: the standby becomes the primary.
  [[nodiscard]] Status Promote();
  // Starts the stopped old primary on its own, reachable only by a Unix socket in a directory
  // of its own (`IsolatedConninfo`), so that a test can read what it had committed; stopped by
  // RejoinAsStandby or the destructor.
  [[nodiscard]] Status StartIsolated(int node);
  std::string IsolatedConninfo(int node) const;
  // The old primary (stopped, or started isolated) becomes a standby of the new primary: a
  // fresh pg_basebackup -R of the new primary into its data directory, started, and streaming
  // (synchronously again when the pair is synchronous).
  [[nodiscard]] Status RejoinAsStandby();

 private:
  struct Node {
    std::string name;  // node0, node1: also the walreceiver's application_name.
    std::string data;
    std::string socket_dir;
    std::string isolated_dir;
    std::string log;
    int port = 0;
    bool running = false;
  };

  explicit ReplicatedPg(Replication replication);
  Status InitPrimary(int node);
  Status BaseBackup(int node, int from);
  Status WriteNodeConf(int node, const std::string& synchronous_standby) const;
  Status StartNode(int node, const std::vector<std::string>& extra = {});
  Status StopNode(int node, const std::string& mode);
  Status Tool(const std::string& tool, const std::vector<std::string>& args) const;
  Status Sql(int node, const std::string& sql) const;
  Result<std::string> SqlValue(int node, const std::string& sql) const;
  Status WaitForStandby(int timeout_ms);

  const Replication replication_;
  const std::string bin_;
  TempDir dir_;
  std::vector<Node> nodes_;
  int primary_ = 0;
  int standby_ = 1;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_PG_REPLICATION_H_
