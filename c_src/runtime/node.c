/* node.c - this node (see node.h): start-up (listener, epmd), the peer
 * table, the acceptor's status decision, routing of decoded signals to
 * processes and of outgoing signals to connections, and shutdown. */
#include "runtime/node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ei.h>

#include "wire/conn.h"
#include "proto/dist.h"
#include "wire/epmd.h"
#include "runtime/gen.h"
#include "proto/hs.h"
#include "base/log.h"
#include "runtime/proc.h"
#include "services/registry.h"
#include "wire/tls.h"

#define MAX_PEERS 65536

/* --- peers --- */

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

struct peer *node_peer(struct node *n, uint32_t idx)
{
    return idx > 0 && idx < n->npeers ? n->peers[idx] : NULL;
}

struct peer *node_peer_find(struct node *n, const char *name)
{
    uint64_t h = name_hash(name);
    for (struct peer *p = n->peer_hash[h & (n->peer_hash_cap - 1)]; p; p = p->h_next)
        if (p->hash == h && strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

struct peer *node_peer_get(struct node *n, const char *name)
{
    struct peer *p = node_peer_find(n, name);
    if (p)
        return p;
    size_t len = strlen(name);
    if (n->live_peers >= MAX_PEERS || n->npeers == UINT32_MAX || len == 0 || len > 255 ||
        !hs_valid_node_name(name, len))
        return NULL;
    if (n->npeers == n->cappeers) {
        uint32_t cap = n->cappeers * 2;
        struct peer **v = realloc(n->peers, cap * sizeof *v);
        if (!v)
            return NULL;
        n->peers = v;
        n->cappeers = cap;
    }
    p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->idx = n->npeers;
    memcpy(p->name, name, len + 1);
    buf_init(&p->atom);
    ext_put_atom(&p->atom, name, len);
    p->hash = name_hash(name);
    n->peers[n->npeers++] = p;
    n->live_peers++;
    uint32_t b = p->hash & (n->peer_hash_cap - 1);
    p->h_next = n->peer_hash[b];
    n->peer_hash[b] = p;
    node_peer_release(n, p); /* freed at the turn's end unless it gets used */
    return p;
}

/* A peer that may have become unused: looked at when the loop turn ends,
 * never earlier, because callers up the stack may still hold it. */
void node_peer_release(struct node *n, struct peer *p)
{
    if (p->sweep)
        return;
    p->sweep = true;
    p->sweep_next = n->sweep;
    n->sweep = p;
}

/* Free the released peers that nothing refers to: no connection, no
 * monitors, no links (registry entries for remote pids always hold a
 * monitor).  Indexes are never reused, so a stale index finds NULL, never
 * another node. */
void node_peers_sweep(struct node *n)
{
    while (n->sweep) {
        struct peer *p = n->sweep;
        n->sweep = p->sweep_next;
        p->sweep = false;
        if (p->conn || p->mons || p->links)
            continue;
        struct peer **pp = &n->peer_hash[p->hash & (n->peer_hash_cap - 1)];
        while (*pp && *pp != p)
            pp = &(*pp)->h_next;
        if (*pp)
            *pp = p->h_next;
        n->peers[p->idx] = NULL;
        if (n->last_peer == p)
            n->last_peer = NULL;
        n->live_peers--;
        buf_free(&p->atom);
        free(p);
    }
}

bool node_connect(struct node *n, struct peer *p)
{
    if (p->conn)
        return true;
    if (n->stopping)
        return false;
    if (n->nconns >= n->cfg->max_connections) {
        LOGW("cannot connect to %s: --max-connections %u reached", p->name,
             n->cfg->max_connections);
        return false;
    }
    LOGD("connecting to %s", p->name);
    return conn_connect(n, p) != NULL && p->conn != NULL;
}

/* --- identities --- */

struct span node_atom_of(struct node *n, uint32_t idx)
{
    struct buf *b = idx == 0 || !node_peer(n, idx) ? &n->atom : &n->peers[idx]->atom;
    struct span s = {b->data, b->len};
    return s;
}

bool node_put_pid(struct node *n, struct buf *b, const struct epid *p)
{
    if (p->node != 0 && !node_peer(n, p->node))
        return false;
    return ext_put_pid(b, node_atom_of(n, p->node), p->id, p->serial, p->creation);
}

bool node_put_ref(struct node *n, struct buf *b, const struct eref *r)
{
    if (r->node != 0 && !node_peer(n, r->node))
        return false;
    return ext_put_ref(b, node_atom_of(n, r->node), r->creation, r->w, r->len);
}

void node_make_ref(struct node *n, struct eref *r)
{
    uint64_t c = ++n->ref_ctr;
    r->node = 0;
    r->creation = n->creation;
    r->len = 3;
    r->w[0] = (uint32_t)(c & 0x3FFFF);
    r->w[1] = (uint32_t)(c >> 18);
    r->w[2] = (uint32_t)(n->hash_seed >> 32); /* differs per node run */
}

bool eref_eq(const struct eref *a, const struct eref *b)
{
    if (a->node != b->node || a->creation != b->creation || a->len != b->len)
        return false;
    for (int i = 0; i < a->len; i++)
        if (a->w[i] != b->w[i])
            return false;
    return true;
}

static bool intern(struct node *n, const char *name, uint32_t *idx)
{
    if (strcmp(name, n->name) == 0) {
        *idx = 0;
        return true;
    }
    struct peer *p = node_peer_get(n, name);
    if (!p)
        return false;
    *idx = p->idx;
    n->last_peer = p;
    return true;
}

/* Fast path for the common case: the node atom is byte-identical to ours
 * or to the last peer's (BEAM sends SMALL_ATOM_UTF8_EXT, as we store them),
 * so no copy, no hash, no strcmp. */
static bool match_node_atom(struct node *n, struct cur *t, uint32_t *idx)
{
    /* the peer's first: most pids and refs in its frames are its own */
    const struct buf *cand[2] = {n->last_peer ? &n->last_peer->atom : NULL, &n->atom};
    for (int i = 0; i < 2; i++) {
        const struct buf *a = cand[i];
        if (a && cur_left(t) >= a->len && memcmp(cur_ptr(t), a->data, a->len) == 0) {
            t->pos += a->len;
            *idx = i == 1 ? 0 : n->last_peer->idx;
            return true;
        }
    }
    return false;
}

bool node_get_pid(struct node *n, struct cur *c, struct epid *p)
{
    struct cur t = *c;
    uint8_t tag;
    if (cur_u8(&t, &tag) && tag == ERL_NEW_PID_EXT && match_node_atom(n, &t, &p->node) &&
        cur_n32(&t, &p->id) && cur_n32(&t, &p->serial) && cur_n32(&t, &p->creation)) {
        *c = t;
        return true;
    }
    struct ext_pid x;
    if (!ext_get_pid(c, &x) || !intern(n, x.node, &p->node))
        return false;
    p->id = x.id;
    p->serial = x.serial;
    p->creation = x.creation;
    return true;
}

bool node_get_ref(struct node *n, struct cur *c, struct eref *r)
{
    struct cur t = *c;
    uint8_t tag;
    uint16_t len;
    if (cur_u8(&t, &tag) && tag == ERL_NEWER_REFERENCE_EXT && cur_n16(&t, &len) && len >= 1 &&
        len <= 5 && match_node_atom(n, &t, &r->node) && cur_n32(&t, &r->creation)) {
        bool ok = true;
        memset(r->w, 0, sizeof r->w);
        for (int i = 0; i < len && ok; i++)
            ok = cur_n32(&t, &r->w[i]);
        if (ok) {
            r->len = (uint8_t)len;
            *c = t;
            return true;
        }
    }
    struct ext_ref x;
    if (!ext_get_ref(c, &x) || !intern(n, x.node, &r->node))
        return false;
    r->creation = x.creation;
    r->len = x.len;
    memset(r->w, 0, sizeof r->w);
    memcpy(r->w, x.w, sizeof(uint32_t) * x.len);
    return true;
}

/* --- outgoing signals --- */

/* Start a frame to peer p (connecting on demand).  NULL: unreachable. */
static struct buf *frame_begin(struct node *n, struct peer *p, struct conn **cp, size_t *start)
{
    if (!p->conn && !node_connect(n, p))
        return NULL;
    struct conn *c = p->conn;
    struct buf *b = conn_frame_buf(c);
    if (!b)
        return NULL;
    *cp = c;
    *start = dist_frame_begin(b);
    ext_put_version(b);
    return b;
}

static void frame_end(struct conn *c, struct buf *b, size_t start)
{
    dist_frame_end(b, start);
    conn_frame_done(c);
}

void node_send(struct node *n, const struct epid *to, struct span msg)
{
    if (to->node == 0) {
        LOGD("local send dropped"); /* local processes never call each other */
        return;
    }
    struct peer *p = node_peer(n, to->node);
    struct conn *c;
    size_t st;
    struct buf *b = p ? frame_begin(n, p, &c, &st) : NULL;
    if (!b)
        return; /* unreachable: dropped, as the BEAM does */
    ext_put_tuple(b, 3);
    buf_put(b, (const uint8_t[]){97, DOP_SEND}, 2);
    ext_put_atom(b, "", 0);
    node_put_pid(n, b, to);
    ext_put_version(b);
    buf_put(b, msg.p, msg.n);
    frame_end(c, b, st);
}

void node_send_raw(struct node *n, struct span to_pid, struct span msg)
{
    struct cur c = cur_make(to_pid.p, to_pid.n);
    struct epid to;
    if (node_get_pid(n, &c, &to))
        node_send(n, &to, msg);
}

static void put_small(struct buf *b, uint8_t v)
{
    buf_put_u8(b, 97);
    buf_put_u8(b, v);
}

static void send_mon_op(struct node *n, struct peer *p, int op, const struct epid *from,
                        const struct epid *to, const struct eref *ref)
{
    struct conn *c;
    size_t st;
    struct buf *b = frame_begin(n, p, &c, &st);
    if (!b)
        return;
    ext_put_tuple(b, 4);
    put_small(b, (uint8_t)op);
    node_put_pid(n, b, from);
    node_put_pid(n, b, to);
    node_put_ref(n, b, ref);
    frame_end(c, b, st);
}

void node_send_monitor_p(struct node *n, struct peer *p, const struct epid *from,
                         const struct epid *to, const struct eref *ref)
{
    send_mon_op(n, p, DOP_MONITOR_P, from, to, ref);
}

void node_send_demonitor_p(struct node *n, struct peer *p, const struct epid *from,
                           const struct epid *to, const struct eref *ref)
{
    send_mon_op(n, p, DOP_DEMONITOR_P, from, to, ref);
}

/* Exit-carrying signals come in two forms: the reason as the last control
 * field, or (EXIT_PAYLOAD negotiated) as a payload term after the control
 * tuple.  exit_begin writes the tuple header and op for the peer's form;
 * the caller writes the other fields; exit_end adds the reason. */
static struct buf *exit_begin(struct node *n, struct peer *p, uint8_t op, uint8_t payload_op,
                              uint32_t fields, struct conn **c, size_t *st)
{
    struct buf *b = frame_begin(n, p, c, st);
    if (!b)
        return NULL;
    bool payload = p->flags & DFLAG_EXIT_PAYLOAD;
    ext_put_tuple(b, 1 + fields + (payload ? 0 : 1));
    put_small(b, payload ? payload_op : op);
    return b;
}

static void exit_end(struct peer *p, struct conn *c, struct buf *b, size_t st, struct span reason)
{
    if (p->flags & DFLAG_EXIT_PAYLOAD)
        ext_put_version(b);
    buf_put(b, reason.p, reason.n);
    frame_end(c, b, st);
}

void node_send_monitor_exit(struct node *n, struct peer *p, const struct epid *from,
                            const char *from_name, const struct epid *to,
                            const struct eref *ref, struct span reason)
{
    struct conn *c;
    size_t st;
    struct buf *b;
    if (!p->up ||
        !(b = exit_begin(n, p, DOP_MONITOR_P_EXIT, DOP_PAYLOAD_MONITOR_P_EXIT, 3, &c, &st)))
        return;
    if (from_name)
        ext_put_atomz(b, from_name);
    else
        node_put_pid(n, b, from);
    node_put_pid(n, b, to);
    node_put_ref(n, b, ref);
    exit_end(p, c, b, st, reason);
}

void node_send_exit(struct node *n, struct peer *p, const struct epid *from,
                    const struct epid *to, struct span reason)
{
    struct conn *c;
    size_t st;
    struct buf *b;
    if (!p->up || !(b = exit_begin(n, p, DOP_EXIT, DOP_PAYLOAD_EXIT, 2, &c, &st)))
        return;
    node_put_pid(n, b, from);
    node_put_pid(n, b, to);
    exit_end(p, c, b, st, reason);
}

void node_send_unlink_ack(struct node *n, struct peer *p, uint64_t id, const struct epid *from,
                          const struct epid *to)
{
    struct conn *c;
    size_t st;
    struct buf *b = frame_begin(n, p, &c, &st);
    if (!b)
        return;
    ext_put_tuple(b, 4);
    put_small(b, DOP_UNLINK_ID_ACK);
    ext_put_u64(b, id);
    node_put_pid(n, b, from);
    node_put_pid(n, b, to);
    frame_end(c, b, st);
}

/* --- incoming signals --- */

/* The local process a control field names (pid of this node or a
 * registered name); PROC_NONE if none is alive.  *name_idx is set for
 * names. */
static uint32_t resolve_local(struct node *n, struct span t, int *name_idx, bool *foreign)
{
    struct cur c = cur_make(t.p, t.n);
    *name_idx = -1;
    *foreign = false;
    struct span a;
    if (ext_atom_utf8(&c, &a)) { /* the usual case: compare in place */
        for (uint32_t i = 0; a.n < sizeof n->procs->names[i].name && i < n->procs->nnames; i++)
            if (memcmp(n->procs->names[i].name, a.p, a.n) == 0 && !n->procs->names[i].name[a.n]) {
                *name_idx = (int)i;
                return n->procs->names[i].id;
            }
        return PROC_NONE;
    }
    if (ext_is_atom(&c)) {
        char name[EXT_ATOM_MAX + 1];
        if (!ext_get_atom(&c, name, sizeof name, NULL))
            return PROC_NONE;
        for (uint32_t i = 0; i < n->procs->nnames; i++)
            if (strcmp(n->procs->names[i].name, name) == 0) {
                *name_idx = (int)i;
                return n->procs->names[i].id;
            }
        return PROC_NONE;
    }
    struct epid pid;
    if (!node_get_pid(n, &c, &pid))
        return PROC_NONE;
    if (pid.node != 0) {
        *foreign = true;
        return PROC_NONE;
    }
    return proc_get(n, &pid) ? pid.id : PROC_NONE;
}

static void handle_monitor(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct epid watcher;
    struct eref ref;
    struct cur fc = cur_make(m->from.p, m->from.n), rc = cur_make(m->ref.p, m->ref.n);
    if (!node_get_pid(n, &fc, &watcher) || !node_get_ref(n, &rc, &ref))
        return;
    int name_idx;
    bool foreign;
    uint32_t id = resolve_local(n, m->to, &name_idx, &foreign);
    if (id == PROC_NONE) {
        /* noproc at once; From in the exit is what the watcher named, so
         * the fields go back as they came */
        struct conn *c;
        size_t st;
        struct buf *b =
            exit_begin(n, p, DOP_MONITOR_P_EXIT, DOP_PAYLOAD_MONITOR_P_EXIT, 3, &c, &st);
        if (!b)
            return;
        buf_put(b, m->to.p, m->to.n);
        buf_put(b, m->from.p, m->from.n);
        buf_put(b, m->ref.p, m->ref.n);
        exit_end(p, c, b, st, R_NOPROC);
        return;
    }
    if (mon_find(n, &ref))
        return; /* duplicate reference: keep the first */
    struct mon *mo = mon_alloc(n);
    if (!mo)
        return;
    mo->ref = ref;
    mo->watcher = watcher;
    proc_pid(n, id, &mo->target);
    mo->local_target = true;
    mo->peer = p;
    mo->name = (int16_t)name_idx;
    mon_insert(n, mo);
}

static void handle_demonitor(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct eref ref;
    struct cur rc = cur_make(m->ref.p, m->ref.n);
    if (!node_get_ref(n, &rc, &ref))
        return;
    struct mon *mo = mon_find(n, &ref);
    if (mo && mo->local_target && mo->peer == p)
        mon_remove(n, mo);
}

static void handle_monitor_exit(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct eref ref;
    struct cur rc = cur_make(m->ref.p, m->ref.n);
    if (!node_get_ref(n, &rc, &ref))
        return;
    struct mon *mo = mon_find(n, &ref);
    if (mo && !mo->local_target && mo->peer == p)
        mon_fire(n, mo, m->reason);
}

static bool get_two_pids(struct node *n, const struct dist_msg *m, struct epid *from,
                         struct epid *to)
{
    struct cur fc = cur_make(m->from.p, m->from.n), tc = cur_make(m->to.p, m->to.n);
    return node_get_pid(n, &fc, from) && node_get_pid(n, &tc, to);
}

static void handle_link(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct epid from, to;
    if (!get_two_pids(n, m, &from, &to))
        return;
    if (!proc_get(n, &to)) {
        node_send_exit(n, p, &to, &from, R_NOPROC);
        return;
    }
    lnk_add(n, to.id, &from, from.node ? node_peer(n, from.node) : NULL);
}

static void handle_unlink(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct epid from, to;
    if (!get_two_pids(n, m, &from, &to))
        return;
    if (proc_get(n, &to)) {
        struct lnk *l = lnk_find(n, to.id, &from);
        if (l)
            lnk_remove(n, l);
    }
    if (m->has_id)
        node_send_unlink_ack(n, p, m->id, &to, &from);
}

static void handle_exit(struct node *n, struct peer *p, const struct dist_msg *m, bool link)
{
    struct epid from, to;
    if (!get_two_pids(n, m, &from, &to) || !proc_get(n, &to))
        return;
    proc_exit_signal(n, to.id, &from, m->reason, link);
}

/* erts dist.c refuses ("invalid_message": the connection closes) a link,
 * unlink, exit or monitor whose sender is not a process of the sending
 * node, one aimed at a process of a third node, and a monitor of a process
 * on a third node.  So every link and monitor belongs to the peer whose
 * connection it goes with, and a peer cannot make us dial other nodes. */
static const char *invalid_signal(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct epid pid;
    struct cur c = cur_make(m->from.p, m->from.n);
    switch (m->kind) {
    case DK_LINK:
    case DK_UNLINK:
    case DK_UNLINK_ACK:
    case DK_EXIT:
    case DK_EXIT2:
    case DK_MONITOR:
    case DK_DEMONITOR:
        if (!node_get_pid(n, &c, &pid) || pid.node != p->idx)
            return "sender is not a process of the peer";
        break;
    default:
        return NULL;
    }
    c = cur_make(m->to.p, m->to.n);
    if (ext_is_pid(&c) && (!node_get_pid(n, &c, &pid) || pid.node != 0))
        return "target is a process of another node";
    return NULL;
}

void node_handle(struct node *n, struct peer *p, const struct dist_msg *m)
{
    const char *bad = invalid_signal(n, p, m);
    if (bad) {
        LOGW("connection to %s (%s): %s (control operation %d), disconnecting", p->name,
             p->conn ? p->conn->addr : "?", bad, m->op);
        if (p->conn)
            conn_close(p->conn, NULL);
        return;
    }
    switch (m->kind) {
    case DK_SEND: {
        struct epid to;
        struct cur tc = cur_make(m->to.p, m->to.n);
        if (node_get_pid(n, &tc, &to) && proc_get(n, &to))
            gen_deliver(n, to.id, m->msg);
        break; /* unknown or dead pid: dropped, as the BEAM does */
    }
    case DK_REG_SEND: {
        int name_idx;
        bool foreign;
        uint32_t id = resolve_local(n, m->to, &name_idx, &foreign);
        if (id != PROC_NONE)
            gen_deliver(n, id, m->msg);
        else
            LOGD("message to an unregistered name dropped");
        break;
    }
    case DK_MONITOR: handle_monitor(n, p, m); break;
    case DK_DEMONITOR: handle_demonitor(n, p, m); break;
    case DK_MONITOR_EXIT: handle_monitor_exit(n, p, m); break;
    case DK_LINK: handle_link(n, p, m); break;
    case DK_UNLINK: handle_unlink(n, p, m); break;
    case DK_UNLINK_ACK: break;
    case DK_EXIT: handle_exit(n, p, m, true); break;
    case DK_EXIT2: handle_exit(n, p, m, false); break;
    case DK_GROUP_LEADER: break;
    }
}

/* --- connection life --- */

void node_conn_status(struct node *n, struct conn *c)
{
    const char *name = c->hs.peer_name;
    if (strcmp(name, n->name) == 0) {
        conn_set_status(c, "not_allowed");
        return;
    }
    struct peer *p = node_peer_find(n, name); /* lookup only: no state per stranger */
    if (!p || !p->conn || p->conn == c) {
        conn_set_status(c, "ok");
        return;
    }
    if (p->up) {
        conn_set_status(c, "alive");
        return;
    }
    /* Simultaneous connect: the node with the greater name keeps its own
     * outgoing attempt (dist_util's rule). */
    if (strcmp(n->name, name) > 0) {
        conn_set_status(c, "nok");
        return;
    }
    struct conn *old = p->conn;
    conn_set_status(c, "ok_simultaneous");
    p->conn = NULL; /* so closing old is not a nodedown */
    conn_move_output(old, c);
    old->peer = NULL;
    conn_close(old, NULL);
    c->peer = p;
    p->conn = c;
}

void node_conn_up(struct node *n, struct conn *c)
{
    struct peer *p = c->peer;
    if (!c->outgoing) {
        p = node_peer_get(n, c->hs.peer_name); /* proven now: intern */
        if (!p) {
            conn_close(c, "peer table full");
            return;
        }
        if (p->conn && p->conn != c) {
            struct conn *old = p->conn;
            if (old->state == CS_UP || p->up) {
                conn_close(old, "replaced by a new connection from the same node");
            } else {
                /* our own attempt still pending: its queued frames move here */
                p->conn = NULL;
                conn_move_output(old, c);
                old->peer = NULL;
                conn_close(old, NULL);
            }
        }
        c->peer = p;
        p->conn = c;
    }
    p->up = true;
    p->flags = c->hs.peer_flags;
    p->creation = c->hs.peer_creation;
    LOGI("node %s up (%s, %s)", p->name, c->addr, c->outgoing ? "outgoing" : "incoming");
    proc_peer_up(n, p);
}

void node_conn_down(struct node *n, struct conn *c)
{
    struct peer *p = c->peer;
    if (!p || p->conn != c)
        return;
    bool was_up = p->up;
    p->conn = NULL;
    p->up = false;
    if (was_up)
        LOGI("node %s down", p->name);
    proc_peer_down(n, p);
    node_peer_release(n, p);
}

/* --- failed-handshake brake --- */

static struct failrec *fail_slot(struct node *n, uint32_t ip)
{
    uint32_t h = (ip * 0x9E3779B1u) >> 24;
    return &n->fails[h % NODE_FAIL_SLOTS];
}

void node_auth_failed(struct node *n, uint32_t ip, const char *addr)
{
    struct failrec *f = fail_slot(n, ip);
    uint64_t now = loop_now(n->loop);
    if (f->ip != ip || now - f->since > NODE_FAIL_WINDOW_MS) {
        f->ip = ip;
        f->count = 0;
        f->since = now;
    }
    if (++f->count == NODE_FAIL_LIMIT)
        LOGW("%u failed handshakes from %s within %u s: throttling it to one attempt per second",
             NODE_FAIL_LIMIT, addr, NODE_FAIL_WINDOW_MS / 1000);
}

bool node_ip_throttled(struct node *n, uint32_t ip)
{
    struct failrec *f = fail_slot(n, ip);
    uint64_t now = loop_now(n->loop);
    if (f->ip != ip || f->count < NODE_FAIL_LIMIT || now - f->since > NODE_FAIL_WINDOW_MS)
        return false;
    if (now - f->last_try >= 1000) {
        f->last_try = now;
        return false;
    }
    return true;
}

/* --- listener --- */

static void resume_accept(struct loop *l, uint64_t id, void *data)
{
    struct node *n = data;
    if (!n->stopping && n->listen_fd >= 0)
        loop_mod_fd(l, n->listen_fd, LOOP_READ);
}

static void on_accept(struct loop *l, int fd, int ev, void *data)
{
    struct node *n = data;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        int cfd = accept4(fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The pending connection stays queued and the listener stays
                 * readable: pause accepting for 100 ms instead of spinning. */
                static uint64_t last_log;
                uint64_t now = loop_now(l);
                if (!last_log || now - last_log >= 10000) {
                    last_log = now;
                    LOGW("cannot accept connections: %s; pausing accept (100 ms at a time)",
                         strerror(errno));
                }
                loop_mod_fd(l, fd, 0);
                loop_timer_add(l, 100, resume_accept, n);
            }
            return;
        }
        if (n->stopping || n->nconns >= n->cfg->max_connections) {
            LOGW("connection from %s refused: --max-connections %u reached",
                 inet_ntoa(sa.sin_addr), n->cfg->max_connections);
            close(cfd);
            continue;
        }
        if (node_ip_throttled(n, sa.sin_addr.s_addr)) {
            close(cfd);
            continue;
        }
        char addr[80];
        snprintf(addr, sizeof addr, "%s:%u", inet_ntoa(sa.sin_addr), ntohs(sa.sin_port));
        struct conn *c = conn_accept(n, cfd, addr);
        if (c)
            c->ip = sa.sin_addr.s_addr;
    }
}

static int listen_on(struct node *n)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    sa.sin_port = htons((uint16_t)n->cfg->port);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1024) < 0) {
        close(fd);
        return -1;
    }
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    n->port = ntohs(sa.sin_port);
    n->listen_fd = fd;
    return loop_add_fd(n->loop, fd, LOOP_READ, on_accept, n);
}

/* --- epmd registration --- */

static uint16_t epmd_port_env(void)
{
    const char *e = getenv("ERL_EPMD_PORT");
    int p = e ? atoi(e) : 0;
    return (p > 0 && p < 65536) ? (uint16_t)p : EPMD_DEFAULT_PORT;
}

static int epmd_dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(epmd_port_env());
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void start_epmd_daemon(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        char port[16];
        snprintf(port, sizeof port, "%u", epmd_port_env());
        setenv("ERL_EPMD_PORT", port, 1);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("epmd", "epmd", "-daemon", (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

/* Register; 0 ok, 1 name taken, -1 epmd unreachable or garbage. */
static int epmd_register(struct node *n, uint32_t *creation)
{
    int fd = epmd_dial();
    if (fd < 0)
        return -1;
    struct buf req;
    buf_init(&req);
    epmd_enc_alive2(&req, n->port, n->cfg->alive);
    ssize_t w = write(fd, req.data, req.len);
    buf_free(&req);
    if (w < 0) {
        close(fd);
        return -1;
    }
    uint8_t resp[16];
    size_t got = 0;
    uint8_t result = 1;
    for (;;) {
        ssize_t r = read(fd, resp + got, sizeof resp - got);
        if (r <= 0) {
            close(fd);
            return -1;
        }
        got += (size_t)r;
        long k = epmd_dec_alive2_resp(resp, got, &result, creation);
        if (k < 0) {
            close(fd);
            return -1;
        }
        if (k > 0)
            break;
        if (got == sizeof resp) {
            close(fd);
            return -1;
        }
    }
    if (result != 0) {
        close(fd);
        return 1;
    }
    n->epmd_fd = fd;
    return 0;
}

static void on_epmd(struct loop *l, int fd, int ev, void *data);

static void epmd_retry(struct loop *l, uint64_t id, void *data)
{
    struct node *n = data;
    n->epmd_timer = 0;
    if (n->stopping)
        return;
    uint32_t creation;
    int r = epmd_register(n, &creation);
    if (r == 0) {
        LOGI("registered with epmd again as %s (port %u)", n->cfg->alive, n->port);
        loop_add_fd(l, n->epmd_fd, LOOP_READ, on_epmd, n);
        return;
    }
    if (r < 0)
        start_epmd_daemon();
    n->epmd_timer = loop_timer_add(l, 1000, epmd_retry, n);
}

/* The registration socket is only ever read for EOF: epmd went away. */
static void on_epmd(struct loop *l, int fd, int ev, void *data)
{
    struct node *n = data;
    uint8_t tmp[64];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r > 0 || (r < 0 && errno == EAGAIN))
        return;
    LOGW("lost the epmd connection; registering again");
    loop_del_fd(l, fd);
    close(fd);
    n->epmd_fd = -1;
    n->epmd_timer = loop_timer_add(l, 200, epmd_retry, n);
}

/* --- start / stop --- */

static void before_sleep(struct loop *l, void *data)
{
    struct node *n = data;
    conn_flush_dirty(n);
    conn_reap(n);
    node_peers_sweep(n);
}

/* Identity and tables, no I/O; shared by node_start and node_init_bare.
 * seed NULL: a random hash seed. */
static int node_init_tables(struct node *n, struct config *cfg, struct loop *l,
                            const uint64_t *seed)
{
    memset(n, 0, sizeof *n);
    n->cfg = cfg;
    n->loop = l;
    n->listen_fd = n->epmd_fd = -1;
    snprintf(n->name, sizeof n->name, "%s", cfg->name);
    ext_put_atom(&n->atom, n->name, strlen(n->name));
    n->lim.max_depth = cfg->max_depth;
    n->lim.max_terms = cfg->max_message_bytes; /* a term is at least a byte */
    if (seed)
        n->hash_seed = *seed;
    else if (RAND_bytes((unsigned char *)&n->hash_seed, sizeof n->hash_seed) != 1)
        return 1;
    n->cappeers = 64;
    n->peers = calloc(n->cappeers, sizeof *n->peers);
    n->npeers = 1; /* index 0 is this node */
    n->peer_hash_cap = 4096;
    n->peer_hash = calloc(n->peer_hash_cap, sizeof *n->peer_hash);
    n->procs = proc_table_new();
    n->reg = reg_new(n->hash_seed);
    if (!n->peers || !n->peer_hash || !n->procs || !n->reg)
        return 1;
    buf_reserve(&n->scratch, 64 * 1024);
    return 0;
}

static void node_spawn_system(struct node *n)
{
    uint32_t nk = proc_spawn(n, PK_NET_KERNEL, NULL);
    proc_register(n, "net_kernel", nk);
    n->registry_pid = proc_spawn(n, PK_REGISTRY, NULL);
    proc_register(n, n->cfg->registry, n->registry_pid);
}

/* Test and fuzz seam: a node with its tables and system processes but no
 * listener, epmd or TLS.  Connections come from conn_new_up (conn.h). */
int node_init_bare(struct node *n, struct config *cfg, struct loop *l, uint32_t creation,
                   uint64_t seed)
{
    if (node_init_tables(n, cfg, l, &seed) != 0)
        return 1;
    n->creation = creation;
    node_spawn_system(n);
    return 0;
}

int node_start(struct node *n, struct config *cfg, struct loop *l)
{
    if (node_init_tables(n, cfg, l, NULL) != 0)
        return 1;
    if (cfg->tls_cert) {
        char err[512];
        if (tls_global_init(n, cfg, err, sizeof err) < 0) {
            fprintf(stderr, "kv_cnode: %s\n", err);
            return 2;
        }
    }
    /* Room for --max-connections sockets and a few more (listener, epmd,
     * signals, stdio): raise the soft fd limit towards the hard one. */
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->max_connections + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want) ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (listen_on(n) < 0) {
        fprintf(stderr, "kv_cnode: cannot listen on port %u: %s\n", cfg->port, strerror(errno));
        return 1;
    }
    int r = epmd_register(n, &n->creation);
    if (r < 0) {
        start_epmd_daemon();
        for (int i = 0; i < 50 && r < 0; i++) {
            struct timespec ts = {0, 100 * 1000000};
            nanosleep(&ts, NULL);
            r = epmd_register(n, &n->creation);
        }
    }
    if (r == 1) {
        fprintf(stderr, "kv_cnode: the name %s is already in use on this host (epmd)\n",
                cfg->alive);
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "kv_cnode: cannot register with epmd on port %u\n", epmd_port_env());
        return 1;
    }
    loop_add_fd(l, n->epmd_fd, LOOP_READ, on_epmd, n);
    node_spawn_system(n);
    loop_set_before_sleep(l, before_sleep, n);
    LOGI("node %s up on port %u (creation %u)", n->name, n->port, n->creation);
    for (int i = 0; i < cfg->nconnect; i++) {
        struct peer *p = node_peer_get(n, cfg->connect[i]);
        if (!p || !node_connect(n, p))
            LOGW("cannot connect to %s", cfg->connect[i]);
    }
    return 0;
}

void node_shutdown(struct node *n)
{
    n->stopping = true;
    LOGI("shutting down");
    /* buckets first, then the registry and net_kernel */
    struct proc_table *t = n->procs;
    for (uint32_t id = 0; id < t->n; id++)
        if (t->v[id].kind == PK_BUCKET)
            proc_exit(n, id, R_SHUTDOWN);
    for (uint32_t id = 0; id < t->n; id++)
        if (t->v[id].kind != PK_FREE)
            proc_exit(n, id, R_SHUTDOWN);
    /* Flush what watchers must be told, for up to a second. */
    uint64_t deadline = loop_clock_ms() + 1000;
    for (;;) {
        conn_flush_dirty(n);
        conn_reap(n);
        bool pending = false;
        for (struct conn *c = n->conns; c; c = c->next)
            if (c->state == CS_UP && c->out.head) {
                pending = true;
                c->dirty = false;
            }
        if (!pending || loop_clock_ms() >= deadline)
            break;
        struct pollfd pf[256];
        int np = 0;
        for (struct conn *c = n->conns; c && np < 256; c = c->next)
            if (c->state == CS_UP && c->out.head) {
                pf[np].fd = c->fd;
                pf[np].events = POLLOUT;
                np++;
                /* requeue for the next flush */
                c->dirty = true;
                c->dirty_next = n->dirty;
                n->dirty = c;
            }
        poll(pf, (nfds_t)np, 50);
    }
    while (n->conns)
        conn_close(n->conns, NULL);
    conn_reap(n);
    if (n->epmd_fd >= 0) {
        close(n->epmd_fd); /* epmd forgets us when this socket closes */
        n->epmd_fd = -1;
    }
    if (n->listen_fd >= 0) {
        close(n->listen_fd);
        n->listen_fd = -1;
    }
}

void node_free(struct node *n)
{
    for (uint32_t i = 1; i < n->npeers; i++) {
        if (!n->peers[i])
            continue;
        buf_free(&n->peers[i]->atom);
        free(n->peers[i]);
    }
    free(n->peers);
    free(n->peer_hash);
    reg_free(n->reg);
    proc_table_free(n->procs);
    buf_free(&n->atom);
    buf_free(&n->scratch);
    buf_free(&n->canon);
    if (n->cfg && n->cfg->tls_cert)
        tls_global_free(n);
}
