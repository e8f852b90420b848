// ratelimit-cli: asks a running sidecar for a decision or a ping, for people and scripts.
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/client.h"
#include "schema/json_text.h"

namespace ratelimit {
namespace {

constexpr int kExitAllowed = 0;
constexpr int kExitDenied = 1;
constexpr int kExitError = 2;

constexpr char kUsage[] =
    "usage: ratelimit-cli [--socket PATH] [--timeout-ms MS] check KEY [--cost N] [--limit N]\n"
    "                     [--window-ms MS] [--json]\n"
    "       ratelimit-cli [--socket PATH] [--timeout-ms MS] ping [--json]\n"
    "--socket defaults to $RATE_LIMIT_SOCKET, then /var/run/ratelimit/ratelimit.sock.\n"
    "Exit status: 0 allowed (or ping answered), 1 denied, 2 error.\n";

struct Command {
  std::string verb;
  std::string key;
  CheckArgs args;
  ClientOptions options;
  bool json = false;
};

int UsageError(const std::string& message) {
  std::fprintf(stderr, "ratelimit-cli: %s\n%s", message.c_str(), kUsage);
  return kExitError;
}

bool ParseU32(std::string_view text, uint32_t max, uint32_t& out) {
  uint64_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value > max) return false;
  out = static_cast<uint32_t>(value);
  return true;
}

// Returns an exit code when parsing fails or help was asked for, else -1.
int Parse(int argc, char** argv, Command& cmd) {
  std::vector<std::string_view> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return kExitAllowed;
    }
    if (arg == "--json") {
      cmd.json = true;
      continue;
    }
    if (!arg.starts_with("--")) {
      positional.push_back(arg);
      continue;
    }
    if (i + 1 >= argc) return UsageError(std::string(arg) + " needs a value");
    const std::string_view value = argv[++i];
    constexpr uint32_t kMax = std::numeric_limits<uint32_t>::max();
    uint32_t timeout = 0;
    if (arg == "--socket") {
      cmd.options.socket_path = std::string(value);
    } else if (arg == "--timeout-ms") {
      if (!ParseU32(value, 3600000, timeout) || timeout == 0) {
        return UsageError("--timeout-ms must be an integer from 1 to 3600000");
      }
      cmd.options.timeout_ms = static_cast<int>(timeout);
    } else if (arg == "--cost") {
      if (!ParseU32(value, kMax, cmd.args.cost))
        return UsageError("--cost must be 0 to 4294967295");
    } else if (arg == "--limit") {
      if (!ParseU32(value, kMax, cmd.args.limit))
        return UsageError("--limit must be 0 to 4294967295");
    } else if (arg == "--window-ms") {
      if (!ParseU32(value, kMax, cmd.args.window_ms)) {
        return UsageError("--window-ms must be 0 to 4294967295");
      }
    } else {
      return UsageError("unknown option " + std::string(arg));
    }
  }
  if (positional.empty()) return UsageError("missing command (check or ping)");
  cmd.verb = std::string(positional[0]);
  if (cmd.verb == "check") {
    if (positional.size() != 2) return UsageError("check takes exactly one KEY");
    cmd.key = std::string(positional[1]);
  } else if (cmd.verb == "ping") {
    if (positional.size() != 1) return UsageError("ping takes no arguments");
  } else {
    return UsageError("unknown command " + cmd.verb);
  }
  return -1;
}

std::string Quoted(std::string_view text) {
  std::string out = "\"";
  AppendJsonEscaped(out, text);
  return out + "\"";
}

int Fail(const Command& cmd, const Status& status) {
  if (cmd.json) {
    std::printf("{\"error\":%s}\n", Quoted(status.ToString()).c_str());
  }
  std::fprintf(stderr, "ratelimit-cli: %s\n", status.ToString().c_str());
  return kExitError;
}

int RunCheck(Client& client, Command& cmd) {
  cmd.args.key = cmd.key;
  Result<CheckResult> result = client.Check(cmd.args);
  if (!result.ok()) return Fail(cmd, result.status());
  const CheckResult& r = *result;
  if (cmd.json) {
    std::printf(
        "{\"allowed\":%s,\"status\":\"%s\",\"limit\":%u,\"remaining\":%u,\"retry_after_ms\":%u,"
        "\"reset_after_ms\":%u,\"source\":\"%s\"}\n",
        r.allowed ? "true" : "false", CheckStatusName(r.status), r.limit, r.remaining,
        r.retry_after_ms, r.reset_after_ms, SourceName(r.source));
  } else {
    std::printf(
        "%s key=%s status=%s limit=%u remaining=%u retry_after_ms=%u reset_after_ms=%u "
        "source=%s\n",
        r.allowed ? "allowed" : "denied", Quoted(cmd.key).c_str(), CheckStatusName(r.status),
        r.limit, r.remaining, r.retry_after_ms, r.reset_after_ms, SourceName(r.source));
  }
  if (r.status == CheckStatus::kOk || r.status == CheckStatus::kCostExceedsLimit) {
    return r.allowed ? kExitAllowed : kExitDenied;
  }
  return kExitError;  // InvalidRequest, StoreUnavailable, ...: no decision was made.
}

int RunPing(Client& client, const Command& cmd) {
  Result<PingResult> result = client.Ping();
  if (!result.ok()) return Fail(cmd, result.status());
  if (cmd.json) {
    std::printf("{\"protocol_version\":%u,\"store\":%s,\"ready\":%s}\n", result->protocol_version,
                Quoted(result->store).c_str(), result->ready ? "true" : "false");
  } else {
    std::printf("pong protocol_version=%u store=%s ready=%s\n", result->protocol_version,
                result->store.c_str(), result->ready ? "true" : "false");
  }
  return kExitAllowed;
}

int Main(int argc, char** argv) {
  Command cmd;
  if (const int code = Parse(argc, argv, cmd); code >= 0) return code;
  Client client(cmd.options);
  return cmd.verb == "check" ? RunCheck(client, cmd) : RunPing(client, cmd);
}

}  // namespace
}  // namespace ratelimit

int main(int argc, char** argv) { return ratelimit::Main(argc, argv); }
