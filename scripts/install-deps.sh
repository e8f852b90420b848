#!/usr/bin/env bash
# Installs the Debian packages that building and testing need; does nothing when all are there.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config       # build
  libuv1-dev libpq-dev                   # event loop, PostgreSQL client
  libmicrohttpd-dev                      # admin HTTP server (metrics, health)
  libssl-dev                             # libcrypto: SHA-256 of keys at rest
  postgresql-15 postgresql-client-15     # throwaway test server (scripts/with-postgres.sh)
  pgbouncer                              # a transaction-pooling pooler for tests/pg/pgbouncer_test
  flatbuffers-compiler libflatbuffers-dev  # wire format (flatc and headers of the same version)
  libgtest-dev libgmock-dev libbenchmark-dev  # tests and micro-benchmarks
  clang libclang-rt-14-dev clang-format  # libFuzzer target, format check
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
