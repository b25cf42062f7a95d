#!/bin/sh
# Install the Debian packages named on the command line that are missing.
# As root: apt-get.  Otherwise: print the exact command and fail.
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
cmd="apt-get install -y$missing"
if [ "$(id -u)" = 0 ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null || { echo "failed: $cmd" >&2; exit 1; }
else
    echo "missing packages:$missing" >&2
    echo "run: sudo $cmd" >&2
    exit 1
fi
