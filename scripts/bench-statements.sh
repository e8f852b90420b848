#!/usr/bin/env bash
# What unnamed statements cost against prepared ones (RATE_LIMIT_PG_STATEMENTS), measured in one
# run on one private PostgreSQL, the two alternating in every round so that the machine's noise
# falls on both alike.
#   scripts/bench-statements.sh [SECONDS] [ROUNDS]   (default 5 s per measurement, 3 rounds)
# 1. Hot-key strict throughput: 3 sidecars per way on a table of their own, one key, a policy so
#    large that every check is admitted and written; one ratelimit-bench per sidecar with
#    RATE_LIMIT_BENCH_CLIENTS blocking connections (default 16). Sum of checks/s.
# 2. Lease fetch latency: one lease-mode sidecar per way, RATE_LIMIT_BENCH_FETCH_CLIENTS blocking
#    connections (default 4) on a million keys at random, so that nearly every check is a key
#    without a lease and waits for its fetch. p50 and p99 of those checks.
# Medians of the rounds, and unnamed / prepared.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_start "$0" "$@"
seconds=${1:-5}
rounds=${2:-3}
clients=${RATE_LIMIT_BENCH_CLIENTS:-16}
fetch_clients=${RATE_LIMIT_BENCH_FETCH_CLIENTS:-4}
ways=(prepared unnamed)
pg=(RATE_LIMIT_STORE=postgres DATABASE_URL="$RATELIMIT_TEST_DATABASE_URL")

declare -A hot
for way in "${ways[@]}"; do
  for i in 1 2 3; do
    start_sidecar "strict_${way}$i" "${pg[@]}" RATE_LIMIT_MODE=strict \
      RATE_LIMIT_PG_TABLE="bench_hot_$way" RATE_LIMIT_PG_STATEMENTS="$way"
    hot[$way]+=" strict_${way}$i"
  done
  start_sidecar "lease_$way" "${pg[@]}" RATE_LIMIT_MODE=lease \
    RATE_LIMIT_PG_TABLE="bench_fetch_$way" RATE_LIMIT_PG_STATEMENTS="$way"
done
# shellcheck disable=SC2086 # Sidecar names, one word each.
wait_ready ${hot[prepared]} ${hot[unnamed]} lease_prepared lease_unnamed

strict_load=(--connections "$clients" --depth 1 --duration-s "$seconds" --keys 1
  --limit 1000000000 --window-ms 1000)
fetch_load=(--connections "$fetch_clients" --depth 1 --duration-s "$seconds" --keys 1000000
  --key-dist uniform --limit 100 --window-ms 60000)
declare -A cps p50 p99
for round in $(seq 1 "$rounds"); do
  # Alternate which way goes first, too.
  order=("${ways[@]}")
  [ $((round % 2)) = 0 ] && order=(unnamed prepared)
  for way in "${order[@]}"; do
    # shellcheck disable=SC2086
    c=$(bench_parallel "$work/strict_$way" ${hot[$way]} -- "${strict_load[@]}")
    f=$(bench "lease_$way" "${fetch_load[@]}")
    echo "round $round, $way: strict hot key $c checks/s; lease fetch $f"
    cps[$way]+=" $c" p50[$way]+=" $(field p50_us <<<"$f")" p99[$way]+=" $(field p99_us <<<"$f")"
  done
done

echo
echo "median of $rounds rounds of ${seconds}s:"
for way in "${ways[@]}"; do
  # shellcheck disable=SC2086
  echo "  $way: strict hot key (3 sidecars x $clients connections)" \
    "$(median ${cps[$way]}) checks/s; lease fetch ($fetch_clients connections)" \
    "p50 $(median ${p50[$way]}) us, p99 $(median ${p99[$way]}) us"
done
# shellcheck disable=SC2086
awk -v cu="$(median ${cps[unnamed]})" -v cp="$(median ${cps[prepared]})" \
  -v fu="$(median ${p50[unnamed]})" -v fp="$(median ${p50[prepared]})" \
  -v gu="$(median ${p99[unnamed]})" -v gp="$(median ${p99[prepared]})" \
  'BEGIN { printf "unnamed / prepared: throughput %.3f, fetch p50 %.3f, fetch p99 %.3f\n",
           cu / cp, fu / fp, gu / gp }'
