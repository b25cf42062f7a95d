/* peer.h - the remote nodes we know (the peer table), pids and refs as
 * they travel (interning the node names), and the outgoing signals, each
 * framed onto the peer's connection (connecting on demand).
 * Owns: struct peer.  Implemented in peer.c; struct node is node.h's. */
#ifndef KV_PEER_H
#define KV_PEER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "runtime/pid.h"

struct node;
struct conn;
struct mon;
struct lnk;

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

/* Outgoing signals.  The frame goes to the connection of the target's node
 * (connecting on demand); dropped silently when that node cannot be
 * reached, as the BEAM does.  msg/reason are terms without 131. */
void node_send(struct node *n, const struct epid *to, struct span msg);
/* Send to a pid given as raw term bytes (a gen_call From, kept as it came). */
void node_send_raw(struct node *n, struct span to_pid, struct span msg);
/* The same as ALIAS_SEND to the alias (raw ref term) made by to's node
 * (a decoded remote pid), from local process from; only for peers with
 * DFLAG_ALIAS. */
void node_send_alias(struct node *n, const struct epid *to, const struct epid *from,
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

/* MONITOR_P_EXIT noproc, the watcher's own fields sent back as they came. */
void node_send_noproc(struct node *n, struct peer *p, struct span to, struct span from,
                      struct span ref);

#endif
