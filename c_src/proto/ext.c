/* ext.c - readers and writers for the term shapes the node uses (see ext.h). */
#include "proto/ext.h"

#include <ei.h>

#include "proto/term.h"

/* --- readers --- */

bool ext_get_tuple(struct cur *c, uint32_t *arity)
{
    uint8_t tag, a8;
    if (!cur_u8(c, &tag))
        return false;
    if (tag == ERL_SMALL_TUPLE_EXT) {
        if (!cur_u8(c, &a8))
            return false;
        *arity = a8;
        return true;
    }
    if (tag == ERL_LARGE_TUPLE_EXT)
        return cur_n32(c, arity);
    return false;
}

bool ext_is_atom(const struct cur *c)
{
    uint8_t t;
    if (!cur_peek_u8(c, &t))
        return false;
    return t == ERL_ATOM_EXT || t == ERL_SMALL_ATOM_EXT || t == ERL_ATOM_UTF8_EXT ||
           t == ERL_SMALL_ATOM_UTF8_EXT;
}

bool ext_is_pid(const struct cur *c)
{
    uint8_t t;
    return cur_peek_u8(c, &t) && (t == ERL_NEW_PID_EXT || t == ERL_PID_EXT);
}

/* Atom text as a span; latin1 set when the bytes are Latin-1 (old tags). */
static bool atom_span(struct cur *c, struct span *s, bool *latin1)
{
    uint8_t tag, l8;
    uint16_t l16;
    size_t n;
    if (!cur_u8(c, &tag))
        return false;
    switch (tag) {
    case ERL_ATOM_EXT: *latin1 = true; if (!cur_n16(c, &l16)) return false; n = l16; break;
    case ERL_ATOM_UTF8_EXT: *latin1 = false; if (!cur_n16(c, &l16)) return false; n = l16; break;
    case ERL_SMALL_ATOM_EXT: *latin1 = true; if (!cur_u8(c, &l8)) return false; n = l8; break;
    case ERL_SMALL_ATOM_UTF8_EXT: *latin1 = false; if (!cur_u8(c, &l8)) return false; n = l8; break;
    default: return false;
    }
    return n <= EXT_ATOM_MAX && cur_span(c, n, s);
}

bool ext_get_atom(struct cur *c, char *out, size_t outsz, size_t *len)
{
    struct span s;
    bool latin1;
    if (!atom_span(c, &s, &latin1))
        return false;
    size_t o = 0;
    for (size_t i = 0; i < s.n; i++) {
        uint8_t ch = s.p[i];
        if (latin1 && ch >= 0x80) {
            if (o + 2 >= outsz)
                return false;
            out[o++] = (char)(0xC0 | (ch >> 6));
            out[o++] = (char)(0x80 | (ch & 0x3F));
        } else {
            if (o + 1 >= outsz)
                return false;
            out[o++] = (char)ch;
        }
    }
    out[o] = 0;
    if (len)
        *len = o;
    return true;
}

bool ext_atom_eqn(const struct cur *c, const char *s, size_t n)
{
    struct cur t = *c;
    struct span sp;
    bool latin1;
    if (!atom_span(&t, &sp, &latin1))
        return false;
    return sp.n == n && eq_small(sp.p, (const uint8_t *)s, n);
}

bool ext_atom_utf8_any(const struct cur *c, struct span *s)
{
    struct cur t = *c;
    bool latin1;
    if (!atom_span(&t, s, &latin1))
        return false;
    if (latin1)
        for (size_t i = 0; i < s->n; i++)
            if (s->p[i] >= 0x80)
                return false;
    return true;
}

bool ext_get_pid(struct cur *c, struct ext_pid *p)
{
    uint8_t tag, cr8;
    if (!cur_u8(c, &tag))
        return false;
    if (tag != ERL_NEW_PID_EXT && tag != ERL_PID_EXT)
        return false;
    if (!ext_get_atom(c, p->node, sizeof p->node, NULL) || !cur_n32(c, &p->id) ||
        !cur_n32(c, &p->serial))
        return false;
    if (tag == ERL_NEW_PID_EXT)
        return cur_n32(c, &p->creation);
    if (!cur_u8(c, &cr8))
        return false;
    p->creation = cr8;
    return true;
}

bool ext_get_ref(struct cur *c, struct ext_ref *r)
{
    uint8_t tag, cr8;
    uint16_t len;
    if (!cur_u8(c, &tag))
        return false;
    if (tag == ERL_NEWER_REFERENCE_EXT || tag == ERL_NEW_REFERENCE_EXT) {
        if (!cur_n16(c, &len) || len < 1 || len > 5 ||
            !ext_get_atom(c, r->node, sizeof r->node, NULL))
            return false;
        if (tag == ERL_NEWER_REFERENCE_EXT) {
            if (!cur_n32(c, &r->creation))
                return false;
        } else {
            if (!cur_u8(c, &cr8))
                return false;
            r->creation = cr8;
        }
        r->len = (uint8_t)len;
        for (int i = 0; i < len; i++)
            if (!cur_n32(c, &r->w[i]))
                return false;
        return true;
    }
    if (tag == ERL_REFERENCE_EXT) {
        if (!ext_get_atom(c, r->node, sizeof r->node, NULL) || !cur_n32(c, &r->w[0]) ||
            !cur_u8(c, &cr8))
            return false;
        r->creation = cr8;
        r->len = 1;
        return true;
    }
    return false;
}

bool ext_get_int(struct cur *c, int64_t *v)
{
    uint8_t tag, u8, n, sign;
    uint32_t u32;
    if (!cur_u8(c, &tag))
        return false;
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
        if (!cur_u8(c, &u8))
            return false;
        *v = u8;
        return true;
    case ERL_INTEGER_EXT:
        if (!cur_n32(c, &u32))
            return false;
        *v = (int32_t)u32;
        return true;
    case ERL_SMALL_BIG_EXT: {
        if (!cur_u8(c, &n) || !cur_u8(c, &sign) || n > 8)
            return false;
        uint64_t m = 0;
        for (int i = 0; i < n; i++) {
            if (!cur_u8(c, &u8))
                return false;
            m |= (uint64_t)u8 << (8 * i);
        }
        if (m > (uint64_t)INT64_MAX)
            return false;
        *v = sign ? -(int64_t)m : (int64_t)m;
        return true;
    }
    default:
        return false;
    }
}

bool ext_get_list_header(struct cur *c, uint32_t *n)
{
    uint8_t tag;
    if (!cur_u8(c, &tag))
        return false;
    if (tag == ERL_NIL_EXT) {
        *n = 0;
        return true;
    }
    return tag == ERL_LIST_EXT && cur_n32(c, n);
}

/* The length of a leaf whose size its first bytes say (the usual pids,
 * refs, atoms, small integers and binaries of a call), else 0. */
static size_t leaf_len(const struct cur *c)
{
    struct cur t = *c;
    uint8_t tag, a, l8;
    uint16_t l16;
    uint32_t l32;
    size_t n;
    if (!cur_u8(&t, &tag))
        return 0;
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT: n = 2; break;
    case ERL_SMALL_ATOM_UTF8_EXT:
        if (!cur_u8(&t, &l8))
            return 0;
        n = 2 + (size_t)l8;
        break;
    case ERL_NEW_PID_EXT:
        if (!cur_u8(&t, &a) || a != ERL_SMALL_ATOM_UTF8_EXT || !cur_u8(&t, &l8))
            return 0;
        n = 3 + (size_t)l8 + 12;
        break;
    case ERL_NEWER_REFERENCE_EXT:
        if (!cur_n16(&t, &l16) || !cur_u8(&t, &a) || a != ERL_SMALL_ATOM_UTF8_EXT ||
            !cur_u8(&t, &l8))
            return 0;
        n = 5 + (size_t)l8 + 4 + 4 * (size_t)l16;
        break;
    case ERL_BINARY_EXT:
        if (!cur_n32(&t, &l32))
            return 0;
        n = 5 + (size_t)l32;
        break;
    default: return 0;
    }
    return n <= cur_left(c) ? n : 0;
}

/* A small tuple or a list of up to 8 leaves (and a leaf tail): {lookup,
 * Name}, [alias|Ref].  Its length, else 0. */
static size_t flat_len(const struct cur *c)
{
    struct cur t = *c;
    uint8_t tag, a8;
    uint32_t n;
    if (!cur_u8(&t, &tag))
        return 0;
    if (tag == ERL_SMALL_TUPLE_EXT) {
        if (!cur_u8(&t, &a8))
            return 0;
        n = a8;
    } else if (tag == ERL_LIST_EXT) {
        if (!cur_n32(&t, &n) || n > 8)
            return 0;
        n++; /* the tail */
    } else {
        return 0;
    }
    if (n > 9)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t et;
        size_t k = cur_peek_u8(&t, &et) && et == ERL_NIL_EXT ? 1 : leaf_len(&t);
        if (!k)
            return 0;
        cur_skip(&t, k);
    }
    return t.pos - c->pos;
}

bool ext_skip(struct cur *c, struct span *s)
{
    /* The frame's terms were walked with the real limits already; this
     * only measures (still checked against the bytes left). */
    size_t k = leaf_len(c);
    if (!k)
        k = flat_len(c);
    if (k) {
        if (s) {
            s->p = cur_ptr(c);
            s->n = k;
        }
        return cur_skip(c, k);
    }
    long n = term_skip(cur_ptr(c), cur_left(c));
    if (n <= 0)
        return false;
    if (s) {
        s->p = cur_ptr(c);
        s->n = (size_t)n;
    }
    return cur_skip(c, (size_t)n);
}

/* --- writers --- */

/* Run an ei encoder twice: once to size (buf NULL), once to write. */
#define EXT_EI(b, call_null, call_buf)                                     \
    do {                                                                   \
        int idx_ = 0;                                                      \
        char *buf_ = NULL;                                                 \
        (void)buf_;                                                        \
        if ((call_null) < 0)                                               \
            return false;                                                  \
        if (!buf_reserve((b), (size_t)idx_))                               \
            return false;                                                  \
        buf_ = (char *)(b)->data + (b)->len;                               \
        int want_ = idx_;                                                  \
        idx_ = 0;                                                          \
        if ((call_buf) < 0 || idx_ != want_)                               \
            return false;                                                  \
        (b)->len += (size_t)idx_;                                          \
        return true;                                                       \
    } while (0)

bool ext_put_large_tuple(struct buf *b, uint32_t arity)
{
    return buf_put_u8(b, ERL_LARGE_TUPLE_EXT) && buf_put_n32(b, arity);
}

bool ext_put_atom(struct buf *b, const char *s, size_t n)
{
    if (n < 256) {
        if (!buf_room(b, 2 + n))
            return false;
        uint8_t *d = b->data + b->len;
        d[0] = ERL_SMALL_ATOM_UTF8_EXT;
        d[1] = (uint8_t)n;
        copy_small(d + 2, (const uint8_t *)s, n);
        b->len += 2 + n;
        return true;
    }
    if (n > EXT_ATOM_MAX)
        return false;
    return buf_put_u8(b, ERL_ATOM_UTF8_EXT) && buf_put_n16(b, (uint16_t)n) && buf_put(b, s, n);
}

bool ext_put_int(struct buf *b, int64_t v)
{
    EXT_EI(b, ei_encode_longlong(NULL, &idx_, v), ei_encode_longlong(buf_, &idx_, v));
}

bool ext_put_u64(struct buf *b, uint64_t v)
{
    EXT_EI(b, ei_encode_ulonglong(NULL, &idx_, v), ei_encode_ulonglong(buf_, &idx_, v));
}

bool ext_put_nil(struct buf *b) { return buf_put_u8(b, ERL_NIL_EXT); }

bool ext_put_list_header(struct buf *b, uint32_t n)
{
    if (n == 0)
        return ext_put_nil(b);
    return buf_put_u8(b, ERL_LIST_EXT) && buf_put_n32(b, n);
}

bool ext_put_binary(struct buf *b, const void *p, size_t n)
{
    if (n > UINT32_MAX)
        return false;
    return buf_put_u8(b, ERL_BINARY_EXT) && buf_put_n32(b, (uint32_t)n) && buf_put(b, p, n);
}

bool ext_put_pid(struct buf *b, struct span node_atom, uint32_t id, uint32_t serial,
                 uint32_t creation)
{
    if (!buf_room(b, 1 + node_atom.n + 12))
        return false;
    uint8_t *d = b->data + b->len;
    d[0] = ERL_NEW_PID_EXT;
    copy_small(d + 1, node_atom.p, node_atom.n);
    d += 1 + node_atom.n;
    put_n32(d, id);
    put_n32(d + 4, serial);
    put_n32(d + 8, creation);
    b->len += 1 + node_atom.n + 12;
    return true;
}

bool ext_put_ref(struct buf *b, struct span node_atom, uint32_t creation, const uint32_t *w,
                 uint8_t len)
{
    size_t k = 3 + node_atom.n + 4 + 4u * len;
    if (!buf_room(b, k))
        return false;
    uint8_t *d = b->data + b->len;
    d[0] = ERL_NEWER_REFERENCE_EXT;
    put_n16(d + 1, len);
    copy_small(d + 3, node_atom.p, node_atom.n);
    d += 3 + node_atom.n;
    put_n32(d, creation);
    for (int i = 0; i < len; i++)
        put_n32(d + 4 + 4 * i, w[i]);
    b->len += k;
    return true;
}
