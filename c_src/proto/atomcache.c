/* atomcache.c - distribution header atom cache and frame rewriting (see atomcache.h).
 * Header layout (erl_dist_protocol, erts external.c):
 *   131 68 NumberOfAtomCacheRefs:8 Flags AtomCacheRefs...
 * Flags: one nibble per ref (bit 3 NewCacheEntryFlag, bits 0-2 the segment
 * index) from the low nibble of the first byte on, then one nibble whose
 * bit 0 is LongAtoms; N/2+1 bytes, absent when N = 0.  Each ref: the
 * internal segment index (1 byte), and for a new entry the atom's length
 * (2 bytes with LongAtoms, else 1) and its UTF-8 text.  Cache index =
 * segment * 256 + internal index.  The terms that follow carry no 131. */
#include "proto/atomcache.h"

#include "proto/term.h"

#include <stdlib.h>
#include <string.h>

enum {
    T_NEW_FLOAT = 70, T_BIT_BINARY = 77, T_ACREF = 82, T_NEW_PID = 88, T_NEW_PORT = 89,
    T_NEWER_REF = 90, T_SMALL_INT = 97, T_INT = 98, T_FLOAT = 99, T_ATOM = 100, T_REF = 101,
    T_PORT = 102, T_PID = 103, T_SMALL_TUPLE = 104, T_LARGE_TUPLE = 105, T_NIL = 106,
    T_STRING = 107, T_LIST = 108, T_BINARY = 109, T_SMALL_BIG = 110, T_LARGE_BIG = 111,
    T_NEW_FUN = 112, T_EXPORT = 113, T_NEW_REF = 114, T_SMALL_ATOM = 115, T_MAP = 116,
    T_ATOM_UTF8 = 118, T_SMALL_ATOM_UTF8 = 119, T_V4_PORT = 120, T_VERSION = 131,
    T_DIST_HDR = 68, T_DIST_FRAG_HDR = 69, T_DIST_FRAG_CONT = 70
};

void ac_init(struct ac *a)
{
    memset(a, 0, sizeof *a);
    buf_init(&a->scratch);
    buf_init(&a->oscratch);
    buf_init(&a->hdr);
    memset(a->slot_ref, 0xff, sizeof a->slot_ref);
    a->tpl_cur = -1;
    a->lazy = AC_LAZY;
}

static void free_slots(struct ac_atom *s)
{
    for (size_t i = 0; i < AC_SIZE; i++) {
        free(s[i].txt);
        s[i].txt = NULL;
        s[i].len = 0;
    }
}

void ac_free(struct ac *a)
{
    free_slots(a->in);
    free_slots(a->out);
    buf_free(&a->scratch);
    buf_free(&a->oscratch);
    buf_free(&a->hdr);
}

static bool slot_set(struct ac_atom *s, const uint8_t *txt, size_t len)
{
    uint8_t *t = malloc(len ? len : 1);
    if (!t)
        return false;
    memcpy(t, txt, len);
    free(s->txt);
    s->txt = t;
    s->len = (uint16_t)len;
    return true;
}

/* ---- header decoding ---------------------------------------------------- */

long ac_decode_header(struct ac *a, const uint8_t *p, size_t n, struct ac_refs *r,
                      const char **why)
{
    struct cur c = cur_make(p, n);
    uint8_t v, kind, cnt;
    r->n = 0;
    r->any_new = false;
    if (!cur_u8(&c, &v) || v != T_VERSION || !cur_u8(&c, &kind)) {
        *why = "frame does not start with 131 (atom-cache header expected)";
        return -1;
    }
    if (kind == T_DIST_FRAG_HDR || kind == T_DIST_FRAG_CONT) {
        *why = "fragment header (not negotiated)";
        return -1;
    }
    if (kind != T_DIST_HDR) {
        *why = "unknown distribution header";
        return -1;
    }
    if (!cur_u8(&c, &cnt)) {
        *why = "atom-cache header truncated";
        return -1;
    }
    if (cnt == 0)
        return (long)c.pos;
    struct span flags;
    if (!cur_span(&c, (size_t)cnt / 2 + 1, &flags)) {
        *why = "atom-cache header flags truncated";
        return -1;
    }
    /* the nibble after the last ref's: bit 0 = LongAtoms */
    bool long_atoms = (flags.p[cnt / 2] >> (4 * (cnt % 2))) & 1;
    for (uint32_t i = 0; i < cnt; i++) {
        uint8_t nib = (flags.p[i / 2] >> (4 * (i % 2))) & 0xf;
        uint8_t ix;
        if (!cur_u8(&c, &ix)) {
            *why = "atom-cache ref truncated";
            return -1;
        }
        size_t cix = (size_t)(nib & 7) * 256 + ix; /* < 2048 by construction */
        struct ac_atom *s = &a->in[cix];
        if (nib & 8) {
            size_t len;
            if (long_atoms) {
                uint16_t l16;
                if (!cur_n16(&c, &l16)) {
                    *why = "atom-cache entry length truncated";
                    return -1;
                }
                len = l16;
            } else {
                uint8_t l8;
                if (!cur_u8(&c, &l8)) {
                    *why = "atom-cache entry length truncated";
                    return -1;
                }
                len = l8;
            }
            struct span txt;
            if (len > AC_MAX_ATOM) {
                *why = "atom-cache entry longer than an atom";
                return -1;
            }
            if (!cur_span(&c, len, &txt)) {
                *why = "atom-cache entry text truncated";
                return -1;
            }
            /* checked once here, so that a ref to it needs no check */
            if (!term_atom_text_ok(txt.p, txt.n)) {
                *why = "atom-cache entry is not an atom (bad UTF-8 or over 255 characters)";
                return -1;
            }
            a->in_gen++; /* templates hold the old text */
            if (!slot_set(s, txt.p, txt.n)) {
                *why = "out of memory";
                return -1;
            }
            r->any_new = true;
        } else if (!s->txt) {
            *why = "atom-cache ref to an empty slot";
            return -1;
        }
        r->atom[i].p = s->txt;
        r->atom[i].n = s->len;
        r->cix[i] = (uint16_t)cix;
        r->n = i + 1;
    }
    return (long)c.pos;
}

/* ---- term rewriting (out) -----------------------------------------------
 * Our own frames, built in the pass-through form, become the header form.
 * One loop over one term, no recursion: `pending` counts the sub-terms
 * still owed (checked against the bytes left, as each is at least one
 * byte); funs, whose Size field counts their own bytes, keep a frame so
 * that the Size can be patched once their free variables are done.  The
 * rewriter only needs to find every atom.
 *
 * Output writes are unchecked: a ref (2 bytes) is never longer than the
 * atom it replaces, so the input's size, reserved first, bounds the
 * output.  (In, the peer's frames are walked and expanded in one pass by
 * term_walk_expand, proto/term.c.)  Input bytes are read only through the
 * cur getters. */

struct rw {
    struct cur c;
    uint8_t *o;                 /* output base */
    size_t ol;                  /* bytes produced */
    struct ac *ac;              /* the caches and per-frame refs */
    const char *why;
    struct term_vary vary;      /* numbers and binary contents, for templates */
    /* Deferred copying: a verbatim piece of at least lazy bytes (a big
     * binary) is not copied; while only verbatim pieces follow it, output
     * [d_out, ol) stays input [d_in, ...).  Anything else copies it first
     * (materialize).  At the end a deferred run is the frame's tail, left
     * where it is (ac_frame_rewrite).  lazy SIZE_MAX: copy everything. */
    size_t lazy;
    bool defer;
    size_t d_in, d_out;
};

#define RW_INLINE static inline __attribute__((always_inline))

/* The next len input bytes (from skip on) go out as they are and are not
 * structure: a frame that differs only there rewrites the same way. */
RW_INLINE void rw_vary(struct rw *w, size_t skip, size_t len)
{
    struct term_vary *v = &w->vary;
    if (v->n < TERM_VARY) {
        v->run[v->n].in = (uint32_t)(w->c.pos + skip);
        v->run[v->n].out = (uint32_t)(w->ol + skip);
        v->run[v->n].len = (uint32_t)len;
    }
    v->n++;
}

/* The deferred run copied out, so that what follows may differ. */
static void materialize(struct rw *w)
{
    if (w->defer) {
        memcpy(w->o + w->d_out, w->c.p + w->d_in, w->ol - w->d_out);
        w->defer = false;
    }
}

/* Bytes of our own making (a cache ref). */
RW_INLINE void emit(struct rw *w, const void *p, size_t n)
{
    if (w->defer)
        materialize(w);
    copy_small(w->o + w->ol, p, n);
    w->ol += n;
}

/* Input bytes as they are, at p (inside the input). */
RW_INLINE void emit_in(struct rw *w, const uint8_t *p, size_t n)
{
    size_t at = (size_t)(p - w->c.p);
    if (w->defer) {
        if (at == w->d_in + (w->ol - w->d_out)) { /* the run goes on */
            w->ol += n;
            return;
        }
        materialize(w);
    }
    if (n >= w->lazy) {
        w->defer = true;
        w->d_in = at;
        w->d_out = w->ol;
        w->ol += n;
        return;
    }
    copy_small(w->o + w->ol, p, n);
    w->ol += n;
}

RW_INLINE bool copy(struct rw *w, size_t n)
{
    struct span s;
    if (!cur_span(&w->c, n, &s)) {
        w->why = "term truncated";
        return false;
    }
    emit_in(w, s.p, s.n);
    return true;
}

static uint32_t slot_of(struct span txt)
{
    /* a few bytes and the length: this runs for every atom we send, and a
     * collision only costs a plain atom or a new entry, never correctness */
    if (txt.n == 0)
        return 0;
    uint32_t h = (uint32_t)txt.n * 2654435761u;
    h ^= txt.p[0] * 40503u + txt.p[txt.n - 1] * 131u + txt.p[txt.n / 2] * 7u;
    if (txt.n > 3)
        h ^= (uint32_t)txt.p[txt.n - 2] << 11 ^ (uint32_t)txt.p[txt.n / 3] << 5;
    return (h ^ h >> 13) % AC_SIZE;
}

/* out: the ref index for an atom (its slot filled, as a new entry when it
 * changed), -1 to send it plain, -2 on no memory.  Two atoms of one frame
 * on one slot: the second goes plain, as erts does.  Latin-1 atoms with
 * non-ASCII bytes go plain (the cache holds UTF-8). */
static int atom_ref(struct ac *a, uint8_t tag, struct span txt)
{
    if (tag == T_ATOM || tag == T_SMALL_ATOM) {
        for (size_t i = 0; i < txt.n; i++)
            if (txt.p[i] >= 0x80)
                return -1;
    }
    uint32_t s = slot_of(txt);
    struct ac_atom *e = &a->out[s];
    bool same = e->txt && e->len == txt.n && eq_small(e->txt, txt.p, txt.n);
    int16_t r = a->slot_ref[s];
    if (r >= 0)
        return same ? r : -1;
    if (a->nrefs >= AC_MAX_REFS)
        return -1;
    if (!same) {
        a->out_gen++; /* out templates name the old text */
        if (!slot_set(e, txt.p, txt.n))
            return -2;
    }
    r = (int16_t)a->nrefs++;
    a->slot_ref[s] = r;
    a->ref_slot[r] = (uint16_t)s;
    a->ref_new[r] = !same;
    return r;
}

/* Read one atom (any atom tag, or ATOM_CACHE_REF in) and write it on. */
RW_INLINE bool rw_atom(struct rw *w)
{
    struct cur *c = &w->c;
    uint8_t tag, l8;
    uint16_t l16;
    size_t len, hn;
    if (!cur_u8(c, &tag))
        goto short_;
    switch (tag) {
    case T_ACREF:
        w->why = "atom-cache ref in our own frame";
        return false;
    case T_ATOM: case T_ATOM_UTF8:
        if (!cur_n16(c, &l16))
            goto short_;
        len = l16;
        hn = 3;
        break;
    case T_SMALL_ATOM: case T_SMALL_ATOM_UTF8:
        if (!cur_u8(c, &l8))
            goto short_;
        len = l8;
        hn = 2;
        break;
    default:
        w->why = "atom expected";
        return false;
    }
    struct span txt;
    if (!cur_span(c, len, &txt))
        goto short_;
    int r = atom_ref(w->ac, tag, txt);
    if (r == -2) {
        w->why = "out of memory";
        return false;
    }
    if (r >= 0) {
        uint8_t h[2] = {T_ACREF, (uint8_t)r};
        emit(w, h, 2);
        return true;
    }
    /* as it came, header included */
    emit_in(w, txt.p - hn, hn + len);
    return true;
short_:
    w->why = "term truncated";
    return false;
}

struct fun_frame {
    uint64_t level;  /* pending when the fun's own sub-terms are all started */
    size_t size_at;  /* offset in the output of its Size field */
};

/* Rewrite exactly one term (no 131) from w->c to the output. */
RW_INLINE bool rw_term(struct rw *w)
{
    struct fun_frame funs[AC_FUN_NEST];
    size_t nfun = 0;
    uint64_t pending = 1;
    struct cur *c = &w->c;
    for (;;) {
        while (nfun > 0 && funs[nfun - 1].level == pending) {
            struct fun_frame *f = &funs[--nfun];
            size_t sz = w->ol - f->size_at;
            if (sz > UINT32_MAX) {
                w->why = "fun too big";
                return false;
            }
            materialize(w);
            put_n32(w->o + f->size_at, (uint32_t)sz);
        }
        if (pending == 0)
            return true;
        pending--;
        uint8_t tag;
        uint64_t add = 0;
        if (!cur_peek_u8(c, &tag))
            goto short_;
        switch (tag) {
        case T_ATOM: case T_SMALL_ATOM: case T_ATOM_UTF8: case T_SMALL_ATOM_UTF8: case T_ACREF:
            if (!rw_atom(w))
                return false;
            break;
        case T_SMALL_INT:
            rw_vary(w, 1, 1);
            if (!copy(w, 2))
                return false;
            break;
        case T_INT:
            rw_vary(w, 1, 4);
            if (!copy(w, 5))
                return false;
            break;
        case T_FLOAT: if (!copy(w, 32)) return false; break;
        case T_NEW_FLOAT: if (!copy(w, 9)) return false; break;
        case T_NIL: if (!copy(w, 1)) return false; break;
        case T_SMALL_BIG: case T_LARGE_BIG: case T_STRING: case T_BINARY: case T_BIT_BINARY: {
            /* tag, a length of 1, 4, 2, 4 or 4 bytes, (a bits byte), the bytes */
            struct cur t = *c;
            uint8_t n8;
            uint16_t n16;
            uint32_t n32;
            size_t n;
            cur_skip(&t, 1);
            if (tag == T_SMALL_BIG) {
                if (!cur_u8(&t, &n8))
                    goto short_;
                n = 3 + (size_t)n8;
            } else if (tag == T_STRING) {
                if (!cur_n16(&t, &n16))
                    goto short_;
                n = 3 + (size_t)n16;
            } else {
                if (!cur_n32(&t, &n32))
                    goto short_;
                n = (tag == T_BINARY ? 5 : 6) + (size_t)n32;
            }
            if (tag == T_BINARY && n > 5)
                rw_vary(w, 5, n - 5);
            if (!copy(w, n))
                return false;
            break;
        }
        case T_PID: case T_NEW_PID: case T_PORT: case T_NEW_PORT: case T_V4_PORT: case T_REF: {
            static const uint8_t tail[256] = {[T_PID] = 9, [T_NEW_PID] = 12, [T_PORT] = 5,
                                              [T_NEW_PORT] = 8, [T_V4_PORT] = 12, [T_REF] = 5};
            if (!copy(w, 1) || !rw_atom(w))
                return false;
            rw_vary(w, 0, tail[tag]);
            if (!copy(w, tail[tag]))
                return false;
            break;
        }
        case T_NEW_REF: case T_NEWER_REF: {
            uint16_t n16;
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_n16(&t, &n16))
                goto short_;
            if (!copy(w, 3) || !rw_atom(w))
                return false;
            rw_vary(w, 0, (tag == T_NEW_REF ? 1 : 4) + 4 * (size_t)n16);
            if (!copy(w, (tag == T_NEW_REF ? 1 : 4) + 4 * (size_t)n16))
                return false;
            break;
        }
        case T_SMALL_TUPLE: {
            uint8_t n8;
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_u8(&t, &n8))
                goto short_;
            if (!copy(w, 2))
                return false;
            add = n8;
            break;
        }
        case T_LARGE_TUPLE: case T_LIST: case T_MAP: {
            uint32_t n32;
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_n32(&t, &n32))
                goto short_;
            if (!copy(w, 5))
                return false;
            add = tag == T_LIST ? (uint64_t)n32 + 1 : tag == T_MAP ? 2 * (uint64_t)n32 : n32;
            break;
        }
        case T_EXPORT:
            if (!copy(w, 1))
                return false;
            add = 3;
            break;
        case T_NEW_FUN: {
            /* Size:32 Arity:8 Uniq:16 Index:32 NumFree:32, then Module,
             * OldIndex, OldUniq, Pid and NumFree free variables */
            if (nfun >= AC_FUN_NEST) {
                w->why = "funs nested too deep";
                return false;
            }
            size_t at = w->ol + 1;
            uint32_t nfree;
            struct cur t = *c;
            if (!cur_skip(&t, 26) || !cur_n32(&t, &nfree))
                goto short_;
            if (!copy(w, 1 + 4 + 1 + 16 + 4 + 4))
                return false;
            funs[nfun].level = pending;
            funs[nfun].size_at = at;
            nfun++;
            add = 4 + (uint64_t)nfree;
            break;
        }
        default:
            w->why = "unsupported term tag";
            return false;
        }
        if (add > cur_left(c) || pending > cur_left(c) - add) {
            w->why = "arity past the end";
            return false;
        }
        pending += add;
    }
short_:
    w->why = "term truncated";
    return false;
}

/* The header at p as a memo hit (its length, refs filled) or 0. */
static long memo_find(struct ac *a, const uint8_t *p, size_t n, struct ac_refs *refs)
{
    struct cur c = cur_make(p, n);
    uint8_t cnt;
    if (a->memo_off || !cur_skip(&c, 2) || !cur_u8(&c, &cnt))
        return 0;
    /* the length it has if it fills no slot, as every memo entry */
    size_t len = 3 + (cnt ? (size_t)cnt / 2 + 1 + cnt : 0);
    if (len > AC_MEMO_HDR || len > n)
        return 0;
    for (int i = 0; i < AC_MEMO; i++) {
        if (a->memo[i].len != len || memcmp(a->memo[i].hdr, p, len) != 0)
            continue;
        for (uint32_t k = 0; k < cnt; k++) {
            const struct ac_atom *s = &a->in[a->memo_cix[i][k]];
            refs->atom[k].p = s->txt;
            refs->atom[k].n = s->len;
        }
        refs->n = cnt;
        refs->any_new = false;
        return (long)len;
    }
    return 0;
}

static void memo_add(struct ac *a, const uint8_t *p, long len, const struct ac_refs *refs)
{
    if (a->memo_off || refs->any_new || len > AC_MEMO_HDR)
        return;
    struct ac_memo *m = &a->memo[a->memo_next];
    memcpy(m->hdr, p, (size_t)len);
    m->len = (uint8_t)len;
    memcpy(a->memo_cix[a->memo_next], refs->cix, refs->n * sizeof refs->cix[0]);
    a->memo_next = (uint8_t)((a->memo_next + 1) % AC_MEMO);
}

/* p[0..n) equal to t's body wherever its mask is set. */
typedef uint64_t tpl_v16 __attribute__((vector_size(16)));

static bool tpl_match(const struct ac_tpl *t, const uint8_t *p, size_t n)
{
    size_t i = 0;
    tpl_v16 x, y, m, d = {0, 0};
    for (; i + 16 <= n; i += 16) {
        memcpy(&x, p + i, 16);
        memcpy(&y, t->in + i, 16);
        memcpy(&m, t->mask + i, 16);
        d |= (x ^ y) & m;
    }
    if (i < n && n >= 16) { /* the tail as the last 16 bytes, overlapping */
        memcpy(&x, p + n - 16, 16);
        memcpy(&y, t->in + n - 16, 16);
        memcpy(&m, t->mask + n - 16, 16);
        d |= (x ^ y) & m;
        i = n;
    }
    uint64_t r = d[0] | d[1];
    for (; i < n; i++)
        r |= (uint64_t)((p[i] ^ t->in[i]) & t->mask[i]);
    return r == 0;
}

/* In tv[]: the template p[0..n) matches (limits as given), or -1. */
static int tpl_find(const struct ac *a, const struct ac_tpl *tv, uint32_t gen, const uint8_t *p,
                    size_t n, uint32_t depth, uint64_t terms, uint64_t max)
{
    if (a->tpl_off || n == 0 || n > AC_TPL_IN) /* n 0: never an unused slot */
        return -1;
    for (int i = 0; i < AC_TPL; i++) {
        const struct ac_tpl *t = &tv[i];
        if (t->n == n && t->gen == gen && t->depth == depth && t->terms == terms &&
            t->outlen <= max && tpl_match(t, p, n))
            return i;
    }
    return -1;
}

/* p[0..n) as a template in tv[*next] (its output o[0..on)); false if it
 * does not fit one. */
static bool tpl_add(const struct ac *a, struct ac_tpl *tv, uint8_t *next, uint32_t gen,
                    const uint8_t *p, size_t n, const uint8_t *o, size_t on,
                    const struct term_vary *v, uint32_t depth, uint64_t terms)
{
    if (a->tpl_off || n > AC_TPL_IN || on > AC_TPL_OUT || v->n > TERM_VARY)
        return false;
    struct ac_tpl *t = &tv[*next];
    *next = (uint8_t)((*next + 1) % AC_TPL);
    memcpy(t->in, p, n);
    memset(t->mask, 0xff, n);
    for (uint32_t i = 0; i < v->n; i++) {
        memset(t->mask + v->run[i].in, 0, v->run[i].len);
        t->run[i].in = (uint16_t)v->run[i].in;
        t->run[i].out = (uint16_t)v->run[i].out;
        t->run[i].len = (uint16_t)v->run[i].len;
    }
    t->nrun = v->n;
    t->ndec = 0;
    memcpy(t->out, o, on);
    t->outlen = (uint16_t)on;
    t->n = (uint16_t)n;
    t->gen = gen;
    t->depth = depth;
    t->terms = terms;
    return true;
}

/* t's output with p's varying bytes, appended to o. */
static bool tpl_apply(const struct ac_tpl *t, const uint8_t *p, struct buf *o)
{
    if (!buf_room(o, t->outlen))
        return false;
    uint8_t *d = o->data + o->len;
    memcpy(d, t->out, t->outlen);
    for (uint32_t i = 0; i < t->nrun; i++)
        copy_small(d + t->run[i].out, p + t->run[i].in, t->run[i].len);
    o->len += t->outlen;
    return true;
}

/* In: the terms after the header, walked and expanded in one pass each
 * (term_walk_expand) -> 'p' 131 control [131 payload]; or a template's
 * output with this frame's numbers. */
int ac_frame_in(struct ac *a, const uint8_t *p, size_t n, const struct term_limits *lim,
                uint64_t max, struct ac_in *out, const char **why)
{
    struct buf *o = &a->scratch;
    int ti = tpl_find(a, a->tpl, a->in_gen, p, n, lim->max_depth, lim->max_terms, max);
    a->tpl_cur = (int8_t)ti;
    if (ti >= 0) {
        /* the template's own output with this frame's numbers patched in:
         * every other byte of it is this frame's already, so nothing is
         * copied but the runs (valid, like scratch, until the next call) */
        struct ac_tpl *t = &a->tpl[ti];
        for (uint32_t i = 0; i < t->nrun; i++)
            copy_small(t->out + t->run[i].out, p + t->run[i].in, t->run[i].len);
        out->body.p = t->out;
        out->body.n = t->outlen;
        out->ctl_len = t->ctl_len;
        out->fields = t->fields;
        return 0;
    }
    buf_reset(o);
    struct ac_refs *refs = &a->refs;
    long h = memo_find(a, p, n, refs);
    if (h == 0) {
        h = ac_decode_header(a, p, n, refs, why);
        if (h < 0)
            return -1;
        memo_add(a, p, h, refs);
    }
    struct term_refs tr = {refs->n, refs->atom};
    struct term_vary vary;
    vary.n = 0;
    struct term_expand e = {&tr, max > SIZE_MAX ? SIZE_MAX : (size_t)max, NULL, &vary, 0};
    struct cur c = cur_make(p + h, n - (size_t)h);
    if (cur_left(&c) == 0) {
        *why = "no control message after the atom-cache header";
        return -1;
    }
    if (!buf_put(o, "p", 1)) {
        *why = "out of memory";
        return -1;
    }
    for (int k = 0; k < 2 && cur_left(&c) > 0; k++) {
        uint8_t first = 0;
        if (cur_peek_u8(&c, &first) && first == T_VERSION) {
            *why = "131 after an atom-cache header";
            return -1;
        }
        if (!buf_put_u8(o, T_VERSION)) {
            *why = "out of memory";
            return -1;
        }
        e.marks = k == 0 ? &out->fields : NULL;
        e.in_base = (size_t)h + c.pos;
        long len = term_walk_expand(cur_ptr(&c), cur_left(&c), lim, &e, o);
        if (len < 0) {
            *why = len == TERM_E_BIG ? "rewritten frame larger than --max-message-bytes"
                                     : term_strerror(len);
            return -1;
        }
        cur_skip(&c, (size_t)len);
        if (k == 0)
            out->ctl_len = buf_avail(o) - 1;
    }
    if (cur_left(&c) > 0) {
        *why = "trailing bytes after the payload";
        return -1;
    }
    out->body.p = buf_head(o);
    out->body.n = buf_avail(o);
    if (!refs->any_new) {
        uint8_t k = a->tpl_next;
        struct ac_tpl *t = &a->tpl[k];
        if (tpl_add(a, a->tpl, &a->tpl_next, a->in_gen, p, n, buf_head(o), buf_avail(o), &vary,
                    lim->max_depth, lim->max_terms)) {
            t->ctl_len = out->ctl_len;
            t->fields = out->fields;
            a->tpl_cur = (int8_t)k;
        }
    }
    return 0;
}

/* The operation byte of a pass-through body whose control starts
 * {SMALL_INTEGER_EXT op, ...} ('p' 131 104 N 97 op), else -1. */
static int op_byte(struct span b)
{
    struct cur c = cur_make(b.p, b.n);
    struct span x;
    if (!cur_span(&c, 6, &x))
        return -1;
    return x.p[2] == T_SMALL_TUPLE && x.p[4] == T_SMALL_INT ? x.p[5] : -1;
}

int ac_frame_decode(struct ac *a, const uint8_t *p, size_t n, const struct term_limits *lim,
                    uint64_t max, struct ac_in *in, struct dist_msg *m, const char **why)
{
    struct ac_in local;
    struct ac_in *f = in ? in : &local;
    f->body.p = NULL;
    f->body.n = 0;
    if (ac_frame_in(a, p, n, lim, max, f, why) < 0) {
        f->body.p = NULL; /* in: nothing made */
        return -1;
    }
    struct ac_tpl *t = a->tpl_cur >= 0 ? &a->tpl[a->tpl_cur] : NULL;
    int op = t ? op_byte(f->body) : -1;
    if (op >= 0 && f->body.p == t->out) /* a hit: its spans are the template's */
        for (uint8_t d = 0; d < t->ndec; d++)
            if (t->dec[d].op == op) {
                *m = t->dec[d];
                return 0;
            }
    if (dist_decode_walked(f->body.p, f->body.n, f->ctl_len, &f->fields, m, why) < 0)
        return -1;
    if (op < 0 || op != m->op || m->has_id || t->ndec >= 2)
        return 0; /* an unlink id is a value: decoded every time */
    struct dist_msg *x = &t->dec[t->ndec++];
    *x = *m;
    struct span *sp[5] = {&x->from, &x->to, &x->ref, &x->reason, &x->msg};
    for (int i = 0; i < 5; i++)
        sp[i]->p = sp[i]->n ? t->out + (sp[i]->p - f->body.p) : NULL;
    return 0;
}

/* Out: 'p' 131 control [131 payload] -> the terms, atoms as refs. */
static bool rw_out(struct rw *w)
{
    uint8_t b;
    if (!cur_u8(&w->c, &b) || b != 'p')
        return false;
    for (int t = 0; t < 2 && cur_left(&w->c) > 0; t++)
        if (!cur_u8(&w->c, &b) || b != T_VERSION || !rw_term(w))
            return false;
    if (cur_left(&w->c) != 0)
        return false;
    if (w->defer && w->d_in + (w->ol - w->d_out) != w->c.n)
        materialize(w); /* not the tail after all */
    return true;
}

static bool frame_out_walk(struct ac *a, const uint8_t *p, size_t n, size_t lazy,
                           struct span *hdr, struct span *terms, struct span *tail);

/* A template hit for our frame at b->data[in..len), written at out (b's
 * data may move down by its consumed offset, as in buf_reserve).  With
 * room for the header form before the frame (in - out >= its size) it is
 * written straight there; else the varying runs are gathered first (the
 * header form overwrites the bytes they come from).  1 done, 0 no
 * template, -1 no memory (b unchanged). */
static int frame_out_tpl(struct ac *a, struct buf *b, size_t out, size_t in)
{
    const uint8_t *p = b->data + in;
    size_t n = b->len - in;
    int ti = tpl_find(a, a->otpl, a->out_gen, p, n, 0, 0, SIZE_MAX);
    if (ti < 0)
        return 0;
    const struct ac_tpl *t = &a->otpl[ti];
    size_t hn = a->otpl_hdrlen[ti], total = hn + t->outlen;
    /* without the room the runs are kept aside first, at their offsets */
    uint8_t runs[AC_TPL_IN]; /* runs lie inside the n <= AC_TPL_IN body */
    const uint8_t *src = p;
    if (in - out < total) {
        for (uint32_t i = 0; i < t->nrun; i++)
            copy_small(runs + t->run[i].in, p + t->run[i].in, t->run[i].len);
        src = runs;
        size_t off = b->off;
        if (out + total > b->len && !buf_reserve(b, out + total - b->len))
            return -1;
        out -= off - b->off; /* buf_reserve may have compacted b */
    }
    uint8_t *d = b->data + out;
    memcpy(d, a->otpl_hdr[ti], hn);
    memcpy(d + hn, t->out, t->outlen);
    for (uint32_t i = 0; i < t->nrun; i++)
        copy_small(d + hn + t->run[i].out, src + t->run[i].in, t->run[i].len);
    b->len = out + total;
    return 1;
}

bool ac_frame_rewrite(struct ac *a, struct buf *b, size_t out, size_t in, bool may_move,
                      size_t *body)
{
    if (out > in || in > b->len)
        return false;
    size_t off = b->off;
    int r = frame_out_tpl(a, b, out, in);
    if (r != 0) {
        *body = out - (off - b->off);
        return r > 0;
    }
    struct span hdr, terms, tail;
    if (!frame_out_walk(a, b->data + in, b->len - in, a->lazy, &hdr, &terms, &tail))
        return false;
    size_t pre = hdr.n + terms.n;
    if (tail.n == 0) {
        b->len = out;
        if (!buf_put(b, hdr.p, hdr.n) || !buf_put(b, terms.p, terms.n))
            return false;
        *body = out - (off - b->off);
        return true;
    }
    /* The frame ends in bytes the header form keeps as they are (a big
     * binary): they stay in b; only what comes before them is written. */
    size_t tail_at = (size_t)(tail.p - b->data);
    if (may_move && pre <= tail_at - out) {
        /* the frame may begin later: the rest goes just before the tail */
        size_t s = tail_at - pre;
        memcpy(b->data + s, hdr.p, hdr.n);
        memcpy(b->data + s + hdr.n, terms.p, terms.n);
        *body = s;
        return true;
    }
    size_t total = pre + tail.n;
    if (out + total > b->len) {
        if (!buf_reserve(b, out + total - b->len))
            return false;
        out -= off - b->off; /* compacted: everything moved down alike */
        tail_at -= off - b->off;
    }
    memmove(b->data + out + pre, b->data + tail_at, tail.n);
    memcpy(b->data + out, hdr.p, hdr.n);
    memcpy(b->data + out + hdr.n, terms.p, terms.n);
    b->len = out + total;
    *body = out;
    return true;
}

bool ac_frame_out(struct ac *a, const uint8_t *p, size_t n, struct span *hdr,
                  struct span *terms)
{
    struct buf *out = &a->hdr;
    buf_reset(out);
    int ti = tpl_find(a, a->otpl, a->out_gen, p, n, 0, 0, SIZE_MAX);
    if (ti >= 0) {
        /* header and terms in one piece: *hdr is the whole frame body */
        struct buf *o = &a->oscratch;
        buf_reset(o);
        if (!buf_put(o, a->otpl_hdr[ti], a->otpl_hdrlen[ti]) || !tpl_apply(&a->otpl[ti], p, o))
            return false;
        hdr->p = buf_head(o);
        hdr->n = buf_avail(o);
        terms->p = hdr->p + hdr->n;
        terms->n = 0;
        return true;
    }
    struct span tail;
    return frame_out_walk(a, p, n, SIZE_MAX, hdr, terms, &tail);
}

/* ac_frame_out past the templates: the walk, and a template made of it.
 * Verbatim pieces of lazy bytes or more that end the frame are not copied:
 * *tail is that end of p (empty when all of it is in *terms). */
static bool frame_out_walk(struct ac *a, const uint8_t *p, size_t n, size_t lazy,
                           struct span *hdr, struct span *terms, struct span *tail)
{
    tail->p = p + n;
    tail->n = 0;
    struct buf *out = &a->hdr;
    buf_reset(out);
    bool ok = false, any_new = false;
    a->nrefs = 0;
    buf_reset(&a->oscratch);
    struct rw w = {.ac = a, .c = cur_make(p, n), .lazy = lazy};
    if (!buf_reserve(&a->oscratch, n))
        goto done;
    w.o = a->oscratch.data;
    if (!rw_out(&w))
        goto done;
    a->oscratch.len = w.defer ? w.d_out : w.ol;
    if (w.defer) {
        tail->p = p + w.d_in;
        tail->n = n - w.d_in;
    }
    /* header: 131 68 N flags refs, sized first and written in one go */
    size_t nf = a->nrefs ? (size_t)a->nrefs / 2 + 1 : 0, need = 3 + nf;
    bool long_atoms = false;
    for (uint32_t i = 0; i < a->nrefs; i++)
        if (a->ref_new[i] && a->out[a->ref_slot[i]].len > 255)
            long_atoms = true;
    for (uint32_t i = 0; i < a->nrefs; i++)
        need += 1 + (a->ref_new[i] ? (long_atoms ? 2u : 1u) + a->out[a->ref_slot[i]].len : 0);
    if (!buf_reserve(out, need))
        goto done;
    uint8_t *q = out->data + out->len;
    *q++ = T_VERSION;
    *q++ = T_DIST_HDR;
    *q++ = (uint8_t)a->nrefs;
    if (a->nrefs > 0) {
        uint8_t *flags = q;
        memset(flags, 0, nf);
        for (uint32_t i = 0; i < a->nrefs; i++) {
            uint16_t s = a->ref_slot[i];
            uint8_t nib = (uint8_t)((s >> 8) | (a->ref_new[i] ? 8 : 0));
            flags[i / 2] |= (uint8_t)(nib << (4 * (i % 2)));
        }
        if (long_atoms)
            flags[a->nrefs / 2] |= (uint8_t)(1 << (4 * (a->nrefs % 2)));
        q += nf;
        for (uint32_t i = 0; i < a->nrefs; i++) {
            uint16_t s = a->ref_slot[i];
            *q++ = (uint8_t)(s & 0xff);
            if (!a->ref_new[i])
                continue;
            const struct ac_atom *e = &a->out[s];
            if (long_atoms) {
                put_n16(q, e->len);
                q += 2;
            } else {
                *q++ = (uint8_t)e->len;
            }
            memcpy(q, e->txt, e->len);
            q += e->len;
        }
    }
    out->len += need;
    hdr->p = buf_head(out);
    hdr->n = buf_avail(out);
    terms->p = buf_head(&a->oscratch);
    terms->n = buf_avail(&a->oscratch);
    ok = true;
    for (uint32_t i = 0; i < a->nrefs; i++)
        any_new |= a->ref_new[i];
    if (!any_new && hdr->n <= AC_TPL_HDR && tail->n == 0) {
        uint8_t k = a->otpl_next;
        if (tpl_add(a, a->otpl, &a->otpl_next, a->out_gen, p, n, terms->p, terms->n, &w.vary, 0,
                    0)) {
            memcpy(a->otpl_hdr[k], hdr->p, hdr->n);
            a->otpl_hdrlen[k] = (uint8_t)hdr->n;
        }
    }
done:
    for (uint32_t i = 0; i < a->nrefs; i++) {
        uint16_t s = a->ref_slot[i];
        a->slot_ref[s] = -1;
        /* a slot changed for a frame that is not sent is forgotten, so
         * that no later ref relies on an entry the peer never got */
        if (!ok && a->ref_new[i]) {
            a->out_gen++;
            free(a->out[s].txt);
            a->out[s].txt = NULL;
            a->out[s].len = 0;
        }
    }
    a->nrefs = 0;
    return ok;
}
