#!/usr/bin/env bash
# Checks that includes point one way: each folder may include only the folders below it.
#   vocabulary (schema/check.h, schema/status.h, schema/json_text.h)
#   -> schema (the wire codec), sidecar/log, sidecar/metrics
#   -> sidecar/core (pure logic: no libuv, no libpq)
#   -> sidecar/pg, sidecar/server, sidecar/admin, client (siblings never include each other)
#   -> sidecar/config -> sidecar/*.cc (the executable and its assembly)
# Usage: check_layers.sh [ROOT]; prints every include that breaks the rule, exits 1 if any does.
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root"

vocab='schema/check\.h|schema/status\.h|schema/json_text\.h'
# allowed[folder]: an extended regex of the project includes its files may name.
declare -A allowed=(
  [vocab]="^($vocab)$"
  [schema]="^schema/"
  [client]="^(schema/|ratelimit/)"
  [sidecar/log]="^($vocab|sidecar/log/)"
  [sidecar/metrics]="^($vocab|sidecar/metrics/)"
  [sidecar/core]="^($vocab|sidecar/metrics/|sidecar/core/)"
  [sidecar/pg]="^($vocab|sidecar/metrics/|sidecar/log/|sidecar/core/|sidecar/pg/)"
  [sidecar/server]="^(schema/|sidecar/metrics/|sidecar/log/|sidecar/core/|sidecar/server/)"
  [sidecar/admin]="^($vocab|sidecar/metrics/|sidecar/log/|sidecar/admin/)"
  [sidecar/config]="^($vocab|sidecar/metrics/|sidecar/log/|sidecar/core/|sidecar/pg/|sidecar/server/|sidecar/config/)"
)
# System headers of the outside world that pure layers must not reach.
declare -A forbidden_system=(
  [sidecar/core]='^(uv\.h|libpq-fe\.h)$'
  [vocab]='^(uv\.h|libpq-fe\.h)$'
)

# Sets `layer` to the layer of file $1 (a function setting a variable: no subshell per file).
set_layer_of() {
  case $1 in
    schema/check.* | schema/status.h | schema/json_text.*) layer=vocab ;;
    schema/*) layer=schema ;;
    client/*) layer=client ;;
    sidecar/*/*)
      local rest=${1#sidecar/}
      layer="sidecar/${rest%%/*}"
      ;;
    *) layer=top ;;
  esac
}

# One grep over every file, then bash's own matching: no process per file or per line, so the
# check takes well under a second however loaded the machine is.
mapfile -t files < <(find schema client sidecar -path client/node -prune -o \( -name '*.h' -o -name '*.cc' \) \
  -print | sort)
violations=0
checked=0
declare -A seen
for file in "${files[@]}"; do
  set_layer_of "$file"
  [ "$layer" = top ] && continue
  if [ -z "${allowed[$layer]:-}" ]; then
    echo "$file: folder $layer has no layering rule; add one to $0"
    violations=$((violations + 1))
    continue
  fi
  seen[$file]=$layer
  checked=$((checked + 1))
done
include_re='^([^:]+):#include [<"]([^>"]+)[>"]'
while IFS= read -r line; do
  [[ $line =~ $include_re ]] || continue
  file=${BASH_REMATCH[1]}
  header=${BASH_REMATCH[2]}
  layer=${seen[$file]:-}
  [ -z "$layer" ] && continue
  rule=${allowed[$layer]}
  if [[ $line == *':#include "'* ]] && [[ $header =~ ^(schema|sidecar|client|ratelimit)/ ]] &&
    ! [[ $header =~ $rule ]]; then
    echo "$file includes $header: $layer may not include it"
    violations=$((violations + 1))
  fi
  system=${forbidden_system[$layer]:-}
  if [ -n "$system" ] && [[ $header =~ $system ]]; then
    echo "$file includes $header: $layer does no I/O"
    violations=$((violations + 1))
  fi
done < <(grep -H -E '^#include ' "${files[@]}" || true)

echo "layering: $checked files checked, $violations violations"
[ "$violations" -eq 0 ] && [ "$checked" -gt 0 ]
