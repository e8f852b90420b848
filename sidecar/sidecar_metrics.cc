// SidecarMetrics: every series /metrics exposes, named once, over the metrics their owners keep.
#include "sidecar/sidecar_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace ratelimit {
namespace {

constexpr double kNsPerSecond = 1e9;

constexpr const char* kSourceNames[kSourceCount] = {"memory", "lease", "database", "fallback"};

// The series of one in-memory key table, labelled with its store.
void RegisterKeyTable(MetricsRegistry& registry, const char* store, const Gauge& keys,
                      const Gauge& max_keys, const Counter& evictions) {
  const MetricLabels labels{{"store", store}};
  registry.AddGauge("ratelimit_active_buckets",
                    "Keys held in memory: buckets of the memory store, keys with lease state, or "
                    "buckets of the local fallback.",
                    keys, labels);
  registry.AddGauge("ratelimit_max_keys",
                    "The most keys the table holds (RATE_LIMIT_MAX_KEYS; lease state a quarter).",
                    max_keys, labels);
  registry.AddCounter("ratelimit_evictions_total",
                      "Keys forgotten to make room for a new key in a full table.", evictions,
                      labels);
}

void RegisterKeyTableMetrics(MetricsRegistry& registry, const Engines& engines) {
  if (engines.memory != nullptr) {
    const MemoryEngineMetrics& m = engines.memory->metrics();
    RegisterKeyTable(registry, "memory", m.buckets, m.max_keys, m.evictions);
  }
  if (engines.lease != nullptr) {
    const LeaseMetrics& m = engines.lease->metrics();
    RegisterKeyTable(registry, "lease", m.keys, m.max_keys, m.evictions);
  }
  if (engines.fallback != nullptr && engines.fallback->local() != nullptr) {
    const MemoryEngineMetrics& m = engines.fallback->local()->metrics();
    RegisterKeyTable(registry, "fallback", m.buckets, m.max_keys, m.evictions);
  }
}

}  // namespace

void RegisterSidecarMetrics(MetricsRegistry& registry, const ServerMetrics& server,
                            const SidecarStatusMetrics& sidecar, const Engines& engines) {
  registry.AddGauge("ratelimit_build_info", "The sidecar's version; the value is always 1.",
                    sidecar.build_info, {{"version", RATELIMIT_VERSION}});

  constexpr const char* kChecksHelp =
      "Checks answered with status ok, by decision and by what decided them (memory, lease, "
      "database, fallback).";
  for (size_t source = 0; source < kSourceCount; ++source) {
    registry.AddCounter("ratelimit_checks_total", kChecksHelp, server.allowed[source],
                        {{"decision", "allowed"}, {"source", kSourceNames[source]}});
    registry.AddCounter("ratelimit_checks_total", kChecksHelp, server.denied[source],
                        {{"decision", "denied"}, {"source", kSourceNames[source]}});
  }
  for (size_t status = 1; status < kStatusCount; ++status) {
    registry.AddCounter(
        "ratelimit_check_errors_total",
        "Checks answered with a status other than ok: invalid_request, cost_exceeds_limit, "
        "store_unavailable, overloaded, shutting_down.",
        server.refused[status], {{"status", CheckStatusName(static_cast<CheckStatus>(status))}});
  }
  registry.AddHistogram("ratelimit_check_duration_seconds",
                        "Time from reading a check's frame to writing its answer, in seconds.",
                        server.latency, kNsPerSecond);
  registry.AddCounter("ratelimit_bad_frames_total",
                      "Frames refused with an ErrorResponse (bad length, failed verification, "
                      "not a request); each closes its connection.",
                      server.bad_frames);
  registry.AddGauge("ratelimit_connections", "Client connections open on the Unix socket.",
                    server.connections_open);
  registry.AddCounter("ratelimit_connections_accepted_total",
                      "Client connections accepted and served.", server.connections_accepted);
  registry.AddCounter("ratelimit_connections_refused_total",
                      "Client connections refused: over RATE_LIMIT_MAX_CONNECTIONS, a peer uid "
                      "not in RATE_LIMIT_ALLOWED_UIDS, or during shutdown.",
                      server.connections_refused);

  registry.AddGauge("ratelimit_store_ready",
                    "1 when the store can decide checks now; 0 while the database is "
                    "unreachable, failing or its table unusable (checks then go to the "
                    "fallback).",
                    sidecar.store_ready);
  RegisterKeyTableMetrics(registry, engines);
  if (engines.fallback != nullptr) {
    registry.AddCounter("ratelimit_fallbacks_total",
                        "Checks the database could not decide, answered by RATE_LIMIT_FALLBACK.",
                        engines.fallback->metrics().fallbacks);
  }
  if (engines.lease != nullptr) {
    const LeaseMetrics& lease = engines.lease->metrics();
    registry.AddCounter("ratelimit_lease_fetches_total",
                        "Leases asked of the database (each one operation of a transaction).",
                        lease.fetches);
    registry.AddCounter("ratelimit_lease_tokens_fetched_total",
                        "Tokens leased from the shared buckets.", lease.tokens_leased);
    registry.AddCounter("ratelimit_lease_returns_total",
                        "Leases given back to the database: expired, replaced by a new policy, "
                        "or at shutdown.",
                        lease.returns);
    registry.AddCounter("ratelimit_lease_tokens_returned_total",
                        "Whole tokens the database put back into the shared buckets.",
                        lease.tokens_returned);
    registry.AddCounter("ratelimit_lease_tokens_expired_total",
                        "Tokens still unspent when their lease expired (then given back).",
                        lease.tokens_expired);
    registry.AddCounter("ratelimit_lease_waits_total",
                        "Checks that waited for a lease fetch instead of being answered from "
                        "memory at once.",
                        lease.waited);
    registry.AddCounter("ratelimit_lease_decided_in_store_total",
                        "Waiting checks the lease that landed did not cover, decided by the "
                        "database one by one in the next transaction (as strict mode would).",
                        lease.decided_in_store);
    registry.AddCounter("ratelimit_lease_unconfirmed_allowed_total",
                        "Checks of keys holding no lease allowed from memory at once, from the "
                        "per-key allowance (RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY), their debit "
                        "sent with the next transaction.",
                        lease.unconfirmed_allowed);
    registry.AddGauge("ratelimit_lease_unconfirmed_tokens",
                      "Tokens admitted from the allowance that the database has not confirmed "
                      "yet (at most RATE_LIMIT_LEASE_UNCONFIRMED_MAX).",
                      lease.unconfirmed);
    registry.AddCounter("ratelimit_lease_debts_total",
                        "Database answers that left a shared bucket owing tokens admitted "
                        "unconfirmed: it grants nothing until refill repays them.",
                        lease.debts);
    registry.AddCounter("ratelimit_lease_new_keys_deferred_total",
                        "Checks of keys without lease state (or let in by the flood and not yet "
                        "answered by the database) answered by RATE_LIMIT_FALLBACK at once, "
                        "without the database, during a flood of new keys.",
                        lease.new_keys_deferred);
  }
  if (engines.pg_store != nullptr) {
    const PgStoreMetrics& db = engines.pg_store->metrics();
    registry.AddCounter("ratelimit_db_transactions_total",
                        "Database transactions started (checks, lease fetches and returns).",
                        db.transactions);
    registry.AddCounter("ratelimit_db_transaction_errors_total",
                        "Database transactions that failed or timed out.", db.failed_transactions);
    registry.AddHistogram("ratelimit_db_batch_size",
                          "Operations (checks, lease fetches, returns) per database transaction.",
                          db.batch_size, 1);
    registry.AddHistogram("ratelimit_db_transaction_duration_seconds",
                          "Database transaction time from BEGIN to the answer to COMMIT, or to "
                          "the failure, in seconds.",
                          db.duration, kNsPerSecond);
    registry.AddCounter("ratelimit_db_repaired_rows_total",
                        "Malformed rows found and repaired (each is also logged).",
                        db.repaired_rows);
    registry.AddCounter("ratelimit_db_algorithm_switched_rows_total",
                        "Rows recording the other algorithm (token bucket or fixed window) than "
                        "the check's, converted to it (each is also logged).",
                        db.switched_rows);
    registry.AddCounter("ratelimit_db_rows_written_total",
                        "Rows updated or inserted by committed check, lease and return "
                        "transactions.",
                        db.rows_written);
    registry.AddCounter("ratelimit_db_collected_rows_total",
                        "Rows of full buckets deleted by garbage collection.", db.collected_rows);
    registry.AddCounter("ratelimit_db_new_keys_total",
                        "Rows inserted for keys that had none (bounded by "
                        "RATE_LIMIT_PG_NEW_KEYS_PER_SEC).",
                        db.new_keys);
    registry.AddCounter("ratelimit_db_new_keys_deferred_total",
                        "Checks and lease fetches of keys without a row answered by the fallback "
                        "because the new-key insert bound was reached.",
                        db.new_keys_deferred);
  }
}

void AppendProcessMetrics(std::string& out) {
  auto series = [&out](const char* name, const char* type, const char* help, double value) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
    out += name;
    out += ' ';
    out += FormatMetricValue(value);
    out += '\n';
  };
  // /proc/self/stat: the command name (field 2) is in parentheses and may hold spaces, so the
  // fields are counted from the last ')'.
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f((std::istream_iterator<std::string>(fields)),
                               std::istream_iterator<std::string>());
    // f[0] is field 3 (state): field n is f[n - 3].
    if (f.size() > 21) {
      const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      const double cpu =
          (std::strtod(f[11].c_str(), nullptr) + std::strtod(f[12].c_str(), nullptr)) / ticks;
      series("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.",
             cpu);
      series("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
             std::strtod(f[21].c_str(), nullptr) * static_cast<double>(sysconf(_SC_PAGESIZE)));
      std::ifstream proc_stat("/proc/stat");
      std::string line;
      while (std::getline(proc_stat, line)) {
        if (line.rfind("btime ", 0) == 0) {
          const double boot = std::strtod(line.c_str() + 6, nullptr);
          series("process_start_time_seconds", "gauge",
                 "Start time of the process since the Unix epoch, in seconds.",
                 boot + std::strtod(f[19].c_str(), nullptr) / ticks);
          break;
        }
      }
    }
  }
  if (DIR* fds = opendir("/proc/self/fd"); fds != nullptr) {
    size_t open = 0;
    while (const dirent* entry = readdir(fds)) open += entry->d_name[0] != '.';
    closedir(fds);
    series("process_open_fds", "gauge", "Open file descriptors.",
           static_cast<double>(open > 0 ? open - 1 : 0));  // Less the one reading the folder.
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    series("process_max_fds", "gauge", "The open file descriptor limit (soft).",
           static_cast<double>(limit.rlim_cur));
  }
}

}  // namespace ratelimit
