/* buf.h - byte buffers, spans and checked cursors.
 * Owns: the growable buffer type (struct buf), the read-only span and the
 * cursor through which every byte that came from a peer is read.  Byte order
 * is in each getter's name (n = network/big endian).  No I/O here. */
#ifndef KV_BUF_H
#define KV_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A view into someone else's memory; never owns. */
struct span {
    const uint8_t *p;
    size_t n;
};

/* Growable byte buffer.  data is owned by the buffer (malloc'd); off marks
 * bytes already consumed from the front (compacted lazily). */
struct buf {
    uint8_t *data;
    size_t len; /* bytes written, including the consumed prefix */
    size_t off; /* consumed prefix */
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
/* Ensure room for n more bytes; false on allocation failure. */
bool buf_reserve(struct buf *b, size_t n);
/* Room for n more bytes: the check inline, buf_reserve only when full. */
static inline bool buf_room(struct buf *b, size_t n)
{
    return b->cap - b->len >= n || buf_reserve(b, n);
}
/* Inline: every reply is built from these. */
static inline bool buf_put(struct buf *b, const void *p, size_t n)
{
    if (!buf_room(b, n))
        return false;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return true;
}
static inline bool buf_put_u8(struct buf *b, uint8_t v)
{
    if (b->cap == b->len && !buf_reserve(b, 1))
        return false;
    b->data[b->len++] = v;
    return true;
}
static inline bool buf_put_n16(struct buf *b, uint16_t v)
{
    uint8_t t[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return buf_put(b, t, 2);
}
static inline bool buf_put_n32(struct buf *b, uint32_t v)
{
    uint8_t t[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return buf_put(b, t, 4);
}
bool buf_put_n64(struct buf *b, uint64_t v);
static inline size_t buf_avail(const struct buf *b) { return b->len - b->off; }
/* An empty, never-grown buffer has data NULL: no arithmetic on it (UB). */
static inline uint8_t *buf_head(const struct buf *b) { return b->data ? b->data + b->off : NULL; }
/* Drop n bytes from the front. */
void buf_consume(struct buf *b, size_t n);
/* Move the unconsumed bytes to the start of the storage. */
void buf_compact(struct buf *b);
/* Forget all content but keep the storage. */
static inline void buf_reset(struct buf *b) { b->len = b->off = 0; }
/* Release storage larger than keep bytes when empty (after a big frame). */
void buf_shrink(struct buf *b, size_t keep);

/* Checked reader over peer bytes.  Every getter returns false, and leaves the
 * cursor unchanged, when fewer bytes remain than it needs. */
struct cur {
    const uint8_t *p;
    size_t n;   /* total length */
    size_t pos; /* next byte to read */
};

static inline struct cur cur_make(const void *p, size_t n)
{
    struct cur c = {(const uint8_t *)p, n, 0};
    return c;
}
static inline size_t cur_left(const struct cur *c) { return c->n - c->pos; }
static inline const uint8_t *cur_ptr(const struct cur *c) { return c->p + c->pos; }
/* Inline: every byte from a peer passes through these. */
static inline bool cur_u8(struct cur *c, uint8_t *v)
{
    if (c->pos >= c->n)
        return false;
    *v = c->p[c->pos++];
    return true;
}
static inline bool cur_peek_u8(const struct cur *c, uint8_t *v)
{
    if (c->pos >= c->n)
        return false;
    *v = c->p[c->pos];
    return true;
}
static inline bool cur_n16(struct cur *c, uint16_t *v)
{
    if (cur_left(c) < 2)
        return false;
    const uint8_t *p = c->p + c->pos;
    *v = (uint16_t)((p[0] << 8) | p[1]);
    c->pos += 2;
    return true;
}
static inline bool cur_n32(struct cur *c, uint32_t *v)
{
    if (cur_left(c) < 4)
        return false;
    const uint8_t *p = c->p + c->pos;
    *v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    c->pos += 4;
    return true;
}
bool cur_n64(struct cur *c, uint64_t *v);
static inline bool cur_skip(struct cur *c, size_t n)
{
    if (cur_left(c) < n)
        return false;
    c->pos += n;
    return true;
}
/* A span of the next n bytes, pointing into the cursor's memory. */
static inline bool cur_span(struct cur *c, size_t n, struct span *s)
{
    if (cur_left(c) < n)
        return false;
    s->p = c->p + c->pos;
    s->n = n;
    c->pos += n;
    return true;
}

/* Copy n bytes between buffers that do not overlap.  The pieces frames
 * are made of are mostly a few bytes to a node name: fixed-size moves
 * that stay inside both ranges (overlapping halves) cost less than a call
 * to memcpy. */
static inline __attribute__((always_inline)) void copy_small(uint8_t *d, const uint8_t *s,
                                                            size_t n)
{
    uint64_t a, b, c, e;
    uint32_t x, y;
    if (n >= 8 && n <= 16) {
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n > 16 && n <= 32) {
        memcpy(&a, s, 8);
        memcpy(&b, s + 8, 8);
        memcpy(&c, s + n - 16, 8);
        memcpy(&e, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + 8, &b, 8);
        memcpy(d + n - 16, &c, 8);
        memcpy(d + n - 8, &e, 8);
    } else if (n >= 4 && n < 8) {
        memcpy(&x, s, 4);
        memcpy(&y, s + n - 4, 4);
        memcpy(d, &x, 4);
        memcpy(d + n - 4, &y, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    } else {
        memcpy(d, s, n);
    }
}

/* memcmp(a, b, n) == 0 for the same short pieces (node names, atoms). */
static inline __attribute__((always_inline)) bool eq_small(const uint8_t *a, const uint8_t *b,
                                                          size_t n)
{
    uint64_t x, y, u, v;
    if (n >= 8 && n <= 16) {
        memcpy(&x, a, 8);
        memcpy(&y, a + n - 8, 8);
        memcpy(&u, b, 8);
        memcpy(&v, b + n - 8, 8);
        return x == u && y == v;
    }
    if (n > 16 && n <= 32) {
        memcpy(&x, a, 8);
        memcpy(&y, a + 8, 8);
        memcpy(&u, b, 8);
        memcpy(&v, b + 8, 8);
        if (x != u || y != v)
            return false;
        memcpy(&x, a + n - 16, 8);
        memcpy(&y, a + n - 8, 8);
        memcpy(&u, b + n - 16, 8);
        memcpy(&v, b + n - 8, 8);
        return x == u && y == v;
    }
    return memcmp(a, b, n) == 0;
}

/* A big-endian 32-bit number from bytes a checked getter handed out. */
static inline uint32_t get_n32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put_n16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void put_n32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

#endif
