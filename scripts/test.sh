#!/usr/bin/env bash
# Builds everything and runs every test: formatting, the suite with -Werror (with the Kubernetes
# manifests validated offline by a Node suite, and the Node client's suites against the real
# sidecar; the soak runs in the next stage only), the same suite built by clang under ASan+UBSan
# (but for the tests of deadlines at shipped speed), and a short libFuzzer run of the
# connection-input target from its committed corpus (scripts/fuzz.sh runs a long one). Exits
# non-zero on any failure. RATE_LIMIT_FUZZ_SECONDS sets the fuzz run's length (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

# Every ctest stage runs inside scripts/with-postgres.sh; PostgreSQL tests fail (not skip) when
# the database is missing.
export RATELIMIT_REQUIRE_PG=1

jobs=$(nproc)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0

# Runs ctest in build dir $1 (further arguments go to ctest), against a private PostgreSQL 15
# that lives as long as the stage, and adds its counts to the totals. A failing stage does not
# stop the later ones: every stage reports, then the summary line decides the exit status.
run_ctest() {
  local dir=$1
  shift
  scripts/with-postgres.sh ctest --test-dir "$dir" -j"$jobs" --output-on-failure --timeout 300 "$@" |
    tee "$logs/ctest.log" || true
  local line
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$logs/ctest.log" | tail -1 || true)
  if [ -z "$line" ]; then
    echo "ctest in $dir printed no result line"
    failed=$((failed + 1))
    return
  fi
  local total fail
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  fail=$(sed -E 's/.* ([0-9]+) tests failed.*/\1/' <<<"$line")
  passed=$((passed + total - fail))
  failed=$((failed + fail))
}

# Prints a stage's banner, with the time the whole run has taken so far, so a slow stage shows.
stage() { echo "== $* (at $((SECONDS / 60)) min $((SECONDS % 60)) s)"; }

stage "Node packages of the manifest tests and the Node client (npm ci, from package-lock.json)"
npm ci --prefix tests/k8s --no-audit --no-fund
npm ci --prefix client/node --no-audit --no-fund

stage "format check (clang-format, .clang-format; prettier for the Node client)"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run -Werror
npm run --prefix client/node --silent format:check

stage "Node client build (flatc --ts from the schema, then tsc)"
npm run --prefix client/node --silent build

stage "build with -Werror"
# Optimised as shipped; line tables only (-g1), which is enough for backtraces and compiles a
# quarter faster than full debug information. Test sources are built at -O0 (tests/CMakeLists.txt).
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRATELIMIT_WERROR=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO='-O2 -g1 -DNDEBUG' >/dev/null
cmake --build build -j"$jobs"
stage "tests"
# The soak runs once, in the sanitizer stage below.
run_ctest build --label-exclude soak

stage "build with ASan + UBSan (clang)"
# clang, so a second compiler's warnings are errors too, at -O1 as the sanitizers' docs advise,
# with line tables only (-g1): reports still name file and line. Measured on two cores: 237 s,
# where g++ at -O2 -g1 took 361 s and at -O1 323 s; the sanitized tests also run faster.
cmake -S . -B build-asan -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRATELIMIT_WERROR=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO='-O1 -g1 -DNDEBUG' -DRATELIMIT_SANITIZE='address;undefined' \
  >/dev/null
cmake --build build-asan -j"$jobs"
stage "tests under ASan + UBSan"
# Tests labelled shipped-speed assert deadlines at the speed the sidecar ships with; they ran in
# the ordinary build above (a sanitized build does not even build them: tests/CMakeLists.txt).
# The soak (label soak) runs here only.
# The Kubernetes manifests' suites (label k8s) and the Node package's install test check files and
# packaging; the sidecar runs there only as elsewhere in this stage, so they run once, above.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run_ctest build-asan --label-exclude 'shipped-speed|k8s' --exclude-regex '^node_client_pack$'

stage "libFuzzer smoke run (connection input, ASan + UBSan)"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRATELIMIT_WERROR=ON -DRATELIMIT_FUZZ=ON \
  -DRATELIMIT_SANITIZE='address;undefined' >/dev/null
cmake --build build-fuzz -j"$jobs" --target connection_input_fuzz
# New inputs go to the first corpus directory, a temporary one: the committed corpus is only read.
mkdir "$logs/found"
if build-fuzz/bin/connection_input_fuzz -max_total_time="${RATE_LIMIT_FUZZ_SECONDS:-15}" \
  -max_len=8192 -artifact_prefix=build-fuzz/ -print_final_stats=1 "$logs/found" \
  tests/fuzz/corpus 2>"$logs/fuzz.log"; then
  grep -E "^stat::number_of_executed_units" "$logs/fuzz.log" || true
  passed=$((passed + 1))
else
  tail -50 "$logs/fuzz.log"
  failed=$((failed + 1))
fi

stage "done"
echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
