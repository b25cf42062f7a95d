/* test_proc.c - processes, monitors, links and exit signals (c_src/proc.c)
 * on a bare node: spawn/exit and serial reuse, registered names, the
 * monitor hash (insert/find/remove, growth, recycling), per-process and
 * per-peer lists, local DOWN to the registry, exit-signal rules, and the
 * noconnection cleanup when a peer goes (nothing left in any table). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kvtest.h"

static uint32_t spawn_bucket(struct tnode *t)
{
    uint32_t id = proc_spawn(&t->n, &bucket_behaviour, NULL);
    assert_int_not_equal(id, PROC_NONE);
    return id;
}

static bool alive(struct tnode *t, uint32_t id)
{
    struct epid p = kt_local_pid(t, id);
    return proc_get(&t->n, &p) != NULL;
}

/* ---- spawn, exit, serials ---- */

static void test_spawn_exit_serial(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    assert_int_equal(n->procs->live, 2); /* net_kernel and the registry */
    uint32_t a = spawn_bucket(t), b = spawn_bucket(t);
    assert_int_not_equal(a, b);
    struct epid pa = kt_local_pid(t, a);
    assert_int_equal(pa.node, 0);
    assert_int_equal(pa.creation, KT_CREATION);
    assert_non_null(proc_get(n, &pa));
    assert_int_equal(n->procs->live, 4);
    proc_exit(n, a, R_NORMAL);
    assert_null(proc_get(n, &pa));
    assert_null(proc_by_id(n, a));
    assert_int_equal(n->procs->live, 3);
    /* the slot comes back with the next serial: the old pid stays dead */
    uint32_t c = spawn_bucket(t);
    assert_int_equal(c, a);
    struct epid pc = kt_local_pid(t, c);
    assert_int_equal(pc.serial, pa.serial + 1);
    assert_null(proc_get(n, &pa));
    assert_non_null(proc_get(n, &pc));
    /* a pid of another creation (an earlier run of this node) is dead */
    struct epid old = pc;
    old.creation ^= 1;
    assert_null(proc_get(n, &old));
    /* ids past the table, exits of dead ids: harmless */
    assert_null(proc_by_id(n, 1u << 26));
    proc_exit(n, 1u << 20, R_NORMAL);
    proc_exit(n, a, R_NORMAL);
    proc_exit(n, a, R_NORMAL);
    assert_int_equal(n->procs->live, 3);
    /* many spawns grow the table; all exits return every slot */
    static uint32_t ids[5000];
    for (int i = 0; i < 5000; i++)
        ids[i] = spawn_bucket(t);
    assert_int_equal(n->procs->live, 5003);
    for (int i = 0; i < 5000; i++)
        proc_exit(n, ids[i], R_SHUTDOWN);
    assert_int_equal(n->procs->live, 3);
    uint32_t hw = n->procs->n;
    for (int i = 0; i < 5000; i++)
        ids[i] = spawn_bucket(t);
    assert_int_equal(n->procs->n, hw); /* reused, not grown */
    kt_node_free(t);
}

static void test_registered_names(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    assert_int_equal(proc_whereis(n, "net_kernel"), 0);
    assert_int_equal(proc_whereis(n, "Elixir.KV.Registry"), t->app.registry);
    assert_int_equal(proc_whereis(n, "nobody"), PROC_NONE);
    uint32_t b = spawn_bucket(t);
    assert_int_equal(proc_register(n, "bucket_b", b), 0);
    assert_int_equal(proc_register(n, "bucket_b", b), -1); /* taken */
    assert_int_equal(proc_whereis(n, "bucket_b"), b);
    assert_string_equal(proc_name_of(n, 2), "bucket_b");
    assert_null(proc_name_of(n, -1));
    assert_null(proc_name_of(n, 99));
    proc_exit(n, b, R_NORMAL);
    assert_int_equal(proc_whereis(n, "bucket_b"), PROC_NONE);
    kt_node_free(t);
}

/* ---- monitors ---- */

static struct mon *mk_mon(struct tnode *t, uint32_t target, struct peer *p, uint32_t w0)
{
    struct mon *m = mon_alloc(&t->n);
    assert_non_null(m);
    m->ref.node = p ? p->idx : 0;
    m->ref.creation = 9;
    m->ref.len = 3;
    m->ref.w[0] = w0;
    m->ref.w[1] = w0 * 7;
    m->ref.w[2] = 1;
    m->watcher = (struct epid){p ? p->idx : 0, 1000 + w0, 0, 9};
    m->target = kt_local_pid(t, target);
    m->local_target = true;
    m->peer = p;
    mon_insert(&t->n, m);
    return m;
}

static int list_len_target(struct proc *p)
{
    int k = 0;
    for (struct mon *m = p->mons; m; m = m->t_next) {
        if (m->t_next)
            assert_ptr_equal(m->t_next->t_prev, m);
        k++;
    }
    return k;
}

static int list_len_peer(struct peer *p)
{
    int k = 0;
    for (struct mon *m = p->mons; m; m = m->p_next) {
        if (m->p_next)
            assert_ptr_equal(m->p_next->p_prev, m);
        k++;
    }
    return k;
}

static void test_monitor_insert_find_remove(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    struct peer *p = node_peer_get(n, KT_PEER);
    assert_non_null(p);
    uint32_t b = spawn_bucket(t);
    struct mon *m[5];
    for (uint32_t i = 0; i < 5; i++)
        m[i] = mk_mon(t, b, i % 2 ? p : NULL, i + 1);
    assert_int_equal(n->procs->mh_count, 5);
    assert_int_equal(list_len_target(proc_by_id(n, b)), 5);
    assert_int_equal(list_len_peer(p), 2);
    for (int i = 0; i < 5; i++)
        assert_ptr_equal(mon_find(n, &m[i]->ref), m[i]);
    /* a ref that differs in any field is another ref */
    struct eref r = m[2]->ref;
    r.w[2] ^= 1;
    assert_null(mon_find(n, &r));
    r = m[2]->ref;
    r.creation++;
    assert_null(mon_find(n, &r));
    r = m[2]->ref;
    r.len = 2;
    assert_null(mon_find(n, &r));
    /* remove the middle, the head, the tail of the lists */
    struct eref gone[3] = {m[2]->ref, m[4]->ref, m[0]->ref};
    mon_remove(n, m[2]);
    mon_remove(n, m[4]);
    mon_remove(n, m[0]);
    for (int i = 0; i < 3; i++)
        assert_null(mon_find(n, &gone[i]));
    assert_ptr_equal(mon_find(n, &m[1]->ref), m[1]);
    assert_ptr_equal(mon_find(n, &m[3]->ref), m[3]);
    assert_int_equal(list_len_target(proc_by_id(n, b)), 2);
    assert_int_equal(list_len_peer(p), 2);
    assert_int_equal(n->procs->mh_count, 2);
    /* records are recycled, not freed and reallocated */
    struct mon *recycled = n->procs->mon_free;
    assert_non_null(recycled);
    assert_ptr_equal(mon_alloc(n), recycled);
    mon_remove(n, recycled); /* never inserted: only goes back on the free list */
    assert_int_equal(n->procs->mh_count, 2);
    /* the target's end removes the rest; the remote watcher's DOWN goes
     * nowhere (no connection), the local ones to a non-registry: dropped */
    proc_exit(n, b, R_NORMAL);
    assert_int_equal(n->procs->mh_count, 0);
    assert_null(p->mons);
    kt_node_free(t);
}

static void test_monitor_hash_growth(void **state)
{
    enum { N = 20000 };
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    uint32_t cap0 = n->procs->mh_cap;
    uint32_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = spawn_bucket(t);
    static struct mon *m[N];
    static struct eref refs[N];
    for (uint32_t i = 0; i < N; i++) {
        m[i] = mk_mon(t, b[i % 4], NULL, i * 2654435761u);
        refs[i] = m[i]->ref;
    }
    assert_true(n->procs->mh_cap > cap0);
    assert_true(n->procs->mh_cap >= N);
    assert_int_equal(n->procs->mh_count, N);
    for (uint32_t i = 0; i < N; i++)
        assert_ptr_equal(mon_find(n, &refs[i]), m[i]);
    /* remove every other one, the rest still found */
    for (uint32_t i = 0; i < N; i += 2)
        mon_remove(n, m[i]);
    for (uint32_t i = 0; i < N; i++)
        if (i % 2)
            assert_ptr_equal(mon_find(n, &refs[i]), m[i]);
        else
            assert_null(mon_find(n, &refs[i]));
    int total = 0;
    for (int i = 0; i < 4; i++)
        total += list_len_target(proc_by_id(n, b[i]));
    assert_int_equal(total, N / 2);
    for (int i = 0; i < 4; i++)
        proc_exit(n, b[i], R_NORMAL);
    assert_int_equal(n->procs->mh_count, 0);
    kt_node_free(t);
}

/* The registry watches a local pid: its end is a local DOWN (on_down). */
static void test_local_monitor_fires_to_registry(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    uint32_t b = spawn_bucket(t);
    struct epid pb = kt_local_pid(t, b);
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    ext_put_tuple(&req, 3);
    kt_atom(&req, "register");
    kt_atom(&req, "watched");
    node_put_pid(n, &req, &pb);
    gen_call_direct(n, kt_registry(n), cur_make(req.data, req.len), &out);
    assert_int_equal(kt_reg(n)->count, 1);
    assert_int_equal(n->procs->mh_count, 1);
    struct mon *m = proc_by_id(n, b)->mons;
    assert_non_null(m);
    assert_true(m->local_target);
    assert_null(m->peer);
    proc_exit_signal(n, b, &pb, R_KILL, false);
    assert_false(alive(t, b));
    assert_int_equal(kt_reg(n)->count, 0);
    assert_int_equal(n->procs->mh_count, 0);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

/* ---- exit signals ---- */

/* The peer monitors local process id; returns nothing, sends MONITOR_P. */
static void peer_monitors(struct tnode *t, struct conn *c, uint32_t id, uint32_t refw)
{
    struct buf fr;
    buf_init(&fr);
    size_t st = kt_frame(&fr, 4, DOP_MONITOR_P);
    kt_pid(&fr, kt_peer(c)->name, 500 + refw, 0, KT_PEER_CREATION);
    kt_put_local_pid(t, &fr, id);
    kt_ref(&fr, kt_peer(c)->name, KT_PEER_CREATION, refw);
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    buf_free(&fr);
}

static void peer_links(struct tnode *t, struct conn *c, uint32_t id, uint32_t rid)
{
    struct buf fr;
    buf_init(&fr);
    size_t st = kt_frame(&fr, 3, DOP_LINK);
    kt_pid(&fr, kt_peer(c)->name, rid, 0, KT_PEER_CREATION);
    kt_put_local_pid(t, &fr, id);
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    buf_free(&fr);
}

/* The one DOWN the peer got, and its reason. */
static void expect_down(struct conn *c, const char *reason)
{
    struct kt_frames f;
    struct dist_msg m;
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_PAYLOAD_MONITOR_P_EXIT);
    if (!kt_span_atom(m.reason, reason))
        fail_msg("DOWN reason is not %s", reason);
    assert_false(kt_next(&f, &m));
    buf_free(&f.raw);
}

static void test_exit_signal_rules(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    struct epid other = {kt_peer(c)->idx, 77, 0, KT_PEER_CREATION};
    uint32_t b = spawn_bucket(t);
    struct epid pb = kt_local_pid(t, b);
    peer_monitors(t, c, b, 1);
    /* normal from another process: ignored */
    proc_exit_signal(n, b, &other, R_NORMAL, false);
    assert_true(alive(t, b));
    assert_int_equal(conn_take_output(c, NULL), 0);
    /* normal in another atom encoding: still ignored */
    static const uint8_t normal_latin1[] = {100, 0, 6, 'n', 'o', 'r', 'm', 'a', 'l'};
    proc_exit_signal(n, b, &other, (struct span){normal_latin1, sizeof normal_latin1}, false);
    assert_true(alive(t, b));
    /* 'normalx' and 'norma' are other reasons */
    static const uint8_t normalx[] = {119, 7, 'n', 'o', 'r', 'm', 'a', 'l', 'x'};
    proc_exit_signal(n, b, &other, (struct span){normalx, sizeof normalx}, false);
    assert_false(alive(t, b));
    expect_down(c, "normalx");
    /* kill -> killed */
    b = spawn_bucket(t);
    peer_monitors(t, c, b, 2);
    proc_exit_signal(n, b, &other, R_KILL, false);
    assert_false(alive(t, b));
    expect_down(c, "killed");
    /* any other reason: ends with it */
    b = spawn_bucket(t);
    peer_monitors(t, c, b, 3);
    static const uint8_t because[] = {104, 2, 119, 8, 's', 'h', 'u', 't', 'd', 'o', 'w', 'n',
                                      119, 3, 'b', 'y', 'e'};
    proc_exit_signal(n, b, &other, (struct span){because, sizeof because}, false);
    assert_false(alive(t, b));
    {
        struct kt_frames f;
        struct dist_msg m;
        kt_out(c, &f);
        assert_true(kt_next(&f, &m));
        assert_int_equal(m.reason.n, sizeof because);
        assert_memory_equal(m.reason.p, because, sizeof because);
        buf_free(&f.raw);
    }
    /* normal from itself ends it (exit(self(), normal)) */
    b = spawn_bucket(t);
    pb = kt_local_pid(t, b);
    proc_exit_signal(n, b, &pb, R_NORMAL, false);
    assert_false(alive(t, b));
    /* the registry and net_kernel refuse even kill */
    struct epid reg = kt_local_pid(t, kt_registry(n));
    proc_exit_signal(n, kt_registry(n), &other, R_KILL, false);
    proc_exit_signal(n, 0, &other, R_KILL, false);
    proc_exit_signal(n, kt_registry(n), &other, R_SHUTDOWN, false);
    assert_non_null(proc_get(n, &reg));
    assert_true(alive(t, 0));
    kt_node_free(t);
}

/* Exit signals through links: no link, no effect; 'kill' over a link is an
 * ordinary reason (the BEAM's rule); normal is ignored; a local chain. */
static void test_link_exit_rules(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    struct epid rp = {kt_peer(c)->idx, 88, 0, KT_PEER_CREATION};
    uint32_t b = spawn_bucket(t);
    /* not linked: a link exit is ignored */
    proc_exit_signal(n, b, &rp, R_SHUTDOWN, true);
    assert_true(alive(t, b));
    peer_links(t, c, b, 88);
    assert_non_null(lnk_find(n, b, &rp));
    /* normal over the link: ignored, the link is gone */
    proc_exit_signal(n, b, &rp, R_NORMAL, true);
    assert_true(alive(t, b));
    assert_null(lnk_find(n, b, &rp));
    assert_null(kt_peer(c)->links);
    /* kill over a link ends it with reason kill, not killed */
    peer_links(t, c, b, 88);
    peer_monitors(t, c, b, 10);
    proc_exit_signal(n, b, &rp, R_KILL, true);
    assert_false(alive(t, b));
    expect_down(c, "kill");
    /* a local chain: a -- b -- c, a crashes, all go with its reason */
    uint32_t a = spawn_bucket(t), bb = spawn_bucket(t), cc = spawn_bucket(t);
    struct epid pa = kt_local_pid(t, a), pbb = kt_local_pid(t, bb), pcc = kt_local_pid(t, cc);
    assert_non_null(lnk_add(n, a, &pbb, NULL));
    assert_non_null(lnk_add(n, bb, &pa, NULL));
    assert_non_null(lnk_add(n, bb, &pcc, NULL));
    assert_non_null(lnk_add(n, cc, &pbb, NULL));
    assert_ptr_equal(lnk_add(n, a, &pbb, NULL), lnk_find(n, a, &pbb)); /* no duplicate */
    peer_monitors(t, c, cc, 11);
    static const uint8_t crash[] = {119, 5, 'c', 'r', 'a', 's', 'h'};
    proc_exit(n, a, (struct span){crash, sizeof crash});
    assert_false(alive(t, a));
    assert_false(alive(t, bb));
    assert_false(alive(t, cc));
    expect_down(c, "crash");
    assert_int_equal(n->procs->live, 2);
    kt_node_free(t);
}

/* Over the wire: EXIT2 / PAYLOAD_EXIT2 with kill and normal, UNLINK_ID and
 * its ack, LINK to a dead pid gets EXIT noproc. */
static void test_exit_signals_from_peer(void **state)
{
    struct tnode *t = kt_node_new();
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    uint32_t b = spawn_bucket(t);
    struct buf fr;
    buf_init(&fr);
    /* PAYLOAD_EXIT2 normal: ignored */
    size_t st = kt_frame(&fr, 3, DOP_PAYLOAD_EXIT2);
    kt_pid(&fr, KT_PEER, 5, 0, KT_PEER_CREATION);
    kt_put_local_pid(t, &fr, b);
    ext_put_version(&fr);
    kt_atom(&fr, "normal");
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    assert_true(alive(t, b));
    /* UNLINK_ID after a LINK: the link goes, the ack carries the id */
    peer_links(t, c, b, 5);
    assert_non_null(kt_peer(c)->links);
    buf_reset(&fr);
    st = kt_frame(&fr, 4, DOP_UNLINK_ID);
    ext_put_u64(&fr, 0xfedcba9876543210ull);
    kt_pid(&fr, KT_PEER, 5, 0, KT_PEER_CREATION);
    kt_put_local_pid(t, &fr, b);
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    assert_null(kt_peer(c)->links);
    struct kt_frames f;
    struct dist_msg m;
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_UNLINK_ID_ACK);
    assert_true(m.id == 0xfedcba9876543210ull);
    struct buf want;
    buf_init(&want);
    kt_put_local_pid(t, &want, b);
    assert_true(kt_span_is(m.from, &want));
    buf_free(&f.raw);
    /* EXIT2 kill (old form): killed */
    peer_monitors(t, c, b, 20);
    buf_reset(&fr);
    st = kt_frame(&fr, 4, DOP_EXIT2);
    kt_pid(&fr, KT_PEER, 5, 0, KT_PEER_CREATION);
    kt_put_local_pid(t, &fr, b);
    kt_atom(&fr, "kill");
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    assert_false(alive(t, b));
    expect_down(c, "killed");
    /* LINK to the dead pid: EXIT noproc back */
    peer_links(t, c, b, 6);
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_PAYLOAD_EXIT);
    assert_true(kt_span_atom(m.reason, "noproc"));
    buf_free(&f.raw);
    assert_null(kt_peer(c)->links);
    buf_free(&want);
    buf_free(&fr);
    kt_node_free(t);
}

/* ---- a peer's connection is lost ---- */

/* Monitors and links both ways with one peer, a second peer watching, then
 * the first connection closes: every record involving that peer is gone,
 * linked processes end with noconnection (seen by the second peer), the
 * registry forgets the peer's pids, counts return to their baseline. */
static void test_noconnection_cleanup(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    struct conn *c2 = kt_conn(t, "watcher@host", KT_BEAM_FLAGS);
    struct peer *p = c->peer;
    uint32_t live0 = n->procs->live;
    uint32_t mon_b = spawn_bucket(t), link_b = spawn_bucket(t), link_b2 = spawn_bucket(t);
    /* the peer monitors: a bucket by pid, the registry by name */
    peer_monitors(t, c, mon_b, 1);
    peer_monitors(t, c, link_b, 2);
    struct buf fr;
    buf_init(&fr);
    size_t st = kt_frame(&fr, 4, DOP_MONITOR_P);
    kt_pid(&fr, KT_PEER, 600, 0, KT_PEER_CREATION);
    kt_atom(&fr, "Elixir.KV.Registry");
    kt_ref(&fr, KT_PEER, KT_PEER_CREATION, 3);
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    /* the peer links to two buckets */
    peer_links(t, c, link_b, 700);
    peer_links(t, c, link_b2, 701);
    /* the second peer watches the linked ones */
    peer_monitors(t, c2, link_b, 50);
    peer_monitors(t, c2, link_b2, 51);
    /* the registry holds three of the peer's pids */
    for (uint32_t i = 0; i < 3; i++) {
        struct buf req, out;
        buf_init(&req);
        buf_init(&out);
        ext_put_tuple(&req, 3);
        kt_atom(&req, "register");
        kt_small(&req, (uint8_t)i);
        kt_pid(&req, KT_PEER, 800 + i, 0, KT_PEER_CREATION);
        gen_call_direct(n, kt_registry(n), cur_make(req.data, req.len), &out);
        buf_free(&req);
        buf_free(&out);
    }
    assert_int_equal(kt_reg(n)->count, 3);
    assert_int_equal(n->procs->mh_count, 3 + 2 + 3);
    assert_int_equal(list_len_peer(p), 3 + 3);
    assert_non_null(p->links);
    conn_take_output(c, NULL);
    conn_take_output(c2, NULL);

    conn_close(c, "test");
    assert_false(p->up);
    assert_null(p->conn);
    assert_null(p->mons);
    assert_null(p->links);
    assert_int_equal(kt_reg(n)->count, 0);
    assert_int_equal(n->procs->mh_count, 0); /* c2's monitors fired too */
    assert_true(alive(t, mon_b));
    assert_false(alive(t, link_b));
    assert_false(alive(t, link_b2));
    assert_int_equal(n->procs->live, live0 + 1);
    /* the second peer saw both linked buckets end with noconnection */
    struct kt_frames f;
    struct dist_msg m;
    kt_out(c2, &f);
    int downs = 0;
    while (kt_next(&f, &m)) {
        assert_int_equal(m.op, DOP_PAYLOAD_MONITOR_P_EXIT);
        assert_true(kt_span_atom(m.reason, "noconnection"));
        downs++;
    }
    assert_int_equal(downs, 2);
    buf_free(&f.raw);
    /* nothing is left for the old peer: the same name comes back clean */
    struct conn *c3 = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    assert_ptr_equal(c3->peer, p);
    assert_null(p->mons);
    conn_reap(&n->wire);
    buf_free(&fr);
    kt_node_free(t);
}

/* proc_peer_down on a peer struct filled by hand (no connection ever):
 * our monitors on its pids fire to the registry, its monitors on ours and
 * its links are dropped, a linked process gets noconnection. */
static void test_peer_down_by_hand(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    struct peer *p = node_peer_get(n, "hand@made");
    assert_non_null(p);
    uint32_t b1 = spawn_bucket(t), b2 = spawn_bucket(t);
    /* a monitor the peer holds on b1 */
    struct mon *m = mon_alloc(n);
    m->ref = (struct eref){p->idx, 3, 3, {1, 2, 3}};
    m->watcher = (struct epid){p->idx, 10, 0, 3};
    m->target = kt_local_pid(t, b1);
    m->local_target = true;
    m->peer = p;
    mon_insert(n, m);
    /* the registry's monitor on a pid of the peer (a registered name) */
    struct epid rp = {p->idx, 11, 0, 3};
    uint32_t slot = reg_add(kt_reg(n), (const uint8_t *)"w\1x", 3, &rp);
    struct mon *rm = mon_alloc(n);
    node_make_ref(n, &rm->ref);
    proc_pid(n, kt_registry(n), &rm->watcher);
    rm->target = rp;
    rm->tag = slot;
    rm->peer = p;
    mon_insert(n, rm);
    kt_reg(n)->ents[slot].mon = rm;
    /* links: b2 with a pid of the peer (both directions are one record here) */
    assert_non_null(lnk_add(n, b2, &rp, p));
    assert_int_equal(n->procs->mh_count, 2);
    proc_peer_down(n, p);
    assert_null(p->mons);
    assert_null(p->links);
    assert_int_equal(n->procs->mh_count, 0);
    assert_int_equal(kt_reg(n)->count, 0);
    assert_true(alive(t, b1));
    assert_false(alive(t, b2));
    assert_null(proc_by_id(n, b1)->mons);
    /* twice is harmless */
    proc_peer_down(n, p);
    kt_node_free(t);
}

/* A peer that monitors by name and demonitors; duplicate refs kept once;
 * DEMONITOR_P from another peer for the same ref is ignored. */
static void test_monitor_by_name_and_demonitor(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    struct conn *c2 = kt_conn(t, "other@host", KT_BEAM_FLAGS);
    struct buf fr;
    buf_init(&fr);
    for (int i = 0; i < 2; i++) { /* the same ref twice */
        size_t st = kt_frame(&fr, 4, DOP_MONITOR_P);
        kt_pid(&fr, KT_PEER, 1, 0, KT_PEER_CREATION);
        kt_atom(&fr, "Elixir.KV.Registry");
        kt_ref(&fr, KT_PEER, KT_PEER_CREATION, 9);
        kt_frame_end(&fr, st);
    }
    assert_true(kt_feed(c, &fr));
    assert_int_equal(n->procs->mh_count, 1);
    struct mon *m = proc_by_id(n, kt_registry(n))->mons;
    assert_non_null(m);
    assert_int_equal(m->name, 1); /* the registry's name index */
    /* DEMONITOR_P for that ref from another peer, as the first peer's
     * process: invalid (erts closes), and the monitor stays */
    buf_reset(&fr);
    size_t st = kt_frame(&fr, 4, DOP_DEMONITOR_P);
    kt_pid(&fr, KT_PEER, 1, 0, KT_PEER_CREATION);
    kt_atom(&fr, "Elixir.KV.Registry");
    kt_ref(&fr, KT_PEER, KT_PEER_CREATION, 9);
    kt_frame_end(&fr, st);
    assert_false(kt_feed(c2, &fr));
    assert_int_equal(n->procs->mh_count, 1);
    assert_true(kt_feed(c, &fr));
    assert_int_equal(n->procs->mh_count, 0);
    /* monitor of an unknown name: noproc at once, From is the name */
    buf_reset(&fr);
    st = kt_frame(&fr, 4, DOP_MONITOR_P);
    kt_pid(&fr, KT_PEER, 1, 0, KT_PEER_CREATION);
    kt_atom(&fr, "nobody_here");
    kt_ref(&fr, KT_PEER, KT_PEER_CREATION, 10);
    kt_frame_end(&fr, st);
    conn_take_output(c, NULL);
    assert_true(kt_feed(c, &fr));
    struct kt_frames f;
    struct dist_msg dm;
    kt_out(c, &f);
    assert_true(kt_next(&f, &dm));
    assert_int_equal(dm.op, DOP_PAYLOAD_MONITOR_P_EXIT);
    assert_true(kt_span_atom(dm.from, "nobody_here"));
    assert_true(kt_span_atom(dm.reason, "noproc"));
    buf_free(&f.raw);
    /* an old peer without EXIT_PAYLOAD gets the 5-tuple MONITOR_P_EXIT */
    struct conn *c3 = kt_conn(t, "old@host", KT_BEAM_FLAGS & ~DFLAG_EXIT_PAYLOAD);
    buf_reset(&fr);
    st = kt_frame(&fr, 4, DOP_MONITOR_P);
    kt_pid(&fr, "old@host", 1, 0, KT_PEER_CREATION);
    kt_atom(&fr, "nobody_here");
    kt_ref(&fr, "old@host", KT_PEER_CREATION, 10);
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c3, &fr));
    kt_out(c3, &f);
    assert_true(kt_next(&f, &dm));
    assert_int_equal(dm.op, DOP_MONITOR_P_EXIT);
    assert_true(kt_span_atom(dm.reason, "noproc"));
    buf_free(&f.raw);
    buf_free(&fr);
    kt_node_free(t);
}

/* A peer may only link, unlink, exit or monitor as one of its own
 * processes (erts dist.c: invalid_message closes the connection).  Found
 * writing fuzz_conn's invariant (after the peer's connection goes, nothing
 * may refer to it): a LINK naming a pid of a third node as sender left a
 * link that no connection loss removed, and the node dialled that third
 * node when the bucket ended; a local pid as sender made a local link. */
static void test_spoofed_sender_closes(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    static const struct {
        int op, arity;
        const char *from_node;
    } cases[] = {
        {DOP_LINK, 3, "third@host"},      {DOP_LINK, 3, KT_NODE},
        {DOP_UNLINK_ID, 4, "third@host"}, {DOP_PAYLOAD_EXIT, 3, "third@host"},
        {DOP_PAYLOAD_EXIT2, 3, "third@host"}, {DOP_EXIT2, 4, KT_NODE},
        {DOP_MONITOR_P, 4, "third@host"}, {DOP_DEMONITOR_P, 4, KT_NODE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
        uint32_t b = spawn_bucket(t);
        struct buf fr;
        buf_init(&fr);
        size_t st = kt_frame(&fr, (uint32_t)cases[i].arity, (uint8_t)cases[i].op);
        if (cases[i].op == DOP_UNLINK_ID)
            kt_small(&fr, 7);
        kt_pid(&fr, cases[i].from_node, 1, 0,
               strcmp(cases[i].from_node, KT_NODE) ? 5 : KT_CREATION);
        kt_put_local_pid(t, &fr, b);
        if (cases[i].op == DOP_MONITOR_P || cases[i].op == DOP_DEMONITOR_P)
            kt_ref(&fr, KT_PEER, KT_PEER_CREATION, 1);
        if (cases[i].op == DOP_EXIT2)
            kt_atom(&fr, "kill");
        if (cases[i].op == DOP_PAYLOAD_EXIT || cases[i].op == DOP_PAYLOAD_EXIT2) {
            ext_put_version(&fr);
            kt_atom(&fr, "kill");
        }
        kt_frame_end(&fr, st);
        if (kt_feed(c, &fr))
            fail_msg("case %zu (op %d from %s): connection kept", i, cases[i].op,
                     cases[i].from_node);
        assert_true(alive(t, b));
        for (uint32_t id = 0; id < n->procs->n; id++)
            assert_null(n->procs->v[id].links);
        assert_int_equal(n->procs->mh_count, 0);
        conn_reap(&n->wire);
        proc_exit(n, b, R_NORMAL);
        buf_free(&fr);
    }
    kt_node_free(t);
}

/* MONITOR_P of a pid on a third node: not ours to watch (invalid_message). */
static void test_monitor_foreign_target_closes(void **state)
{
    struct tnode *t = kt_node_new();
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    struct buf fr;
    buf_init(&fr);
    size_t st = kt_frame(&fr, 4, DOP_MONITOR_P);
    kt_pid(&fr, KT_PEER, 1, 0, KT_PEER_CREATION);
    kt_pid(&fr, "third@host", 2, 0, 5);
    kt_ref(&fr, KT_PEER, KT_PEER_CREATION, 1);
    kt_frame_end(&fr, st);
    assert_false(kt_feed(c, &fr));
    assert_int_equal(t->n.procs->mh_count, 0);
    buf_free(&fr);
    kt_node_free(t);
}


/* Peers nothing refers to are freed at the end of the turn; indexes are not
 * reused, and a peer holding a monitor is kept. */
static void test_unused_peers_are_swept(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    uint32_t live0 = n->live_peers;
    struct peer *a = node_peer_get(n, "gone@host");
    assert_non_null(a);
    uint32_t ia = a->idx;
    struct peer *b = node_peer_get(n, "kept@host");
    assert_non_null(b);
    struct mon *m = mon_alloc(n);
    assert_non_null(m);
    node_make_ref(n, &m->ref);
    proc_pid(n, kt_registry(n), &m->watcher);
    m->target = (struct epid){b->idx, 1, 0, 1};
    m->peer = b;
    mon_insert(n, m);
    assert_int_equal(n->live_peers, live0 + 2);
    node_peers_sweep(n);
    assert_null(node_peer_find(n, "gone@host"));
    assert_null(node_peer(n, ia));
    assert_ptr_equal(node_peer_find(n, "kept@host"), b);
    assert_int_equal(n->live_peers, live0 + 1);
    struct peer *again = node_peer_get(n, "gone@host");
    assert_non_null(again);
    assert_int_not_equal(again->idx, ia);
    mon_remove(n, m);
    node_peer_release(n, b);
    node_peers_sweep(n);
    assert_int_equal(n->live_peers, live0);
    kt_node_free(t);
}

/* ---- DOWN and EXIT as messages (runtime/gen.h) ---- */

/* A watcher that keeps the last message handle_info got, and its view. */
static struct buf last_msg;
static struct gen_sig last_sig;
static int infos;

static enum gen_result watcher_info(struct gen *g, struct span msg, const struct gen_sig *sig,
                                    struct span *stop)
{
    buf_reset(&last_msg);
    buf_put(&last_msg, msg.p, msg.n);
    memset(&last_sig, 0, sizeof last_sig);
    if (sig)
        last_sig = *sig;
    infos++;
    return GEN_NOREPLY;
}

static const struct behaviour watcher_beh = {.name = "watcher", .handle_info = watcher_info};
static const struct behaviour trapper_beh = {
    .name = "trapper", .flags = GEN_TRAP_EXIT, .handle_info = watcher_info};

/* {'DOWN', Ref, process, Pid, Reason} for a monitor (gen_monitor) and for
 * a spawn monitor (gen_monitor_child), in the BEAM's shape, with the view
 * beside it; {'EXIT', From, Reason} for a process that traps exits. */
static void test_down_and_exit_messages(void **state)
{
    struct tnode *t = kt_node_new();
    struct node *n = &t->n;
    buf_init(&last_msg);
    infos = 0;
    uint32_t w = proc_spawn(n, &watcher_beh, NULL);
    uint32_t b = proc_spawn(n, &bucket_behaviour, NULL);
    assert_int_not_equal(w, PROC_NONE);
    assert_int_not_equal(b, PROC_NONE);
    struct epid bp = kt_local_pid(t, b);
    struct gen g = {n, w, NULL};
    struct mon *m = NULL;
    assert_true(gen_monitor(&g, &bp, 42, &m));
    assert_non_null(m);
    struct eref ref = *gen_monitor_ref(m);
    proc_exit(n, b, R_SHUTDOWN);
    assert_int_equal(infos, 1);
    /* the term, decoded as a BEAM process would match it */
    struct cur c = cur_make(last_msg.data, last_msg.len);
    uint32_t ar;
    struct eref r2;
    struct epid p2;
    assert_true(ext_get_tuple(&c, &ar));
    assert_int_equal(ar, 5);
    assert_true(ext_atom_eq(&c, "DOWN"));
    assert_true(ext_skip(&c, NULL));
    assert_true(node_get_ref(n, &c, &r2));
    assert_true(eref_eq(&r2, &ref));
    assert_true(ext_atom_eq(&c, "process"));
    assert_true(ext_skip(&c, NULL));
    assert_true(node_get_pid(n, &c, &p2));
    assert_true(epid_eq(&p2, &bp));
    assert_true(ext_atom_eq(&c, "shutdown"));
    assert_true(ext_skip(&c, NULL));
    assert_int_equal(cur_left(&c), 0);
    /* the view says the same, with the watcher's tag */
    assert_int_equal(last_sig.kind, GEN_SIG_DOWN);
    assert_int_equal(last_sig.tag, 42);
    assert_true(eref_eq(&last_sig.ref, &ref));
    assert_true(epid_eq(&last_sig.pid, &bp));
    /* a spawn monitor: DOWN first, with its tag, and no monitor record */
    uint32_t b2 = proc_spawn(n, &bucket_behaviour, NULL);
    struct epid bp2 = kt_local_pid(t, b2);
    uint32_t mons = n->procs->mh_count;
    gen_monitor_child(&g, &bp2, 7);
    assert_int_equal(n->procs->mh_count, mons);
    proc_exit(n, b2, R_NORMAL);
    assert_int_equal(infos, 2);
    assert_int_equal(last_sig.tag, 7);
    assert_true(epid_eq(&last_sig.pid, &bp2));
    c = cur_make(last_msg.data, last_msg.len);
    assert_true(ext_get_tuple(&c, &ar) && ar == 5 && ext_atom_eq(&c, "DOWN"));
    /* demonitored: no DOWN */
    uint32_t b3 = proc_spawn(n, &bucket_behaviour, NULL);
    struct epid bp3 = kt_local_pid(t, b3);
    gen_monitor_child(&g, &bp3, 8);
    gen_demonitor_child(&g, &bp3);
    proc_exit(n, b3, R_NORMAL);
    assert_int_equal(infos, 2);
    /* EXIT: an exit signal to a process that traps exits is a message */
    uint32_t tr = proc_spawn(n, &trapper_beh, NULL);
    struct epid from = kt_local_pid(t, w);
    proc_exit_signal(n, tr, &from, R_SHUTDOWN, false);
    assert_int_equal(infos, 3);
    assert_non_null(proc_by_id(n, tr)); /* still alive */
    c = cur_make(last_msg.data, last_msg.len);
    assert_true(ext_get_tuple(&c, &ar));
    assert_int_equal(ar, 3);
    assert_true(ext_atom_eq(&c, "EXIT"));
    assert_true(ext_skip(&c, NULL));
    assert_true(node_get_pid(n, &c, &p2));
    assert_true(epid_eq(&p2, &from));
    assert_true(ext_atom_eq(&c, "shutdown"));
    assert_int_equal(last_sig.kind, GEN_SIG_EXIT);
    /* kill is not trappable */
    proc_exit_signal(n, tr, &from, R_KILL, false);
    assert_null(proc_by_id(n, tr));
    /* a plain process does not trap: the signal ends it */
    proc_exit_signal(n, w, &from, R_SHUTDOWN, false);
    assert_null(proc_by_id(n, w));
    buf_free(&last_msg);
    kt_node_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawn_exit_serial),
        cmocka_unit_test(test_registered_names),
        cmocka_unit_test(test_monitor_insert_find_remove),
        cmocka_unit_test(test_monitor_hash_growth),
        cmocka_unit_test(test_local_monitor_fires_to_registry),
        cmocka_unit_test(test_exit_signal_rules),
        cmocka_unit_test(test_link_exit_rules),
        cmocka_unit_test(test_exit_signals_from_peer),
        cmocka_unit_test(test_noconnection_cleanup),
        cmocka_unit_test(test_peer_down_by_hand),
        cmocka_unit_test(test_monitor_by_name_and_demonitor),
        cmocka_unit_test(test_spoofed_sender_closes),
        cmocka_unit_test(test_monitor_foreign_target_closes),
        cmocka_unit_test(test_unused_peers_are_swept),
        cmocka_unit_test(test_down_and_exit_messages),
    };
    return cmocka_run_group_tests_name("proc", tests, NULL, NULL);
}
