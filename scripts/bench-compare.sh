#!/usr/bin/env bash
# Compares this build's sidecar with another build's, in one run, alternating, so the machine's
# noise falls on both alike: the memory store and lease mode, on one hot key and on many keys.
#   scripts/bench-compare.sh BASE_SIDECAR [SECONDS] [ROUNDS]   (default 3 s, 5 rounds)
# BASE_SIDECAR is the other build's ratelimit-sidecar (e.g. one built from the commit before a
# change). Both are driven by this build's ratelimit-bench with the same arguments: 4
# connections of 16 checks in flight, every check admitted (a policy far above the load).
# Prints, per case and build, the medians of checks/s, p50 and p99 (microseconds) over the
# rounds, and this build's checks/s as a ratio to the base's.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$(realpath "$1")
seconds=${2:-3}
rounds=${3:-5}
if [ -z "${RATELIMIT_TEST_DATABASE_URL:-}" ]; then
  exec scripts/with-postgres.sh "$0" "$base" "$seconds" "$rounds"
fi
source scripts/bench-common.sh
work=$(mktemp -d /tmp/rlcompare-XXXXXX)
trap bench_cleanup EXIT
pg=(RATE_LIMIT_STORE=postgres DATABASE_URL="$RATELIMIT_TEST_DATABASE_URL" RATE_LIMIT_MODE=lease)

start_sidecar_bin "$base" base-memory
start_sidecar_bin build/bin/ratelimit-sidecar new-memory
start_sidecar_bin "$base" base-lease "${pg[@]}" RATE_LIMIT_PG_TABLE=compare_base
start_sidecar_bin build/bin/ratelimit-sidecar new-lease "${pg[@]}" RATE_LIMIT_PG_TABLE=compare_new
wait_ready base-memory new-memory base-lease new-lease

cases=("memory 1 hot" "memory 100000 uniform" "lease 1 hot" "lease 1000 uniform")
declare -A cps p50 p99
for round in $(seq 1 "$rounds"); do
  for c in "${cases[@]}"; do
    read -r store keys dist <<<"$c"
    for build in base new; do
      line=$(bench "$build-$store" --connections 4 --depth 16 --duration-s "$seconds" \
        --keys "$keys" --key-dist "$dist" --limit 1000000000 --window-ms 1000)
      cps[$c/$build]+=" $(field checks_per_s <<<"$line")"
      p50[$c/$build]+=" $(field p50_us <<<"$line")"
      p99[$c/$build]+=" $(field p99_us <<<"$line")"
    done
  done
  echo "round $round of $rounds done" >&2
done

printf '%-24s %-5s %12s %9s %9s %7s\n' case build checks/s p50_us p99_us ratio
for c in "${cases[@]}"; do
  base_cps=$(median ${cps[$c/base]})
  for build in base new; do
    m=$(median ${cps[$c/$build]})
    printf '%-24s %-5s %12.0f %9s %9s %7.3f\n' "$c" "$build" "$m" "$(median ${p50[$c/$build]})" \
      "$(median ${p99[$c/$build]})" "$(awk -v a="$m" -v b="$base_cps" 'BEGIN { print a / b }')"
  done
done
