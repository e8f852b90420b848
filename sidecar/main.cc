// ratelimit-sidecar: reads its configuration from the environment and serves until signalled.
#include <signal.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "sidecar/config/config.h"
#include "sidecar/config/config_docs.h"
#include "sidecar/engines.h"
#include "sidecar/log/log.h"
#include "sidecar/pg/conninfo.h"
#include "sidecar/server/fd_limit.h"
#include "sidecar/sidecar.h"

extern char** environ;

namespace ratelimit {
namespace {

void PrintHelp() {
  std::printf(
      "ratelimit-sidecar: answers rate-limit checks over a Unix socket.\n"
      "Configured by environment variables only:\n\n%s\n"
      "--config-markdown prints the same as README.md's configuration table.\n",
      ConfigHelp().c_str());
}

// The command line: --help and --config-markdown print and exit 0, anything else is refused
// with exit code 2. nullopt when there is no argument: the sidecar starts.
std::optional<int> RunArguments(int argc, char** argv) {
  if (argc <= 1) return std::nullopt;
  if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    PrintHelp();
    return 0;
  }
  if (std::strcmp(argv[1], "--config-markdown") == 0) {
    std::fputs(ConfigMarkdownTable().c_str(), stdout);
    return 0;
  }
  std::fprintf(stderr,
               "ratelimit-sidecar takes no arguments (configure it with environment "
               "variables; see --help), got: %s\n",
               argv[1]);
  return 2;
}

const char* ModeName(const Config& config) {
  if (config.store != StoreKind::kPostgres) return "memory";
  return config.mode == StoreMode::kLease ? "lease" : "strict";
}

// Raises the open file limit (see RaiseFdLimit) and warns when the connection cap cannot fit in
// it: connections past the limit would be dropped without an answer.
void RaiseFdLimitForConnections(const Config& config) {
  Result<FdLimit> limit = RaiseFdLimit();
  if (!limit.ok()) {
    Log(LogLevel::kWarn, "cannot raise the open file limit").Str("error", limit.status().message());
    return;
  }
  Log(LogLevel::kInfo, limit->soft > limit->old_soft ? "raised the open file limit"
                                                     : "open file limit already at its maximum")
      .Int("old_soft", static_cast<int64_t>(limit->old_soft))
      .Int("new_soft", static_cast<int64_t>(limit->soft))
      .Int("hard", static_cast<int64_t>(limit->hard));
  const uint64_t needed =
      uint64_t{config.max_connections} + kFdsBesidesConnections +
      (config.store == StoreKind::kPostgres ? uint64_t{config.pg_connections} : 0);
  if (needed > limit->soft) {
    Log(LogLevel::kWarn,
        "RATE_LIMIT_MAX_CONNECTIONS does not fit in the open file limit; connections past the "
        "limit will be dropped without an answer")
        .Int("max_connections", config.max_connections)
        .Int("fds_needed", static_cast<int64_t>(needed))
        .Int("open_file_limit", static_cast<int64_t>(limit->soft));
  }
}

// DATABASE_URL as the store will use it: the ORM parameters taken out, the rest checked by
// libpq's parser for the postgres store (an error is one line that never quotes the URL), with
// the keepalives every session adds (WithKeepalives). The memory store does not use it: it is
// only cleaned, when it can be, for the start-up line.
Result<CleanConninfo> CheckDatabaseUrl(const Config& config) {
  if (config.store != StoreKind::kPostgres) return StripOrmParametersOrKeep(config.database_url);
  Result<CleanConninfo> url = StripOrmParameters(config.database_url);
  if (!url.ok()) return url;
  if (Status valid = ValidateConninfo(url->conninfo); !valid.ok()) return valid;
  url->conninfo = WithKeepalives(url->conninfo);  // As every session adds them.
  return url;
}

// One warning naming the ORM parameters of DATABASE_URL that mean nothing here (schema too,
// when RATE_LIMIT_PG_TABLE names the schema), and one line when the URL's schema is the table's.
void LogOrmParameters(const Config& config, const CleanConninfo& url) {
  if (config.store != StoreKind::kPostgres) return;
  const TableName table = TableForUrl(config.pg_table, url);
  const bool schema_ignored = !url.schema.empty() && table.schema != url.schema;
  std::string ignored = schema_ignored ? "schema" : "";
  for (const std::string& name : url.ignored) ignored += (ignored.empty() ? "" : ",") + name;
  if (!ignored.empty()) {
    Log line(LogLevel::kWarn, "ignoring DATABASE_URL parameters that only an ORM reads");
    line.Str("parameters", ignored);
    if (schema_ignored) line.Str("schema", "RATE_LIMIT_PG_TABLE names the table's schema");
  }
  if (!url.schema.empty() && !schema_ignored) {
    Log(LogLevel::kInfo, "the table's schema is DATABASE_URL's schema parameter")
        .Str("table", table.Plain());
  }
}

int Main(int argc, char** argv) {
  if (const std::optional<int> exit_code = RunArguments(argc, argv)) return *exit_code;
  Result<Config> config = LoadConfig([](const char* name) { return std::getenv(name); });
  if (!config.ok()) {
    Log(LogLevel::kError, "invalid configuration").Str("error", config.status().message());
    return 2;
  }
  Result<CleanConninfo> url = CheckDatabaseUrl(*config);
  if (!url.ok()) {
    Log(LogLevel::kError, "invalid configuration").Str("error", url.status().message());
    return 2;
  }
  SetLogLevel(config->log_level);
  // DATABASE_URL is shown as libpq gets it, without the ORM parameters.
  LogEffectiveConfig(*config, RedactConninfo(url->conninfo));
  LogOrmParameters(*config, *url);
  for (const std::string& name : UnknownRateLimitVariables(environ)) {
    Log(LogLevel::kWarn, "ignoring unknown variable").Str("variable", name);
  }
  RaiseFdLimitForConnections(*config);
  Result<EngineSecrets> secrets = RandomEngineSecrets();
  if (!secrets.ok()) {
    Log(LogLevel::kError, "cannot start").Str("error", secrets.status().message());
    return 1;
  }
  // A client that disconnects mid-write must cost an EPIPE, not the process.
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  uv_loop_init(&loop);
  int exit_code = 0;
  {
    Sidecar sidecar(&loop, *config, *secrets);
    if (Status started = sidecar.Start(); started.ok()) {
      // The rest of the configuration is in the "effective configuration" line.
      Log(LogLevel::kInfo, "listening")
          .Str("socket", config->socket_path)
          .Str("store", config->store == StoreKind::kPostgres ? "postgres" : "memory")
          .Str("mode", ModeName(*config));
    } else {
      Log(LogLevel::kError, "cannot start").Str("error", started.message());
      exit_code = 1;
      sidecar.Stop();
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    sidecar.StopAdmin();
  }
  if (const int rc = uv_loop_close(&loop); rc != 0) {
    Log(LogLevel::kError, "event loop closed with handles still open")
        .Str("error", uv_strerror(rc));
    exit_code = exit_code == 0 ? 1 : exit_code;
  }
  LogFlushSuppressed();
  if (exit_code == 0) Log(LogLevel::kInfo, "stopped");
  return exit_code;
}

}  // namespace
}  // namespace ratelimit

int main(int argc, char** argv) { return ratelimit::Main(argc, argv); }
