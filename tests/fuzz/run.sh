#!/usr/bin/env bash
# Runs cargo-fuzz targets for a given time each, at low CPU priority (`make fuzz`, `make fuzz-smoke`).
#
#   tests/fuzz/run.sh SECONDS TARGET...
#
# Each target starts from its committed seeds (corpus/<target>, read only) plus what earlier runs found
# (target/corpus/<target>, written by libFuzzer, not committed). A crash stops the run with exit status 1
# and leaves the input in artifacts/<target>/ (reproduce: cargo fuzz run --fuzz-dir tests/fuzz <target>
# <file>); every crash becomes a fix and a regression unit test with that input. The last line per target
# is "fuzz <target>: <runs> runs in <s> s, cov <edges> ft <features> corpus <n>", also appended to
# target/fuzz-summary.tsv.
#
# No sanitizer: meshgate forbids unsafe code, so AddressSanitizer would only watch the dependencies'
# unsafe code at a third of the speed; the build keeps cargo-fuzz's default debug assertions and
# overflow checks. RUSTC_BOOTSTRAP=1 lets the stable toolchain accept the flags cargo-fuzz passes.
set -euo pipefail

secs=${1:?usage: run.sh SECONDS TARGET...}
shift
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
mkdir -p target
summary=target/fuzz-summary.tsv
status=0
for t in "$@"; do
    extra=()
    # The converter needs meshgate's `cli` feature (serde_json preserve_order): a build of its own.
    [ "$t" = convert_yaml ] && extra=(--features convert --target-dir target/convert)
    work=target/corpus/$t
    mkdir -p "$work" "corpus/$t" "artifacts/$t"
    log=target/fuzz-$t.log
    echo "fuzz $t: ${secs} s"
    if ! nice -n 10 cargo fuzz run --fuzz-dir . --sanitizer none "${extra[@]}" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" \
        -print_final_stats=1 >"$log" 2>&1; then
        status=1
        grep -E "panicked|ERROR|SUMMARY|Test unit written|artifact" "$log" | head -20 || true
        echo "fuzz $t: FAILED (log: tests/fuzz/$log)"
        continue
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
    line="fuzz $t: ${runs:-?} runs in $secs s, cov ${cov:-?} ft ${ft:-?} corpus ${corp:-?}"
    echo "$line"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$secs" "${runs:-}" "${cov:-}" "${corp:-}" >>"$summary"
done
exit $status
