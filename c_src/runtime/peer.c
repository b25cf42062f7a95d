/* peer.c - the peer table, pids and refs on the wire, and outgoing
 * signals (see peer.h).  Moved whole from node.c: the runtime's lower half,
 * called by node.c (routing), proc.c and gen.c, calling only the
 * connections (wire/conn.h) below it. */
#include "runtime/peer.h"

#include <stdlib.h>
#include <string.h>

#include <ei.h>

#include "base/log.h"
#include "proto/dist.h"
#include "proto/hs.h"
#include "runtime/gen.h"
#include "runtime/node.h"
#include "wire/conn.h"

#define MAX_PEERS 65536

/* Exit reasons (gen.h), here at the bottom of the runtime: every file of
 * it and every service uses them. */
static const uint8_t a_normal[] = {119, 6, 'n', 'o', 'r', 'm', 'a', 'l'};
static const uint8_t a_killed[] = {119, 6, 'k', 'i', 'l', 'l', 'e', 'd'};
static const uint8_t a_kill[] = {119, 4, 'k', 'i', 'l', 'l'};
static const uint8_t a_noproc[] = {119, 6, 'n', 'o', 'p', 'r', 'o', 'c'};
static const uint8_t a_noconn[] = {119, 12, 'n', 'o', 'c', 'o', 'n', 'n',
                                   'e', 'c', 't', 'i', 'o', 'n'};
static const uint8_t a_shutdown[] = {119, 8, 's', 'h', 'u', 't', 'd', 'o', 'w', 'n'};

const struct span R_NORMAL = {a_normal, sizeof a_normal};
const struct span R_KILLED = {a_killed, sizeof a_killed};
const struct span R_KILL = {a_kill, sizeof a_kill};
const struct span R_NOPROC = {a_noproc, sizeof a_noproc};
const struct span R_NOCONNECTION = {a_noconn, sizeof a_noconn};
const struct span R_SHUTDOWN = {a_shutdown, sizeof a_shutdown};

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
 * monitors, no links (a process that keeps a remote pid across turns
 * monitors it, or that pid may later name no peer).  Indexes are never reused, so a stale index finds NULL, never
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
    if (n->wire.nconns >= n->cfg->max_connections) {
        LOGW("cannot connect to %s: --max-connections %u reached", p->name,
             n->cfg->max_connections);
        return false;
    }
    LOGD("connecting to %s", p->name);
    return conn_connect(&n->wire, p->name, p) != NULL && p->conn != NULL;
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
static inline __attribute__((always_inline)) bool match_node_atom(struct node *n, struct cur *t,
                                                                   uint32_t *idx)
{
    /* the peer's first: most pids and refs in its frames are its own */
    const uint8_t *q = cur_ptr(t);
    size_t left = cur_left(t);
    const struct peer *lp = n->last_peer;
    if (lp && left >= lp->atom.len && eq_small(q, lp->atom.data, lp->atom.len)) {
        t->pos += lp->atom.len;
        *idx = lp->idx;
        return true;
    }
    if (left >= n->atom.len && eq_small(q, n->atom.data, n->atom.len)) {
        t->pos += n->atom.len;
        *idx = 0;
        return true;
    }
    return false;
}

bool node_get_pid(struct node *n, struct cur *c, struct epid *p)
{
    struct cur t = *c;
    uint8_t tag;
    struct span f;
    if (cur_u8(&t, &tag) && tag == ERL_NEW_PID_EXT && match_node_atom(n, &t, &p->node) &&
        cur_span(&t, 12, &f)) {
        p->id = get_n32(f.p);
        p->serial = get_n32(f.p + 4);
        p->creation = get_n32(f.p + 8);
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
    struct span f;
    if (cur_u8(&t, &tag) && tag == ERL_NEWER_REFERENCE_EXT && cur_n16(&t, &len) && len >= 1 &&
        len <= 5 && match_node_atom(n, &t, &r->node) && cur_span(&t, 4 + 4 * (size_t)len, &f)) {
        r->creation = get_n32(f.p);
        memset(r->w, 0, sizeof r->w);
        for (int i = 0; i < len; i++)
            r->w[i] = get_n32(f.p + 4 + 4 * i);
        r->len = (uint8_t)len;
        *c = t;
        return true;
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
static struct buf *frame_begin_sized(struct node *n, struct peer *p, struct conn **cp,
                                      size_t *start, size_t hint)
{
    if (!p->conn && !node_connect(n, p))
        return NULL;
    struct conn *c = p->conn;
    struct buf *b = conn_frame_buf(c, hint);
    if (!b)
        return NULL;
    *cp = c;
    *start = dist_frame_begin(b);
    ext_put_version(b);
    return b;
}

static struct buf *frame_begin(struct node *n, struct peer *p, struct conn **cp, size_t *start)
{
    return frame_begin_sized(n, p, cp, start, 0);
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
    struct buf *b = p ? frame_begin_sized(n, p, &c, &st, msg.n) : NULL;
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

/* ALIAS_SEND {33, From, Alias} + msg (erts dist.h DOP_ALIAS_SEND, for peers
 * with DFLAG_ALIAS): the peer delivers msg only while Alias is active, so a
 * reply to a caller that gave up (demonitor of the alias) is dropped there,
 * as a BEAM gen_server's reply would be.  The alias lives on the node of
 * to_pid (the caller that made it). */
void node_send_alias(struct node *n, const struct epid *to, const struct epid *from,
                     struct span alias, struct span msg)
{
    if (to->node == 0)
        return;
    struct peer *p = node_peer(n, to->node);
    struct conn *c;
    size_t st;
    struct buf *b = p ? frame_begin_sized(n, p, &c, &st, msg.n) : NULL;
    if (!b)
        return; /* unreachable: dropped, as the BEAM does */
    ext_put_tuple(b, 3);
    buf_put(b, (const uint8_t[]){97, DOP_ALIAS_SEND}, 2);
    node_put_pid(n, b, from);
    buf_put(b, alias.p, alias.n);
    ext_put_version(b);
    buf_put(b, msg.p, msg.n);
    frame_end(c, b, st);
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

/* MONITOR_P_EXIT noproc for a MONITOR_P whose target is not alive: the
 * fields go back byte for byte as the watcher sent them. */
void node_send_noproc(struct node *n, struct peer *p, struct span to, struct span from,
                      struct span ref)
{
    struct conn *c;
    size_t st;
    struct buf *b = exit_begin(n, p, DOP_MONITOR_P_EXIT, DOP_PAYLOAD_MONITOR_P_EXIT, 3, &c, &st);
    if (!b)
        return;
    buf_put(b, to.p, to.n);
    buf_put(b, from.p, from.n);
    buf_put(b, ref.p, ref.n);
    exit_end(p, c, b, st, R_NOPROC);
}
