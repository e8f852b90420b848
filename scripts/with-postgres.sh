#!/usr/bin/env bash
# Runs COMMAND against a private, throwaway PostgreSQL 15, then stops it and deletes its files.
#
# Usage: scripts/with-postgres.sh COMMAND [ARGS...]
#
# The server lives in a fresh /tmp/rlpg-XXXXXX directory (data/, sock/, server.log), listens on
# 127.0.0.1 and a free port picked at run time, and trusts every local connection. COMMAND sees
# PGHOST, PGPORT, PGUSER, PGDATABASE and
#   RATELIMIT_TEST_DATABASE_URL  libpq keyword/value conninfo of the server
#   RATELIMIT_TEST_PG_LOG        the server log (lock waits and deadlocks are logged there)
#   RATELIMIT_TEST_PG_BIN        the PostgreSQL 15 binaries (pg_ctl, ...)
#   RATELIMIT_TEST_PG_DATA       the data directory, for tests that stop and restart the server
# Everything the server needs (port, socket directory, ...) is written to postgresql.conf, so
# `pg_ctl -D "$RATELIMIT_TEST_PG_DATA" start` brings back the same server. Under root the server
# runs as the `postgres` OS user (PostgreSQL refuses root), so such a test must run pg_ctl as that
# user too (`runuser -u postgres -- ...`).
#
# The server is stopped and the directory removed on every exit: COMMAND succeeding or failing,
# or this script getting SIGINT/SIGTERM (which it passes on to COMMAND as SIGTERM). Exit status:
# COMMAND's; 128+N after signal N; 125 when the server could not be set up. Several runs at once
# do not interfere: each has its own directory and port.
set -euo pipefail

readonly pg_bin=/usr/lib/postgresql/15/bin
readonly setup_failed=125

say() { echo "with-postgres: $*" >&2; }
die() {
  say "$*"
  exit "$setup_failed"
}

[ $# -ge 1 ] || die "usage: $0 COMMAND [ARGS...]"

for tool in initdb pg_ctl postgres pg_isready; do
  [ -x "$pg_bin/$tool" ] ||
    die "$pg_bin/$tool not found: install postgresql-15 (scripts/install-deps.sh does)"
done

run_as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  id -u postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user"
  run_as_pg=(runuser -u postgres --)
fi

tmp=""
child=""
cleaned=0

# Runs a PostgreSQL tool as the server's OS user, from a directory that user can read.
pg() { (cd "$tmp" && "${run_as_pg[@]}" "$@"); }

# Stops the server however it can, then deletes its directory. Safe to call more than once, and
# safe when a test already stopped the server.
cleanup() {
  [ "$cleaned" -eq 1 ] && return
  cleaned=1
  [ -n "$tmp" ] || return 0
  local data="$tmp/data"
  if [ -f "$data/postmaster.pid" ]; then
    if ! pg "$pg_bin/pg_ctl" stop -D "$data" -m fast -w -t 20 >/dev/null 2>&1; then
      pg "$pg_bin/pg_ctl" stop -D "$data" -m immediate -w -t 10 >/dev/null 2>&1 || true
    fi
    if [ -f "$data/postmaster.pid" ]; then
      local pid
      pid=$(head -1 "$data/postmaster.pid" 2>/dev/null || true)
      if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        say "server did not stop; killing postmaster $pid"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  rm -rf "$tmp"
}

on_signal() {
  local signal=$1 status=$2
  trap '' INT TERM
  # Background commands ignore SIGINT, so COMMAND always gets SIGTERM.
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  say "interrupted by SIG$signal; stopping PostgreSQL"
  exit "$status"
}

trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

tmp=$(mktemp -d /tmp/rlpg-XXXXXX)
data="$tmp/data"
sock="$tmp/sock"
log="$tmp/server.log"
mkdir "$sock"
if [ ${#run_as_pg[@]} -gt 0 ]; then
  chown -R postgres: "$tmp"
fi

if ! pg "$pg_bin/initdb" -D "$data" --auth=trust --username=postgres --encoding=UTF8 \
  --locale=C --no-instructions >"$tmp/initdb.log" 2>&1; then
  cat "$tmp/initdb.log" >&2
  die "initdb failed"
fi

# Durable defaults stay (fsync, synchronous_commit, full_page_writes): tests of the store must
# see the same commit behaviour as production. The port line is rewritten on each start attempt.
cat >>"$data/postgresql.conf" <<EOF

# Added by scripts/with-postgres.sh
listen_addresses = '127.0.0.1'
port = 0
unix_socket_directories = '$sock'
max_connections = 200
log_lock_waits = on
log_line_prefix = '%m [%p] %q%a '
EOF

# Prints a port in 20000..31999 (below Linux's ephemeral range) that nothing listens on now.
# Another process may still take it before the server binds; the start loop retries then.
pick_port() {
  local port
  while true; do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

port=""
started=0
for attempt in 1 2 3 4 5; do
  port=$(pick_port)
  sed -i -E "s/^port = [0-9]+$/port = $port/" "$data/postgresql.conf"
  if [ -f "$log" ]; then : >"$log"; fi  # Keeps the owner: the server must write it.
  if pg "$pg_bin/pg_ctl" start -D "$data" -l "$log" -w -t 30 >"$tmp/pg_ctl.log" 2>&1; then
    started=1
    break
  fi
  # Lost the race for the port: pick another one. Anything else is a real failure.
  if [ -f "$data/postmaster.pid" ] ||
    ! grep -q "could not bind IPv4 address\|could not create any TCP/IP sockets" "$log"; then
    break
  fi
  say "port $port was taken (attempt $attempt); trying another"
done
if [ "$started" -ne 1 ]; then
  say "PostgreSQL did not start (waited up to 30 s); pg_ctl said, then last lines of $log:"
  cat "$tmp/pg_ctl.log" >&2 2>/dev/null || true
  tail -n 30 "$log" >&2 2>/dev/null || true
  exit "$setup_failed"
fi

# pg_ctl -w already waited for "ready"; check both ways tests connect (socket, TCP), up to ~30 s.
ready=0
for _ in $(seq 1 300); do
  if "$pg_bin/pg_isready" -q -h "$sock" -p "$port" -U postgres -d postgres &&
    "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ "$ready" -ne 1 ]; then
  say "PostgreSQL does not accept connections after 30 s; last lines of $log:"
  tail -n 30 "$log" >&2 2>/dev/null || true
  exit "$setup_failed"
fi

export PGHOST="$sock" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
export RATELIMIT_TEST_DATABASE_URL="host=$sock port=$port user=postgres dbname=postgres"
export RATELIMIT_TEST_PG_LOG="$log"
export RATELIMIT_TEST_PG_BIN="$pg_bin"
export RATELIMIT_TEST_PG_DATA="$data"

# COMMAND runs in the background so that a signal to this script is handled at once instead of
# after COMMAND ends; `<&0` keeps its standard input (bash would give it /dev/null).
status=0
"$@" <&0 &
child=$!
wait "$child" || status=$?
child=""
exit "$status"
