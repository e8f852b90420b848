// Real processes for end-to-end tests: the sidecar binary and one-shot commands such as the CLI.
#include "tests/testing/sidecar_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>

#include "ratelimit/client.h"

namespace ratelimit {
namespace {

int64_t NowMillis() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

pid_t Spawn(const std::vector<std::string>& argv, const Env& env, const std::string& out_path,
            const std::string& err_path) {
  Env full = env;
  for (const char* inherited : {"PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}) {
    if (const char* value = std::getenv(inherited); value != nullptr && !full.count(inherited)) {
      full[inherited] = value;
    }
  }
  std::vector<std::string> env_strings;
  for (const auto& [name, value] : full) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argvp;
  for (std::string& s : args) argvp.push_back(s.data());
  argvp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argvp[0], &actions, nullptr, argvp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// Waits for `pid` up to `timeout_ms`; returns its exit code, or -1 (timeout or signal).
int Wait(pid_t pid, int timeout_ms, bool* exited) {
  const int64_t deadline = NowMillis() + timeout_ms;
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      *exited = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (done < 0 || NowMillis() >= deadline) return -1;
    usleep(2000);
  }
}

}  // namespace

ProcessResult RunProcess(const std::vector<std::string>& argv, const Env& env, int timeout_ms) {
  TempDir dir;
  ProcessResult result;
  const pid_t pid = Spawn(argv, env, dir.File("out"), dir.File("err"));
  if (pid < 0) return result;
  bool exited = false;
  result.exit_code = Wait(pid, timeout_ms, &exited);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  result.out = ReadFile(dir.File("out"));
  result.err = ReadFile(dir.File("err"));
  return result;
}

Result<std::unique_ptr<SidecarProcess>> SidecarProcess::Start(Env env, bool wait_for_ping) {
  std::unique_ptr<SidecarProcess> process(new SidecarProcess());
  if (!env.count("RATE_LIMIT_SOCKET")) env["RATE_LIMIT_SOCKET"] = process->dir_.File("rl.sock");
  process->socket_path_ = env["RATE_LIMIT_SOCKET"];
  process->pid_ =
      Spawn({kSidecarBin}, env, process->dir_.File("stdout"), process->dir_.File("stderr"));
  if (process->pid_ < 0) return Status::IoError("cannot spawn " + std::string(kSidecarBin));

  Client client(ClientOptions{process->socket_path_, 200});
  const int64_t deadline = NowMillis() + 10000;
  while (true) {
    if (wait_for_ping ? client.Ping().ok() : access(process->socket_path_.c_str(), F_OK) == 0) {
      return process;
    }
    bool exited = false;
    if (Wait(process->pid_, 0, &exited) >= 0 || exited) {
      process->exited_ = true;
      return Status::Unavailable("sidecar exited during start-up: " + process->Stderr());
    }
    if (NowMillis() >= deadline) {
      return Status::TimedOut("sidecar did not answer a ping within 10 s: " + process->Stderr());
    }
    usleep(5000);
  }
}

SidecarProcess::~SidecarProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void SidecarProcess::Signal(int signum) { kill(pid_, signum); }

int SidecarProcess::WaitExit(int timeout_ms) {
  const int code = Wait(pid_, timeout_ms, &exited_);
  return code;
}

std::string SidecarProcess::Stderr() const { return ReadFile(dir_.File("stderr")); }

}  // namespace ratelimit
