#!/bin/sh
# Run the Common Test suites against build/kv_cnode (or $KV_CNODE_BIN).
# The CT node is distributed with a short name and a fixed test cookie; each
# suite starts epmd, the binary and peer nodes itself and stops them.
set -e
cd "$(dirname "$0")/.."
: "${KV_CNODE_BIN:=$(pwd)/build/kv_cnode}"
export KV_CNODE_BIN
epmd -daemon 2>/dev/null || true
# Only the top-level suites: *_SUITE_data/ holds suites for scratch projects.
suites="--suite $(ls erl_test/*_SUITE.erl | paste -sd, -)"
[ -n "$SUITE" ] && suites="--suite $SUITE"
exec rebar3 ct --sname "ct_$$" --setcookie kv_test_cookie $suites $CT_ARGS
