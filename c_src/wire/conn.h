/* conn.h - one peer connection: socket, input buffer and frame cutting,
 * handshake driving, ticks, the output queue and its cap.
 * Owns: the fd, the in-buffer, the out-queue chunks, its timers.  Knows the
 * node only through node.h's entry points (handle, up, down). */
#ifndef KV_CONN_H
#define KV_CONN_H

#include <stdbool.h>
#include <netinet/in.h>
#include <stdint.h>

#include "base/buf.h"
#include "proto/hs.h"

struct node;
struct peer;
struct obuf;
struct tls;
struct ac;

struct oq {
    struct obuf *head, *tail;
    uint64_t bytes;
};

enum conn_state {
    CS_RESOLVE,   /* outgoing: asking epmd for the peer's port */
    CS_CONNECT,   /* outgoing: TCP connect in progress */
    CS_TLS,       /* TLS handshake in progress */
    CS_HANDSHAKE, /* distribution handshake */
    CS_UP,
    CS_CLOSED
};

struct conn {
    struct node *node;
    struct conn *next, *prev;   /* node->conns */
    struct conn *dirty_next;    /* node->dirty */
    struct conn *dead_next;     /* node->dead */
    bool dirty;
    enum conn_state state;
    bool outgoing;
    int fd;
    int epmd_fd;                /* CS_RESOLVE only */
    struct buf epmd_buf;        /* owned: epmd reply bytes */
    bool epmd_sent;             /* PORT_PLEASE2 written */
    char addr[80];              /* peer address for logs */
    uint32_t ip;                /* incoming: source address (network order) */
    struct sockaddr_in sa;      /* outgoing: the peer's address */
    struct peer *peer;          /* outgoing: from the start; incoming: once proven */
    struct hs hs;
    struct tls *tls;            /* NULL for plain TCP */
    struct buf in;              /* owned: unconsumed input */
    struct oq out;              /* owned: chunks being written */
    struct oq pend;             /* owned: frames queued before the handshake */
    struct obuf *spare;         /* one emptied chunk kept for reuse */
    uint64_t t_setup, t_tick;   /* loop timer ids */
    uint64_t last_recv, last_send;
    uint64_t id;                /* connection id, for logs and tests */
    bool want_write;
    bool over_cap;              /* output cap exceeded: close at turn end */
    struct ac *ac;              /* owned: atom caches, peers with DIST_HDR_ATOM_CACHE */
    size_t frame_start;         /* where conn_frame_buf's frame begins */
};

/* Incoming TCP connection accepted by the node. */
struct conn *conn_accept(struct node *n, int fd, const char *addr);
/* Outgoing connection to p (epmd lookup, connect, handshake). */
struct conn *conn_connect(struct node *n, struct peer *p);
/* Buffer to build one frame in (dist_frame_begin/end), then conn_frame_done. */
struct buf *conn_frame_buf(struct conn *c);
void conn_frame_done(struct conn *c);
/* Write every dirty connection's queue (the loop's before-sleep hook). */
void conn_flush_dirty(struct node *n);
/* Mark closed now (fd shut, node told), free at the end of the turn. */
void conn_close(struct conn *c, const char *why);
void conn_reap(struct node *n);
/* Move queued output from one connection to another (simultaneous connect). */
void conn_move_output(struct conn *from, struct conn *to);
/* Acceptor: the node's answer to the peer's name (see hs_accept_status). */
void conn_set_status(struct conn *c, const char *status);

/* Test and fuzz seam (no socket, fd -1): a connection from peer_name that
 * has just finished its handshake with the given flags, through the real
 * handshake_done / node_conn_up path.  NULL on a bad name or no memory.
 * Feed it bytes with conn_input (the real frame path: cut, decode,
 * dispatch; false once closed) and collect what it queued with
 * conn_take_output (appended to to, or dropped when to is NULL). */
struct conn *conn_new_up(struct node *n, const char *peer_name, uint64_t flags,
                         uint32_t creation);
bool conn_input(struct conn *c, const uint8_t *p, size_t len);
size_t conn_take_output(struct conn *c, struct buf *to);

#endif
