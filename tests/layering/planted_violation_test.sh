#!/usr/bin/env bash
# Proves check_layers.sh can fail: in a copy of the sources, each planted upward include (the
# codec reaching the core, the core reaching libuv, the client reaching the sidecar's log) must
# be reported, and the untouched copy must pass.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fresh_copy() {
  rm -rf "$tmp/tree"
  mkdir "$tmp/tree"
  cp -r "$src/schema" "$src/sidecar" "$tmp/tree/"
  mkdir "$tmp/tree/client"
  cp -r "$src/client/ratelimit" "$src/client/"*.cc "$tmp/tree/client/"
}

fresh_copy
"$here/check_layers.sh" "$tmp/tree" >/dev/null || { echo "FAIL: the clean copy was refused"; exit 1; }

plant() {  # FILE INCLUDE-LINE
  fresh_copy
  printf '%s\n' "$2" >>"$tmp/tree/$1"
  if out=$("$here/check_layers.sh" "$tmp/tree"); then
    echo "FAIL: $1 with '$2' passed"
    exit 1
  fi
  grep -q "$1 includes" <<<"$out" || { echo "FAIL: no line names $1: $out"; exit 1; }
  echo "refused as it should be: $1 with $2"
}
plant schema/frame_codec.h '#include "sidecar/core/engine.h"'
plant schema/check.h '#include "schema/frame_codec.h"'
plant sidecar/core/limiter.h '#include <uv.h>'
plant sidecar/core/limiter.h '#include "sidecar/log/log.h"'
plant client/cli.cc '#include "sidecar/log/log.h"'
plant sidecar/pg/pg_store.h '#include "sidecar/admin/health.h"'
plant sidecar/metrics/metrics.h '#include "sidecar/core/engine.h"'
echo "layering check refuses every planted violation"
