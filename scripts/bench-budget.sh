#!/usr/bin/env bash
# The database load of one lease-mode sidecar at 1, 100 and 10,000 busy keys: transactions per
# second, the figure that sizes a pooler (README, "Connection budget").
#   scripts/bench-budget.sh [SECONDS] [ROUNDS]   (default 10 s per run, 3 rounds)
# Each run: a fresh table, one sidecar in lease mode with its admin server on a free port, and
# ratelimit-bench over K keys drawn uniformly with RATE_LIMIT_BENCH_CONNECTIONS x
# RATE_LIMIT_BENCH_DEPTH checks in flight (default 1 x 256, as fast as the sidecar answers):
# first RATE_LIMIT_BENCH_WARMUP_S seconds (default 3) so that every key holds a lease, then
# SECONDS measured. Two policies: 100 per minute per key (RATE_LIMIT_BENCH_LIMIT / _WINDOW_MS;
# every key is checked faster than it refills, as an abused API key is) and one so large that no
# key is ever short (each key's leases follow its demand). ratelimit_db_transactions_total, the
# batch size and the transaction time histograms are read around the measured run; "busy" is
# the sessions busy on average (Little's law: transactions per second x mean transaction
# time), which is what a pod costs a transaction-pooling pooler. Medians of ROUNDS at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_start "$0" "$@"
seconds=${1:-10}
rounds=${2:-3}
connections=${RATE_LIMIT_BENCH_CONNECTIONS:-1}
depth=${RATE_LIMIT_BENCH_DEPTH:-256}
warmup=${RATE_LIMIT_BENCH_WARMUP_S:-3}
limit=${RATE_LIMIT_BENCH_LIMIT:-100}
window_ms=${RATE_LIMIT_BENCH_WINDOW_MS:-60000}

# metric PORT NAME: the value of the unlabelled series NAME on the admin server at PORT.
metric() { curl -fsS "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }

# snapshot PORT: "transactions duration_sum duration_count batch_sum" now.
snapshot() {
  echo "$(metric "$1" ratelimit_db_transactions_total)" \
    "$(metric "$1" ratelimit_db_transaction_duration_seconds_sum)" \
    "$(metric "$1" ratelimit_db_transaction_duration_seconds_count)" \
    "$(metric "$1" ratelimit_db_batch_size_sum)"
}

# run NAME KEYS LIMIT WINDOW_MS: one measured run; sets `result` to
# "checks/s tx/s mean_ms busy operations_per_tx".
run() {
  local name=$1 keys=$2 run_limit=$3 run_window=$4 port before after line t0 t1
  # The admin server takes a free port and logs it (at info level): this sidecar's line is the
  # last one, since the sidecars run one after another.
  start_sidecar "$name" RATE_LIMIT_STORE=postgres RATE_LIMIT_MODE=lease \
    DATABASE_URL="$RATELIMIT_TEST_DATABASE_URL" RATE_LIMIT_PG_TABLE="$name" \
    RATE_LIMIT_ADMIN_ADDR=127.0.0.1:0 RATE_LIMIT_LOG_LEVEL=info
  wait_ready "$name"
  port=$(grep '"msg":"admin server listening"' "$work/sidecars.log" | tail -1 |
    sed -E 's/.*"port":([0-9]+).*/\1/')
  local load=(--connections "$connections" --depth "$depth" --keys "$keys" --key-dist uniform
    --limit "$run_limit" --window-ms "$run_window")
  bench "$name" --duration-s "$warmup" "${load[@]}" >/dev/null
  t0=$(date +%s.%N)
  before=$(snapshot "$port")
  line=$(bench "$name" --duration-s "$seconds" "${load[@]}")
  # The sidecar publishes its counters every 250 ms.
  sleep 0.3
  after=$(snapshot "$port")
  t1=$(date +%s.%N)
  kill -TERM "${bench_pids[-1]}"
  wait "${bench_pids[-1]}" || true
  result=$(awk -v b="$before" -v a="$after" -v t0="$t0" -v t1="$t1" \
    -v cps="$(field checks_per_s <<<"$line")" \
    'BEGIN { split(b, x, " "); split(a, y, " "); s = t1 - t0; tx = y[1] - x[1]; n = y[3] - x[3]
             mean = n > 0 ? (y[2] - x[2]) / n : 0; ops = n > 0 ? (y[4] - x[4]) / n : 0
             printf "%.0f %.1f %.3f %.3f %.1f\n", cps, tx / s, mean * 1000, tx / s * mean, ops }')
}

policies=("$limit/$window_ms" "1000000000/60000")
declare -A cps tps mean busy ops
for round in $(seq 1 "$rounds"); do
  for policy in "${policies[@]}"; do
    for keys in 1 100 10000; do
      name="budget_${keys}_${policy%%/*}_$round"
      run "$name" "$keys" "${policy%%/*}" "${policy##*/}"
      read -r c t m b o <<<"$result"
      echo "round $round, $keys keys, $policy ms: $c checks/s, $t transactions/s," \
        "$m ms per transaction, $b sessions busy, $o operations per transaction"
      cps[$policy,$keys]+="$c " tps[$policy,$keys]+="$t " mean[$policy,$keys]+="$m "
      busy[$policy,$keys]+="$b " ops[$policy,$keys]+="$o "
    done
  done
done

echo
echo "one lease-mode sidecar, $connections connection(s) x $depth in flight, ${seconds} s runs" \
  "(median of $rounds):"
printf '%-20s %6s %10s %14s %10s %6s %8s\n' policy keys checks/s transactions/s "ms per tx" busy "ops/tx"
for policy in "${policies[@]}"; do
  for keys in 1 100 10000; do
    # shellcheck disable=SC2086  # Word splitting of the lists is wanted.
    printf '%-20s %6s %10s %14s %10s %6s %8s\n' "$policy ms" "$keys" \
      "$(median ${cps[$policy,$keys]})" "$(median ${tps[$policy,$keys]})" \
      "$(median ${mean[$policy,$keys]})" "$(median ${busy[$policy,$keys]})" \
      "$(median ${ops[$policy,$keys]})"
  done
done
