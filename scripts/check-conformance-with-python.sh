#!/usr/bin/env bash
# Second opinion on conformance: replays every case with the chainsmith binary
# and checks the outputs with the suite's own independent checker (check.py,
# including its packet-flow tracer). Usage: scripts/check-conformance-with-python.sh [BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/debug/chainsmith}
suite=$root/testdata/conformance
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
cases=0
for case in "$suite"/[0-9][0-9]-*/; do
  name=$(basename "$case")
  cases=$((cases + 1))
  states=()
  full=()
  if [ -d "$case/steps" ]; then
    n=0
    for step in "$case"/steps/*/; do
      n=$((n + 1))
      states+=("$step/cluster.yaml")
      if [ -f "$step/step.yaml" ] && grep -q 'forceFullSync: true' "$step/step.yaml"; then full+=("$n"); fi
    done
  else
    states=("$case/cluster.yaml")
  fi
  args=(replay --node "$case/node.yaml" --out "$out/$name" --partial-sync compat)
  if [ ${#full[@]} -gt 0 ]; then args+=(--full-sync-at "$(IFS=,; echo "${full[*]}")"); fi
  "$bin" "${args[@]}" "${states[@]}" 2>/dev/null
  loose=()
  case "$name" in 05-*|10-*) loose=(--loose) ;; esac
  if ! python3 "$suite/check.py" "$case" "$out/$name" --derived "${loose[@]}"; then failed=$((failed + 1)); fi
done
echo "check.py: $((cases - failed)) of $cases cases pass"
[ "$failed" -eq 0 ]
