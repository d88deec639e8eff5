#!/usr/bin/env bash
# Fuzz every target in fuzz/ for FUZZ_SECS seconds each, FUZZ_JOBS targets at a time, the read_*
# targets seeded with the fixtures (tests/fixtures/bad-input, tests/fixtures/pos-exports).
# Fails if any target crashes: a panic (arithmetic overflow included), an abort, an input slower
# than FUZZ_TIMEOUT seconds, or more than 1 GiB of memory. The failing input's path is printed;
# libFuzzer writes it to fuzz/artifacts/<target>/.
#
#   bash .ci/fuzz.sh                                    # CI short form: 10 s per target
#   FUZZ_SECS=600 bash .ci/fuzz.sh                      # long form: 10 min per target
#   FUZZ_SECS=3600 FUZZ_SANITIZER=address bash .ci/fuzz.sh   # overnight, with AddressSanitizer
#
# Build: release (opt-level 3) with debug assertions, so overflow checks are on (the price x
# quantity overflow was found that way). Note that `cargo fuzz build -O` alone turns them OFF;
# hence the explicit --debug-assertions. No sanitizer by default: the crate has no `unsafe`, and
# what we are after here is panics, overflows and aborts, which need none; AddressSanitizer makes
# the build about 1.5-2.5x slower (FUZZ_SANITIZER=address for long runs).
#
# cargo-fuzz needs nightly-only rustc flags (sanitizer coverage instrumentation). This machine has
# stable Rust only, so RUSTC_BOOTSTRAP=1 lets stable rustc take them.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0

CARGO_FUZZ_VERSION=0.13.2
secs="${FUZZ_SECS:-10}"
jobs="${FUZZ_JOBS:-$(nproc)}"
timeout="${FUZZ_TIMEOUT:-10}"
sanitizer="${FUZZ_SANITIZER:-none}"
# The same options for build and run: any difference makes `cargo fuzz run` rebuild.
build=(--release --debug-assertions --sanitizer "$sanitizer")

T0=$SECONDS
step() { echo "== $* [$((SECONDS - T0))s]"; }

step "cargo-fuzz $CARGO_FUZZ_VERSION"
# "cargo-fuzz 0.13.2"; reinstalled only when absent or another version.
if [[ $(cargo fuzz --version 2>/dev/null | awk '{ print $2 }') != "$CARGO_FUZZ_VERSION" ]]; then
    # (Without RUSTC_BOOTSTRAP: build scripts that probe for nightly features would take it.)
    env -u RUSTC_BOOTSTRAP cargo install --locked --quiet "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Seeds: the bad-input corpus and the POS samples, copied (libFuzzer adds new inputs only to the
# first corpus directory, fuzz/corpus/<target>, which is not committed).
mkdir "$work/seeds"
find tests/fixtures/bad-input tests/fixtures/pos-exports -type f ! -name README.md \
    -exec cp {} "$work/seeds/" \;

cd fuzz
step "build every target (${build[*]})"
cargo fuzz build "${build[@]}"
mapfile -t targets < <(cargo fuzz list)
((${#targets[@]})) || { echo "no fuzz targets" >&2; exit 1; }

step "run ${#targets[@]} targets, ${secs}s each, $jobs at a time"
fuzz_one() { # target: fuzz it, output to $work/<target>.log, status to $work/<target>.rc
    local target=$1 rc=0
    local seeds=()
    # The byte targets start from the fixtures; build_event decodes its input as a structure.
    case "$target" in read_*) seeds=("$work/seeds") ;; esac
    mkdir -p "corpus/$target"
    cargo fuzz run "${build[@]}" "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$secs" -timeout="$timeout" -rss_limit_mb=1024 -max_len=65536 \
        -print_final_stats=1 >"$work/$target.log" 2>&1 || rc=$?
    echo "$rc" >"$work/$target.rc"
}
running=0
for target in "${targets[@]}"; do
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$target" &
    running=$((running + 1))
done
wait

failed=()
for target in "${targets[@]}"; do
    rc=$(cat "$work/$target.rc" 2>/dev/null || echo "no status")
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/$target.log")
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$work/$target.log" | tail -n 1 || true)
    if [[ $rc == 0 ]]; then
        echo "ok: $target: ${execs:-?} inputs, ${cov:-no coverage line}, peak ${rss:-?} MB"
    else
        failed+=("$target")
        echo "FAIL: $target (exit $rc):"
        # From the panic, timeout, out-of-memory or sanitizer report on; the whole log otherwise.
        report=$(sed -n '/panicked at\|^ALARM: \|ERROR: libFuzzer\|ERROR: AddressSanitizer/,$p' "$work/$target.log")
        head -n 40 <<<"${report:-$(cat "$work/$target.log")}" | sed 's/^/    /'
        # libFuzzer: "artifact_prefix='...'; Test unit written to <path>" (absolute, from cargo fuzz)
        input=$(sed -n 's/.*Test unit written to //p' "$work/$target.log" | tail -n 1)
        input=${input#"$PWD/"}
        if [[ -n $input ]]; then
            echo "FAIL: $target: input fuzz/${input#./}"
            echo "      reproduce: cd fuzz && cargo fuzz run ${build[*]} $target ${input#./}"
        else
            echo "FAIL: $target: no input written (see the log above)"
        fi
    fi
done

step "done"
if ((${#failed[@]})); then
    echo "fuzzing: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: no crashes in ${#targets[@]} targets (${secs}s each) in $((SECONDS - T0))s"
