#!/usr/bin/env bash
# The project's test command (README "Run the tests"): formatting, lints, the
# dependency policy, every test including the real-kernel ones, and the
# conformance suite's independent Python checker as a second opinion. Exits
# non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real-kernel tests need root, iproute2, iptables (both backends), nftables,
# nfacct and conntrack; the node tests also run a real Prometheus (and promtool), the
# deploy tests kubectl.
need=()
for tool in ip iptables-restore iptables-legacy-restore ip6tables-restore nft nfacct conntrack prometheus promtool; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing what the real-kernel tests need (missing: ${need[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      iproute2 iptables nftables nfacct conntrack prometheus >/dev/null
  else
    echo "missing ${need[*]}: run as root on a Debian-like machine, or install them" >&2
    exit 1
  fi
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
# The deploy/ tests render the kustomizations with kubectl's built-in kustomize.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "missing kubectl (its kustomize renders deploy/ in the tests): install it from https://kubernetes.io/docs/tasks/tools/" >&2
  exit 1
fi

export CHAINSMITH_KERNEL_TESTS=1
# Snapshots are reviewed, never written, by a test run.
export CI=true INSTA_UPDATE=no

# Every locked package, including those only `cargo metadata` reads (the
# architecture test runs it offline).
cargo fetch --locked
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== dependency policy (scripts/deny.sh: licences, bans, sources)"
scripts/deny.sh
echo "== cargo test"
cargo test --workspace --locked
echo "== conformance, second opinion (check.py)"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
scripts/check-conformance-with-python.sh "$target_dir/debug/chainsmith"
echo "== fuzzing, bounded (scripts/fuzz.sh; run longer by hand)"
scripts/fuzz.sh 20
echo "== all tests passed"
