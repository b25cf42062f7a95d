/* kvtest.h - shared helpers for the cmocka suites that drive a node without
 * sockets: a bare node (node_init_bare), socketless connections
 * (conn_new_up / conn_input / conn_take_output), term and frame builders,
 * and readers for the frames the node sends.  Header-only (static
 * functions), included after <cmocka.h>; not a suite itself. */
#ifndef KV_TEST_H
#define KV_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "services/bucket.h"
#include "wire/conn.h"
#include "proto/dist.h"
#include "proto/ext.h"
#include "runtime/gen.h"
#include "proto/hs.h"
#include "base/log.h"
#include "base/loop.h"
#include "runtime/node.h"
#include "runtime/proc.h"
#include "services/registry.h"
#include "proto/term.h"

#define KT_NODE "kv@host"
#define KT_PEER "peer@host"
#define KT_CREATION 0x6B000003u
#define KT_PEER_CREATION 0x70000005u
/* What an OTP 25/26 BEAM peer offers (golden handshake flags plus ours),
 * less the atom cache: these suites speak pass-through ('p') frames;
 * test_atomcache.c drives the header form. */
#define KT_BEAM_FLAGS \
    ((HS_OUR_FLAGS | DFLAG_PUBLISHED | DFLAG_FRAGMENTS) & ~DFLAG_DIST_HDR_ATOM_CACHE)

#define KT_REGISTRY "Elixir.KV.Registry"

struct tnode {
    struct node_opts cfg;
    struct loop *loop;
    struct node n;
    struct app app;
};

/* A golden file (path relative to tests/, found beside this header), read
 * whole; the caller frees it. */
static inline uint8_t *kt_slurp(const char *rel, size_t *n)
{
    char path[1024];
    const char *f = __FILE__;
    const char *slash = strrchr(f, '/');
    snprintf(path, sizeof path, "%.*s%s", slash ? (int)(slash - f + 1) : 0, f, rel);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        fail_msg("cannot open %s (run from the repository root)", path);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *n = (size_t)len;
    return p;
}

static inline void kt_cfg(struct node_opts *cfg, const char *name)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->name, sizeof cfg->name, "%s", name);
    snprintf(cfg->alive, sizeof cfg->alive, "%.*s", (int)(strchr(name, '@') - name), name);
    snprintf(cfg->cookie, sizeof cfg->cookie, "cookie");
    cfg->ticktime = 60;
    cfg->setuptime_ms = 7000;
    cfg->max_message_bytes = 128ull << 20;
    cfg->max_out_bytes = 256ull << 20;
    cfg->max_connections = 0; /* node_connect always fails: no sockets */
    cfg->max_depth = 1000;
}

static inline struct tnode *kt_node_new(void)
{
    log_threshold = LOG_ERROR;
    struct tnode *t = calloc(1, sizeof *t);
    assert_non_null(t);
    kt_cfg(&t->cfg, KT_NODE);
    t->loop = loop_new();
    assert_non_null(t->loop);
    assert_int_equal(node_init_bare(&t->n, &t->cfg, t->loop, KT_CREATION, 0x1234567890abcdefULL),
                     0);
    struct app_opts ao = {KT_REGISTRY, NULL};
    assert_int_equal(app_start(&t->n, &ao, &t->app), 0);
    return t;
}

/* The registry process of n, and its state (the name table). */
static inline uint32_t kt_registry(struct node *n) { return proc_whereis(n, KT_REGISTRY); }
static inline struct reg *kt_reg(struct node *n)
{
    return proc_by_id(n, kt_registry(n))->state;
}
/* The node's record of c's peer (opaque to conn.c). */
static inline struct peer *kt_peer(struct conn *c) { return c->peer; }

static inline void kt_node_free(struct tnode *t)
{
    struct node *n = &t->n;
    for (struct conn *c = n->wire.conns; c; c = c->next)
        conn_take_output(c, NULL);
    node_shutdown(n);
    node_free(n);
    loop_free(t->loop);
    free(t);
}

/* A connection from KT_PEER (or name), up, with flags. */
static inline struct conn *kt_conn(struct tnode *t, const char *name, uint64_t flags)
{
    struct conn *c = conn_new_up(&t->n.wire, name, flags, KT_PEER_CREATION);
    assert_non_null(c);
    assert_non_null(c->peer);
    assert_true(kt_peer(c)->up);
    return c;
}

/* ---- term builders (no 131 unless said) ---- */

static inline void kt_atom(struct buf *b, const char *s) { assert_true(ext_put_atomz(b, s)); }

static inline void kt_pid(struct buf *b, const char *node, uint32_t id, uint32_t serial,
                          uint32_t creation)
{
    struct buf a;
    buf_init(&a);
    assert_true(ext_put_atomz(&a, node));
    struct span s = {a.data, a.len};
    assert_true(ext_put_pid(b, s, id, serial, creation));
    buf_free(&a);
}

static inline void kt_ref(struct buf *b, const char *node, uint32_t creation, uint32_t w0)
{
    struct buf a;
    buf_init(&a);
    assert_true(ext_put_atomz(&a, node));
    struct span s = {a.data, a.len};
    uint32_t w[3] = {w0, 0x11, 0x22};
    assert_true(ext_put_ref(b, s, creation, w, 3));
    buf_free(&a);
}

static inline void kt_small(struct buf *b, uint8_t v)
{
    buf_put_u8(b, 97);
    buf_put_u8(b, v);
}

/* The peer's pid number id (serial 0) as a struct epid of this node's view. */
static inline struct epid kt_local_pid(struct tnode *t, uint32_t id)
{
    struct epid p;
    proc_pid(&t->n, id, &p);
    return p;
}

static inline void kt_put_local_pid(struct tnode *t, struct buf *b, uint32_t id)
{
    struct epid p = kt_local_pid(t, id);
    assert_true(node_put_pid(&t->n, b, &p));
}

/* ---- frames ---- */

/* Begin a frame: Len placeholder, 'p', 131 and a control tuple header. */
static inline size_t kt_frame(struct buf *b, uint32_t arity, uint8_t op)
{
    size_t st = dist_frame_begin(b);
    ext_put_version(b);
    ext_put_tuple(b, arity);
    kt_small(b, op);
    return st;
}

static inline void kt_frame_end(struct buf *b, size_t st) { assert_true(dist_frame_end(b, st)); }

/* Feed a whole buffer to a connection; returns whether it is still open. */
static inline bool kt_feed(struct conn *c, const struct buf *b)
{
    return conn_input(c, b->data, b->len);
}

/* ---- reading what the node sent ---- */

struct kt_frames {
    struct buf raw;
    size_t pos;
};

static inline void kt_out(struct conn *c, struct kt_frames *f)
{
    buf_init(&f->raw);
    f->pos = 0;
    conn_take_output(c, &f->raw);
}

/* Next non-tick frame decoded into m; false at the end. */
static inline bool kt_next(struct kt_frames *f, struct dist_msg *m)
{
    static const struct term_limits lim = {1000, 1u << 30};
    for (;;) {
        struct span body;
        long k = dist_cut(f->raw.data + f->pos, f->raw.len - f->pos, UINT64_MAX, &body);
        if (k <= 0)
            return false;
        f->pos += (size_t)k;
        if (body.n == 0)
            continue;
        const char *why = NULL;
        int r = dist_decode(body.p, body.n, &lim, m, &why);
        if (r != 0)
            fail_msg("node sent a frame its own decoder refuses: %s", why);
        return true;
    }
}

static inline int kt_count_frames(struct kt_frames *f)
{
    struct dist_msg m;
    int k = 0;
    size_t save = f->pos;
    while (kt_next(f, &m))
        k++;
    f->pos = save;
    return k;
}

static inline bool kt_span_is(struct span s, const struct buf *b)
{
    return s.n == b->len && memcmp(s.p, b->data, s.n) == 0;
}

static inline bool kt_span_atom(struct span s, const char *atom)
{
    struct cur c = cur_make(s.p, s.n);
    struct buf b;
    buf_init(&b);
    ext_put_atomz(&b, atom);
    bool ok = ext_atom_eq(&c, atom) && s.n == b.len;
    buf_free(&b);
    return ok;
}

/* A gen_server reply {Tag, Reply}: the Reply's bytes, after checking the
 * tag equals want_tag. */
static inline struct span kt_reply(struct span msg, const struct buf *want_tag)
{
    struct cur c = cur_make(msg.p, msg.n);
    uint32_t ar;
    struct span tag, reply;
    assert_true(ext_get_tuple(&c, &ar));
    assert_int_equal(ar, 2);
    assert_true(ext_skip(&c, &tag));
    if (want_tag)
        assert_true(kt_span_is(tag, want_tag));
    assert_true(ext_skip(&c, &reply));
    assert_int_equal(cur_left(&c), 0);
    return reply;
}

/* Bytes of a term written by fn into a fresh buffer (caller frees). */
#define KT_TERM(b, ...) \
    do {                \
        buf_init(b);    \
        __VA_ARGS__;    \
    } while (0)

#endif
