#!/usr/bin/env bash
# Keeps README.md's configuration table equal to `ratelimit-sidecar --config-markdown`, which
# writes it from the same rows as --help and the start-up line (sidecar/config).
# Usage: scripts/config-table.sh [--check] SIDECAR_BINARY [README]
#   Rewrites the table between README's config-table markers (README defaults to this
#   repository's README.md). With --check, changes nothing: prints the difference and exits 1
#   when the table is not the binary's output (ctest runs this as config_readme_table).
set -euo pipefail
check=0
if [ "${1:-}" = --check ]; then
  check=1
  shift
fi
bin=${1:?usage: $0 [--check] SIDECAR_BINARY [README]}
readme=${2:-$(cd "$(dirname "$0")/.." && pwd)/README.md}
begin='<!-- config-table:begin -->'
end='<!-- config-table:end -->'

if [ "$(grep -cxF -e "$begin" -e "$end" "$readme")" != 2 ]; then
  echo "$readme: expected one line $begin and one line $end" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" --config-markdown >"$work/table.md"
# The table, set off by blank lines so that Markdown sees the markers as blocks of their own.
awk -v begin="$begin" -v end="$end" -v table="$work/table.md" '
  $0 == begin { print; print ""; while ((getline row < table) > 0) print row; print ""; skip = 1; next }
  $0 == end { skip = 0 }
  !skip { print }' "$readme" >"$work/README.md"

if [ "$check" = 1 ]; then
  if ! diff -u "$readme" "$work/README.md"; then
    echo "README's configuration table is not \`$bin --config-markdown\`:" \
      "run scripts/config-table.sh $bin" >&2
    exit 1
  fi
else
  cat "$work/README.md" >"$readme"
fi
