#!/usr/bin/env bash
# Second opinion on conformance: replays every case of both suites (iptables
# and nftables mode) with the chainsmith binary and checks the outputs with
# each suite's own independent checker (check.py, including its packet-flow
# tracer). Usage: scripts/check-conformance-with-python.sh [BINARY]
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

# nftables mode: the same for upstream's nftables suite. A step marked
# ageStaleChains runs 2 s after the one before (upstream moves its stale-chain
# times 2 s back); case 28 starts from initial.nft, and its operation count is
# relative to a fresh proxier's first sync of nothing (setup.nft).
suite=$root/testdata/conformance-nft
empty=$(mktemp -d)
trap 'rm -rf "$out" "$empty"' EXIT
touch "$empty/cluster.yaml"
for case in "$suite"/[0-9][0-9]-*/; do
  name=$(basename "$case")
  states=()
  clock=()
  now=0
  if [ -d "$case/steps" ]; then
    for step in "$case"/steps/*/; do
      if [ -f "$step/step.yaml" ] && grep -q 'ageStaleChains: true' "$step/step.yaml"; then now=$((now + 2)); fi
      states+=("$step/cluster.yaml")
      clock+=("$now")
    done
  else
    states=("$case/cluster.yaml")
    clock=(0)
  fi
  args=(replay --mode nftables --node "$case/node.yaml" --out "$out/nft/$name" --clock "$(IFS=,; echo "${clock[*]}")")
  if [ -f "$case/initial.nft" ]; then
    args+=(--existing-ruleset "$case/initial.nft")
    "$bin" replay --mode nftables --node "$case/node.yaml" --out "$empty/$name" "$empty/cluster.yaml" 2>/dev/null
    mkdir -p "$out/nft/$name"
    cp "$empty/$name/01.nft" "$out/nft/$name/setup.nft"
  fi
  "$bin" "${args[@]}" "${states[@]}" 2>/dev/null
done
echo "check.py (nftables):"
if ! sh "$suite/check_all.sh" "$out/nft"; then failed=$((failed + 1)); fi
[ "$failed" -eq 0 ]
