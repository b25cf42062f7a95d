#!/bin/sh
# Run each libFuzzer target for SECONDS with its seed corpus
# (tests/fuzz/corpus/<target>, read only) and a working corpus under
# build/fuzz/corpus/<target>; print executions per target; fail if any
# target found a crash, leak or timeout (reproducer in build/fuzz/artifacts).
# Usage: tools/run_fuzz.sh SECONDS target...
secs=$1; shift
dir=build/fuzz
mkdir -p "$dir/artifacts" "$dir/logs"
fail=0; summary=""
for t in "$@"; do
    mkdir -p "$dir/corpus/$t" "tests/fuzz/corpus/$t"
    log="$dir/logs/$t.log"
    dict=""
    case $t in fuzz_conn|fuzz_dist|fuzz_term|fuzz_atomcache) dict="-dict=tests/fuzz/kv.dict" ;; esac
    "$dir/$t" -max_total_time="$secs" -print_final_stats=1 -timeout=10 $dict \
        -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$dir/artifacts/$t-" \
        "$dir/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ "$rc" = 0 ]; then res=ok; else res="FAILED (exit $rc, see $log)"; fail=1; fi
    line=$(printf '%-16s %10s execs in %ss  %s' "$t" "${execs:-?}" "$secs" "$res")
    echo "$line"
    summary="$summary$line
"
done
printf 'fuzz summary:\n%s' "$summary"
[ "$fail" = 0 ]
