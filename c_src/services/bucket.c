/* bucket.c - the bucket service (see bucket.h).  One malloc per stored
 * key/value: [klen:32][vlen:32][key][value]; the index is open addressing
 * with linear probing over {hash, record} pairs, backward-shift deletion. */
#include "services/bucket.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "proto/ext.h"
#include "proto/term.h"

struct bent {
    uint64_t hash;
    uint8_t *rec; /* NULL = empty */
};

struct bucket {
    uint32_t count, cap; /* cap: power of two */
    struct bent *t;
};

static uint32_t rec_klen(const uint8_t *r) { uint32_t v; memcpy(&v, r, 4); return v; }
static uint32_t rec_vlen(const uint8_t *r) { uint32_t v; memcpy(&v, r + 4, 4); return v; }
static const uint8_t *rec_key(const uint8_t *r) { return r + 8; }
static const uint8_t *rec_val(const uint8_t *r) { return r + 8 + rec_klen(r); }

static long find(const struct bucket *b, const uint8_t *key, size_t klen, uint64_t h)
{
    if (!b || !b->cap)
        return -1;
    uint32_t mask = b->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        const struct bent *e = &b->t[i];
        if (!e->rec)
            return -1;
        if (e->hash == h && rec_klen(e->rec) == klen && memcmp(rec_key(e->rec), key, klen) == 0)
            return i;
    }
}

const uint8_t *bucket_get(const struct bucket *b, const uint8_t *key, size_t klen,
                          uint64_t seed, size_t *vlen)
{
    long i = find(b, key, klen, term_hash(key, klen, seed));
    if (i < 0)
        return NULL;
    *vlen = rec_vlen(b->t[i].rec);
    return rec_val(b->t[i].rec);
}

static void place(struct bucket *b, uint64_t h, uint8_t *rec)
{
    uint32_t mask = b->cap - 1;
    uint32_t i = (uint32_t)h & mask;
    while (b->t[i].rec)
        i = (i + 1) & mask;
    b->t[i].hash = h;
    b->t[i].rec = rec;
}

static bool grow(struct bucket *b)
{
    uint32_t cap = b->cap ? b->cap * 2 : 8;
    struct bent *old = b->t;
    uint32_t oldcap = b->cap;
    b->t = calloc(cap, sizeof *b->t);
    if (!b->t) {
        b->t = old;
        return false;
    }
    b->cap = cap;
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i].rec)
            place(b, old[i].hash, old[i].rec);
    free(old);
    return true;
}

bool bucket_put(struct bucket **bp, const uint8_t *key, size_t klen, const uint8_t *val,
                size_t vlen, uint64_t seed)
{
    if (klen > UINT32_MAX || vlen > UINT32_MAX)
        return false;
    if (!*bp && !(*bp = calloc(1, sizeof **bp)))
        return false;
    struct bucket *b = *bp;
    uint8_t *rec = malloc(8 + klen + vlen);
    if (!rec)
        return false;
    uint32_t k32 = (uint32_t)klen, v32 = (uint32_t)vlen;
    memcpy(rec, &k32, 4);
    memcpy(rec + 4, &v32, 4);
    memcpy(rec + 8, key, klen);
    memcpy(rec + 8 + klen, val, vlen);
    uint64_t h = term_hash(key, klen, seed);
    long i = find(b, key, klen, h);
    if (i >= 0) {
        free(b->t[i].rec);
        b->t[i].rec = rec;
        return true;
    }
    if ((b->count + 1) * 4 > b->cap * 3 && !grow(b)) {
        free(rec);
        return false;
    }
    place(b, h, rec);
    b->count++;
    return true;
}

void *bucket_take(struct bucket *b, const uint8_t *key, size_t klen, uint64_t seed,
                  const uint8_t **val, size_t *vlen)
{
    long f = find(b, key, klen, term_hash(key, klen, seed));
    if (f < 0)
        return NULL;
    uint8_t *rec = b->t[f].rec;
    *val = rec_val(rec);
    *vlen = rec_vlen(rec);
    uint32_t mask = b->cap - 1, i = (uint32_t)f, j = i;
    for (;;) {
        b->t[i].rec = NULL;
        for (;;) {
            j = (j + 1) & mask;
            if (!b->t[j].rec)
                goto done;
            uint32_t home = (uint32_t)b->t[j].hash & mask;
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                continue;
            break;
        }
        b->t[i] = b->t[j];
        i = j;
    }
done:
    b->count--;
    return rec;
}

void bucket_rec_free(void *rec) { free(rec); }

uint32_t bucket_count(const struct bucket *b) { return b ? b->count : 0; }

void bucket_free(void *p)
{
    struct bucket *b = p;
    if (!b)
        return;
    for (uint32_t i = 0; i < b->cap; i++)
        free(b->t[i].rec);
    free(b->t);
    free(b);
}

/* --- behaviour --- */

static bool canon_key(struct gen *g, struct span t, struct span *out)
{
    struct buf *b = gen_tmp(g);
    buf_reset(b);
    if (!term_canon(t.p, t.n, b))
        return false;
    out->p = b->data;
    out->n = b->len;
    return true;
}

static enum gen_result unknown(struct buf *out)
{
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "error") &&
                   ext_put_atomz(out, "unknown_call")
               ? GEN_REPLY
               : GEN_NOREPLY;
}

static bool put_keys(const struct bucket *b, struct buf *out)
{
    uint32_t cnt = bucket_count(b);
    if (!ext_put_list_header(out, cnt))
        return false;
    if (!cnt)
        return true;
    for (uint32_t i = 0; i < b->cap; i++)
        if (b->t[i].rec && !buf_put(out, rec_key(b->t[i].rec), rec_klen(b->t[i].rec)))
            return false;
    return ext_put_nil(out);
}

/* The state is the struct bucket, NULL until the first put. */
static enum gen_result bucket_call(struct gen *g, struct cur req, struct buf *out,
                                   struct span *stop)
{
    struct cur c = req;
    uint32_t ar;
    struct span kt, key, val;
    if (ext_atom_eq(&c, "keys"))
        return put_keys(g->state, out) ? GEN_REPLY : GEN_NOREPLY;
    if (!ext_get_tuple(&c, &ar) || ar < 2 || ar > 3)
        return unknown(out);
    bool get = ar == 2 && ext_atom_eq(&c, "get");
    bool del = ar == 2 && ext_atom_eq(&c, "delete");
    bool put = ar == 3 && ext_atom_eq(&c, "put");
    if (!get && !del && !put)
        return unknown(out);
    ext_skip(&c, NULL);
    if (!ext_skip(&c, &kt) || !canon_key(g, kt, &key))
        return unknown(out);
    uint64_t seed = gen_seed(g);
    if (get) {
        size_t vlen;
        const uint8_t *v = bucket_get(g->state, key.p, key.n, seed, &vlen);
        bool ok = v ? buf_put(out, v, vlen) : ext_put_atomz(out, "nil");
        return ok ? GEN_REPLY : GEN_NOREPLY;
    }
    if (del) {
        const uint8_t *v;
        size_t vlen;
        void *rec = bucket_take(g->state, key.p, key.n, seed, &v, &vlen);
        bool ok = rec ? buf_put(out, v, vlen) : ext_put_atomz(out, "nil");
        bucket_rec_free(rec);
        return ok ? GEN_REPLY : GEN_NOREPLY;
    }
    if (!ext_skip(&c, &val))
        return unknown(out);
    if (!bucket_put((struct bucket **)&g->state, key.p, key.n, val.p, val.n, seed))
        return ext_put_tuple(out, 2) && ext_put_atomz(out, "error") &&
                       ext_put_atomz(out, "enomem")
                   ? GEN_REPLY
                   : GEN_NOREPLY;
    (void)stop;
    return ext_put_atomz(out, "ok") ? GEN_REPLY : GEN_NOREPLY;
}

static enum gen_result bucket_cast(struct gen *g, struct cur req, struct span *stop)
{
    struct cur c = req;
    uint32_t ar;
    struct span kt, key, val;
    if (!ext_get_tuple(&c, &ar) || ar != 3 || !ext_atom_eq(&c, "put")) {
        LOGD("bucket: unknown cast ignored");
        return GEN_NOREPLY;
    }
    ext_skip(&c, NULL);
    if (!ext_skip(&c, &kt) || !ext_skip(&c, &val) || !canon_key(g, kt, &key))
        return GEN_NOREPLY;
    if (!bucket_put((struct bucket **)&g->state, key.p, key.n, val.p, val.n, gen_seed(g)))
        LOGW("bucket: out of memory storing a value");
    return GEN_NOREPLY;
}

static void bucket_terminate(struct gen *g, struct span reason)
{
    bucket_free(g->state);
    g->state = NULL;
}

/* sys:get_state -> the contents as a map. */
static bool bucket_state(struct gen *g, struct buf *out)
{
    const struct bucket *b = g->state;
    if (!buf_put_u8(out, 't') || !buf_put_n32(out, bucket_count(b)))
        return false;
    for (uint32_t i = 0; b && i < b->cap; i++) {
        const uint8_t *r = b->t[i].rec;
        if (r && !(buf_put(out, rec_key(r), rec_klen(r)) && buf_put(out, rec_val(r), rec_vlen(r))))
            return false;
    }
    return true;
}

const struct behaviour bucket_behaviour = {
    .name = "a bucket",
    .handle_call = bucket_call,
    .handle_cast = bucket_cast,
    .terminate = bucket_terminate,
    .get_state = bucket_state,
};
