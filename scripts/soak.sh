#!/usr/bin/env bash
# Soak: three sidecars under load, database faults, hostile clients and restarts, for a while.
#
# Usage: scripts/soak.sh [SECONDS]        (default 60; the test suite runs the same soak for 20)
#
# Installs the build dependencies (scripts/install-deps.sh), builds ratelimit-sidecar and the soak
# test into $RATELIMIT_BUILD_DIR (default build/), then runs the soak once against a private
# PostgreSQL 15 (scripts/with-postgres.sh). For SECONDS, three lease-mode sidecars share one table
# with RATE_LIMIT_FALLBACK=deny while client threads check a hot key (some 40 times its refill
# rate) and many keys on every sidecar, and, one after another: the table is locked by another
# session, the sidecars' backends are killed (pg_terminate_backend), the server is frozen
# (SIGSTOP, then SIGCONT), stopped (pg_ctl -m immediate) and started again, and a sidecar is
# restarted with SIGTERM while the others serve (its clients pause meanwhile); all along, hostile
# clients send garbage and oversized frames, vanish mid-frame or after a burst, and flood
# requests without reading. Every fault is injected at least once; the last 3 s have none.
#
# It asserts: (a) on the hot key, the three sidecars together admit at most
# capacity + rate * (T + lease_ttl) in every interval of length T; (b) zero errors: every check
# is answered Ok within the client's 3 s timeout, no fallback admits, hostile frames are refused,
# every sidecar exits 0 after SIGTERM having given its leases back, and no sanitizer report;
# (c) after every fault and at the end, every sidecar decides by the database again. It prints a
# summary (checks, admitted vs bound per interval length, fallbacks, faults and their timeline).
#
# Bounded: it stops by itself after SECONDS plus start-up, the first round of faults if SECONDS
# is shorter, and clean-up; a watchdog ends it SECONDS + 180 s after start at the latest. Exit
# status: 0 when every assertion held, else non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ] || [ "$seconds" -gt 86400 ]; then
  echo "usage: $0 [SECONDS]   (an integer from 1 to 86400, default 60)" >&2
  exit 2
fi
build_dir=${RATELIMIT_BUILD_DIR:-build}

scripts/install-deps.sh
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRATELIMIT_WERROR=ON \
  >/dev/null
cmake --build "$build_dir" -j"$(nproc)" --target ratelimit-sidecar soak_test

echo "== soak: $seconds s, 3 sidecars (build: $build_dir)"
RATELIMIT_REQUIRE_PG=1 RATELIMIT_SOAK_SECONDS="$seconds" \
  timeout --signal=TERM --kill-after=30 "$((seconds + 180))" \
  scripts/with-postgres.sh "$build_dir/bin/soak_test"
