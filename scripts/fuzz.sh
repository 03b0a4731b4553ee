#!/usr/bin/env bash
# Fuzzes chainsmith's input readers and its compile path (the cargo-fuzz
# targets in fuzz/, libFuzzer with AddressSanitizer) for SECONDS_PER_TARGET
# seconds each, seeded from the repository's own fixtures. Exits non-zero if
# any target panics, times out or exceeds the memory limits, and prints where
# the input that did it was written.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 30 s, every target)
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets rustc take the unstable
# flags cargo-fuzz passes (-Zsanitizer=address). FUZZ_SANITIZER=none builds
# without AddressSanitizer (faster; the code under test has no unsafe code).
# Coverage grown by a run is kept in fuzz/corpus/TARGET (git-ignored) and
# seeds the next run on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${1:-30}
shift || true
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(manifests config dump compile)
fi

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}

# Per input: 30 s (seeds take milliseconds; a packet trace that exhausts its
# budget takes seconds under AddressSanitizer; anything slower is super-linear
# time), 2 GiB resident (AddressSanitizer's shadow memory included) and no
# single allocation above 512 MiB.
limits=(-timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=65536)

# Seeds are read from the fixtures at run time (nothing copied into git):
# fuzz/target/seeds/TARGET is rebuilt on every run.
seeds=$root/fuzz/target/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{manifests,config,dump,compile}
seed() { # seed TARGET FILE...: copies each file under a name made from its path
  local target=$1 file
  shift
  for file in "$@"; do
    [ -f "$file" ] && cp "$file" "$seeds/$target/${file//\//_}"
  done
  return 0
}
shopt -s nullglob
seed manifests snapshots/fixtures/*.yaml snapshots/fixtures/{replay,diff/*}/*.yaml \
  bins/chainsmith/src/example/cluster.yaml $(find testdata/conformance -name cluster.yaml | sort)
seed config snapshots/fixtures/nodes/*.yaml bins/chainsmith/src/example/node.yaml \
  $(find testdata/conformance -name node.yaml | sort) fuzz/seeds/config/*
seed dump $(find testdata/conformance -name '*.iptables' | sort) fuzz/seeds/dump/*
# The iptables-save dump of the tracer's kernel-semantics tests.
sed -n '/^const SAVED: &str = r#"/,/^"#;/p' crates/tracer/tests/kernel_semantics.rs |
  sed -e '1s/^const SAVED: &str = r#"//' -e '$d' >"$seeds/dump/tracer-kernel-semantics-saved"
# compile takes node.yaml, a NUL byte, then the manifests.
pair() { # pair NAME NODE CLUSTER
  { cat "$2"; printf '\0'; cat "$3"; } >"$seeds/compile/$1"
}
while read -r cluster node; do
  pair "snapshots_${cluster}_${node//\//_}" "snapshots/fixtures/$node" "snapshots/fixtures/$cluster"
done < <(awk '/^- cluster:/ { c = $3 } /^  node:/ { print c, $2 }' snapshots/fixtures/INDEX.yaml)
for cluster in $(find testdata/conformance -name cluster.yaml | sort); do
  dir=$(dirname "$cluster")
  case=${cluster#testdata/conformance/}
  case=${case%%/*}
  [ -f "$dir/node.yaml" ] || dir=testdata/conformance/$case
  [ -f "$dir/node.yaml" ] && pair "${cluster//\//_}" "$dir/node.yaml" "$cluster"
done
seed compile bins/chainsmith/src/example/cluster.yaml

cd fuzz
echo "building fuzz targets (sanitizer: $sanitizer)"
build_start=$SECONDS
cargo fetch --locked # the committed fuzz/Cargo.lock, unchanged
cargo fuzz build --sanitizer "$sanitizer"
echo "built in $((SECONDS - build_start)) s"

failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "$root/fuzz/target/logs"
  log=$root/fuzz/target/logs/$target.log
  echo "fuzzing $target for $seconds s (log: fuzz/target/logs/$target.log)"
  if cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "$seeds/$target" -- \
    -max_total_time="$seconds" "${limits[@]}" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "  ok: ${runs:-?} inputs run, corpus $(find "corpus/$target" -type f | wc -l) files"
  else
    failed+=("$target")
    echo "  FAILED: $target" >&2
    # The panic and its message, or libFuzzer's verdict (timeout, out-of-memory, ...).
    { grep -m1 -A1 'panicked at' "$log" || grep -m1 'ERROR: libFuzzer' "$log" || tail -5 "$log"; } |
      sed 's/^/  /' >&2
    for artifact in $(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //'); do
      echo "  input: $artifact" >&2
      echo "  reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $target $artifact)" >&2
      echo "  minimise:  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz tmin --sanitizer $sanitizer $target $artifact)" >&2
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: no crash in ${targets[*]} ($seconds s each)"
