// A private PgBouncer (Debian's /usr/sbin/pgbouncer) in front of the test's PostgreSQL.
#include "tests/testing/pgbouncer_server.h"

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <utility>
#include <vector>

#include "tests/testing/http_client.h"

namespace ratelimit {
namespace {

using Clock = std::chrono::steady_clock;

std::string EnvOr(const char* name, const std::string& otherwise) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : otherwise;
}

// A port on 127.0.0.1 that nothing is bound to now (the kernel's pick); 0 on failure. Another
// process may take it before PgBouncer binds it: Start() then tries another.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IoError("cannot write " + path);
  return Status::Ok();
}

// The last `n` bytes of `text`, for error messages.
std::string Tail(const std::string& text, size_t n = 2000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// Reaps `pid` if it has ended; true when it has (or is not our child).
bool Ended(pid_t pid) {
  int status = 0;
  const pid_t done = waitpid(pid, &status, WNOHANG);
  return done == pid || (done < 0 && errno == ECHILD);
}

// Waits up to `timeout_ms` for `pid` to end; true when it did.
bool WaitEnded(pid_t pid, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!Ended(pid)) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<PgBouncerServer>> PgBouncerServer::Start(PgBouncerOptions options) {
  if (access(kBinary, X_OK) != 0) {
    return Status::Unavailable(std::string(kBinary) +
                               " not found: install pgbouncer (scripts/install-deps.sh does)");
  }
  if (options.upstream_host.empty()) options.upstream_host = EnvOr("PGHOST", "");
  if (options.upstream_port == 0) options.upstream_port = std::atoi(EnvOr("PGPORT", "0").c_str());
  if (options.user.empty()) options.user = EnvOr("PGUSER", "postgres");
  if (options.upstream_host.empty() || options.upstream_port <= 0) {
    return Status::InvalidArgument("no upstream server: PGHOST/PGPORT unset");
  }
  std::unique_ptr<PgBouncerServer> server(new PgBouncerServer(std::move(options)));
  server->run_uid_ = geteuid();
  server->run_gid_ = getegid();
  if (geteuid() == 0) {
    const passwd* pg = getpwnam("postgres");
    if (pg == nullptr) return Status::Unavailable("running as root but there is no postgres user");
    server->run_uid_ = pg->pw_uid;
    server->run_gid_ = pg->pw_gid;
    if (chown(server->dir_.path().c_str(), pg->pw_uid, pg->pw_gid) != 0) {
      return Status::IoError("chown " + server->dir_.path() + ": " + std::strerror(errno));
    }
  }
  if (Status s =
          WriteText(server->dir_.File("userlist.txt"), "\"" + server->options_.user + "\" \"\"\n");
      !s.ok()) {
    return s;
  }
  // A port taken between FreePort() and the bind is tried again with another.
  Status launched = Status::Unavailable("no free port");
  for (int attempt = 0; attempt < 5; ++attempt) {
    server->port_ = FreePort();
    if (server->port_ == 0) continue;
    if (Status s = server->WriteConfig(); !s.ok()) return s;
    launched = server->Launch();
    if (launched.ok()) return server;
    if (server->Log().find("in use") == std::string::npos) break;
  }
  return launched;
}

PgBouncerServer::~PgBouncerServer() { (void)Stop(); }

Status PgBouncerServer::WriteConfig() {
  const std::string& dir = dir_.path();
  const PgBouncerOptions& o = options_;
  const std::vector<std::pair<std::string, std::string>> settings = {
      {"listen_addr", "127.0.0.1"},
      {"listen_port", std::to_string(port_)},
      {"unix_socket_dir", dir},
      {"auth_type", "trust"},
      {"auth_file", dir + "/userlist.txt"},
      {"admin_users", o.user},
      {"pool_mode", o.pool_mode},
      {"default_pool_size", std::to_string(o.default_pool_size)},
      {"min_pool_size", "0"},
      {"reserve_pool_size", "0"},
      {"max_client_conn", std::to_string(o.max_client_conn)},
      // After an upstream failure, try again within a second (the default waits 15 s).
      {"server_login_retry", "1"},
      {"ignore_startup_parameters", "extra_float_digits"},
      {"logfile", dir + "/pgbouncer.log"},
  };
  std::string ini = "[databases]\n* = host=" + o.upstream_host +
                    " port=" + std::to_string(o.upstream_port) + "\n\n[pgbouncer]\n";
  for (const auto& [name, value] : settings) ini += name + " = " + value + "\n";
  return WriteText(dir_.File("pgbouncer.ini"), ini);
}

Status PgBouncerServer::Launch() {
  // Everything the child needs is prepared before fork(): between fork() and exec() a
  // multithreaded process may only make async-signal-safe calls.
  const std::string ini = dir_.File("pgbouncer.ini");
  const std::string out = dir_.File("pgbouncer.out");
  const std::string& dir = dir_.path();
  const bool switch_user = geteuid() == 0;
  const uid_t uid = run_uid_;
  const gid_t gid = run_gid_;
  char* const argv[] = {const_cast<char*>("pgbouncer"), const_cast<char*>(ini.c_str()), nullptr};
  char* const envp[] = {const_cast<char*>("PATH=/usr/sbin:/usr/bin:/bin"), nullptr};
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return Status::IoError(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (switch_user && (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0)) {
      _exit(126);
    }
    // After the change of user, which would clear it: dies with the thread that started it.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(126);
    const int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (fd < 0 || null_fd < 0 || chdir(dir.c_str()) != 0) _exit(126);
    dup2(null_fd, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execve(kBinary, argv, envp);
    _exit(127);
  }
  pid_ = pid;
  const auto deadline = Clock::now() + std::chrono::milliseconds(kStartTimeoutMs);
  while (true) {
    if (Ended(pid_)) {
      pid_ = -1;
      return Status::Unavailable("pgbouncer exited during start-up: " + Tail(Log()));
    }
    if (TcpConnection::Connect("127.0.0.1", static_cast<uint16_t>(port_), "", 200).ok()) {
      return Status::Ok();
    }
    if (Clock::now() >= deadline) {
      (void)Stop();
      return Status::TimedOut("pgbouncer did not accept connections within " +
                              std::to_string(kStartTimeoutMs) + " ms: " + Tail(Log()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Status PgBouncerServer::Stop() {
  if (pid_ <= 0) return Status::Ok();
  const pid_t pid = pid_;
  pid_ = -1;
  kill(pid, SIGTERM);
  if (WaitEnded(pid, kStopTimeoutMs)) return Status::Ok();
  kill(pid, SIGKILL);
  WaitEnded(pid, kStopTimeoutMs);
  return Status::TimedOut("pgbouncer did not stop on SIGTERM within " +
                          std::to_string(kStopTimeoutMs) + " ms; killed");
}

Status PgBouncerServer::Restart() {
  if (pid_ > 0) return Status::InvalidArgument("pgbouncer is still running");
  return Launch();
}

std::string PgBouncerServer::Url(const std::string& dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + options_.user +
         " dbname=" + dbname;
}

std::string PgBouncerServer::Log() const {
  return ReadFile(dir_.File("pgbouncer.log")) + ReadFile(dir_.File("pgbouncer.out"));
}

}  // namespace ratelimit
