#!/bin/sh
# tools/check_layers.sh [DIR] - `make check-layers`: the include graph of
# DIR (default c_src) must follow the layers (c_src/README.md):
#   base < proto < wire < runtime < services < top (main.c, config.c, app.c)
# A file may include its own layer or a lower one, never a higher one;
# proto never includes wire (it is pure); no two folders include each
# other; a service sees the runtime only through runtime/gen.h (and
# runtime/pid.h), never wire/ or the node's own headers; and no file below
# services/ names a service.  Prints every violation; exits 1 if any.
set -u
DIR=${1:-c_src}
rank() {
    case $1 in
    base) echo 0 ;; proto) echo 1 ;; wire) echo 2 ;; runtime) echo 3 ;;
    services) echo 4 ;; top) echo 5 ;; *) echo 9 ;;
    esac
}
layer_of() { # path relative to DIR -> layer
    case $1 in
    */*) echo "${1%%/*}" ;;
    *) echo top ;;
    esac
}
bad=0
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for f in $(cd "$DIR" && find . -name '*.[ch]' | sed 's|^\./||' | sort); do
    from=$(layer_of "$f")
    rf=$(rank "$from")
    if [ "$rf" = 9 ]; then
        echo "check-layers: $DIR/$f: in no known layer (base proto wire runtime services, or top)"
        bad=1
        continue
    fi
    # every quoted include, with its line number
    grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$DIR/$f" |
        sed 's/^\([0-9]*\):.*"\([^"]*\)".*/\1 \2/' >"$edges.f"
    while read -r line inc; do
        to=$(layer_of "$inc")
        rt=$(rank "$to")
        where="$DIR/$f:$line: #include \"$inc\""
        if [ "$rt" = 9 ]; then
            echo "check-layers: $where: names no known layer"
            bad=1
            continue
        fi
        [ "$from" != "$to" ] && echo "$from $to" >>"$edges"
        if [ "$rt" -gt "$rf" ]; then
            echo "check-layers: $where: $from must not include $to (a higher layer)"
            bad=1
        fi
        if [ "$from" = services ]; then
            case $inc in
            wire/*) echo "check-layers: $where: a service never sees connections"; bad=1 ;;
            runtime/gen.h | runtime/pid.h) ;;
            runtime/*) echo "check-layers: $where: a service sees the runtime through runtime/gen.h only"; bad=1 ;;
            esac
        fi
    done <"$edges.f"
    rm -f "$edges.f"
    # names of services below services/ (identifiers, not prose)
    if [ "$rf" -lt 4 ] &&
        grep -nE '(registry|bucket|net_kernel|counter)_(behaviour|call|cast|state|on_[a-z]+|drop_bucket|free)\b|services/' \
            "$DIR/$f" >"$edges.n"; then
        sed "s|^|check-layers: $DIR/$f:|; s|$| (names a service)|" "$edges.n"
        bad=1
    fi
    rm -f "$edges.n"
done
# no two folders include each other
sort -u "$edges" | while read -r a b; do
    if grep -qx "$b $a" "$edges"; then
        echo "check-layers: $a and $b include each other"
        exit 1
    fi
done || bad=1
if [ "$bad" = 0 ]; then
    echo "check-layers: $DIR follows the layers"
fi
exit "$bad"
