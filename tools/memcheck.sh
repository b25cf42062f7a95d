#!/bin/sh
# make memcheck: the Common Test suites with every kv_cnode they start
# running under valgrind memcheck, then a check of every valgrind log.
#
#   sh tools/memcheck.sh [BINARY]     (default build/kv_cnode; not an ASan build)
#
# The suites start the binary through a wrapper, build/memcheck/kv_cnode,
# that execs
#   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
#            --error-exitcode=99 --log-file=build/memcheck/vg.<pid>.log BINARY
# with KV_MEMCHECK=1 (suites print memory figures without asserting them and
# stretch their deadlines).  A node that stops with errors or leaks exits 99,
# which fails its case too.  Afterwards every log must hold
# "ERROR SUMMARY: 0 errors" and no "definitely lost"/"indirectly lost" bytes;
# a log without a summary (a node killed, not stopped) also fails.
#
# MEMCHECK_SUITES: suite names to run (default: smoke registry node fault tls peers).
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${1:-$ROOT/build/kv_cnode}
OUT=$ROOT/build/memcheck
VG=$(command -v valgrind) || { echo "memcheck: valgrind is not installed (make deps)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "memcheck: no binary $BIN (make first)" >&2; exit 1; }
if ldd "$BIN" 2>/dev/null | grep -q libasan; then
    echo "memcheck: $BIN is an ASan build; valgrind needs a plain one (no SANITIZE=1)" >&2
    exit 1
fi

rm -rf "$OUT"
mkdir -p "$OUT"
cat > "$OUT/kv_cnode" <<EOF
#!/bin/sh
exec "$VG" --leak-check=full --errors-for-leak-kinds=definite,indirect \\
  --show-leak-kinds=definite,indirect --error-exitcode=99 --num-callers=30 \\
  --child-silent-after-fork=yes --log-file="$OUT/vg.%p.log" "$BIN" "\$@"
EOF
chmod +x "$OUT/kv_cnode"

suites=""
for s in ${MEMCHECK_SUITES:-smoke registry node fault tls peers}; do
    suites="$suites${suites:+,}erl_test/kv_cnode_${s}_SUITE"
done
echo "memcheck: $BIN under valgrind; suites: $suites"
KV_CNODE_BIN=$OUT/kv_cnode KV_MEMCHECK=1 SUITE=$suites sh tools/run_ct.sh
ct=$?

logs=0; bad=0; incomplete=0
for f in "$OUT"/vg.*.log; do
    [ -e "$f" ] || continue
    logs=$((logs + 1))
    if ! grep -q "ERROR SUMMARY:" "$f"; then
        incomplete=$((incomplete + 1))
        echo "memcheck: $f has no summary (the process was killed?)"
    elif ! grep -q "ERROR SUMMARY: 0 errors" "$f" ||
         grep -Eq "(definitely|indirectly) lost: [1-9]" "$f"; then
        bad=$((bad + 1))
        echo "memcheck: errors or leaks in $f:"
        grep -E "Invalid|uninitialised|Mismatched|lost:|ERROR SUMMARY|Command:" "$f" | head -20
    fi
done
echo "memcheck: $logs valgrind logs, $bad with errors or leaks, $incomplete without a summary; Common Test exit status $ct"
[ "$logs" -gt 0 ] && [ "$bad" = 0 ] && [ "$incomplete" = 0 ] && [ "$ct" = 0 ]
