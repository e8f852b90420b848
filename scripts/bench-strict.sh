#!/usr/bin/env bash
# Hot-key throughput, strict mode against the older gateway's one-transaction-per-check pattern,
# measured in the same run on the same private PostgreSQL. Prints both and their ratio.
#   scripts/bench-strict.sh [SECONDS]   (default 10; needs a build in build/)
# RATE_LIMIT_BENCH_CLIENTS (default 16) sets the checks in flight per sidecar and the pgbench
# clients per sidecar; RATE_LIMIT_BENCH_CONNECTIONS (default: the same) spreads those checks
# over fewer connections, each with several in flight.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_start "$0" "$@"
seconds=${1:-10}
sidecars=3
clients=${RATE_LIMIT_BENCH_CLIENTS:-16}

# The older gateway: BEGIN; INSERT .. ON CONFLICT DO NOTHING; SELECT .. FOR UPDATE; UPDATE;
# COMMIT for every check, all clients on one hot key.
psql -q -c "CREATE TABLE gateway_buckets (key text PRIMARY KEY, tokens double precision,
            updated_at timestamptz)"
cat >"$work/gateway.sql" <<'SQL'
BEGIN;
INSERT INTO gateway_buckets (key, tokens, updated_at) VALUES ('hot', 1000000000, now())
  ON CONFLICT DO NOTHING;
SELECT tokens, updated_at FROM gateway_buckets WHERE key = 'hot' FOR UPDATE;
UPDATE gateway_buckets SET tokens = tokens - 1, updated_at = now() WHERE key = 'hot';
COMMIT;
SQL
pgbench_bin="${RATELIMIT_TEST_PG_BIN}/pgbench"
[ -x "$pgbench_bin" ] || pgbench_bin=pgbench
gateway_tps=$("$pgbench_bin" -n -c $((sidecars * clients)) -j 2 -T "$seconds" -f "$work/gateway.sql" |
  sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -1)

# Strict mode: 3 sidecars on one table, one hot key, a policy so large that every check is
# admitted and written.
names=()
for i in $(seq 1 $sidecars); do
  start_sidecar "s$i" RATE_LIMIT_STORE=postgres RATE_LIMIT_MODE=strict \
    DATABASE_URL="$RATELIMIT_TEST_DATABASE_URL" RATE_LIMIT_PG_TABLE=bench_buckets \
    RATE_LIMIT_PG_CONNECTIONS="${RATE_LIMIT_PG_CONNECTIONS:-2}"
  names+=("s$i")
done
wait_ready "${names[@]}"
connections=${RATE_LIMIT_BENCH_CONNECTIONS:-$clients}
strict_cps=$(bench_parallel "$work/bench" "${names[@]}" -- --connections "$connections" \
  --depth $((clients / connections)) --duration-s "$seconds" --keys 1 --limit 1000000000 \
  --window-ms 1000)
for name in "${names[@]}"; do echo "sidecar $name: $(cat "$work/bench.$name")"; done
echo "gateway pattern (pgbench, $((sidecars * clients)) clients): $gateway_tps checks/s"
echo "strict mode ($sidecars sidecars x $connections connections x depth" \
  "$((clients / connections))): $strict_cps checks/s"
awk -v s="$strict_cps" -v g="$gateway_tps" 'BEGIN { printf "ratio: %.1fx\n", s / g }'
