// Real processes for end-to-end tests: the sidecar binary and one-shot commands such as the CLI.
#ifndef RATELIMIT_TESTS_TESTING_SIDECAR_PROCESS_H_
#define RATELIMIT_TESTS_TESTING_SIDECAR_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "schema/status.h"
#include "tests/testing/temp_dir.h"

namespace ratelimit {

using Env = std::map<std::string, std::string>;

inline constexpr char kSidecarBin[] = RATELIMIT_SIDECAR_BIN;
inline constexpr char kCliBin[] = RATELIMIT_CLI_BIN;
inline constexpr char kBenchBin[] = RATELIMIT_BENCH_BIN;

struct ProcessResult {
  int exit_code = -1;  // -1: killed after the timeout, or by a signal.
  std::string out;
  std::string err;
};

// Runs `argv` with exactly `env` (plus PATH and any sanitizer options of this process), waits up
// to `timeout_ms` (then SIGKILLs it), and captures its output.
ProcessResult RunProcess(const std::vector<std::string>& argv, const Env& env,
                         int timeout_ms = 10000);

// A running ratelimit-sidecar with its own socket in a temporary directory (unless `env` names
// RATE_LIMIT_SOCKET) and stderr captured to a file. The destructor SIGKILLs it if still running.
class SidecarProcess {
 public:
  // Starts the binary and waits up to 10 s until a Ping succeeds, or, when `wait_for_ping` is
  // false (a sidecar that refuses this process), until its socket file exists.
  static Result<std::unique_ptr<SidecarProcess>> Start(Env env = {}, bool wait_for_ping = true);
  ~SidecarProcess();
  SidecarProcess(const SidecarProcess&) = delete;
  SidecarProcess& operator=(const SidecarProcess&) = delete;

  const std::string& socket_path() const { return socket_path_; }
  pid_t pid() const { return pid_; }
  void Signal(int signum);
  // Waits for the process to end; returns its exit code, or -1 on timeout or death by signal.
  int WaitExit(int timeout_ms = 10000);
  std::string Stderr() const;

 private:
  SidecarProcess() = default;

  TempDir dir_;
  std::string socket_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_SIDECAR_PROCESS_H_
