#!/bin/sh
# Build Debian root trees carrying newer Erlang/OTP releases, for the CT
# suite erl_test/kv_cnode_otp_SUITE (nodes run with `chroot DIR erl ...`, so
# they share this machine's loopback and epmd).
#   tools/otp_peers.sh DIR [RELEASE...]      RELEASE: 27 (trixie), 29 (unstable)
# Each tree is DIR/RELEASE; DIR/RELEASE/.done marks a finished one. A tree
# without the marker (an interrupted build) is removed and built again; a
# finished one is left alone, so a second `make test` costs nothing.
# A transient mirror failure is retried; the last error is printed.
set -u
dir=$1; shift
[ $# -gt 0 ] || set -- 27 29
pkgs=erlang-base,erlang-crypto,erlang-ssl,erlang-public-key,erlang-asn1,erlang-dev,elixir,gcc,libc6-dev
mkdir -p "$dir" || exit 1
status=0
for rel in "$@"; do
    tree=$dir/$rel
    [ -f "$tree/.done" ] && continue
    case $rel in
        27) suite=trixie;   extra="" ;;
        29) suite=unstable; extra='Acquire::Check-Valid-Until "false"' ;;
        *)  echo "otp_peers: unknown release $rel (27 or 29)" >&2; status=1; continue ;;
    esac
    if [ "$(id -u)" != 0 ]; then
        echo "otp_peers: OTP $rel tree $tree missing; building it needs root (mmdebstrap, chroot)" >&2
        status=1; continue
    fi
    command -v mmdebstrap >/dev/null || { echo "otp_peers: mmdebstrap missing (make deps)" >&2; exit 1; }
    log=$dir/$rel.log
    start=$(date +%s)
    ok=0
    for try in 1 2 3; do
        # An interrupted mmdebstrap may leave /proc, /sys or /dev mounted
        # in the tree: unmount them, and never let rm cross into a mount.
        grep -o " $tree/[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l
        rm -rf --one-file-system "$tree"
        echo "otp_peers: building OTP $rel ($suite) in $tree, try $try (log $log)"
        if [ -n "$extra" ]; then
            mmdebstrap --variant=apt --include=$pkgs --aptopt='Acquire::Retries "5"' \
                --aptopt="$extra" $suite "$tree" >"$log" 2>&1 && ok=1
        else
            mmdebstrap --variant=apt --include=$pkgs --aptopt='Acquire::Retries "5"' \
                $suite "$tree" >"$log" 2>&1 && ok=1
        fi
        [ $ok = 1 ] && break
        sleep $((try * 10))
    done
    if [ $ok != 1 ]; then
        echo "otp_peers: OTP $rel tree could not be built; mmdebstrap said:" >&2
        tail -n 15 "$log" >&2
        rm -rf --one-file-system "$tree"
        status=1; continue
    fi
    cp /etc/hosts "$tree/etc/hosts"
    # The release the tree really carries, for the suite's reports.
    chroot "$tree" erl -noshell -eval \
        'io:format("~s~n",[erlang:system_info(otp_release)]),halt().' >"$tree/.otp_release" 2>&1
    echo "otp_peers: OTP $rel ($(cat "$tree/.otp_release")) built in $(( $(date +%s) - start )) s"
    touch "$tree/.done"
done
exit $status
