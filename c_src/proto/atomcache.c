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
    buf_init(&a->hdr);
    memset(a->slot_ref, 0xff, sizeof a->slot_ref);
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
            /* the text is checked as UTF-8 of <= 255 characters when the
             * rewritten terms are walked: every use goes through term_walk */
            if (!slot_set(s, txt.p, txt.n)) {
                *why = "out of memory";
                return -1;
            }
        } else if (!s->txt) {
            *why = "atom-cache ref to an empty slot";
            return -1;
        }
        r->atom[i].p = s->txt;
        r->atom[i].n = s->len;
        r->n = i + 1;
    }
    return (long)c.pos;
}

/* ---- term rewriting ------------------------------------------------------
 * One loop over one term, no recursion: `pending` counts the sub-terms
 * still owed (checked against the bytes left, as each is at least one
 * byte); funs, whose Size field counts their own bytes, keep a frame so
 * that the Size can be patched once their free variables are done.  The
 * rewriter only needs to find every atom; the result is walked and checked
 * by term_walk afterwards (in), or is our own encoder's output (out). */

struct rw;
/* An atom met in the input: copy or replace it. */
typedef bool (*rw_atom_fn)(struct rw *w, uint8_t tag, struct span txt);

struct rw {
    struct cur c;
    struct buf *o;
    const struct ac_refs *refs; /* in: what ATOM_CACHE_REF indexes; NULL out */
    rw_atom_fn atom;
    uint64_t max;               /* bound on o's growth */
    size_t o_start;
    const char *why;
    struct ac *ac;              /* out: the caches and per-frame refs */
};

static bool out_put_slow(struct rw *w, const void *p, size_t n)
{
    if (w->o->len - w->o_start + n > w->max) {
        w->why = "rewritten frame larger than --max-message-bytes";
        return false;
    }
    /* room for this and the like of the rest: the pieces are small */
    if (!buf_reserve(w->o, n + 256) || !buf_put(w->o, p, n)) {
        w->why = "out of memory";
        return false;
    }
    return true;
}

/* Inline: a frame is a few dozen small pieces; a call per piece into
 * buf_put cost more than the rest of the rewrite. */
static inline bool out_put(struct rw *w, const void *p, size_t n)
{
    struct buf *o = w->o;
    if (o->cap - o->len >= n && o->len - w->o_start + n <= w->max) {
        memcpy(o->data + o->len, p, n);
        o->len += n;
        return true;
    }
    return out_put_slow(w, p, n);
}

static bool copy(struct rw *w, size_t n)
{
    struct span s;
    if (!cur_span(&w->c, n, &s)) {
        w->why = "term truncated";
        return false;
    }
    return out_put(w, s.p, s.n);
}

static bool put_atom_plain(struct rw *w, struct span txt)
{
    uint8_t h[3];
    size_t hn;
    if (txt.n <= 255) {
        h[0] = T_SMALL_ATOM_UTF8;
        h[1] = (uint8_t)txt.n;
        hn = 2;
    } else {
        h[0] = T_ATOM_UTF8;
        put_n16(h + 1, (uint16_t)txt.n);
        hn = 3;
    }
    return out_put(w, h, hn) && out_put(w, txt.p, txt.n);
}

/* Read one atom (any atom tag, or ATOM_CACHE_REF in) and hand it on. */
static bool rw_atom(struct rw *w)
{
    uint8_t tag;
    if (!cur_u8(&w->c, &tag)) {
        w->why = "term truncated";
        return false;
    }
    if (tag == T_ACREF) {
        uint8_t ix;
        if (!w->refs) {
            w->why = "atom-cache ref in our own frame";
            return false;
        }
        if (!cur_u8(&w->c, &ix)) {
            w->why = "term truncated";
            return false;
        }
        if (ix >= w->refs->n) {
            w->why = "atom-cache ref past the header's refs";
            return false;
        }
        return put_atom_plain(w, w->refs->atom[ix]);
    }
    size_t len;
    if (tag == T_ATOM || tag == T_ATOM_UTF8) {
        uint16_t l16;
        if (!cur_n16(&w->c, &l16)) {
            w->why = "term truncated";
            return false;
        }
        len = l16;
    } else if (tag == T_SMALL_ATOM || tag == T_SMALL_ATOM_UTF8) {
        uint8_t l8;
        if (!cur_u8(&w->c, &l8)) {
            w->why = "term truncated";
            return false;
        }
        len = l8;
    } else {
        w->why = "atom expected";
        return false;
    }
    struct span txt;
    if (!cur_span(&w->c, len, &txt)) {
        w->why = "term truncated";
        return false;
    }
    return w->atom(w, tag, txt);
}

/* in: atoms are copied as they came (term_walk checks them next) */
static bool atom_copy(struct rw *w, uint8_t tag, struct span txt)
{
    uint8_t h[3] = {tag};
    size_t hn = 2;
    if (tag == T_ATOM || tag == T_ATOM_UTF8) {
        put_n16(h + 1, (uint16_t)txt.n);
        hn = 3;
    } else {
        h[1] = (uint8_t)txt.n;
    }
    return out_put(w, h, hn) && out_put(w, txt.p, txt.n);
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

/* out: an atom becomes a ref to its slot; new or changed slots are sent as
 * new entries.  Two atoms of one frame on one slot: the second goes plain,
 * as erts does.  Latin-1 atoms with non-ASCII bytes go plain (the cache
 * holds UTF-8). */
static bool atom_ref(struct rw *w, uint8_t tag, struct span txt)
{
    if (tag == T_ATOM || tag == T_SMALL_ATOM) {
        for (size_t i = 0; i < txt.n; i++)
            if (txt.p[i] >= 0x80)
                return atom_copy(w, tag, txt);
    }
    uint32_t s = slot_of(txt);
    struct ac *a = w->ac;
    struct ac_atom *e = &a->out[s];
    bool same = e->txt && e->len == txt.n && memcmp(e->txt, txt.p, txt.n) == 0;
    int16_t r = a->slot_ref[s];
    if (r < 0) {
        if (a->nrefs >= AC_MAX_REFS)
            return atom_copy(w, tag, txt);
        if (!same && !slot_set(e, txt.p, txt.n)) {
            w->why = "out of memory";
            return false;
        }
        r = (int16_t)a->nrefs++;
        a->slot_ref[s] = r;
        a->ref_slot[r] = (uint16_t)s;
        a->ref_new[r] = !same;
    } else if (!same) {
        return atom_copy(w, tag, txt);
    }
    uint8_t h[2] = {T_ACREF, (uint8_t)r};
    return out_put(w, h, 2);
}

struct fun_frame {
    uint64_t level;  /* pending when the fun's own sub-terms are all started */
    size_t size_at;  /* offset in o of its Size field */
};

/* Rewrite exactly one term (no 131) from w->c to w->o. */
static bool rw_term(struct rw *w)
{
    struct fun_frame funs[AC_FUN_NEST];
    size_t nfun = 0;
    uint64_t pending = 1;
    struct cur *c = &w->c;
    for (;;) {
        while (nfun > 0 && funs[nfun - 1].level == pending) {
            struct fun_frame *f = &funs[--nfun];
            size_t sz = w->o->len - f->size_at;
            if (sz > UINT32_MAX) {
                w->why = "fun too big";
                return false;
            }
            put_n32(w->o->data + f->size_at, (uint32_t)sz);
        }
        if (pending == 0)
            return true;
        pending--;
        uint8_t tag;
        uint8_t n8;
        uint16_t n16;
        uint32_t n32;
        uint64_t add = 0;
        if (!cur_peek_u8(c, &tag)) {
            w->why = "term truncated";
            return false;
        }
        switch (tag) {
        case T_ATOM: case T_SMALL_ATOM: case T_ATOM_UTF8: case T_SMALL_ATOM_UTF8: case T_ACREF:
            if (!rw_atom(w))
                return false;
            break;
        case T_SMALL_INT: if (!copy(w, 2)) return false; break;
        case T_INT: if (!copy(w, 5)) return false; break;
        case T_FLOAT: if (!copy(w, 32)) return false; break;
        case T_NEW_FLOAT: if (!copy(w, 9)) return false; break;
        case T_NIL: if (!copy(w, 1)) return false; break;
        case T_SMALL_BIG: {
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_u8(&t, &n8) || !copy(w, 3 + (size_t)n8))
                goto short_;
            break;
        }
        case T_LARGE_BIG: {
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_n32(&t, &n32) || !copy(w, 6 + (size_t)n32))
                goto short_;
            break;
        }
        case T_STRING: {
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_n16(&t, &n16) || !copy(w, 3 + (size_t)n16))
                goto short_;
            break;
        }
        case T_BINARY: {
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_n32(&t, &n32) || !copy(w, 5 + (size_t)n32))
                goto short_;
            break;
        }
        case T_BIT_BINARY: {
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_n32(&t, &n32) || !copy(w, 6 + (size_t)n32))
                goto short_;
            break;
        }
        case T_PID: case T_NEW_PID: case T_PORT: case T_NEW_PORT: case T_V4_PORT: case T_REF: {
            static const uint8_t tail[256] = {[T_PID] = 9, [T_NEW_PID] = 12, [T_PORT] = 5,
                                              [T_NEW_PORT] = 8, [T_V4_PORT] = 12, [T_REF] = 5};
            if (!copy(w, 1) || !rw_atom(w) || !copy(w, tail[tag]))
                return false;
            break;
        }
        case T_NEW_REF: case T_NEWER_REF: {
            struct cur t = *c;
            cur_skip(&t, 1);
            if (!cur_n16(&t, &n16))
                goto short_;
            if (!copy(w, 3) || !rw_atom(w) ||
                !copy(w, (tag == T_NEW_REF ? 1 : 4) + 4 * (size_t)n16))
                return false;
            break;
        }
        case T_SMALL_TUPLE:
            if (!copy(w, 2))
                return false;
            add = w->o->data[w->o->len - 1];
            break;
        case T_LARGE_TUPLE: case T_LIST: case T_MAP: {
            if (!copy(w, 5))
                return false;
            const uint8_t *q = w->o->data + w->o->len - 4;
            n32 = ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8) | q[3];
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
            size_t at = w->o->len + 1;
            if (!copy(w, 1 + 4 + 1 + 16 + 4 + 4))
                return false;
            const uint8_t *q = w->o->data + w->o->len - 4;
            n32 = ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8) | q[3];
            funs[nfun].level = pending;
            funs[nfun].size_at = at;
            nfun++;
            add = 4 + (uint64_t)n32;
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

static void rw_setup(struct rw *w, const uint8_t *p, size_t n, struct buf *o, uint64_t max)
{
    /* the output is about the input's size: reserve once (growth, if any,
     * goes through out_put_slow) */
    buf_reserve(o, n + 512);
    w->c = cur_make(p, n);
    w->o = o;
    w->max = max;
    w->o_start = o->len;
    w->why = NULL;
}

int ac_frame_in(struct ac *a, const uint8_t *p, size_t n, uint64_t max, struct span *out,
                const char **why)
{
    struct ac_refs *refs = &a->refs;
    int rc = -1;
    long h = ac_decode_header(a, p, n, refs, why);
    if (h < 0)
        goto done;
    struct rw w;
    buf_reset(&a->scratch);
    rw_setup(&w, p + h, n - (size_t)h, &a->scratch, max);
    w.refs = refs;
    w.atom = atom_copy;
    static const uint8_t pass[2] = {'p', T_VERSION};
    if (cur_left(&w.c) == 0) {
        *why = "no control message after the atom-cache header";
        goto done;
    }
    for (int t = 0; t < 2 && cur_left(&w.c) > 0; t++) {
        uint8_t first = 0;
        if (cur_peek_u8(&w.c, &first) && first == T_VERSION) {
            *why = "131 after an atom-cache header";
            goto done;
        }
        if (!out_put(&w, t == 0 ? pass : pass + 1, t == 0 ? 2 : 1) || !rw_term(&w)) {
            *why = w.why;
            goto done;
        }
    }
    if (cur_left(&w.c) > 0) {
        *why = "trailing bytes after the payload";
        goto done;
    }
    out->p = buf_head(&a->scratch);
    out->n = buf_avail(&a->scratch);
    rc = 0;
done:
    return rc;
}

bool ac_frame_out(struct ac *a, const uint8_t *p, size_t n, struct span *hdr,
                  struct span *terms)
{
    struct buf *out = &a->hdr;
    buf_reset(out);
    struct rw w;
    bool ok = false;
    buf_reset(&a->scratch);
    rw_setup(&w, p, n, &a->scratch, UINT64_MAX);
    w.refs = NULL;
    w.atom = atom_ref;
    w.ac = a;
    a->nrefs = 0;
    uint8_t b;
    if (!cur_u8(&w.c, &b) || b != 'p')
        goto done;
    for (int t = 0; t < 2 && cur_left(&w.c) > 0; t++)
        if (!cur_u8(&w.c, &b) || b != T_VERSION || !rw_term(&w))
            goto done;
    if (cur_left(&w.c) > 0)
        goto done;
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
    terms->p = buf_head(&a->scratch);
    terms->n = buf_avail(&a->scratch);
    ok = true;
done:
    for (uint32_t i = 0; i < a->nrefs; i++) {
        uint16_t s = a->ref_slot[i];
        a->slot_ref[s] = -1;
        /* a slot changed for a frame that is not sent is forgotten, so
         * that no later ref relies on an entry the peer never got */
        if (!ok && a->ref_new[i]) {
            free(a->out[s].txt);
            a->out[s].txt = NULL;
            a->out[s].len = 0;
        }
    }
    a->nrefs = 0;
    return ok;
}
