// Control of the test's own PostgreSQL server, for fault-injection and soak tests.
#include "tests/testing/pg_server.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include "tests/testing/sidecar_process.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"

namespace ratelimit {
namespace {

// The state letter and parent pid of `pid` from /proc/<pid>/stat; nullopt when it is gone.
struct ProcState {
  char state = '?';
  pid_t ppid = -1;
};

std::optional<ProcState> ReadProcState(pid_t pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after the last
  // ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 4 >= stat.size()) return std::nullopt;
  ProcState s;
  s.state = stat[close + 2];
  s.ppid = static_cast<pid_t>(std::strtol(stat.c_str() + close + 4, nullptr, 10));
  return s;
}

std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return children;
  while (dirent* entry = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || pid <= 0) continue;
    std::optional<ProcState> s = ReadProcState(static_cast<pid_t>(pid));
    if (s && s->ppid == parent) children.push_back(static_cast<pid_t>(pid));
  }
  closedir(proc);
  return children;
}

// Waits until every one of `pids` is stopped (`stopped`) or running again (!`stopped`), or gone
// (a zombie counts as gone).
// Returns the pids that did not get there in time.
std::vector<pid_t> WaitForState(const std::vector<pid_t>& pids, bool stopped, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    std::vector<pid_t> pending;
    for (pid_t pid : pids) {
      std::optional<ProcState> s = ReadProcState(pid);
      // A child that exited but is not reaped yet (its parent is stopped) is as good as gone.
      const bool gone = !s || s->state == 'Z' || s->state == 'X';
      if (!gone && (s->state == 'T') != stopped) pending.push_back(pid);
    }
    if (pending.empty() || std::chrono::steady_clock::now() >= deadline) return pending;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::string PidList(const std::vector<pid_t>& pids) {
  std::string out;
  for (pid_t pid : pids) out += (out.empty() ? "" : " ") + std::to_string(pid);
  return out;
}

std::string Parent(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

ProcessResult RunAsServerUser(const std::vector<std::string>& argv, const std::string& cwd,
                              int timeout_ms) {
  std::vector<std::string> full = {"/bin/sh", "-c", "cd \"$1\" || exit 125; shift; exec \"$@\"",
                                   "sh", cwd};
  if (geteuid() == 0) full.insert(full.end(), {"/usr/sbin/runuser", "-u", "postgres", "--"});
  full.insert(full.end(), argv.begin(), argv.end());
  return RunProcess(full, {}, timeout_ms);
}

PgServer::PgServer(std::string data_dir, std::string bin_dir)
    : data_dir_(std::move(data_dir)), bin_dir_(std::move(bin_dir)), log_path_(TestPgLogPath()) {
  if (log_path_.empty() && !data_dir_.empty()) log_path_ = Parent(data_dir_) + "/server.log";
}

PgServer PgServer::FromEnvironment() { return PgServer(TestPgDataDir(), TestPgBinDir()); }

pid_t PgServer::PostmasterPid() const {
  if (!ok()) return -1;
  std::ifstream in(data_dir_ + "/postmaster.pid");
  long pid = -1;
  if (!(in >> pid) || pid <= 0) return -1;
  return static_cast<pid_t>(pid);
}

bool PgServer::Running() const {
  const pid_t pid = PostmasterPid();
  return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

Status PgServer::PgCtl(const std::vector<std::string>& args, const std::string& what) const {
  if (!ok()) return Status::Unavailable("no test server: RATELIMIT_TEST_PG_DATA/_BIN are unset");
  std::vector<std::string> argv = {bin_dir_ + "/pg_ctl"};
  argv.insert(argv.end(), args.begin(), args.end());
  // The directory that holds the data directory (with-postgres.sh's, owned by that user). pg_ctl
  // gives up after kPgCtlTimeoutS itself; this is for a pg_ctl that does not.
  const ProcessResult r = RunAsServerUser(argv, Parent(data_dir_), (kPgCtlTimeoutS + 10) * 1000);
  if (r.exit_code == 0) return Status::Ok();
  return Status::IoError("pg_ctl " + what + " failed (exit " + std::to_string(r.exit_code) +
                         "): " + r.out + r.err);
}

Status PgServer::StopImmediate() {
  if (!frozen_.empty()) {
    if (Status s = ContinueAll(); !s.ok()) return s;
  }
  return PgCtl(
      {"stop", "-D", data_dir_, "-m", "immediate", "-w", "-t", std::to_string(kPgCtlTimeoutS)},
      "stop -m immediate");
}

Status PgServer::Start() {
  return PgCtl(
      {"start", "-D", data_dir_, "-l", log_path_, "-w", "-t", std::to_string(kPgCtlTimeoutS)},
      "start");
}

Status PgServer::Freeze() {
  const pid_t postmaster = PostmasterPid();
  if (postmaster <= 0 || !Running()) return Status::Unavailable("no postmaster to freeze");
  // The postmaster first: once it is stopped it starts no new children, so the list below is
  // complete.
  if (kill(postmaster, SIGSTOP) != 0) {
    return Status::IoError("SIGSTOP to postmaster " + std::to_string(postmaster) + ": " +
                           std::strerror(errno));
  }
  frozen_ = {postmaster};
  if (!WaitForState({postmaster}, true, kSignalTimeoutMs).empty()) {
    return Status::TimedOut("postmaster " + std::to_string(postmaster) + " did not stop");
  }
  for (pid_t child : ChildrenOf(postmaster)) {
    if (kill(child, SIGSTOP) == 0) frozen_.push_back(child);  // Else it has just exited.
  }
  const std::vector<pid_t> late = WaitForState(frozen_, true, kSignalTimeoutMs);
  if (!late.empty()) return Status::TimedOut("not stopped in time: " + PidList(late));
  return Status::Ok();
}

Status PgServer::ContinueAll() {
  const pid_t postmaster = PostmasterPid();
  std::vector<pid_t> children = postmaster > 0 ? ChildrenOf(postmaster) : std::vector<pid_t>{};
  std::vector<pid_t> parents;
  for (size_t i = 0; i < frozen_.size(); ++i) {  // frozen_[0] is the postmaster Freeze saw.
    (i == 0 ? parents : children).push_back(frozen_[i]);
  }
  if (postmaster > 0) parents.push_back(postmaster);
  frozen_.clear();
  // Children before the postmaster, so that it does not find them stopped.
  for (pid_t pid : children) kill(pid, SIGCONT);
  for (pid_t pid : parents) kill(pid, SIGCONT);
  children.insert(children.end(), parents.begin(), parents.end());
  const std::vector<pid_t> late = WaitForState(children, false, kSignalTimeoutMs);
  if (!late.empty()) return Status::TimedOut("still stopped after SIGCONT: " + PidList(late));
  return Status::Ok();
}

Status PgServer::Thaw() {
  if (frozen_.empty() && !Running()) return Status::Unavailable("no postmaster to thaw");
  return ContinueAll();
}

Status PgServer::EnsureRunning() {
  if (!ok()) return Status::Unavailable("no test server: RATELIMIT_TEST_PG_DATA/_BIN are unset");
  if (Status s = ContinueAll(); !s.ok()) return s;
  if (Running()) return Status::Ok();
  return Start();
}

}  // namespace ratelimit
