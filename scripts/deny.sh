#!/usr/bin/env bash
# The dependency policy (deny.toml) checked with cargo deny: licences (what the
# binary links must let it ship as Apache-2.0), bans (duplicate versions,
# banned crates) and sources (crates.io only). Installs cargo-deny if missing.
#
#   scripts/deny.sh              the checks the test command runs (offline)
#   scripts/deny.sh advisories   the RustSec advisories: downloads their
#                                database, so run it by hand where the network
#                                allows
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny $CARGO_DENY_VERSION"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
fi

if [ "${1:-}" = advisories ]; then
  exec cargo deny --locked check advisories
fi

cargo deny --locked --offline check licenses bans sources

# The check must bite: a crate that links a GPL-3.0 library is refused.
selftest=scripts/deny-selftest
if out=$(cargo deny --locked --offline --manifest-path "$selftest/Cargo.toml" --config deny.toml \
  check licenses 2>&1); then
  echo "deny: $selftest links a GPL-3.0 crate and the licence check let it pass" >&2
  exit 1
fi
if ! grep -q "GPL-3.0-only" <<<"$out"; then
  echo "deny: $selftest failed, but not on its GPL-3.0 licence:" >&2
  echo "$out" >&2
  exit 1
fi
echo "deny: the policy holds, and refuses a GPL-3.0 dependency ($selftest)"
