/* fuzz_term.c - libFuzzer target: the term walker (term_walk) and, on
 * every term it accepts, the canonical encoder (term_canon).  Checks: the
 * walker never reads past the input, its length agrees with ei's own
 * ei_skip_term on the walked bytes (the contract that lets ei see only
 * walked terms), canonical output is itself a term that walks to its full
 * length, canonicalising is idempotent, and equal canonical bytes hash
 * equally; term_skip finds the same end as the walker (and never more
 * than the input on anything), and term_is_canon only says yes to bytes
 * term_canon leaves unchanged.  The input is one term with its 131 version byte. */
#include "fuzz_common.h"

#include <ei.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct term_limits lim = {64, 1u << 16};
    static const struct term_limits big = {1u << 20, UINT64_MAX};
    long v = term_walk_versioned(data, size, &lim);
    /* the skipper, on any input, never claims more bytes than there are */
    long sk = size > 0 ? term_skip(data + 1, size - 1) : 0;
    FZ_CHECK(sk < 0 || (size_t)sk <= size - 1);
    if (v < 0) {
        FZ_CHECK(term_strerror(v)[0] != 0);
        return 0;
    }
    FZ_CHECK(v >= 2 && (size_t)v <= size);
    const uint8_t *t = data + 1;
    size_t n = (size_t)v - 1;
    /* ei agrees on where the term ends (ei reads only the walked copy) */
    char *copy = malloc(n + 1);
    copy[0] = (char)131;
    memcpy(copy + 1, t, n);
    int idx = 1;
    if (ei_skip_term(copy, &idx) == 0)
        FZ_CHECK((size_t)idx == n + 1);
    free(copy);
    /* on a walked term it agrees with the walker (ext_skip relies on it) */
    FZ_CHECK(sk == (long)n);
    struct buf c1, c2;
    buf_init(&c1);
    buf_init(&c2);
    bool canon_ok = term_canon(t, n, &c1);
    /* term_is_canon never lies: yes means term_canon copies the bytes */
    if (term_is_canon(t, n))
        FZ_CHECK(canon_ok && buf_avail(&c1) == n && memcmp(buf_head(&c1), t, n) == 0);
    if (canon_ok) {
        FZ_CHECK(c1.len > 0);
        FZ_CHECK(term_walk(buf_head(&c1), buf_avail(&c1), &big) == (long)buf_avail(&c1));
        FZ_CHECK(term_canon(buf_head(&c1), buf_avail(&c1), &c2));
        FZ_CHECK(buf_avail(&c1) == buf_avail(&c2) &&
                 memcmp(buf_head(&c1), buf_head(&c2), buf_avail(&c1)) == 0);
        FZ_CHECK(term_hash(buf_head(&c1), buf_avail(&c1), 7) ==
                 term_hash(buf_head(&c2), buf_avail(&c2), 7));
    }
    buf_free(&c1);
    buf_free(&c2);
    return 0;
}
