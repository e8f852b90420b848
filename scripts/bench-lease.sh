#!/usr/bin/env bash
# Lease mode against the memory store and strict mode, all measured in one run on one private
# PostgreSQL, alternating so that the machine's noise falls on every side alike.
#   scripts/bench-lease.sh [SECONDS] [ROUNDS]   (default 5 s per measurement, 3 rounds)
# 1. Latency of a check answered from memory: one sidecar on the memory store and one in lease
#    mode, one blocking connection each, one key with a policy so large that every check is
#    admitted; measured alternately, ROUNDS times each. Medians of p50 and p99.
# 2. Hot-key throughput across 3 sidecars: strict mode, lease mode (on one table and one key),
#    and, as the ceiling, 3 sidecars on the memory store; the same clients for each
#    (RATE_LIMIT_BENCH_CONNECTIONS connections per sidecar, default 1, each with
#    RATE_LIMIT_BENCH_DEPTH checks in flight, default 16); ROUNDS times. Medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_start "$0" "$@"
seconds=${1:-5}
rounds=${2:-3}
connections=${RATE_LIMIT_BENCH_CONNECTIONS:-1}
depth=${RATE_LIMIT_BENCH_DEPTH:-16}
policy=(--keys 1 --limit 1000000000 --window-ms 1000)
pg=(RATE_LIMIT_STORE=postgres DATABASE_URL="$RATELIMIT_TEST_DATABASE_URL")

start_sidecar memory
start_sidecar lease1 "${pg[@]}" RATE_LIMIT_MODE=lease RATE_LIMIT_PG_TABLE=bench_latency
wait_ready memory lease1
memory_p50=() memory_p99=() lease_p50=() lease_p99=()
for round in $(seq 1 "$rounds"); do
  m=$(bench memory --duration-s "$seconds" "${policy[@]}")
  l=$(bench lease1 --duration-s "$seconds" "${policy[@]}")
  echo "latency round $round: memory $m"
  echo "latency round $round: lease  $l"
  memory_p50+=("$(field p50_us <<<"$m")") memory_p99+=("$(field p99_us <<<"$m")")
  lease_p50+=("$(field p50_us <<<"$l")") lease_p99+=("$(field p99_us <<<"$l")")
done

strict=() lease=() memory=()
for i in 1 2 3; do
  start_sidecar "strict$i" "${pg[@]}" RATE_LIMIT_MODE=strict RATE_LIMIT_PG_TABLE=bench_hot
  start_sidecar "lease_hot$i" "${pg[@]}" RATE_LIMIT_MODE=lease RATE_LIMIT_PG_TABLE=bench_hot
  start_sidecar "memory_hot$i"
  strict+=("strict$i") lease+=("lease_hot$i") memory+=("memory_hot$i")
done
wait_ready "${strict[@]}" "${lease[@]}" "${memory[@]}"
load=(--connections "$connections" --depth "$depth" --duration-s "$seconds" "${policy[@]}")
strict_cps=() lease_cps=() memory_cps=()
for round in $(seq 1 "$rounds"); do
  s=$(bench_parallel "$work/strict" "${strict[@]}" -- "${load[@]}")
  l=$(bench_parallel "$work/lease" "${lease[@]}" -- "${load[@]}")
  m=$(bench_parallel "$work/memory" "${memory[@]}" -- "${load[@]}")
  echo "hot key round $round: strict $s checks/s, lease $l checks/s, memory $m checks/s"
  strict_cps+=("$s") lease_cps+=("$l") memory_cps+=("$m")
done

echo
echo "latency, 1 connection, depth 1 (median of $rounds runs of ${seconds}s):"
echo "  memory store: p50 $(median "${memory_p50[@]}") us, p99 $(median "${memory_p99[@]}") us"
echo "  lease mode:   p50 $(median "${lease_p50[@]}") us, p99 $(median "${lease_p99[@]}") us"
awk -v l="$(median "${lease_p50[@]}")" -v m="$(median "${memory_p50[@]}")" \
  'BEGIN { printf "  lease p50 / memory p50: %.3f\n", l / m }'
echo "hot key, 3 sidecars x $connections connections x depth $depth (median of $rounds):"
echo "  strict mode: $(median "${strict_cps[@]}") checks/s"
echo "  lease mode:  $(median "${lease_cps[@]}") checks/s"
echo "  memory store (the ceiling): $(median "${memory_cps[@]}") checks/s"
awk -v l="$(median "${lease_cps[@]}")" -v s="$(median "${strict_cps[@]}")" \
  -v m="$(median "${memory_cps[@]}")" \
  'BEGIN { printf "  lease / strict: %.1fx; lease / memory: %.2f\n", l / s, l / m }'
