#!/usr/bin/env bash
# What the admin server and its metrics cost the check path, measured in one run, alternating:
#   scripts/bench-admin.sh [SECONDS] [ROUNDS]   (default 5 s per measurement, 3 rounds)
# Sidecars on the memory store:
#   off      RATE_LIMIT_ADMIN_ADDR unset (metrics are still counted; nothing serves them)
#   on       the admin server listening, nobody scraping
#   scraped  the admin server scraped RATE_LIMIT_BENCH_SCRAPES_PER_S times a second (default 10,
#            150 times Prometheus' default of one scrape every 15 s; 0 scrapes flat out)
#   baseline RATELIMIT_BASELINE_SIDECAR, when set: another build of the sidecar (for example the
#            commit before metrics were counted), admin unset
# Each is measured for latency (1 connection, depth 1: p50, p99) and throughput (8 connections,
# depth 64: checks/s); medians of ROUNDS. The scraper's own latency (curl time_total) is
# reported too.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
rounds=${2:-3}
scrapes_per_s=${RATELIMIT_BENCH_SCRAPES_PER_S:-10}
source scripts/bench-common.sh
work=$(mktemp -d /tmp/rlbench-XXXXXX)
trap 'kill "${scraper:-0}" 2>/dev/null || true; bench_cleanup' EXIT
command -v curl >/dev/null || { echo "bench-admin.sh needs curl" >&2; exit 2; }
policy=(--keys 1000 --limit 1000000000 --window-ms 1000)

port=$((20000 + RANDOM % 20000))  # The scraped sidecar's; a taken port fails wait_ready.
start_sidecar off
start_sidecar on RATE_LIMIT_ADMIN_ADDR=127.0.0.1:0
start_sidecar scraped RATE_LIMIT_ADMIN_ADDR="127.0.0.1:$port"
names=(off on scraped)
if [ -n "${RATELIMIT_BASELINE_SIDECAR:-}" ]; then
  start_sidecar_bin "$RATELIMIT_BASELINE_SIDECAR" baseline
  names+=(baseline)
fi
wait_ready "${names[@]}"

# scrape_loop OUT: GET /metrics until killed, one curl time_total per line in OUT.
scrape_loop() {
  local pause=0
  [ "$scrapes_per_s" -gt 0 ] && pause=$(awk -v r="$scrapes_per_s" 'BEGIN { print 1 / r }')
  while true; do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/metrics" >>"$1" || true
    [ "$pause" = 0 ] || sleep "$pause"
  done
}

declare -A p50 p99 cps
for round in $(seq 1 "$rounds"); do
  for name in "${names[@]}"; do
    [ "$name" = scraped ] && { scrape_loop "$work/scrapes" & scraper=$!; }
    l=$(bench "$name" --duration-s "$seconds" "${policy[@]}")
    t=$(bench "$name" --connections 8 --depth 64 --duration-s "$seconds" "${policy[@]}")
    [ "$name" = scraped ] && { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
    echo "round $round $name: latency $l"
    echo "round $round $name: throughput $t"
    p50[$name]+="$(field p50_us <<<"$l") "
    p99[$name]+="$(field p99_us <<<"$l") "
    cps[$name]+="$(field checks_per_s <<<"$t") "
  done
done

echo
echo "median of $rounds rounds of ${seconds}s (latency: 1 connection, depth 1; throughput: 8 x 64):"
for name in "${names[@]}"; do
  # shellcheck disable=SC2086
  printf '  %-8s p50 %6s us  p99 %6s us  %10s checks/s\n' "$name" "$(median ${p50[$name]})" \
    "$(median ${p99[$name]})" "$(median ${cps[$name]})"
done
# shellcheck disable=SC2086
awk -v off="$(median ${cps[off]})" -v s="$(median ${cps[scraped]})" \
  -v lo="$(median ${p50[off]})" -v ls="$(median ${p50[scraped]})" \
  'BEGIN { printf "  scraped / off: throughput %.3f, p50 %.3f\n", s / off, ls / lo }'
if [ -n "${RATELIMIT_BASELINE_SIDECAR:-}" ]; then
  # shellcheck disable=SC2086
  awk -v off="$(median ${cps[off]})" -v b="$(median ${cps[baseline]})" \
    -v lo="$(median ${p50[off]})" -v lb="$(median ${p50[baseline]})" \
    'BEGIN { printf "  off / baseline: throughput %.3f, p50 %.3f\n", off / b, lo / lb }'
fi
n=$(wc -l <"$work/scrapes")
sort -g "$work/scrapes" | awk -v n="$n" '{ v[NR] = $1 } END {
  printf "  scrapes: %d, time_total p50 %.2f ms, p99 %.2f ms\n", n, v[int(n * 0.5) + 1] * 1000,
    v[int(n * 0.99) + 1] * 1000 }'
