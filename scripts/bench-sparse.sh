#!/usr/bin/env bash
# Lease mode on many sparse keys (a long tail, as real per-API-key traffic is) against the memory
# store, with optimistic admission (the default, RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY=1) and
# without it (=0, as before), all measured in one run on one private PostgreSQL, alternating so
# that the machine's noise falls on every side alike.
#   scripts/bench-sparse.sh [SECONDS] [ROUNDS]   (default 5 s per measurement, 3 rounds)
# With RATELIMIT_BASELINE_SIDECAR set to another build's ratelimit-sidecar (the commit before a
# change, say), that build runs in lease mode beside them as a fourth side, "base".
# Shapes: 100,000 keys Zipf(1), 100,000 keys uniform, 10,000 keys uniform; each at
# RATE_LIMIT_BENCH_CONNECTIONS connections (default 4) x RATE_LIMIT_BENCH_DEPTH checks in flight
# (default 16), limit 100 per 60 s. One sidecar per side, each lease sidecar on a table of its
# own per shape. The steady state of known keys, not a cold start: the lease sidecars insert rows
# without a bound (RATE_LIMIT_PG_NEW_KEYS_PER_SEC=0; with the default bound a cold start of
# 100,000 keys is a flood, answered by the fallback), and one unmeasured run per shape and side
# comes first. Per run: checks/s, p50 and p99; for lease mode, from its /metrics: database
# transactions per 1,000 checks, rows written per second, the share of checks admitted
# unconfirmed, and the share answered by the fallback (0 when every answer is the shared
# limit's). Medians of ROUNDS, and each round's ratio to the memory store.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_start "$0" "$@"
seconds=${1:-5}
rounds=${2:-3}
connections=${RATE_LIMIT_BENCH_CONNECTIONS:-4}
depth=${RATE_LIMIT_BENCH_DEPTH:-16}
shapes=("100000 zipf" "100000 uniform" "10000 uniform")
sides=(memory lease lease_u0)
base_binary=${RATELIMIT_BASELINE_SIDECAR:-}
[ -z "$base_binary" ] || sides+=(base)

# sidecar_of BINARY NAME VAR=value...: a sidecar with an admin server on a port of its own; its
# log is $work/NAME.log.
sidecar_of() {
  local binary=$1 name=$2
  shift 2
  env RATE_LIMIT_SOCKET="$work/$name.sock" RATE_LIMIT_LOG_LEVEL=info \
    RATE_LIMIT_ADMIN_ADDR=127.0.0.1:0 "$@" "$binary" 2>>"$work/$name.log" &
  bench_pids+=($!)
}
sidecar() { sidecar_of build/bin/ratelimit-sidecar "$@"; }
port_of() { sed -nE 's/.*"admin server listening".*"port":([0-9]+).*/\1/p' "$work/$1.log" | head -1; }
scrape() { curl -sf --max-time 2 "http://127.0.0.1:$(port_of "$1")/metrics" || true; }
# metric FILE NAME: the sum of the samples NAME in a scraped FILE.
metric() { awk -v n="$2" '$1 == n { s += $2 } END { printf "%.0f\n", s }' "$1"; }

names=()
for s in "${!shapes[@]}"; do
  pg=(RATE_LIMIT_STORE=postgres DATABASE_URL="$RATELIMIT_TEST_DATABASE_URL" RATE_LIMIT_MODE=lease
    RATE_LIMIT_PG_NEW_KEYS_PER_SEC=0)
  sidecar "memory$s"
  sidecar "lease$s" "${pg[@]}" RATE_LIMIT_PG_TABLE="bench_sparse_$s"
  sidecar "lease_u0$s" "${pg[@]}" RATE_LIMIT_PG_TABLE="bench_sparse_u0_$s" \
    RATE_LIMIT_LEASE_UNCONFIRMED_PER_KEY=0
  names+=("memory$s" "lease$s" "lease_u0$s")
  if [ -n "$base_binary" ]; then
    sidecar_of "$base_binary" "base$s" "${pg[@]}" RATE_LIMIT_PG_TABLE="bench_sparse_base_$s"
    names+=("base$s")
  fi
done
wait_ready "${names[@]}"

# load SHAPE: ratelimit-bench's arguments for a shape's run.
load() {
  local keys dist
  read -r keys dist <<<"${shapes[$1]}"
  echo --connections "$connections" --depth "$depth" --duration-s "$seconds" --keys "$keys" \
    --key-dist "$dist" --limit 100 --window-ms 60000
}
for s in "${!shapes[@]}"; do
  for side in "${sides[@]}"; do
    # shellcheck disable=SC2046
    bench "$side$s" $(load "$s") >/dev/null
  done
done

declare -A cps p50 p99 tx rows unconfirmed fallback
for round in $(seq 1 "$rounds"); do
  for s in "${!shapes[@]}"; do
    read -r keys dist <<<"${shapes[$s]}"
    for side in "${sides[@]}"; do
      name="$side$s"
      [ "$side" = memory ] || scrape "$name" >"$work/before"
      # shellcheck disable=SC2046
      line=$(bench "$name" $(load "$s"))
      key="$s,$side"
      cps[$key]+="$(field checks_per_s <<<"$line") "
      p50[$key]+="$(field p50_us <<<"$line") "
      p99[$key]+="$(field p99_us <<<"$line") "
      if [ "$side" != memory ]; then
        scrape "$name" >"$work/after"
        delta() { echo $(($(metric "$work/after" "$1") - $(metric "$work/before" "$1"))); }
        checks=$(awk -v c="$(field checks_per_s <<<"$line")" -v s="$seconds" 'BEGIN { print c * s }')
        tx[$key]+="$(awk -v t="$(delta ratelimit_db_transactions_total)" -v c="$checks" \
          'BEGIN { printf "%.2f", (c > 0 ? 1000 * t / c : 0) }') "
        rows[$key]+="$(awk -v r="$(delta ratelimit_db_rows_written_total)" -v s="$seconds" \
          'BEGIN { printf "%.0f", r / s }') "
        unconfirmed[$key]+="$(awk -v u="$(delta ratelimit_lease_unconfirmed_allowed_total)" \
          -v c="$checks" 'BEGIN { printf "%.3f", (c > 0 ? u / c : 0) }') "
        fallback[$key]+="$(awk -v f="$(delta ratelimit_fallbacks_total)" \
          -v c="$checks" 'BEGIN { printf "%.3f", (c > 0 ? f / c : 0) }') "
      fi
      echo "round $round, $keys keys $dist, $side: $line"
    done
  done
done

# med ARRAY KEY: the median of the numbers stored under KEY.
med() {
  local -n values=$1
  # shellcheck disable=SC2086
  median ${values[$2]}
}
echo
echo "$connections connections x depth $depth, limit 100 per 60 s, median of $rounds runs of ${seconds}s:"
for s in "${!shapes[@]}"; do
  echo "${shapes[$s]} keys:"
  m=$(med cps "$s,memory")
  echo "  memory store:        $m checks/s, p50 $(med p50 "$s,memory") us, p99 $(med p99 "$s,memory") us"
  for side in "${sides[@]:1}"; do
    key="$s,$side"
    case $side in
      lease) label="lease (u=1):  " ;;
      lease_u0) label="lease (u=0):  " ;;
      *) label="lease (base): " ;;
    esac
    echo "  $label      $(med cps "$key") checks/s, p50 $(med p50 "$key") us, p99 $(med p99 "$key") us;" \
      "$(med tx "$key") tx per 1000 checks, $(med rows "$key") rows written/s," \
      "unconfirmed share $(med unconfirmed "$key"), fallback share $(med fallback "$key")"
    # shellcheck disable=SC2086
    echo "    per round, checks/s / memory's: $(paste -d' ' <(tr ' ' '\n' <<<"${cps[$key]}") \
      <(tr ' ' '\n' <<<"${cps[$s,memory]}") | awk 'NF == 2 && $2 > 0 { printf "%.3f ", $1 / $2 }')"
  done
  awk -v l="$(med cps "$s,lease")" -v m="$m" -v lp="$(med p50 "$s,lease")" \
    -v mp="$(med p50 "$s,memory")" -v l9="$(med p99 "$s,lease")" -v m9="$(med p99 "$s,memory")" \
    'BEGIN { printf "  lease (u=1) / memory: checks/s %.3f, p50 %.2fx, p99 %.2fx\n", l / m, lp / mp, l9 / m9 }'
done
