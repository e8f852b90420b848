// ReplicatedPg: a primary and a streaming standby of the test's own, killed, promoted, rejoined.
#include "tests/testing/pg_replication.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "tests/testing/pg_server.h"
#include "tests/testing/sidecar_process.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

constexpr int kStandbyTimeoutMs = 20000;

// A port in 20000..31999 (below Linux's ephemeral range) that nothing is bound to now.
int FreePort() {
  std::mt19937 rng(std::random_device{}());
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = 20000 + static_cast<int>(rng() % 12000);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) continue;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (free) return port;
  }
  return 0;
}

// Makes `path` belong to the servers' OS user when this process is root.
Status GiveToServerUser(const std::string& path) {
  if (geteuid() != 0) return Status::Ok();
  const passwd* pw = getpwnam("postgres");
  if (pw == nullptr) return Status::Unavailable("running as root but there is no postgres user");
  if (chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    return Status::IoError("cannot chown " + path);
  }
  return Status::Ok();
}

Status AppendFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::app);
  out << text;
  out.close();
  return out ? Status::Ok() : Status::IoError("cannot write " + path);
}

std::string BinDir() {
  const std::string from_env = TestPgBinDir();
  return from_env.empty() ? "/usr/lib/postgresql/15/bin" : from_env;
}

}  // namespace

ReplicatedPg::ReplicatedPg(Replication replication) : replication_(replication), bin_(BinDir()) {}

Result<std::unique_ptr<ReplicatedPg>> ReplicatedPg::Start(Replication replication) {
  std::unique_ptr<ReplicatedPg> pg(new ReplicatedPg(replication));
  if (access((pg->bin_ + "/pg_basebackup").c_str(), X_OK) != 0) {
    return Status::Unavailable("no PostgreSQL 15 binaries in " + pg->bin_);
  }
  if (Status s = GiveToServerUser(pg->dir_.path()); !s.ok()) return s;
  for (int i = 0; i < 2; ++i) {
    Node node;
    node.name = "node" + std::to_string(i);
    node.data = pg->dir_.File(node.name);
    node.socket_dir = pg->dir_.File("s" + std::to_string(i));
    node.isolated_dir = pg->dir_.File("i" + std::to_string(i));
    node.log = pg->dir_.File(node.name + ".log");
    node.port = FreePort();
    for (const std::string& dir : {node.socket_dir, node.isolated_dir}) {
      std::filesystem::create_directory(dir);
      if (Status s = GiveToServerUser(dir); !s.ok()) return s;
    }
    pg->nodes_.push_back(node);
  }
  const bool sync = replication == Replication::kSynchronous;
  if (Status s = pg->InitPrimary(0); !s.ok()) return s;
  if (Status s = pg->WriteNodeConf(0, sync ? pg->nodes_[1].name : ""); !s.ok()) return s;
  if (Status s = pg->StartNode(0); !s.ok()) return s;
  if (Status s = pg->BaseBackup(1, 0); !s.ok()) return s;
  if (Status s = pg->WriteNodeConf(1, ""); !s.ok()) return s;
  if (Status s = pg->StartNode(1); !s.ok()) return s;
  if (Status s = pg->WaitForStandby(kStandbyTimeoutMs); !s.ok()) return s;
  return pg;
}

ReplicatedPg::~ReplicatedPg() {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (!nodes_[i].running) continue;
    if (StopNode(static_cast<int>(i), "immediate").ok()) continue;
    // pg_ctl could not stop it: the postmaster goes, its children follow it.
    std::ifstream pid_file(nodes_[i].data + "/postmaster.pid");
    long pid = -1;
    if (pid_file >> pid && pid > 0) kill(static_cast<pid_t>(pid), SIGKILL);
  }
}

std::string ReplicatedPg::Conninfo(int node) const {
  return "host=127.0.0.1 port=" + std::to_string(nodes_[node].port) +
         " user=postgres dbname=postgres";
}

std::string ReplicatedPg::IsolatedConninfo(int node) const {
  return "host=" + nodes_[node].isolated_dir + " port=" + std::to_string(nodes_[node].port) +
         " user=postgres dbname=postgres";
}

std::string ReplicatedPg::Log(int node) const { return ReadFile(nodes_[node].log); }

Status ReplicatedPg::Tool(const std::string& tool, const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {bin_ + "/" + tool};
  argv.insert(argv.end(), args.begin(), args.end());
  const ProcessResult r = RunAsServerUser(argv, dir_.path(), (kPgCtlTimeoutS + 10) * 1000);
  if (r.exit_code == 0) return Status::Ok();
  std::string what = tool;
  for (const std::string& a : args) what += " " + a;
  return Status::IoError(what + " failed (exit " + std::to_string(r.exit_code) + "): " + r.out +
                         r.err);
}

Status ReplicatedPg::InitPrimary(int node) {
  // One initdb per test process, which takes seconds; each pair starts from a copy of it.
  static TempDir templates;
  static const std::string data = templates.File("data");
  static const Status made = [&] {
    if (Status s = GiveToServerUser(templates.path()); !s.ok()) return s;
    if (Status s = Tool("initdb", {"-D", data, "--auth=trust", "--username=postgres",
                                   "--encoding=UTF8", "--locale=C", "--no-instructions",
                                   // Files not forced to disk: what a crash test needs is the
                                   // server's own durability, which stays (fsync is on).
                                   "--no-sync"});
        !s.ok()) {
      return s;
    }
    // What every node shares (pg_basebackup copies it); what differs per node is in
    // node.conf. initdb's pg_hba.conf already trusts replication from local and 127.0.0.1.
    return AppendFile(data + "/postgresql.conf",
                      "\nlisten_addresses = '127.0.0.1'\n"
                      "max_connections = 100\n"
                      "wal_level = replica\n"
                      "max_wal_senders = 10\n"
                      "hot_standby = on\n"
                      "synchronous_commit = on\n"
                      "log_line_prefix = '%m [%p] %q%a '\n"
                      // Which sessions came to a node: a test asserts where they went.
                      "log_connections = on\n"
                      "include_if_exists = 'node.conf'\n");
  }();
  if (!made.ok()) return made;
  const ProcessResult r =
      RunAsServerUser({"cp", "-a", data, nodes_[node].data}, dir_.path(), kPgCtlTimeoutS * 1000);
  if (r.exit_code == 0) return Status::Ok();
  return Status::IoError("cannot copy the template data directory: " + r.err);
}

Status ReplicatedPg::WriteNodeConf(int node, const std::string& synchronous_standby) const {
  const Node& n = nodes_[node];
  std::ofstream out(n.data + "/node.conf", std::ios::trunc);
  // cluster_name is also the application_name the node's walreceiver streams under.
  out << "port = " << n.port << "\nunix_socket_directories = '" << n.socket_dir
      << "'\ncluster_name = '" << n.name << "'\nsynchronous_standby_names = '"
      << synchronous_standby << "'\n";
  out.close();
  return out ? Status::Ok() : Status::IoError("cannot write node.conf of " + n.name);
}

Status ReplicatedPg::BaseBackup(int node, int from) {
  std::error_code ignored;
  std::filesystem::remove_all(nodes_[node].data, ignored);
  return Tool("pg_basebackup",
              {"-D", nodes_[node].data, "-R", "--checkpoint=fast", "--no-sync", "-X", "stream",
               "-h", "127.0.0.1", "-p", std::to_string(nodes_[from].port), "-U", "postgres"});
}

Status ReplicatedPg::StartNode(int node, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"start",
                                   "-D",
                                   nodes_[node].data,
                                   "-l",
                                   nodes_[node].log,
                                   "-w",
                                   "-t",
                                   std::to_string(kPgCtlTimeoutS)};
  if (!extra.empty()) {
    std::string options;
    for (const std::string& e : extra) options += (options.empty() ? "" : " ") + e;
    args.insert(args.end(), {"-o", options});
  }
  Status s = Tool("pg_ctl", args);
  if (s.ok()) nodes_[node].running = true;
  return s;
}

Status ReplicatedPg::StopNode(int node, const std::string& mode) {
  Status s = Tool("pg_ctl", {"stop", "-D", nodes_[node].data, "-m", mode, "-w", "-t",
                             std::to_string(kPgCtlTimeoutS)});
  if (s.ok()) nodes_[node].running = false;
  return s;
}

Result<std::string> ReplicatedPg::SqlValue(int node, const std::string& sql) const {
  const ProcessResult r = RunProcess(
      {bin_ + "/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", Conninfo(node), "-c", sql},
      {}, 10000);
  if (r.exit_code != 0) return Status::IoError("psql on " + nodes_[node].name + ": " + r.err);
  std::string out = r.out;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

Status ReplicatedPg::Sql(int node, const std::string& sql) const {
  Result<std::string> r = SqlValue(node, sql);
  return r.ok() ? Status::Ok() : r.status();
}

Status ReplicatedPg::WaitForStandby(int timeout_ms) {
  const std::string want = replication_ == Replication::kSynchronous ? "sync" : "async";
  const std::string sql =
      "SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming' AND "
      "application_name = '" +
      nodes_[standby_].name + "'";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    Result<std::string> state = SqlValue(primary_, sql);
    last = state.ok() ? *state : state.status().ToString();
    if (last == want) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::TimedOut(nodes_[standby_].name + " is not a " + want + " standby of " +
                          nodes_[primary_].name + " after " + std::to_string(timeout_ms) +
                          " ms (last: " + last + ")");
}

Status ReplicatedPg::KillPrimary() {
  if (primary_ < 0) return Status::InvalidArgument("no primary to kill");
  Status s = StopNode(primary_, "immediate");
  if (s.ok()) primary_ = -1;
  return s;
}

Status ReplicatedPg::DetachStandby() {
  if (replication_ != Replication::kAsynchronous) {
    return Status::InvalidArgument("a synchronous primary would wait for the detached standby");
  }
  if (Status s = Sql(standby_, "ALTER SYSTEM SET primary_conninfo = ''"); !s.ok()) return s;
  if (Status s = Sql(standby_, "SELECT pg_reload_conf()"); !s.ok()) return s;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    Result<std::string> receivers = SqlValue(standby_, "SELECT count(*) FROM pg_stat_wal_receiver");
    if (receivers.ok() && *receivers == "0") return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Status::TimedOut("the standby's walreceiver did not stop");
}

Status ReplicatedPg::WaitForReplay() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    Result<std::string> caught_up = SqlValue(
        standby_, "SELECT coalesce(pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn(), true)");
    last = caught_up.ok() ? *caught_up : caught_up.status().ToString();
    if (last == "t") return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Status::TimedOut("the standby did not replay what it received: " + last);
}

Status ReplicatedPg::Promote() {
  if (standby_ < 0) return Status::InvalidArgument("no standby to promote");
  if (Status s = WaitForReplay(); !s.ok()) return s;
  if (Status s = Tool("pg_ctl", {"promote", "-D", nodes_[standby_].data, "-w", "-t",
                                 std::to_string(kPgCtlTimeoutS)});
      !s.ok()) {
    return s;
  }
  primary_ = standby_;
  standby_ = -1;
  return Status::Ok();
}

Status ReplicatedPg::StartIsolated(int node) {
  // No TCP listener and a socket directory nobody else knows: the sidecars, which know the
  // node by 127.0.0.1 and its port, cannot reach it.
  return StartNode(node, {"-c", "listen_addresses=''", "-c",
                          "unix_socket_directories=" + nodes_[node].isolated_dir, "-c",
                          "synchronous_standby_names=''"});
}

Status ReplicatedPg::RejoinAsStandby() {
  if (primary_ < 0 || standby_ >= 0) return Status::InvalidArgument("no old primary to rejoin");
  const int old = 1 - primary_;
  if (nodes_[old].running) {
    if (Status s = StopNode(old, "fast"); !s.ok()) return s;
  }
  if (Status s = BaseBackup(old, primary_); !s.ok()) return s;
  if (Status s = WriteNodeConf(old, ""); !s.ok()) return s;
  if (Status s = StartNode(old); !s.ok()) return s;
  standby_ = old;
  if (replication_ == Replication::kSynchronous) {
    if (Status s = WriteNodeConf(primary_, nodes_[old].name); !s.ok()) return s;
    if (Status s = Sql(primary_, "SELECT pg_reload_conf()"); !s.ok()) return s;
  }
  return WaitForStandby(kStandbyTimeoutMs);
}

}  // namespace ratelimit
