#!/bin/sh
# Runs cargo-fuzz targets one after another at the lowest priority, each for
# SECONDS (default 600), and prints a line of figures per target for
# docs/fuzzing.md. Usage: fuzz/run.sh [-t SECONDS] TARGET...  (logs in $LOGS,
# default fuzz/logs). Stable toolchain: no sanitizer, debug assertions on.
set -eu
seconds=600
if [ "${1:-}" = "-t" ]; then seconds=$2; shift 2; fi
cd "$(dirname "$0")"
logs=${LOGS:-logs}
mkdir -p "$logs"
for target in "$@"; do
    mkdir -p "corpus/$target"
    start=$(date +%s)
    set +e
    nice -n 19 cargo fuzz run "$target" --sanitizer none -a -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$logs/$target.log" 2>&1
    rc=$?
    set -e
    end=$(date +%s)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -n 1)
    files=$(find "corpus/$target" -type f | wc -l)
    size=$(du -sk "corpus/$target" | cut -f1)
    echo "$target rc=$rc minutes=$(( (end - start) / 60 )) execs=${execs:-?} corpus_files=$files corpus_kb=$size" | tee -a "$logs/summary.txt"
done
