#!/usr/bin/env bash
# A flood of unique keys with an hour's window, as an attacker would send it, against one sidecar
# in its default configuration; what it costs in memory, latency, decisions and database.
#   scripts/bench-flood.sh MODE [SECONDS]   MODE: memory | lease | strict (default 30 s)
# The sidecar runs with RATE_LIMIT_WINDOW_MS=3600000 (and, but for memory, the PostgreSQL store
# in MODE on a private throwaway server). For SECONDS, at the same time:
#   - ratelimit-bench: 4 connections, 64 checks in flight each, keys uniform over 50 million
#     (nearly every check a new key), under the sidecar's default policy;
#   - a hot key checked 200 times a second with a limit of 20 an hour (ratelimit-bench
#     --hot-limit): it must be allowed exactly 20 times, then denied for the whole flood;
#   - the sidecar's RSS from /proc every 100 ms, /metrics every second, and for PostgreSQL the
#     table's rows and pg_total_relation_size every second.
# Then one summary. For PostgreSQL, the table is watched for up to 90 s more: the rows left 60 s
# after the flood, and when the table shrank back to 1% of its peak rows. Builds nothing: run
# after building build/bin/. Everything it started is stopped on any exit. RATE_LIMIT_ variables
# of the caller's environment reach the sidecar (e.g. RATE_LIMIT_MAX_KEYS=20000 for a small cap).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh

mode=${1:-}
seconds=${2:-30}
case "$mode" in
  memory) ;;
  lease | strict) bench_start "$0" "$@" ;;  # Runs again under scripts/with-postgres.sh.
  *)
    echo "usage: $0 memory|lease|strict [SECONDS]" >&2
    exit 2
    ;;
esac
if [ "$mode" = memory ]; then
  work=$(mktemp -d /tmp/rlbench-XXXXXX)
  trap bench_cleanup EXIT
fi
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -ge 1 ] || { echo "SECONDS: a whole number" >&2; exit 2; }

readonly table=bench_flood hot_limit=20
sidecar_env=(RATE_LIMIT_WINDOW_MS=3600000 RATE_LIMIT_ADMIN_ADDR=127.0.0.1:0
  RATE_LIMIT_LOG_LEVEL=info)  # Info: the line that names the admin port.
if [ "$mode" != memory ]; then
  sidecar_env+=(RATE_LIMIT_STORE=postgres RATE_LIMIT_MODE="$mode" RATE_LIMIT_PG_TABLE="$table"
    DATABASE_URL="$RATELIMIT_TEST_DATABASE_URL")
fi
start_sidecar flood "${sidecar_env[@]}"
pid=${bench_pids[-1]}
wait_ready flood
port=$(sed -nE 's/.*"admin server listening".*"port":([0-9]+).*/\1/p' "$work/sidecars.log" | head -1)
[ -n "$port" ] || { echo "no admin port in the sidecar's log" >&2; exit 1; }

now_ms() { date +%s%3N; }
kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$pid/status"; }
scrape() { curl -sf --max-time 2 "http://127.0.0.1:$port/metrics" || true; }
# metric FILE NAME [LABELS]: the sum of the samples NAME{...LABELS...} in a scraped FILE.
metric() {
  awk -v n="$2" -v l="${3:-}" '($1 == n || index($1, n "{") == 1) && index($1, l) { s += $2 }
    END { printf "%.0f\n", s }' "$1"
}
psql_value() { psql -XAtq -c "$1" 2>/dev/null || echo 0; }
rows() { psql_value "SELECT count(*) FROM $table"; }
table_bytes() { psql_value "SELECT pg_total_relation_size('$table')"; }

# Samplers until the file $work/stop exists: RSS every 100 ms, /metrics (and the table) every
# second, each line led by the time in ms.
sample_rss() {
  while [ ! -e "$work/stop" ] && [ -e "/proc/$pid" ]; do
    echo "$(now_ms) $(kb VmRSS)" >>"$work/rss"
    sleep 0.1
  done
}
sample_each_second() {
  local i=0
  while [ ! -e "$work/stop" ]; do
    scrape >"$work/metrics.$i"
    [ "$mode" = memory ] || echo "$(now_ms) $(rows) $(table_bytes)" >>"$work/table"
    i=$((i + 1))
    sleep 1
  done
}

rss_before=$(kb VmRSS)
[ "$mode" = memory ] || rows_before=$(rows)
scrape >"$work/metrics.before"
sample_rss &
bench_pids+=($!)
sample_each_second &
bench_pids+=($!)
start_ms=$(now_ms)
build/bin/ratelimit-bench --socket "$work/flood.sock" --connections 4 --depth 64 \
  --keys 50000000 --key-dist uniform --duration-s "$seconds" --json \
  --hot-limit "$hot_limit" --hot-per-s 200 >"$work/bench.out" 2>"$work/bench.err" || true
end_ms=$(now_ms)
touch "$work/stop"
hwm=$(kb VmHWM)
scrape >"$work/metrics.after"
flood_s=$(awk -v a="$start_ms" -v b="$end_ms" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
json=$(grep '^{' "$work/bench.out" | tail -1)
[ -n "$json" ] || { echo "ratelimit-bench printed no summary:" >&2; cat "$work/bench.err" >&2; exit 1; }

ms() { awk -v v="$(field "$1" <<<"$json")" 'BEGIN { printf "%.1f", v / 1000 }'; }
delta() { echo $(($(metric "$work/metrics.after" "$@") - $(metric "$work/metrics.before" "$@"))); }
per_s() { awk -v n="$1" -v s="$flood_s" 'BEGIN { printf "%.0f", n / s }'; }
# The sidecar's own bound on its slowest check during the flood (the client's maximum also holds
# the time the load generator's threads waited for a core): the smallest bucket of
# ratelimit_check_duration_seconds that holds every check timed meanwhile.
slowest_bucket() {
  awk 'FNR == 1 { file++ }
    /^ratelimit_check_duration_seconds_bucket\{/ {
      le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
      if (file == 1) { before[le] = $2 } else { les[++n] = le; after[le] = $2 }
    }
    END {
      total = after["+Inf"] - before["+Inf"]
      for (i = 1; i <= n; i++) if (after[les[i]] - before[les[i]] >= total) { print les[i]; exit }
    }' "$work/metrics.before" "$work/metrics.after"
}
peak_rss=$(awk 'max < $2 { max = $2 } END { print max + 0 }' "$work/rss")
echo
echo "key flood, $mode, ${flood_s} s: 4 connections x depth 64, keys uniform over 50 million," \
  "window 1 h"
echo "  peak RSS: $((hwm / 1024)) MiB (VmHWM; sampled peak $((peak_rss / 1024)) MiB," \
  "before the flood $((rss_before / 1024)) MiB)"
echo "  checks/s: $(field checks_per_s <<<"$json"), errors: $(field errors <<<"$json")"
echo "  latency ms: p50 $(ms p50_us)  p99 $(ms p99_us)  p99.9 $(ms p999_us)  max $(ms max_us);" \
  "the sidecar timed every check under $(slowest_bucket) s"
echo "  hot key (limit $hot_limit an hour): allowed $(field hot_allowed <<<"$json")," \
  "denied $(field hot_denied <<<"$json"), allowed after a denial" \
  "$(field hot_allowed_after_denial <<<"$json"), errors $(field hot_errors <<<"$json")," \
  "answered by the fallback $(field hot_fallback <<<"$json")"
echo "  evictions: $(delta ratelimit_evictions_total);" \
  "keys held (and caps): $(grep -E "^ratelimit_(active_buckets|max_keys)\{" "$work/metrics.after" | tr "\n" " ")"
echo "  fallbacks: $(delta ratelimit_fallbacks_total)"
# The issue's verdicts on this run.
yes_no() { if awk "BEGIN { exit !($1) }"; then echo yes; else echo NO; fi; }
echo "  judged: peak RSS under 256 MiB $(yes_no "$hwm < 256 * 1024"), 0 errors" \
  "$(yes_no "$(field errors <<<"$json") + $(field hot_errors <<<"$json") == 0")," \
  "max latency under 50 ms $(yes_no "$(field max_us <<<"$json") < 50000"), hot key exact" \
  "$(yes_no "$(field hot_allowed <<<"$json") == $hot_limit && \
    $(field hot_allowed_after_denial <<<"$json") == 0")"
[ "$mode" = memory ] && exit 0

inserted=$(delta ratelimit_db_new_keys_total)
transactions=$(delta ratelimit_db_transactions_total)
peak_rows=$(awk 'max < $2 { max = $2 } END { print max + 0 }' "$work/table")
peak_bytes=$(awk 'max < $3 { max = $3 } END { print max + 0 }' "$work/table")
echo "  rows inserted/s: $(per_s $((peak_rows - rows_before))) by the table's growth," \
  "$(per_s "$inserted") by ratelimit_db_new_keys_total; new keys deferred to the fallback:" \
  "$(delta ratelimit_db_new_keys_deferred_total)"
echo "  transactions/s: $(per_s "$transactions")"
echo "  table: peak $peak_rows rows, $((peak_bytes / 1024 / 1024)) MiB"

# After the flood: the rows every second for up to 90 s, until fewer than 1% of the peak and 60 s
# have passed.
shrank="" left_60=""
for t in $(seq 1 90); do
  sleep 1
  n=$(rows)
  [ "$t" -eq 60 ] && left_60=$n
  if [ -z "$shrank" ] && [ "$n" -le $((peak_rows / 100)) ]; then
    shrank=$t
    echo "  table shrank back to $n rows (under 1% of its peak) ${t} s after the flood"
  fi
  [ -n "$shrank" ] && [ "$t" -ge 60 ] && break
done
[ -n "$shrank" ] || echo "  the table did not shrink to 1% of its peak within 90 s ($n rows)"
echo "  rows left 60 s after the flood: $left_60; table now $(($(table_bytes) / 1024 / 1024)) MiB"
