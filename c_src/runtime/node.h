/* node.h - this node: identity, listener, peers and connections by name,
 * and routing of signals between connections and local processes.
 * Owns: struct node (the one context passed everywhere; no globals), the
 * peer table (remote node names, interned only after a peer is proven or
 * when we must reach it), pid/ref minting and encoding. */
#ifndef KV_NODE_H
#define KV_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "config.h"
#include "proto/ext.h"
#include "base/loop.h"
#include "proto/term.h"

struct conn;
struct mon;
struct lnk;
struct proc_table;
struct reg;

/* A pid anywhere: node is a peer index (0 = this node). */
struct epid {
    uint32_t node, id, serial, creation;
};

/* A reference anywhere. */
struct eref {
    uint32_t node, creation;
    uint8_t len;
    uint32_t w[5];
};

/* A remote node we know by name.  Never freed: the table is capped. */
struct peer {
    uint32_t idx;
    char name[256];
    struct buf atom;     /* owned: the node name encoded as an atom */
    struct conn *conn;   /* current connection (pending or up), or NULL */
    bool up;             /* handshake done on conn */
    uint64_t flags;      /* peer's flags once up */
    uint32_t creation;
    struct mon *mons;    /* monitors that die with this peer's connection */
    struct lnk *links;   /* links likewise */
    uint64_t hash;
    struct peer *h_next;
    struct peer *sweep_next; /* node->sweep */
    bool sweep;              /* on node->sweep */
};

/* Failed handshakes per source address (a small fixed table: an attacker
 * can only evict entries, never grow it). */
#define NODE_FAIL_SLOTS 256
#define NODE_FAIL_LIMIT 10       /* failures in the window before throttling */
#define NODE_FAIL_WINDOW_MS 60000
struct failrec {
    uint32_t ip;
    uint32_t count;
    uint64_t since;
    uint64_t last_try;
};

struct node {
    struct config *cfg;
    struct loop *loop;
    char name[256];
    struct buf atom;        /* owned: our node name as an atom */
    uint32_t creation;
    int listen_fd;
    uint16_t port;
    int epmd_fd;
    uint64_t epmd_timer;
    struct peer **peers;    /* by index; [0] unused (this node) */
    uint32_t npeers, cappeers;  /* indexes ever used (never reused) */
    uint32_t live_peers;
    struct peer *sweep;      /* peers to check for freeing at the turn's end */
    struct peer *last_peer; /* cache for decoding pids from the same node */
    struct peer **peer_hash;
    uint32_t peer_hash_cap;
    struct conn *conns;     /* every connection, any state */
    uint32_t nconns;
    struct conn *dirty;     /* connections with output to flush this turn */
    struct conn *dead;      /* closed this turn; freed before sleeping */
    struct proc_table *procs;
    struct reg *reg;
    uint32_t registry_pid;  /* local pid id of the registry process */
    uint64_t ref_ctr;
    uint64_t hash_seed;
    struct term_limits lim;
    struct buf scratch;     /* reused for replies; never shrinks below 64 KiB */
    struct buf canon;       /* reused for canonical names and keys */
    void *tls_ctx;          /* SSL_CTX when TLS is on */
    bool stopping;
    int exit_code;
    struct failrec fails[NODE_FAIL_SLOTS];
};

/* Set up (listen, register with epmd, start processes); 0 or exit code. */
int node_start(struct node *n, struct config *cfg, struct loop *l);
/* Test and fuzz seam: tables, identity (name from cfg) and the system
 * processes, with a fixed hash seed; no listener, epmd or TLS.  0 or 1. */
int node_init_bare(struct node *n, struct config *cfg, struct loop *l, uint32_t creation,
                   uint64_t seed);
/* Orderly shutdown: processes end with `shutdown`, watchers told, output
 * flushed, connections closed, epmd unregistered. */
void node_shutdown(struct node *n);
void node_free(struct node *n);

/* Peers. */
struct peer *node_peer_find(struct node *n, const char *name);
/* Find or create (NULL when the table is full).  A new peer that gets no
 * connection, monitor or link is freed when the loop turn ends. */
struct peer *node_peer_get(struct node *n, const char *name);
void node_peer_release(struct node *n, struct peer *p);
/* End of turn: free released peers nothing refers to (no conn, monitor or
 * link).  Indexes are never reused: a stale one finds no peer. */
void node_peers_sweep(struct node *n);
struct peer *node_peer(struct node *n, uint32_t idx);
/* Whether p takes MONITOR_P from us.  ei-based C nodes advertise
 * DIST_MONITOR without DIST_MONITOR_NAME and their receive loop fails on a
 * monitor message, so both flags are required (DESIGN.md); otherwise the
 * monitor stays local and fires with noconnection. */
static inline bool node_peer_takes_monitors(const struct peer *p)
{
    const uint64_t need = 0x8ULL | 0x20ULL; /* DIST_MONITOR | DIST_MONITOR_NAME */
    return (p->flags & need) == need;
}
/* Ensure a connection to p exists (connecting on demand). */
bool node_connect(struct node *n, struct peer *p);

/* Identity helpers. */
struct span node_atom_of(struct node *n, uint32_t idx);
bool node_put_pid(struct node *n, struct buf *b, const struct epid *p);
bool node_put_ref(struct node *n, struct buf *b, const struct eref *r);
void node_make_ref(struct node *n, struct eref *r);
/* Read a pid/ref off the wire; the node name is interned (capped). */
bool node_get_pid(struct node *n, struct cur *c, struct epid *p);
bool node_get_ref(struct node *n, struct cur *c, struct eref *r);
bool eref_eq(const struct eref *a, const struct eref *b);
static inline bool epid_eq(const struct epid *a, const struct epid *b)
{
    return a->node == b->node && a->id == b->id && a->serial == b->serial &&
           a->creation == b->creation;
}

/* Outgoing signals.  The frame goes to the connection of the target's node
 * (connecting on demand); dropped silently when that node cannot be
 * reached, as the BEAM does.  msg/reason are terms without 131. */
void node_send(struct node *n, const struct epid *to, struct span msg);
/* Send to a pid given as raw term bytes (a gen_call From, kept as it came). */
void node_send_raw(struct node *n, struct span to_pid, struct span msg);
/* The same as ALIAS_SEND to the alias (raw ref term) made by to_pid's node,
 * from local process from; only for peers with DFLAG_ALIAS. */
void node_send_alias(struct node *n, struct span to_pid, const struct epid *from,
                     struct span alias, struct span msg);
void node_send_monitor_p(struct node *n, struct peer *p, const struct epid *from,
                         const struct epid *to, const struct eref *ref);
void node_send_demonitor_p(struct node *n, struct peer *p, const struct epid *from,
                           const struct epid *to, const struct eref *ref);
/* from is a local pid, or (by_name) a registered name. */
void node_send_monitor_exit(struct node *n, struct peer *p, const struct epid *from,
                            const char *from_name, const struct epid *to,
                            const struct eref *ref, struct span reason);
void node_send_exit(struct node *n, struct peer *p, const struct epid *from,
                    const struct epid *to, struct span reason);
void node_send_unlink_ack(struct node *n, struct peer *p, uint64_t id, const struct epid *from,
                          const struct epid *to);

/* From conn.c: a decoded frame arrived from an authenticated peer. */
struct dist_msg;
void node_handle(struct node *n, struct peer *p, const struct dist_msg *m);
/* From conn.c: connection state changes. */
void node_conn_up(struct node *n, struct conn *c);
/* Cookie brute-force brake: after NODE_FAIL_LIMIT wrong digests from one
 * address within the window, that address gets one handshake per second. */
void node_auth_failed(struct node *n, uint32_t ip, const char *addr);
bool node_ip_throttled(struct node *n, uint32_t ip);
/* Acceptor: decide the status for the peer's name (always answers). */
void node_conn_status(struct node *n, struct conn *c);
void node_conn_down(struct node *n, struct conn *c);

#endif
