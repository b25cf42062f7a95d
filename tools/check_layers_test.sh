#!/bin/sh
# tools/check_layers_test.sh - the self-test of tools/check_layers.sh (run
# by `make check-layers`): a clean copy of c_src passes, and a copy with one
# planted wrong-way include (or a service named below services/, or two
# folders that include each other) fails, naming the planted line.
set -u
cd "$(dirname "$0")/.."
TMP=$(mktemp -d /tmp/check_layers.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
fresh() { rm -rf "$TMP/c_src" && cp -R c_src "$TMP/c_src"; }
plant() { # file text: append a line to a file of the copy
    printf '%s\n' "$2" >>"$TMP/c_src/$1"
}
expect_fail() { # what, pattern the report must show
    if out=$(sh tools/check_layers.sh "$TMP/c_src" 2>&1); then
        echo "check-layers self-test: $1: passed, but must fail"
        fails=$((fails + 1))
    elif ! printf '%s\n' "$out" | grep -q "$2"; then
        echo "check-layers self-test: $1: failed without naming it:"
        printf '%s\n' "$out"
        fails=$((fails + 1))
    fi
}
fresh
if ! sh tools/check_layers.sh "$TMP/c_src" >/dev/null; then
    echo "check-layers self-test: the clean copy fails"
    fails=$((fails + 1))
fi
fresh; plant wire/epmd.c '#include "runtime/node.h"'
expect_fail "wire includes runtime" 'epmd.c:.*wire must not include runtime'
fresh; plant base/log.c '#include "proto/ext.h"'
expect_fail "base includes proto" 'log.c:.*base must not include proto'
fresh; plant proto/term.c '#include "wire/conn.h"'
expect_fail "proto includes wire" 'term.c:.*proto must not include wire'
fresh; plant runtime/gen.c '#include "config.h"'
expect_fail "runtime includes the top" 'gen.c:.*runtime must not include top'
fresh; plant services/bucket.c '#include "wire/conn.h"'
expect_fail "a service includes wire" 'bucket.c:.*a service never sees connections'
fresh; plant services/bucket.c '#include "runtime/node.h"'
expect_fail "a service includes node.h" 'bucket.c:.*through runtime/gen.h only'
fresh; plant runtime/proc.c 'extern int registry_behaviour;'
expect_fail "the runtime names a service" 'proc.c:.*names a service'
fresh; plant base/loop.c '#include "wire/tls.h"'; plant wire/tls.c '#include "base/loop.h"'
expect_fail "two folders include each other" 'base and wire include each other'
if [ "$fails" = 0 ]; then
    echo "check-layers self-test: 8 planted violations caught, clean tree passes"
fi
[ "$fails" = 0 ]
