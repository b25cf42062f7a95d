#!/bin/sh
# Run every cmocka binary given; print one summary line; fail if any failed.
pass=0; fail=0
for t in "$@"; do
    if "$t"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAILED: $t"; fi
done
echo "unit suites: $pass passed, $fail failed"
[ "$fail" = 0 ]
