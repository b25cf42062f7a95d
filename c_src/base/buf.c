/* buf.c - growable buffers and checked cursors (see buf.h). */
#include "base/buf.h"

#include <stdlib.h>

void buf_init(struct buf *b) { memset(b, 0, sizeof *b); }

void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

bool buf_reserve(struct buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return true;
    if (b->off > 0 && b->cap - (b->len - b->off) >= n) {
        buf_compact(b);
        return true;
    }
    size_t need = b->len + n;
    if (need < b->len)
        return false;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return false;
        cap *= 2;
    }
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return false;
    b->data = d;
    b->cap = cap;
    return true;
}

bool buf_put_n64(struct buf *b, uint64_t v)
{
    return buf_put_n32(b, (uint32_t)(v >> 32)) && buf_put_n32(b, (uint32_t)v);
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void buf_compact(struct buf *b)
{
    if (b->off == 0)
        return;
    size_t n = b->len - b->off;
    if (n)
        memmove(b->data, b->data + b->off, n);
    b->len = n;
    b->off = 0;
}

void buf_shrink(struct buf *b, size_t keep)
{
    if (buf_avail(b) == 0 && b->cap > keep) {
        free(b->data);
        buf_init(b);
    }
}





bool cur_n64(struct cur *c, uint64_t *v)
{
    uint32_t hi = 0, lo = 0;
    if (cur_left(c) < 8)
        return false;
    cur_n32(c, &hi);
    cur_n32(c, &lo);
    *v = ((uint64_t)hi << 32) | lo;
    return true;
}


