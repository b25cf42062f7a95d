/* term.c - external term format over untrusted bytes (see term.h).
 * Owns: the bounded iterative walker every peer term passes before ei sees
 * it, the canonical re-encoding used for keys, and the keyed hash.
 * Touches no socket and no ei; input is a byte span read only through a
 * struct cur, output is appended to a caller's struct buf. */
#include "proto/term.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tags of the external term format (erts/emulator/beam/external.h). */
enum {
    ETF_NEW_FLOAT = 70,
    ETF_BIT_BINARY = 77,
    ETF_ATOM_CACHE_REF = 82,
    ETF_NEW_PID = 88,
    ETF_NEW_PORT = 89,
    ETF_NEWER_REF = 90,
    ETF_SMALL_INT = 97,
    ETF_INT = 98,
    ETF_FLOAT = 99,
    ETF_ATOM = 100,
    ETF_REF = 101,
    ETF_PORT = 102,
    ETF_PID = 103,
    ETF_SMALL_TUPLE = 104,
    ETF_LARGE_TUPLE = 105,
    ETF_NIL = 106,
    ETF_STRING = 107,
    ETF_LIST = 108,
    ETF_BINARY = 109,
    ETF_SMALL_BIG = 110,
    ETF_LARGE_BIG = 111,
    ETF_NEW_FUN = 112,
    ETF_EXPORT = 113,
    ETF_NEW_REF = 114,
    ETF_SMALL_ATOM = 115,
    ETF_MAP = 116,
    ETF_ATOM_UTF8 = 118,
    ETF_SMALL_ATOM_UTF8 = 119,
    ETF_V4_PORT = 120,
    ETF_VERSION = 131,
};

/* The atom path runs for every node name in every pid and ref: inlined
 * into its callers, it costs a third less. */
#define WALK_HOT inline __attribute__((always_inline))

enum {
    MAX_ATOM_CHARS = 255,  /* erts MAX_ATOM_CHARACTERS */
    MAX_ATOM_BYTES = 1020, /* 255 code points of at most 4 bytes */
    MAX_REF_WORDS = 5,     /* erts ERTS_MAX_REF_NUMBERS (OTP 26+ pid refs) */
    MAX_FUN_FREE = 255,    /* erts MAX_ARG */
    FLOAT_EXT_LEN = 31,    /* "%.20e" text, NUL padded */
    WALK_INLINE = 32,      /* frames on the C stack before the walker mallocs */
};

static bool is_atom_tag(uint8_t t)
{
    return t == ETF_ATOM || t == ETF_SMALL_ATOM || t == ETF_ATOM_UTF8 ||
           t == ETF_SMALL_ATOM_UTF8;
}

static bool is_latin1_atom(uint8_t t) { return t == ETF_ATOM || t == ETF_SMALL_ATOM; }

static bool is_int_tag(uint8_t t)
{
    return t == ETF_SMALL_INT || t == ETF_INT || t == ETF_SMALL_BIG || t == ETF_LARGE_BIG;
}

/* Number of code points in strict UTF-8 (no overlongs, no surrogates, at
 * most U+10FFFF), or SIZE_MAX if s is not valid UTF-8.  OTP rejects the
 * same atoms in binary_to_term. */
static WALK_HOT size_t utf8_chars(const uint8_t *s, size_t n)
{
    /* Node names and most atoms are ASCII: skip those bytes 8 at a time
     * (they fill pids and refs, ~30 atoms per call). */
    const uint64_t hi = 0x8080808080808080ULL;
    size_t i = 0, chars;
    uint64_t w = 0;
    if (n < 8) {
        uint8_t any = 0; /* a byte loop: no libc call for a few bytes */
        for (size_t k = 0; k < n; k++)
            any |= s[k];
        if (!(any & 0x80))
            return n;
    } else {
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, s + i, 8);
            if (w & hi)
                break;
        }
        /* the tail as one word overlapping the last full one */
        if (i + 8 > n) {
            memcpy(&w, s + n - 8, 8);
            if (!(w & hi))
                return n;
        }
    }
    while (i < n && s[i] < 0x80)
        i++;
    chars = i;
    while (i < n) {
        uint8_t b = s[i];
        size_t more;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b < 0x80)
            more = 0;
        else if (b >= 0xC2 && b <= 0xDF)
            more = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            more = 2;
            if (b == 0xE0)
                lo = 0xA0;
            if (b == 0xED)
                hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            more = 3;
            if (b == 0xF0)
                lo = 0x90;
            if (b == 0xF4)
                hi = 0x8F;
        } else
            return SIZE_MAX;
        if (n - i - 1 < more)
            return SIZE_MAX;
        for (size_t k = 1; k <= more; k++) {
            uint8_t cb = s[i + k];
            if (cb < (k == 1 ? lo : 0x80) || cb > (k == 1 ? hi : 0xBF))
                return SIZE_MAX;
        }
        i += more + 1;
        chars++;
    }
    return chars;
}

/* FLOAT_EXT: the text before the first NUL must look like C's "%.20e"
 * output ([+-]digits.digits[e[+-]digits]) and give a finite double.  This
 * is what OTP's sys_chars_to_double accepts: no hex, inf, nan, spaces or
 * trailing junk; bytes after the NUL are ignored, as OTP does.  A field
 * with no NUL is refused: "%.20e" always leaves one, and OTP would read
 * on past the field looking for it.  strtod reads with the C locale's
 * '.', which this program never changes. */
static bool float_text(const uint8_t *p, double *out)
{
    char s[FLOAT_EXT_LEN];
    if (!memchr(p, 0, FLOAT_EXT_LEN))
        return false;
    memcpy(s, p, FLOAT_EXT_LEN);
    size_t i = 0, d;
    if (s[i] == '+' || s[i] == '-')
        i++;
    for (d = i; s[i] >= '0' && s[i] <= '9'; i++)
        ;
    if (i == d || s[i++] != '.')
        return false;
    for (d = i; s[i] >= '0' && s[i] <= '9'; i++)
        ;
    if (i == d)
        return false;
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '+' || s[i] == '-')
            i++;
        for (d = i; s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == d)
            return false;
    }
    if (s[i] != '\0')
        return false;
    char *end;
    double v = strtod(s, &end);
    if (end != s + i || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* Atom length field: 16 bits for ATOM_EXT/ATOM_UTF8_EXT, 8 for the small ones. */
static WALK_HOT bool atom_len(struct cur *c, uint8_t tag, size_t *len)
{
    if (tag == ETF_ATOM || tag == ETF_ATOM_UTF8) {
        uint16_t v;
        if (!cur_n16(c, &v))
            return false;
        *len = v;
        return true;
    }
    uint8_t v;
    if (!cur_u8(c, &v))
        return false;
    *len = v;
    return true;
}

/* ---- walker -------------------------------------------------------------
 * One loop, no recursion: a stack of frames, one per open container, each
 * holding how many sub-terms it still owes.  Before a container's arity is
 * believed it is checked against the bytes left, minus what open containers
 * already owe (every term is at least one byte), so a lying arity fails at
 * once and nothing is allocated for it.  Memory: 24 bytes per open
 * container, the first WALK_INLINE on the C stack. */

struct walk_frame {
    uint64_t left;   /* sub-terms of this container not yet started */
    size_t end;      /* NEW_FUN_EXT: offset its Size field names; 0 otherwise */
    size_t size_out; /* expanding, NEW_FUN_EXT: its Size field's offset in out */
};

/* Expanding (term_walk_expand): the header form's ATOM_CACHE_REFs are
 * legal, and the term is copied to out with each ref replaced by its atom.
 * The input is copied in runs: `flushed` is how far it has been, and a
 * ref (or a fun's Size field, patched when the fun ends) cuts a run. */
struct expand {
    const struct term_refs *refs;
    struct buf *out;
    size_t flushed; /* input offset copied up to */
    size_t max;     /* out may not grow past this many bytes */
    struct term_vary *vary;
    size_t in_base;
};

struct walker {
    struct cur c;
    const struct term_limits *lim;
    struct walk_frame *st; /* small[] or malloc'd, owned by the walker */
    uint32_t depth, cap;
    uint64_t pending; /* sum of st[].left */
    uint64_t terms;   /* sub-terms started so far */
    struct expand *x; /* NULL: plain walk, ATOM_CACHE_REF refused */
    struct term_marks *marks; /* expanding: the outermost container's elements */
    struct walk_frame small[WALK_INLINE];
};

/* Expanding: room for the input run up to `to` and `more` bytes after it
 * (within max); the run is copied.  Then out has room for `more`. */
static WALK_HOT int expand_run(struct walker *w, size_t to, size_t more)
{
    struct expand *x = w->x;
    struct buf *out = x->out;
    size_t k = to - x->flushed; /* k <= the input's length, more <= 1023 */
    if (k + more > x->max - buf_avail(out))
        return TERM_E_BIG;
    if (!buf_room(out, k + more))
        return TERM_E_NOMEM;
    copy_small(out->data + out->len, w->c.p + x->flushed, k);
    out->len += k;
    x->flushed = to;
    return 0;
}

static int expand_flush(struct walker *w, size_t to) { return expand_run(w, to, 0); }

/* ATOM_CACHE_REF (tag read): index < refs->n, the atom written in its
 * place as SMALL_ATOM_UTF8_EXT or ATOM_UTF8_EXT.  The texts were checked
 * when the header put them in the cache (term_atom_text_ok). */
static WALK_HOT int walk_acref(struct walker *w)
{
    size_t at = w->c.pos - 1;
    uint8_t ix;
    if (!w->x)
        return TERM_E_TAG;
    if (!cur_u8(&w->c, &ix))
        return TERM_E_SHORT;
    if (ix >= w->x->refs->n)
        return TERM_E_ACREF;
    struct span a = w->x->refs->atom[ix];
    int rc = expand_run(w, at, 3 + a.n);
    if (rc)
        return rc;
    struct buf *out = w->x->out;
    uint8_t *d = out->data + out->len;
    if (a.n <= 255) {
        d[0] = ETF_SMALL_ATOM_UTF8;
        d[1] = (uint8_t)a.n;
        d += 2;
    } else {
        d[0] = ETF_ATOM_UTF8;
        put_n16(d + 1, (uint16_t)a.n);
        d += 3;
    }
    copy_small(d, a.p, a.n);
    out->len = (size_t)(d + a.n - out->data);
    w->x->flushed = w->c.pos;
    return 0;
}

/* Expanding with a vary list: the next len bytes are numbers or binary
 * contents that nothing here reads. */
static WALK_HOT void expand_vary(struct walker *w, size_t len)
{
    struct expand *x = w->x;
    if (!x || !x->vary || len == 0)
        return;
    struct term_vary *v = x->vary;
    if (v->n < TERM_VARY) {
        v->run[v->n].in = (uint32_t)(x->in_base + w->c.pos);
        v->run[v->n].out = (uint32_t)(buf_avail(x->out) + (w->c.pos - x->flushed));
        v->run[v->n].len = (uint32_t)len;
    }
    v->n++;
}

/* Expanding with marks: a sub-term of the outermost container starts. */
static inline void expand_mark(struct walker *w)
{
    struct term_marks *m = w->marks;
    if (m->n < TERM_MARKS)
        m->at[m->n] = buf_avail(w->x->out) + (w->c.pos - w->x->flushed);
    m->n++;
}

static int need(struct cur *c, size_t k) { return cur_skip(c, k) ? 0 : TERM_E_SHORT; }

static WALK_HOT int walk_atom_body(struct cur *c, uint8_t tag)
{
    size_t len;
    struct span s;
    if (!atom_len(c, tag, &len))
        return TERM_E_SHORT;
    if (len > (is_latin1_atom(tag) ? MAX_ATOM_CHARS : MAX_ATOM_BYTES))
        return TERM_E_ATOM;
    if (!cur_span(c, len, &s))
        return TERM_E_SHORT;
    if (!is_latin1_atom(tag) && utf8_chars(s.p, s.n) > MAX_ATOM_CHARS)
        return TERM_E_ATOM;
    return 0;
}

/* A field that must be an atom: node names, module and function names. */
static WALK_HOT int walk_atom_field(struct walker *w)
{
    struct cur *c = &w->c;
    uint8_t tag;
    if (!cur_u8(c, &tag))
        return TERM_E_SHORT;
    if (tag == ETF_ATOM_CACHE_REF)
        return walk_acref(w);
    if (!is_atom_tag(tag))
        return TERM_E_BAD;
    return walk_atom_body(c, tag);
}

static int walk_big_body(struct cur *c, uint8_t tag)
{
    uint32_t n;
    uint8_t n8, sign;
    if (tag == ETF_LARGE_BIG) {
        if (!cur_n32(c, &n))
            return TERM_E_SHORT;
    } else {
        if (!cur_u8(c, &n8))
            return TERM_E_SHORT;
        n = n8;
    }
    if (!cur_u8(c, &sign))
        return TERM_E_SHORT;
    if (sign > 1)
        return TERM_E_BAD;
    return need(c, n);
}

static int walk_int_body(struct cur *c, uint8_t tag)
{
    if (tag == ETF_SMALL_INT)
        return need(c, 1);
    if (tag == ETF_INT)
        return need(c, 4);
    return walk_big_body(c, tag);
}

/* NEW_FUN_EXT's OldIndex and OldUniq: any integer encoding. */
static int walk_int_field(struct cur *c)
{
    uint8_t tag;
    if (!cur_u8(c, &tag))
        return TERM_E_SHORT;
    if (!is_int_tag(tag))
        return TERM_E_BAD;
    return walk_int_body(c, tag);
}

static int walk_float(struct cur *c, uint8_t tag)
{
    struct span s;
    double v;
    if (tag == ETF_FLOAT) {
        if (!cur_span(c, FLOAT_EXT_LEN, &s))
            return TERM_E_SHORT;
        return float_text(s.p, &v) ? 0 : TERM_E_BAD;
    }
    uint64_t bits;
    if (!cur_n64(c, &bits))
        return TERM_E_SHORT;
    memcpy(&v, &bits, sizeof v);
    return isfinite(v) ? 0 : TERM_E_BAD; /* OTP refuses NaN and infinities */
}

/* The one-byte creation of PID_EXT, PORT_EXT and (NEW_)REFERENCE_EXT
 * holds two bits; OTP refuses larger values, so do we. */
static int walk_old_creation(struct cur *c)
{
    uint8_t cr;
    if (!cur_u8(c, &cr))
        return TERM_E_SHORT;
    return cr <= 3 ? 0 : TERM_E_BAD;
}

/* PID_EXT: Node ID:32 Serial:32 Creation:8; NEW_PID_EXT: Creation:32. */
static WALK_HOT int walk_pid_body(struct walker *w, uint8_t tag)
{
    struct cur *c = &w->c;
    int rc = walk_atom_field(w);
    if (rc)
        return rc;
    if (tag == ETF_NEW_PID) {
        expand_vary(w, 12);
        return need(c, 12);
    }
    expand_vary(w, 8);
    rc = need(c, 8);
    return rc ? rc : walk_old_creation(c);
}

static int walk_pid_field(struct walker *w)
{
    struct cur *c = &w->c;
    uint8_t tag;
    if (!cur_u8(c, &tag))
        return TERM_E_SHORT;
    if (tag != ETF_PID && tag != ETF_NEW_PID)
        return TERM_E_BAD;
    return walk_pid_body(w, tag);
}

/* PORT_EXT ID:32 Creation:8; NEW_PORT_EXT ID:32 Creation:32; V4 ID:64 Creation:32. */
static int walk_port_body(struct walker *w, uint8_t tag)
{
    struct cur *c = &w->c;
    int rc = walk_atom_field(w);
    if (rc)
        return rc;
    if (tag != ETF_PORT)
        return need(c, tag == ETF_NEW_PORT ? 8 : 12);
    rc = need(c, 4);
    return rc ? rc : walk_old_creation(c);
}

/* REFERENCE_EXT: Node ID:32 Creation:8.  NEW_/NEWER_REFERENCE_EXT: Len:16
 * Node Creation:8/32 ID:32*Len, Len 1..5. */
static WALK_HOT int walk_ref_body(struct walker *w, uint8_t tag)
{
    struct cur *c = &w->c;
    int rc;
    if (tag == ETF_REF) {
        rc = walk_atom_field(w);
        if (!rc) {
            expand_vary(w, 4);
            rc = need(c, 4);
        }
        return rc ? rc : walk_old_creation(c);
    }
    uint16_t len;
    if (!cur_n16(c, &len))
        return TERM_E_SHORT;
    if (len < 1 || len > MAX_REF_WORDS)
        return TERM_E_BAD;
    rc = walk_atom_field(w);
    if (rc)
        return rc;
    if (tag == ETF_NEW_REF) {
        rc = walk_old_creation(c);
        if (rc)
            return rc;
        expand_vary(w, 4 * (size_t)len);
        return need(c, 4 * (size_t)len);
    }
    expand_vary(w, 4 + 4 * (size_t)len); /* creation and numbers */
    return need(c, 4 + 4 * (size_t)len);
}

static int walk_bit_binary(struct cur *c)
{
    uint32_t len;
    uint8_t bits;
    if (!cur_n32(c, &len) || !cur_u8(c, &bits))
        return TERM_E_SHORT;
    if (bits < 1 || bits > 8 || len == 0)
        return TERM_E_BAD;
    return need(c, len);
}

/* EXPORT_EXT: Module Function Arity; arity as SMALL_INTEGER_EXT, or
 * INTEGER_EXT in 0..255 (OTP decodes either). */
static int walk_export(struct walker *w)
{
    struct cur *c = &w->c;
    int rc = walk_atom_field(w);
    if (!rc)
        rc = walk_atom_field(w);
    if (rc)
        return rc;
    uint8_t tag;
    uint32_t v;
    if (!cur_u8(c, &tag))
        return TERM_E_SHORT;
    if (tag == ETF_SMALL_INT)
        return need(c, 1);
    if (tag != ETF_INT)
        return TERM_E_BAD;
    if (!cur_n32(c, &v))
        return TERM_E_SHORT;
    return v <= 255 ? 0 : TERM_E_BAD;
}

static int walk_grow(struct walker *w)
{
    if (w->depth < w->cap)
        return 0;
    if (w->cap > UINT32_MAX / 2)
        return TERM_E_NOMEM;
    uint32_t cap = w->cap * 2;
    struct walk_frame *st = malloc((size_t)cap * sizeof *st);
    if (!st)
        return TERM_E_NOMEM;
    memcpy(st, w->st, (size_t)w->depth * sizeof *st);
    if (w->st != w->small)
        free(w->st);
    w->st = st;
    w->cap = cap;
    return 0;
}

/* Open a container owing k sub-terms.  Bytes are checked before terms so
 * that a lying arity is TERM_E_SHORT whatever the limits; invariant kept:
 * terms + pending <= max_terms and pending <= bytes left at push time. */
static WALK_HOT int walk_push(struct walker *w, uint64_t k, size_t end)
{
    if (w->depth >= w->lim->max_depth)
        return TERM_E_DEPTH;
    size_t left = cur_left(&w->c);
    if (w->pending > left || k > left - w->pending)
        return TERM_E_SHORT;
    if (k > w->lim->max_terms - w->terms - w->pending)
        return TERM_E_SIZE;
    int rc = w->depth < w->cap ? 0 : walk_grow(w);
    if (rc)
        return rc;
    w->st[w->depth].left = k;
    w->st[w->depth].end = end;
    w->depth++;
    w->pending += k;
    return 0;
}

/* Expanding: a fun's bytes are all read; its Size (at size_out in out)
 * becomes the length it has there. */
static int expand_fun_end(struct walker *w, size_t size_out)
{
    int rc = expand_flush(w, w->c.pos);
    if (rc)
        return rc;
    size_t sz = buf_avail(w->x->out) - size_out;
    if (sz > UINT32_MAX)
        return TERM_E_BIG;
    put_n32(buf_head(w->x->out) + size_out, (uint32_t)sz);
    return 0;
}

/* NEW_FUN_EXT: Size:32 Arity:8 Uniq:128 Index:32 NumFree:32 Module
 * OldIndex OldUniq Pid FreeVars...; Size counts from its own first byte
 * and must match where the free variables end.  (OTP's decoder ignores
 * Size; legit encoders write it exactly, so a mismatch is a liar.) */
static int walk_fun(struct walker *w)
{
    struct cur *c = &w->c;
    size_t start = c->pos;
    uint32_t size, nfree;
    if (!cur_n32(c, &size))
        return TERM_E_SHORT;
    if (size > c->n - start)
        return TERM_E_SHORT;
    if (!cur_skip(c, 1 + 16 + 4) || !cur_n32(c, &nfree))
        return TERM_E_SHORT;
    if (nfree > MAX_FUN_FREE)
        return TERM_E_BAD;
    /* expanding: refs inside change the Size, patched when the fun ends */
    size_t size_out = 0;
    int rc = w->x ? expand_flush(w, start) : 0;
    if (w->x)
        size_out = buf_avail(w->x->out);
    if (!rc)
        rc = walk_atom_field(w);
    if (!rc)
        rc = walk_int_field(c);
    if (!rc)
        rc = walk_int_field(c);
    if (!rc)
        rc = walk_pid_field(w);
    if (rc)
        return rc;
    size_t end = start + size;
    if (c->pos > end)
        return TERM_E_BAD;
    if (nfree == 0)
        return c->pos != end ? TERM_E_BAD : w->x ? expand_fun_end(w, size_out) : 0;
    rc = walk_push(w, nfree, end);
    if (!rc)
        w->st[w->depth - 1].size_out = size_out;
    return rc;
}

static int walk_container(struct walker *w, uint8_t tag)
{
    uint32_t n;
    uint8_t n8;
    if (tag == ETF_SMALL_TUPLE) {
        if (!cur_u8(&w->c, &n8))
            return TERM_E_SHORT;
        return n8 ? walk_push(w, n8, 0) : 0;
    }
    if (!cur_n32(&w->c, &n))
        return TERM_E_SHORT;
    if (tag == ETF_LIST)
        return walk_push(w, (uint64_t)n + 1, 0); /* elements, then the tail */
    if (tag == ETF_MAP)
        return n ? walk_push(w, 2 * (uint64_t)n, 0) : 0;
    return n ? walk_push(w, n, 0) : 0; /* LARGE_TUPLE_EXT */
}

/* Read one term's header and fixed part; containers push a frame. */
static int walk_one(struct walker *w)
{
    struct cur *c = &w->c;
    uint8_t tag;
    uint16_t n16;
    uint32_t n32;
    if (!cur_u8(c, &tag))
        return TERM_E_SHORT;
    if (++w->terms > w->lim->max_terms)
        return TERM_E_SIZE;
    switch (tag) {
    case ETF_SMALL_INT:
        expand_vary(w, 1);
        return need(c, 1);
    case ETF_INT:
        expand_vary(w, 4);
        return need(c, 4);
    case ETF_SMALL_BIG:
    case ETF_LARGE_BIG:
        return walk_int_body(c, tag);
    case ETF_FLOAT:
    case ETF_NEW_FLOAT:
        return walk_float(c, tag);
    case ETF_ATOM:
    case ETF_SMALL_ATOM:
    case ETF_ATOM_UTF8:
    case ETF_SMALL_ATOM_UTF8:
        return walk_atom_body(c, tag);
    case ETF_PID:
    case ETF_NEW_PID:
        return walk_pid_body(w, tag);
    case ETF_PORT:
    case ETF_NEW_PORT:
    case ETF_V4_PORT:
        return walk_port_body(w, tag);
    case ETF_REF:
    case ETF_NEW_REF:
    case ETF_NEWER_REF:
        return walk_ref_body(w, tag);
    case ETF_NIL:
        return 0;
    case ETF_STRING:
        return cur_n16(c, &n16) ? need(c, n16) : TERM_E_SHORT;
    case ETF_BINARY:
        if (!cur_n32(c, &n32))
            return TERM_E_SHORT;
        expand_vary(w, n32);
        return need(c, n32);
    case ETF_BIT_BINARY:
        return walk_bit_binary(c);
    case ETF_SMALL_TUPLE:
    case ETF_LARGE_TUPLE:
    case ETF_LIST:
    case ETF_MAP:
        return walk_container(w, tag);
    case ETF_NEW_FUN:
        return walk_fun(w);
    case ETF_EXPORT:
        return walk_export(w);
    case ETF_ATOM_CACHE_REF:
        return walk_acref(w); /* refused unless expanding */
    default: /* FUN_EXT, LOCAL_EXT, compressed, unknown */
        return TERM_E_TAG;
    }
}

static int walk_pop(struct walker *w)
{
    struct walk_frame *f = &w->st[--w->depth];
    if (f->end != 0 && w->c.pos != f->end)
        return TERM_E_BAD;
    return f->end != 0 && w->x ? expand_fun_end(w, f->size_out) : 0;
}

static long walk_run(struct walker *w)
{
    for (;;) {
        if (w->depth == 1 && w->marks)
            expand_mark(w);
        int rc = walk_one(w);
        if (rc)
            return rc;
        while (w->depth > 0 && w->st[w->depth - 1].left == 0) {
            rc = walk_pop(w);
            if (rc)
                return rc;
        }
        if (w->depth == 0)
            return w->c.pos > LONG_MAX ? TERM_E_SIZE : (long)w->c.pos;
        w->st[w->depth - 1].left--;
        w->pending--;
    }
}

/* A term with no sub-terms (pids, refs, atoms, numbers, binaries: every
 * control field and most keys) needs no walker: same checks, no frames. */
static bool is_leaf_tag(uint8_t t)
{
    return t != ETF_SMALL_TUPLE && t != ETF_LARGE_TUPLE && t != ETF_LIST && t != ETF_MAP &&
           t != ETF_NEW_FUN;
}

static long walk_term(const uint8_t *p, size_t n, const struct term_limits *lim,
                      struct expand *x, struct term_marks *marks)
{
    struct walker w;
    w.c = cur_make(p, n);
    w.lim = lim;
    w.depth = 0;
    w.terms = 0;
    w.x = x;
    w.marks = marks;
    long r;
    if (n > 0 && is_leaf_tag(p[0]) && lim->max_terms >= 1) {
        int rc = walk_one(&w); /* a leaf never touches the frame stack */
        r = rc ? rc : w.c.pos > LONG_MAX ? TERM_E_SIZE : (long)w.c.pos;
    } else {
        w.st = w.small;
        w.cap = WALK_INLINE;
        w.pending = 0;
        r = walk_run(&w);
        if (w.st != w.small)
            free(w.st);
    }
    if (r > 0 && x) {
        int rc = expand_flush(&w, (size_t)r);
        if (rc)
            return rc;
    }
    return r;
}

long term_walk(const uint8_t *p, size_t n, const struct term_limits *lim)
{
    return walk_term(p, n, lim, NULL, NULL);
}

long term_walk_expand(const uint8_t *p, size_t n, const struct term_limits *lim,
                      const struct term_expand *e, struct buf *out)
{
    if (e->marks)
        e->marks->n = 0;
    if (buf_avail(out) > e->max)
        return TERM_E_BIG;
    struct expand x = {e->refs, out, 0, e->max, e->vary, e->in_base};
    return walk_term(p, n, lim, &x, e->marks);
}

bool term_atom_text_ok(const uint8_t *s, size_t n)
{
    return n <= MAX_ATOM_BYTES && utf8_chars(s, n) <= MAX_ATOM_CHARS;
}

long term_walk_versioned(const uint8_t *p, size_t n, const struct term_limits *lim)
{
    if (n < 1)
        return TERM_E_SHORT;
    if (p[0] != ETF_VERSION)
        return TERM_E_BAD;
    long r = term_walk(p + 1, n - 1, lim);
    return r < 0 ? r : r + 1;
}

/* ---- skipping -----------------------------------------------------------
 * Measure one term without judging it: the walker above has already
 * checked the frame, so what is left to do when a field is stepped over is
 * to find its end.  Still bounded and checked on any input (every length is
 * checked against the bytes left; the count of terms still owed never
 * exceeds them), but with no stack, no limits and no UTF-8 or float checks:
 * a term is a counter of owed sub-terms, each container adding its arity. */

static bool skip_atom(struct cur *c)
{
    uint8_t tag;
    size_t len;
    return cur_u8(c, &tag) && is_atom_tag(tag) && atom_len(c, tag, &len) && cur_skip(c, len);
}

long term_skip(const uint8_t *p, size_t n)
{
    struct cur c = cur_make(p, n);
    uint64_t owed = 1; /* terms still to skip; kept <= bytes left + 1 */
    uint8_t tag, u8;
    uint16_t u16;
    uint32_t u32;
    while (owed > 0) {
        owed--;
        if (!cur_u8(&c, &tag))
            return TERM_E_SHORT;
        uint64_t more = 0;
        size_t fixed = 0;
        switch (tag) {
        case ETF_SMALL_INT: fixed = 1; break;
        case ETF_INT: fixed = 4; break;
        case ETF_SMALL_BIG:
            if (!cur_u8(&c, &u8))
                return TERM_E_SHORT;
            fixed = (size_t)u8 + 1;
            break;
        case ETF_LARGE_BIG:
            if (!cur_n32(&c, &u32))
                return TERM_E_SHORT;
            fixed = (size_t)u32 + 1;
            break;
        case ETF_FLOAT: fixed = FLOAT_EXT_LEN; break;
        case ETF_NEW_FLOAT: fixed = 8; break;
        case ETF_ATOM:
        case ETF_ATOM_UTF8:
            if (!cur_n16(&c, &u16))
                return TERM_E_SHORT;
            fixed = u16;
            break;
        case ETF_SMALL_ATOM:
        case ETF_SMALL_ATOM_UTF8:
            if (!cur_u8(&c, &u8))
                return TERM_E_SHORT;
            fixed = u8;
            break;
        case ETF_PID:
        case ETF_NEW_PID:
            if (!skip_atom(&c))
                return TERM_E_SHORT;
            fixed = tag == ETF_NEW_PID ? 12 : 9;
            break;
        case ETF_PORT:
        case ETF_NEW_PORT:
        case ETF_V4_PORT:
            if (!skip_atom(&c))
                return TERM_E_SHORT;
            fixed = tag == ETF_PORT ? 5 : tag == ETF_NEW_PORT ? 8 : 12;
            break;
        case ETF_REF:
            if (!skip_atom(&c))
                return TERM_E_SHORT;
            fixed = 5;
            break;
        case ETF_NEW_REF:
        case ETF_NEWER_REF:
            if (!cur_n16(&c, &u16) || !skip_atom(&c))
                return TERM_E_SHORT;
            fixed = (tag == ETF_NEW_REF ? 1 : 4) + 4 * (size_t)u16;
            break;
        case ETF_NIL: break;
        case ETF_STRING:
            if (!cur_n16(&c, &u16))
                return TERM_E_SHORT;
            fixed = u16;
            break;
        case ETF_BINARY:
            if (!cur_n32(&c, &u32))
                return TERM_E_SHORT;
            fixed = u32;
            break;
        case ETF_BIT_BINARY:
            if (!cur_n32(&c, &u32))
                return TERM_E_SHORT;
            fixed = (size_t)u32 + 1;
            break;
        case ETF_SMALL_TUPLE:
            if (!cur_u8(&c, &u8))
                return TERM_E_SHORT;
            more = u8;
            break;
        case ETF_LARGE_TUPLE:
        case ETF_LIST:
        case ETF_MAP:
            if (!cur_n32(&c, &u32))
                return TERM_E_SHORT;
            more = tag == ETF_LIST ? (uint64_t)u32 + 1 : tag == ETF_MAP ? 2 * (uint64_t)u32 : u32;
            break;
        case ETF_NEW_FUN: /* Size counts from its own first byte */
            if (!cur_n32(&c, &u32) || u32 < 4)
                return TERM_E_SHORT;
            fixed = (size_t)u32 - 4;
            break;
        case ETF_EXPORT: more = 3; break;
        default: return TERM_E_TAG;
        }
        if (!cur_skip(&c, fixed))
            return TERM_E_SHORT;
        /* every owed term takes at least a byte: a lying arity fails here */
        if (more > cur_left(&c) || owed + more > cur_left(&c))
            return TERM_E_SHORT;
        owed += more;
    }
    return c.pos > LONG_MAX ? TERM_E_SIZE : (long)c.pos;
}

const char *term_strerror(long err)
{
    switch (err) {
    case TERM_E_SHORT: return "term: length or arity past the end";
    case TERM_E_TAG: return "term: unknown or unsupported tag";
    case TERM_E_DEPTH: return "term: nested too deep";
    case TERM_E_SIZE: return "term: too many sub-terms";
    case TERM_E_ATOM: return "term: atom too long or bad UTF-8";
    case TERM_E_BAD: return "term: illegal field";
    case TERM_E_NOMEM: return "term: out of memory";
    case TERM_E_ACREF: return "term: atom-cache ref past the header's refs";
    case TERM_E_BIG: return "term: larger than --max-message-bytes once its atom-cache refs are expanded";
    default: return err >= 0 ? "term: ok" : "term: unknown error";
    }
}

/* ---- canonical encoding -------------------------------------------------
 * Also iterative: a frame per open container in the output.  Lists are
 * flattened ([1|[2]] and [1|"b"] are proper lists in Erlang), so a list
 * header is written with a zero count and patched when its tail is known;
 * a map's entries are written in input order and sorted in place when the
 * map closes (one copy of the map's bytes per nesting level: nested maps
 * cost O(depth * size)).  Offsets into out are relative to buf_head so
 * that buf_reserve compacting the buffer does not invalidate them. */

enum canon_kind { CF_TUPLE, CF_LIST, CF_MAP, CF_FUN };

struct map_ent {
    size_t key, val;  /* output offsets of the key and the value */
    size_t klen, len; /* filled when the map closes */
    const uint8_t *p; /* key bytes, valid only while sorting */
};

struct canon_frame {
    enum canon_kind kind;
    bool hdr;             /* list: its LIST_EXT header is still in out */
    uint64_t left;        /* input sub-terms still to read */
    uint64_t count;       /* list: elements written; map: children read */
    size_t at;            /* output offset of the header to patch */
    struct map_ent *ents; /* map: one per entry, owned by the frame */
};

struct canon {
    struct cur c;
    struct buf *out;
    struct canon_frame *st; /* malloc'd, owned */
    size_t depth, cap;
};

static size_t out_pos(const struct buf *b) { return b->len - b->off; }

static bool put_int(struct buf *out, int64_t v)
{
    if (v >= 0 && v <= 255)
        return buf_put_u8(out, ETF_SMALL_INT) && buf_put_u8(out, (uint8_t)v);
    return buf_put_u8(out, ETF_INT) && buf_put_n32(out, (uint32_t)v);
}

/* Bigs lose high zero bytes and become INTEGER_EXT when they fit int32,
 * as term_to_binary writes them. */
static bool put_big(struct buf *out, uint8_t sign, struct span s)
{
    size_t m = s.n;
    while (m > 0 && s.p[m - 1] == 0)
        m--;
    if (m <= 4) {
        uint64_t u = 0;
        for (size_t i = m; i-- > 0;)
            u = (u << 8) | s.p[i];
        if (!sign && u <= INT32_MAX)
            return put_int(out, (int64_t)u);
        if (sign && u <= (uint64_t)INT32_MAX + 1)
            return put_int(out, -(int64_t)u);
    }
    bool ok = m <= 255 ? buf_put_u8(out, ETF_SMALL_BIG) && buf_put_u8(out, (uint8_t)m)
                       : buf_put_u8(out, ETF_LARGE_BIG) && buf_put_n32(out, (uint32_t)m);
    return ok && buf_put_u8(out, sign ? 1 : 0) && buf_put(out, s.p, m);
}

static bool canon_int(struct cur *c, uint8_t tag, struct buf *out)
{
    uint8_t v8, sign;
    uint32_t v32;
    struct span s;
    if (tag == ETF_SMALL_INT)
        return cur_u8(c, &v8) && put_int(out, v8);
    if (tag == ETF_INT) {
        if (!cur_n32(c, &v32))
            return false;
        return put_int(out, v32 > INT32_MAX ? (int64_t)v32 - 0x100000000LL : (int64_t)v32);
    }
    if (tag == ETF_LARGE_BIG) {
        if (!cur_n32(c, &v32))
            return false;
    } else {
        if (!cur_u8(c, &v8))
            return false;
        v32 = v8;
    }
    return cur_u8(c, &sign) && cur_span(c, v32, &s) && put_big(out, sign, s);
}

static bool canon_int_field(struct cur *c, struct buf *out)
{
    uint8_t tag;
    return cur_u8(c, &tag) && is_int_tag(tag) && canon_int(c, tag, out);
}

static bool canon_float(struct cur *c, uint8_t tag, struct buf *out)
{
    uint64_t bits;
    struct span s;
    if (tag == ETF_FLOAT) {
        double v;
        if (!cur_span(c, FLOAT_EXT_LEN, &s) || !float_text(s.p, &v))
            return false;
        memcpy(&bits, &v, sizeof bits);
    } else if (!cur_n64(c, &bits)) {
        return false;
    }
    return buf_put_u8(out, ETF_NEW_FLOAT) && buf_put_n64(out, bits);
}

/* Atoms become UTF-8 (Latin-1 bytes >= 0x80 take two bytes), in the small
 * form when the UTF-8 text fits 255 bytes, as OTP 25 writes them. */
static bool canon_atom(struct cur *c, uint8_t tag, struct buf *out)
{
    uint8_t text[MAX_ATOM_BYTES];
    size_t len, m = 0;
    struct span s;
    if (!atom_len(c, tag, &len) || !cur_span(c, len, &s))
        return false;
    if (is_latin1_atom(tag)) {
        if (len > MAX_ATOM_CHARS)
            return false;
        for (size_t i = 0; i < len; i++) {
            uint8_t b = s.p[i];
            if (b < 0x80) {
                text[m++] = b;
            } else {
                text[m++] = (uint8_t)(0xC0 | (b >> 6));
                text[m++] = (uint8_t)(0x80 | (b & 0x3F));
            }
        }
    } else {
        if (len > MAX_ATOM_BYTES)
            return false;
        memcpy(text, s.p, len);
        m = len;
    }
    bool ok = m <= 255 ? buf_put_u8(out, ETF_SMALL_ATOM_UTF8) && buf_put_u8(out, (uint8_t)m)
                       : buf_put_u8(out, ETF_ATOM_UTF8) && buf_put_n16(out, (uint16_t)m);
    return ok && buf_put(out, text, m);
}

static bool canon_atom_field(struct cur *c, struct buf *out)
{
    uint8_t tag;
    return cur_u8(c, &tag) && is_atom_tag(tag) && canon_atom(c, tag, out);
}

/* Creation of the old one-byte forms, widened to 32 bits: OTP decodes
 * PID_EXT with creation c =:= NEW_PID_EXT with creation c. */
static bool put_creation(struct cur *c, bool wide, struct buf *out)
{
    uint8_t c8;
    uint32_t c32;
    if (wide)
        return cur_n32(c, &c32) && buf_put_n32(out, c32);
    return cur_u8(c, &c8) && buf_put_n32(out, c8);
}

static bool copy_bytes(struct cur *c, size_t n, struct buf *out)
{
    struct span s;
    return cur_span(c, n, &s) && buf_put(out, s.p, s.n);
}

static bool canon_pid(struct cur *c, uint8_t tag, struct buf *out)
{
    return buf_put_u8(out, ETF_NEW_PID) && canon_atom_field(c, out) &&
           copy_bytes(c, 8, out) && put_creation(c, tag == ETF_NEW_PID, out);
}

static bool canon_pid_field(struct cur *c, struct buf *out)
{
    uint8_t tag;
    return cur_u8(c, &tag) && (tag == ETF_PID || tag == ETF_NEW_PID) && canon_pid(c, tag, out);
}

static bool canon_port(struct cur *c, uint8_t tag, struct buf *out)
{
    uint32_t id;
    if (!buf_put_u8(out, ETF_V4_PORT) || !canon_atom_field(c, out))
        return false;
    if (tag == ETF_V4_PORT)
        return copy_bytes(c, 12, out);
    return cur_n32(c, &id) && buf_put_n64(out, id) && put_creation(c, tag == ETF_NEW_PORT, out);
}

/* Every reference becomes NEWER_REFERENCE_EXT: Len Node Creation:32 IDs,
 * without trailing zero ID words: OTP compares #Ref<N.0.5> (ID words 5, 0)
 * =:= #Ref<N.5> (ID word 5).  The length is patched after trimming. */
static bool canon_ref(struct cur *c, uint8_t tag, struct buf *out)
{
    uint16_t len = 1;
    struct span ids;
    if (tag != ETF_REF && !cur_n16(c, &len))
        return false;
    if (len < 1 || len > MAX_REF_WORDS)
        return false;
    size_t at = out_pos(out) + 1;
    if (!buf_put_u8(out, ETF_NEWER_REF) || !buf_put_n16(out, 0) || !canon_atom_field(c, out))
        return false;
    if (tag == ETF_REF) {
        if (!cur_span(c, 4, &ids) || !put_creation(c, false, out))
            return false;
    } else if (!put_creation(c, tag == ETF_NEWER_REF, out) ||
               !cur_span(c, 4 * (size_t)len, &ids)) {
        return false;
    }
    while (len > 1 && memcmp(ids.p + 4 * (len - 1), "\0\0\0\0", 4) == 0)
        len--;
    put_n16(buf_head(out) + at, len);
    return buf_put(out, ids.p, 4 * (size_t)len);
}

/* STRING_EXT in term position: a proper list of small integers. */
static bool canon_string(struct cur *c, struct buf *out)
{
    uint16_t len;
    struct span s;
    if (!cur_n16(c, &len) || !cur_span(c, len, &s))
        return false;
    if (len > 0 && !(buf_put_u8(out, ETF_LIST) && buf_put_n32(out, len)))
        return false;
    for (size_t i = 0; i < s.n; i++)
        if (!buf_put_u8(out, ETF_SMALL_INT) || !buf_put_u8(out, s.p[i]))
            return false;
    return buf_put_u8(out, ETF_NIL);
}

/* BIT_BINARY_EXT of 8 bits is a binary; otherwise the unused low bits of
 * the last byte are zeroed (Erlang ignores them when comparing). */
static bool canon_binary(struct cur *c, uint8_t tag, struct buf *out)
{
    uint32_t len;
    uint8_t bits = 8;
    struct span s;
    if (!cur_n32(c, &len) || (tag == ETF_BIT_BINARY && !cur_u8(c, &bits)))
        return false;
    if (!cur_span(c, len, &s) || bits < 1 || bits > 8 || (bits < 8 && len == 0))
        return false;
    if (bits == 8)
        return buf_put_u8(out, ETF_BINARY) && buf_put_n32(out, len) && buf_put(out, s.p, len);
    uint8_t last = (uint8_t)(s.p[len - 1] & (0xFF << (8 - bits)));
    return buf_put_u8(out, ETF_BIT_BINARY) && buf_put_n32(out, len) && buf_put_u8(out, bits) &&
           buf_put(out, s.p, len - 1) && buf_put_u8(out, last);
}

static bool canon_export(struct cur *c, struct buf *out)
{
    return buf_put_u8(out, ETF_EXPORT) && canon_atom_field(c, out) &&
           canon_atom_field(c, out) && canon_int_field(c, out);
}

static bool canon_push(struct canon *cx, enum canon_kind kind, uint64_t left, size_t at)
{
    if (cx->depth == cx->cap) {
        size_t cap = cx->cap ? cx->cap * 2 : 16;
        struct canon_frame *st = realloc(cx->st, cap * sizeof *st);
        if (!st)
            return false;
        cx->st = st;
        cx->cap = cap;
    }
    struct canon_frame *f = &cx->st[cx->depth++];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->left = left;
    f->at = at;
    f->hdr = true;
    return true;
}

static bool canon_tuple(struct canon *cx, uint8_t tag)
{
    uint32_t n;
    uint8_t n8;
    if (tag == ETF_SMALL_TUPLE) {
        if (!cur_u8(&cx->c, &n8))
            return false;
        n = n8;
    } else if (!cur_n32(&cx->c, &n)) {
        return false;
    }
    bool ok = n <= 255 ? buf_put_u8(cx->out, ETF_SMALL_TUPLE) && buf_put_u8(cx->out, (uint8_t)n)
                       : buf_put_u8(cx->out, ETF_LARGE_TUPLE) && buf_put_n32(cx->out, n);
    return ok && (n == 0 || canon_push(cx, CF_TUPLE, n, 0));
}

static bool canon_list(struct canon *cx)
{
    uint32_t n;
    size_t at = out_pos(cx->out);
    return cur_n32(&cx->c, &n) && buf_put_u8(cx->out, ETF_LIST) && buf_put_n32(cx->out, 0) &&
           canon_push(cx, CF_LIST, (uint64_t)n + 1, at);
}

static bool canon_map(struct canon *cx)
{
    uint32_t n;
    if (!cur_n32(&cx->c, &n) || !buf_put_u8(cx->out, ETF_MAP) || !buf_put_n32(cx->out, n))
        return false;
    if (n == 0)
        return true;
    /* n <= bytes / 2: the walker checked the arity before we got here */
    struct map_ent *ents = calloc(n, sizeof *ents);
    if (!ents || !canon_push(cx, CF_MAP, 2 * (uint64_t)n, 0)) {
        free(ents);
        return false;
    }
    cx->st[cx->depth - 1].ents = ents;
    return true;
}

/* The header is copied with Size zeroed; Size is patched when the free
 * variables are done, since canonical sub-terms change the fun's length. */
static bool canon_fun(struct canon *cx)
{
    struct cur *c = &cx->c;
    struct buf *out = cx->out;
    struct span hdr;
    uint32_t nfree;
    size_t at = out_pos(out) + 1;
    if (!cur_skip(c, 4) || !cur_span(c, 1 + 16 + 4, &hdr) || !cur_n32(c, &nfree))
        return false;
    return buf_put_u8(out, ETF_NEW_FUN) && buf_put_n32(out, 0) && buf_put(out, hdr.p, hdr.n) &&
           buf_put_n32(out, nfree) && canon_atom_field(c, out) && canon_int_field(c, out) &&
           canon_int_field(c, out) && canon_pid_field(c, out) && canon_push(cx, CF_FUN, nfree, at);
}

static bool canon_one(struct canon *cx)
{
    struct cur *c = &cx->c;
    uint8_t tag;
    if (!cur_u8(c, &tag))
        return false;
    switch (tag) {
    case ETF_SMALL_INT:
    case ETF_INT:
    case ETF_SMALL_BIG:
    case ETF_LARGE_BIG:
        return canon_int(c, tag, cx->out);
    case ETF_FLOAT:
    case ETF_NEW_FLOAT:
        return canon_float(c, tag, cx->out);
    case ETF_ATOM:
    case ETF_SMALL_ATOM:
    case ETF_ATOM_UTF8:
    case ETF_SMALL_ATOM_UTF8:
        return canon_atom(c, tag, cx->out);
    case ETF_PID:
    case ETF_NEW_PID:
        return canon_pid(c, tag, cx->out);
    case ETF_PORT:
    case ETF_NEW_PORT:
    case ETF_V4_PORT:
        return canon_port(c, tag, cx->out);
    case ETF_REF:
    case ETF_NEW_REF:
    case ETF_NEWER_REF:
        return canon_ref(c, tag, cx->out);
    case ETF_NIL:
        return buf_put_u8(cx->out, ETF_NIL);
    case ETF_STRING:
        return canon_string(c, cx->out);
    case ETF_BINARY:
    case ETF_BIT_BINARY:
        return canon_binary(c, tag, cx->out);
    case ETF_SMALL_TUPLE:
    case ETF_LARGE_TUPLE:
        return canon_tuple(cx, tag);
    case ETF_LIST:
        return canon_list(cx);
    case ETF_MAP:
        return canon_map(cx);
    case ETF_NEW_FUN:
        return canon_fun(cx);
    case ETF_EXPORT:
        return canon_export(c, cx->out);
    default:
        return false;
    }
}

/* A list whose elements are all written and no header is wanted: an empty
 * list is NIL and [|T] is just T, so the header goes. */
static void canon_drop_list_header(struct canon *cx, struct canon_frame *f)
{
    if (f->count == 0 && f->hdr) {
        cx->out->len = cx->out->off + f->at;
        f->hdr = false;
    }
}

/* The tail position of a list.  A LIST_EXT or STRING_EXT tail continues
 * the same list; NIL ends it; anything else is an improper tail, read as
 * an ordinary child.  Returns 1 to read a child, 0 if handled, -1 on error. */
static int canon_list_tail(struct canon *cx, struct canon_frame *f)
{
    struct cur *c = &cx->c;
    uint8_t tag;
    uint32_t n;
    uint16_t len;
    struct span s;
    if (!cur_peek_u8(c, &tag))
        return -1;
    if (tag == ETF_LIST) {
        if (!cur_skip(c, 1) || !cur_n32(c, &n))
            return -1;
        f->left = (uint64_t)n + 1;
        return 0;
    }
    f->left = 0;
    if (tag != ETF_STRING && tag != ETF_NIL) {
        canon_drop_list_header(cx, f);
        return 1;
    }
    cur_skip(c, 1);
    if (tag == ETF_STRING) {
        if (!cur_n16(c, &len) || !cur_span(c, len, &s))
            return -1;
        for (size_t i = 0; i < s.n; i++)
            if (!buf_put_u8(cx->out, ETF_SMALL_INT) || !buf_put_u8(cx->out, s.p[i]))
                return -1;
        f->count += len;
    }
    canon_drop_list_header(cx, f);
    return buf_put_u8(cx->out, ETF_NIL) ? 0 : -1;
}

/* Before each child of the top frame: note where map keys and values
 * start.  Returns as canon_list_tail. */
static int canon_next(struct canon *cx)
{
    struct canon_frame *f = &cx->st[cx->depth - 1];
    if (f->kind == CF_LIST && f->left == 1)
        return canon_list_tail(cx, f);
    f->left--;
    uint64_t j = f->count++;
    if (f->kind == CF_MAP) {
        if (j % 2 == 0)
            f->ents[j / 2].key = out_pos(cx->out);
        else
            f->ents[j / 2].val = out_pos(cx->out);
    }
    return 1;
}

static int map_ent_cmp(const void *a, const void *b)
{
    const struct map_ent *x = a, *y = b;
    int r = memcmp(x->p, y->p, x->klen < y->klen ? x->klen : y->klen);
    if (r)
        return r;
    return (x->klen > y->klen) - (x->klen < y->klen);
}

/* Sort a closed map's entries by canonical key bytes and rewrite them in
 * place.  Equal keys mean the input map had a duplicate key, which
 * binary_to_term refuses too.  Cost: O(m log m) compares, one copy. */
static bool canon_sort_map(struct buf *out, struct canon_frame *f)
{
    size_t m = (size_t)(f->count / 2);
    size_t start = f->ents[0].key, end = out_pos(out);
    uint8_t *h = buf_head(out);
    for (size_t i = 0; i < m; i++) {
        struct map_ent *e = &f->ents[i];
        e->len = (i + 1 < m ? f->ents[i + 1].key : end) - e->key;
        e->klen = e->val - e->key;
        e->p = h + e->key;
    }
    qsort(f->ents, m, sizeof *f->ents, map_ent_cmp);
    for (size_t i = 1; i < m; i++)
        if (map_ent_cmp(&f->ents[i - 1], &f->ents[i]) == 0)
            return false;
    uint8_t *tmp = malloc(end - start);
    if (!tmp)
        return false;
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        memcpy(tmp + w, f->ents[i].p, f->ents[i].len);
        w += f->ents[i].len;
    }
    memcpy(h + start, tmp, w);
    free(tmp);
    return true;
}

/* Close the top frame: patch counts and sizes, sort maps. */
static bool canon_finish(struct canon *cx)
{
    struct canon_frame *f = &cx->st[cx->depth - 1];
    uint8_t *h = buf_head(cx->out);
    size_t size;
    bool ok = true;
    switch (f->kind) {
    case CF_TUPLE:
        break;
    case CF_LIST:
        if (f->hdr) {
            ok = f->count <= UINT32_MAX;
            if (ok)
                put_n32(h + f->at + 1, (uint32_t)f->count);
        }
        break;
    case CF_MAP:
        ok = canon_sort_map(cx->out, f);
        free(f->ents);
        f->ents = NULL;
        break;
    case CF_FUN:
        size = out_pos(cx->out) - f->at;
        ok = size <= UINT32_MAX;
        if (ok)
            put_n32(h + f->at, (uint32_t)size);
        break;
    }
    cx->depth--;
    return ok;
}

static bool canon_run(struct canon *cx)
{
    for (;;) {
        if (!canon_one(cx))
            return false;
        for (;;) {
            while (cx->depth > 0 && cx->st[cx->depth - 1].left == 0)
                if (!canon_finish(cx))
                    return false;
            if (cx->depth == 0)
                return true;
            int r = canon_next(cx);
            if (r < 0)
                return false;
            if (r > 0)
                break;
        }
    }
}

/* The input is walked first (no depth or size limit: the caller's limits
 * were applied when the term arrived) so that canon may trust arities
 * for its allocations; it still reads only through the cursor. */
bool term_is_canon(const uint8_t *p, size_t n)
{
    struct cur c = cur_make(p, n);
    uint8_t tag;
    uint32_t len;
    /* BINARY_EXT is its own canonical form (names and keys usually are) */
    return cur_u8(&c, &tag) && tag == ETF_BINARY && cur_n32(&c, &len) && cur_left(&c) == len;
}

bool term_canon(const uint8_t *p, size_t n, struct buf *out)
{
    const struct term_limits any = {UINT32_MAX, UINT64_MAX};
    long len = term_walk(p, n, &any);
    if (len < 0 || (size_t)len != n)
        return false;
    struct canon cx = {cur_make(p, n), out, NULL, 0, 0};
    size_t start = out_pos(out);
    bool ok = canon_run(&cx) && cur_left(&cx.c) == 0;
    for (size_t i = 0; i < cx.depth; i++)
        free(cx.st[i].ents);
    free(cx.st);
    if (!ok)
        out->len = out->off + start;
    return ok;
}

/* ---- keyed hash ---------------------------------------------------------
 * SipHash-2-4 (Aumasson & Bernstein): a PRF, so without the key an
 * attacker cannot aim keys at one bucket.  About 1.5 cycles per byte plus
 * a fixed ~20 ns; keys are short. */

#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline __attribute__((always_inline)) void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = SIP_ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = SIP_ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = SIP_ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = SIP_ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = SIP_ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = SIP_ROTL(v[2], 32);
}

static inline uint64_t le64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8); /* one load */
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
#endif
}

/* SipHash-c-d; c and d are constants at each call, so the rounds unroll. */
static inline __attribute__((always_inline)) uint64_t siphash(const uint8_t *p, size_t n,
                                                              uint64_t k0, uint64_t k1,
                                                              int c, int d)
{
    uint64_t v[4] = {0x736f6d6570736575ULL ^ k0, 0x646f72616e646f6dULL ^ k1,
                     0x6c7967656e657261ULL ^ k0, 0x7465646279746573ULL ^ k1};
    size_t full = n - n % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = le64(p + i);
        v[3] ^= m;
        for (int r = 0; r < c; r++)
            sip_round(v);
        v[0] ^= m;
    }
    uint64_t b = (uint64_t)n << 56;
    for (size_t i = 0; i < n % 8; i++)
        b |= (uint64_t)p[full + i] << (8 * i);
    v[3] ^= b;
    for (int r = 0; r < c; r++)
        sip_round(v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for (int r = 0; r < d; r++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

uint64_t term_siphash24(const uint8_t *p, size_t n, uint64_t k0, uint64_t k1)
{
    return siphash(p, n, k0, k1, 2, 4);
}

uint64_t term_siphash13(const uint8_t *p, size_t n, uint64_t k0, uint64_t k1)
{
    return siphash(p, n, k0, k1, 1, 3);
}

/* The 64-bit seed is both SipHash key halves (the second one whitened):
 * 64 bits of secret are plenty against hash flooding.  SipHash-1-3, as
 * CPython's and Rust's hash tables use: 6 rounds for a 16-byte name
 * instead of 10 (~60 instructions less per lookup), still keyed against flooding. */
uint64_t term_hash(const uint8_t *p, size_t n, uint64_t seed)
{
    return term_siphash13(p, n, seed, seed ^ 0x9e3779b97f4a7c15ULL);
}
