/* fuzz_conn.c - libFuzzer target: a whole connection's bytes into a node
 * with the real dispatch.  A bare node (no sockets) gets a connection from
 * capcli@localhost that has just finished its handshake (conn_new_up, the
 * real handshake_done/node_conn_up path); the input goes in through
 * conn_input in reads of a chosen size: frame cutting, decoding, routing,
 * gen_server envelopes, registry and buckets, monitors, links, exits.
 * Input: [options:1][chunk:1][bytes...].  options: bit0 peer without
 * EXIT_PAYLOAD, bit1 without DIST_MONITOR(_NAME), bit2 without UNLINK_ID,
 * bit3 a second peer connected (watchers elsewhere), bit4 buckets and
 * names made before the input, bit5 framed: the bytes are [n:16][body:n]
 * records and the harness writes each frame's Len:32 (so mutations inside
 * a body keep the framing; n = 0 is a tick), bit6 shut the node down with
 * the connections still up (the shutdown path's exits and DOWNs); chunk is
 * the read size (0 = all at once).
 * Checks: no crash or leak (ASan/LSan), every frame the node sends passes
 * its own decoder, and after the connection closes nothing in the tables
 * refers to that peer; after shutdown every table is empty. */
#include "fuzz_common.h"

static void drain(struct conn *c)
{
    static struct buf out;
    if (!c || c->state == CS_CLOSED)
        return;
    buf_reset(&out);
    conn_take_output(c, &out);
    fz_check_output(out.data, out.len);
    if (out.cap > (1u << 22))
        buf_free(&out);
}

static void prepare(struct node *n)
{
    for (int i = 0; i < 6; i++) {
        struct buf req, out;
        buf_init(&req);
        buf_init(&out);
        ext_put_tuple(&req, 2);
        ext_put_atomz(&req, "create");
        ext_put_int(&req, i);
        gen_call_direct(n, proc_whereis(n, FZ_REGISTRY), cur_make(req.data, req.len), &out);
        buf_free(&req);
        buf_free(&out);
    }
}

/* The tables agree with each other after every read: the registry's index
 * finds every entry, local pids in it are alive, a watched entry's monitor
 * is hashed and points back at it, a bucket's spawn monitor is the
 * registry's and names its own entry,
 * every hashed monitor is on its target's and its peer's list, and the
 * counts are right. */
static void check_tables(struct node *n)
{
    uint32_t rid = proc_whereis(n, FZ_REGISTRY);
    struct reg *r = proc_by_id(n, rid)->state;
    struct proc_table *t = n->procs;
    uint32_t used = 0;
    for (uint32_t s = 0; s < r->nents; s++) {
        struct reg_ent *e = &r->ents[s];
        if (e->len == UINT32_MAX)
            continue;
        used++;
        FZ_CHECK(reg_find(r, reg_name(r, s), e->len) == s);
        if (e->pid.node == 0)
            FZ_CHECK(proc_get(n, &e->pid) != NULL);
        if (e->mon) {
            FZ_CHECK(mon_find(n, &e->mon->ref) == e->mon);
            FZ_CHECK(e->mon->tag == s && epid_eq(&e->mon->target, &e->pid));
        }
    }
    FZ_CHECK(used == r->count);
    uint32_t live = 0;
    for (uint32_t id = 0; id < t->n; id++) {
        struct proc *p = &t->v[id];
        if (p->beh == 0)
            continue;
        live++;
        FZ_CHECK(!p->exiting);
        if (proc_beh(n, p) == &bucket_behaviour && p->watcher) {
            FZ_CHECK(p->watcher == rid + 1);
            FZ_CHECK(p->wtag < r->nents && r->ents[p->wtag].len != UINT32_MAX);
            FZ_CHECK(r->ents[p->wtag].pid.node == 0 && r->ents[p->wtag].pid.id == id);
        }
        for (struct mon *m = p->mons; m; m = m->t_next)
            FZ_CHECK(m->local_target && m->target.id == id && mon_find(n, &m->ref) == m);
    }
    FZ_CHECK(live == t->live);
    uint32_t hashed = 0;
    for (uint32_t b = 0; b < t->mh_cap; b++)
        for (struct mon *m = t->mh[b]; m; m = m->h_next) {
            hashed++;
            if (m->local_target) {
                struct proc *p = proc_get(n, &m->target);
                FZ_CHECK(p != NULL);
                bool on = false;
                for (struct mon *x = p->mons; x && !on; x = x->t_next)
                    on = x == m;
                FZ_CHECK(on);
            }
            if (m->peer) {
                bool on = false;
                for (struct mon *x = m->peer->mons; x && !on; x = x->p_next)
                    on = x == m;
                FZ_CHECK(on);
            }
        }
    FZ_CHECK(hashed == t->mh_count);
}

/* No monitor or link may still point at peer p. */
static void check_peer_clean(struct node *n, struct peer *p)
{
    FZ_CHECK(p->mons == NULL && p->links == NULL && p->conn == NULL && !p->up);
    struct proc_table *t = n->procs;
    for (uint32_t b = 0; b < t->mh_cap; b++)
        for (struct mon *m = t->mh[b]; m; m = m->h_next)
            FZ_CHECK(m->peer != p);
    for (uint32_t id = 0; id < t->n; id++)
        for (struct lnk *l = t->v[id].links; l; l = l->l_next)
            FZ_CHECK(l->peer != p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    log_threshold = LOG_ERROR;
    uint8_t opt = data[0];
    size_t chunk = data[1] ? data[1] : SIZE_MAX;
    data += 2;
    size -= 2;
    uint64_t flags = HS_OUR_FLAGS | DFLAG_PUBLISHED;
    if (opt & 1)
        flags &= ~DFLAG_EXIT_PAYLOAD;
    if (opt & 2)
        flags &= ~(DFLAG_DIST_MONITOR | DFLAG_DIST_MONITOR_NAME);
    if (opt & 4)
        flags &= ~DFLAG_UNLINK_ID;
    static struct node_opts cfg;
    fz_cfg(&cfg);
    struct loop *l = loop_new();
    FZ_CHECK(l != NULL);
    struct node *n = calloc(1, sizeof *n);
    FZ_CHECK(node_init_bare(n, &cfg, l, FZ_CREATION, 0x5eed) == 0);
    struct app app;
    FZ_CHECK(app_start(n, &(struct app_opts){FZ_REGISTRY, NULL}, &app) == 0);
    if (opt & 16)
        prepare(n);
    struct conn *other = NULL;
    if (opt & 8)
        other = conn_new_up(&n->wire, "watcher@localhost", HS_OUR_FLAGS, 77);
    struct conn *c = conn_new_up(&n->wire, FZ_PEER, flags, FZ_PEER_CREATION);
    FZ_CHECK(c != NULL);
    struct peer *p = c->peer;
    struct buf framed;
    buf_init(&framed);
    if (opt & 32) {
        struct cur in = cur_make(data, size);
        uint16_t len;
        struct span body;
        while (cur_n16(&in, &len)) {
            if (!cur_span(&in, len, &body))
                body = (struct span){cur_ptr(&in), cur_left(&in)};
            buf_put_n32(&framed, (uint32_t)body.n);
            buf_put(&framed, body.p, body.n);
            if (body.n < len)
                break;
        }
        data = framed.data;
        size = framed.len;
    }
    size_t pos = 0, checked = 0;
    while (pos < size) {
        size_t k = size - pos < chunk ? size - pos : chunk;
        bool open = conn_input(c, data + pos, k);
        pos += k;
        if (pos - checked >= 1024 || pos == size || !open) { /* a full check costs */
            check_tables(n);
            checked = pos;
        }
        drain(other);
        if (!open)
            break;
        drain(c);
    }
    if (!(opt & 64)) {
        if (c->state != CS_CLOSED)
            conn_close(c, NULL);
        drain(other);
        check_peer_clean(n, p);
        if (other) {
            struct peer *op = other->peer;
            conn_close(other, NULL);
            check_peer_clean(n, op);
        }
        conn_reap(&n->wire);
        /* with every connection gone, only the registry's monitors on its
         * own buckets remain, and no links at all (a peer can only have
         * made links and monitors for its own processes) */
        for (uint32_t b = 0; b < n->procs->mh_cap; b++)
            for (struct mon *m = n->procs->mh[b]; m; m = m->h_next)
                FZ_CHECK(m->peer == NULL && m->local_target && m->watcher.node == 0);
        for (uint32_t id = 0; id < n->procs->n; id++)
            FZ_CHECK(n->procs->v[id].links == NULL);
    }
    check_tables(n);
    node_shutdown(n); /* with fd -1, a connection still up fails its write and closes */
    FZ_CHECK(n->wire.conns == NULL);
    check_peer_clean(n, p);
    FZ_CHECK(n->procs->live == 0);
    FZ_CHECK(n->procs->mh_count == 0);
    FZ_CHECK(proc_whereis(n, FZ_REGISTRY) == PROC_NONE); /* its names went with it */
    node_free(n);
    free(n);
    buf_free(&framed);
    loop_free(l);
    return 0;
}
