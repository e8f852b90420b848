# Shared by the PostgreSQL benchmark scripts (sourced, not run): private PostgreSQL, sidecars on
# Unix sockets in a scratch directory, ratelimit-bench runs and their JSON lines.
# Callers start with bench_start, or set `work` (a scratch directory) and call bench_cleanup on
# exit.

bench_pids=()

# bench_start SCRIPT ARGS...: how a benchmark script starts: run again under
# scripts/with-postgres.sh unless a test database is set already, then the scratch directory
# `work`, removed on exit with every sidecar started.
bench_start() {
  if [ -z "${RATELIMIT_TEST_DATABASE_URL:-}" ]; then
    exec scripts/with-postgres.sh "$@"
  fi
  work=$(mktemp -d /tmp/rlbench-XXXXXX)
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${bench_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# start_sidecar NAME VAR=value...: a sidecar on $work/NAME.sock with those variables set.
start_sidecar() {
  start_sidecar_bin build/bin/ratelimit-sidecar "$@"
}

# start_sidecar_bin BINARY NAME VAR=value...: the same with another build of the sidecar.
start_sidecar_bin() {
  local binary=$1 name=$2
  shift 2
  env RATE_LIMIT_SOCKET="$work/$name.sock" RATE_LIMIT_LOG_LEVEL=warn "$@" \
    "$binary" 2>>"$work/sidecars.log" &
  bench_pids+=($!)
}

# wait_ready NAME...: waits up to 10 s for each sidecar's ping to say ready.
wait_ready() {
  local name
  for name in "$@"; do
    for _ in $(seq 1 100); do
      build/bin/ratelimit-cli --socket "$work/$name.sock" ping --json 2>/dev/null |
        grep -q '"ready":true' && continue 2
      sleep 0.1
    done
    echo "sidecar $name never became ready" >&2
    cat "$work/sidecars.log" >&2
    return 1
  done
}

# bench NAME ARGS...: one ratelimit-bench run against sidecar NAME; prints its JSON line.
bench() {
  local name=$1
  shift
  build/bin/ratelimit-bench --socket "$work/$name.sock" --json "$@" 2>/dev/null | tail -1
}

# bench_parallel OUT NAME... -- ARGS...: one ratelimit-bench per sidecar, all at once; writes
# each JSON line to OUT.NAME and prints the sum of their checks/s.
bench_parallel() {
  local out=$1 names=() pids=() name total=0 cps
  shift
  while [ "$1" != "--" ]; do names+=("$1"); shift; done
  shift
  for name in "${names[@]}"; do
    bench "$name" "$@" >"$out.$name" &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  for name in "${names[@]}"; do
    cps=$(field checks_per_s <"$out.$name")
    total=$(awk -v a="$total" -v b="$cps" 'BEGIN { print a + b }')
  done
  echo "$total"
}

# field NAME: the number NAME from a JSON line on stdin.
field() { sed -nE "s/.*\"$1\":([0-9.]+).*/\1/p"; }

# median X...: the median of numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
