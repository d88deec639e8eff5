#!/usr/bin/env bash
# Fuzz every target in fuzz/ for a short time each (FUZZ_SECS, default 20: 9 targets take about
# 3 minutes after the build), seeded with the test fixtures. Fails on the first crash, leak, timeout
# or out-of-memory; libFuzzer writes the input to fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, coverage instrumentation). This
# machine has stable Rust only, so RUSTC_BOOTSTRAP=1 lets stable rustc take them.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
secs="${FUZZ_SECS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Seeds: the bad-input corpus and the POS samples, read-only (new inputs go to fuzz/corpus/).
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
find tests/fixtures/bad-input tests/fixtures/pos-exports -type f ! -name README.md -exec cp {} "$seeds"/ \;

cd fuzz
cargo fuzz build
log="$(mktemp)"
for target in $(cargo fuzz list); do
    echo "== $target (${secs}s)"
    mkdir -p "corpus/$target"
    extra=()
    # The byte targets start from the fixtures; build_event decodes its input as a structure.
    case "$target" in read_*) extra=("$seeds") ;; esac
    if ! cargo fuzz run "$target" "corpus/$target" "${extra[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/"
        exit 1
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
done
rm -f "$log"
echo "fuzzing: no crashes"
