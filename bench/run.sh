#!/bin/sh
# bench/run.sh - `make bench` (QUICK=1 for the short run).  See bench/README.md.
#
# Builds the bench pieces into build/bench, starts a private epmd on a free
# loopback port (so the run neither needs nor disturbs anyone else's epmd),
# makes throwaway TLS certificates with the openssl CLI, and runs the client
# node (bench/kv_bench.erl), which starts and stops every server itself.
# Everything this script starts is stopped on exit; the run is bounded by a
# time budget inside the client and by `timeout` outside it.
set -eu
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
BIN=${KV_CNODE_BIN:-$(pwd)/build/kv_cnode}
OUTDIR=$(pwd)/build/bench
RESULT=${KV_BENCH_OUT:-$(pwd)/bench/results/latest.md}
# The client never spins its schedulers: on 2 cores a spinning client would
# take CPU from whichever server it drives.  Same flags for every server.
CLIENT_FLAGS=${KV_BENCH_CLIENT_FLAGS:-+sbwt none +sbwtdcpu none +sbwtdio none}
if [ "$QUICK" = 1 ]; then BUDGET=${KV_BENCH_BUDGET:-50}; else BUDGET=${KV_BENCH_BUDGET:-280}; fi

mkdir -p "$OUTDIR/ebin"
erlc -o "$OUTDIR/ebin" bench/kv_baseline.erl bench/kv_bench.erl
${CC:-cc} -O2 -std=c11 -Wall -Wextra -o "$OUTDIR/floor" bench/floor.c

TMP=$(mktemp -d /tmp/kv_bench.XXXXXX)
EPMD_PID=
cleanup() {
    st=$?
    set +e
    if [ -n "$EPMD_PID" ]; then
        kill "$EPMD_PID" 2>/dev/null
        wait "$EPMD_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
    exit "$st"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a private epmd on a free port, loopback only ---
PORT=
base=$(( 43700 + $$ % 200 ))
for p in $(seq "$base" $(( base + 50 ))); do
    if ! epmd -port "$p" -names >/dev/null 2>&1; then PORT=$p; break; fi
done
[ -n "$PORT" ] || { echo "bench: no free port for epmd" >&2; exit 1; }
ERL_EPMD_ADDRESS=127.0.0.1 epmd -port "$PORT" >/dev/null 2>&1 &
EPMD_PID=$!
i=0
until epmd -port "$PORT" -names >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -le 50 ] || { echo "bench: epmd did not start" >&2; exit 1; }
    sleep 0.1
done
export ERL_EPMD_PORT=$PORT

# --- throwaway certificates for the TLS row (optional) ---
TLS_DIR=
if command -v openssl >/dev/null 2>&1; then
    d=$TMP/tls; mkdir -p "$d"
    host=$(hostname -s)
    if (
        cd "$d"
        printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$host" > san.ext
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.pem -days 2 -subj /CN=kv-bench-ca
        for who in srv cli; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout $who.key -out $who.csr -subj "/CN=$host"
            openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -out $who.pem -days 2 -extfile san.ext
        done
        cat > dist.conf <<EOF
[{server, [{certfile, "$d/srv.pem"}, {keyfile, "$d/srv.key"}, {cacertfile, "$d/ca.pem"},
           {verify, verify_peer}, {fail_if_no_peer_cert, true}, {secure_renegotiate, true}]},
 {client, [{certfile, "$d/cli.pem"}, {keyfile, "$d/cli.key"}, {cacertfile, "$d/ca.pem"},
           {verify, verify_peer}, {secure_renegotiate, true},
           {server_name_indication, disable}]}].
EOF
    ) >"$TMP/openssl.log" 2>&1; then
        TLS_DIR=$d
    else
        echo "bench: openssl failed, TLS row skipped:" >&2; tail -3 "$TMP/openssl.log" >&2
    fi
fi

COOKIE=kvbench_$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
export KV_BENCH_QUICK=$QUICK KV_BENCH_BIN=$BIN KV_BENCH_FLOOR=$OUTDIR/floor \
       KV_BENCH_EBIN=$OUTDIR/ebin KV_BENCH_OUT=$RESULT KV_BENCH_TMP=$TMP \
       KV_BENCH_TLS_DIR=$TLS_DIR KV_BENCH_CLIENT_FLAGS="$CLIENT_FLAGS" KV_BENCH_BUDGET=$BUDGET

# shellcheck disable=SC2086
${KV_BENCH_WRAP:-timeout -k 10 $(( BUDGET + 90 ))} \
    erl -sname "kvbench_$$" -setcookie "$COOKIE" -noshell -pa "$OUTDIR/ebin" \
        -kernel inet_dist_use_interface '{127,0,0,1}' -connect_all false \
        $CLIENT_FLAGS -s kv_bench main </dev/null
