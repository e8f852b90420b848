#!/usr/bin/env bash
# Builds ratelimit-sidecar and runs it in the foreground with its defaults (in-memory store).
# Configure it with RATE_LIMIT_* environment variables; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target ratelimit-sidecar ratelimit-cli
exec build/bin/ratelimit-sidecar
