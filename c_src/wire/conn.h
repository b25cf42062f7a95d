/* conn.h - one peer connection: socket, input buffer and frame cutting,
 * handshake driving, ticks, the output queue and its cap.
 * Owns: the fd, the in-buffer, the out-queue chunks, its timers, and the
 * set of connections (struct conn_host).  Knows nothing above it: it
 * reports upward through the struct conn_ops table its host was given
 * (up, down, frame, status, auth failed), to an opaque owner. */
#ifndef KV_CONN_H
#define KV_CONN_H

#include <stdbool.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/loop.h"
#include "proto/hs.h"
#include "proto/term.h"
#include "wire/brake.h"

struct conn;
struct obuf;
struct tls;
struct ac;
struct dist_msg;

/* How connections report to their owner.  Every callback may close the
 * connection; none may free it (conn_reap does, at the turn's end). */
struct conn_ops {
    /* An outgoing connection exists (before any I/O, which may fail at
     * once: the owner records c first, so down can find it). */
    void (*connecting)(void *owner, struct conn *c);
    /* Handshake done (c->hs holds the peer's name, flags, creation). */
    void (*up)(void *owner, struct conn *c);
    /* Closed (any state). */
    void (*down)(void *owner, struct conn *c);
    /* A decoded frame from the peer of an up connection. */
    void (*frame)(void *owner, struct conn *c, const struct dist_msg *m);
    /* Acceptor: answer the peer's name with conn_set_status. */
    void (*status)(void *owner, struct conn *c);
};

/* The connections of one node: identity and limits for the handshake and
 * framing (filled by the owner), the callbacks, and the lists. */
struct conn_host {
    struct loop *loop;
    const struct conn_ops *ops;
    void *owner;
    const char *name;           /* our node name */
    uint32_t creation;
    const char *cookie;
    unsigned ticktime, setuptime_ms;
    uint64_t max_message_bytes, max_out_bytes;
    const struct term_limits *lim;
    bool tls;                   /* distribution over TLS (tls_ctx loaded) */
    bool tls_verify_peer;
    void *tls_ctx;              /* SSL_CTX when TLS is on */
    bool inet6;                 /* connect out over IPv6 (--inet6) */
    struct brake brake;         /* wrong-digest penalties per source address */
    struct conn *conns;         /* every connection, any state */
    uint32_t nconns;
    struct conn *dirty;         /* connections with output to flush this turn */
    struct conn *dead;          /* closed this turn; freed before sleeping */
};

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
    struct conn_host *host;
    struct conn *next, *prev;   /* host->conns */
    struct conn *dirty_next;    /* host->dirty */
    struct conn *dead_next;     /* host->dead */
    bool dirty;
    enum conn_state state;
    bool outgoing;
    int fd;
    int epmd_fd;                /* CS_RESOLVE only */
    struct buf epmd_buf;        /* owned: epmd reply bytes */
    bool epmd_sent;             /* PORT_PLEASE2 written */
    char addr[80];              /* peer address for logs */
    struct brake_key key;       /* incoming: source address, as the brake keys it */
    struct brake_hold hold;     /* incoming: on while the verdict is held */
    uint64_t t_verdict;         /* loop timer: the held verdict is due */
    struct sockaddr_storage sa; /* outgoing: the peer's address (IPv4 or IPv6) */
    socklen_t sa_len;
    void *peer;                 /* the owner's record of the peer (opaque here):
                                   outgoing: from the start; incoming: once proven */
    char name[256];             /* the peer's node name once known, for logs */
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
    bool rcv_small;             /* on the modest receive buffer (wire/rcvwin.h) */
    struct ac *ac;              /* owned: atom caches, peers with DIST_HDR_ATOM_CACHE */
    size_t frame_start;         /* where conn_frame_buf's frame begins (AC_OUT_ROOM
                                   past its place for an atom-cache peer) */
};

/* Incoming TCP connection accepted by the owner from sa (IPv4 or IPv6). */
struct conn *conn_accept(struct conn_host *h, int fd, const struct sockaddr *sa);
/* "1.2.3.4:port" (IPv4 and IPv4-mapped) or "[::1]:port", for logs. */
const char *conn_addr_str(const struct sockaddr *sa, char *out, size_t n);
/* Outgoing connection to node name (epmd lookup, connect, handshake);
 * peer is the owner's record, kept in c->peer. */
struct conn *conn_connect(struct conn_host *h, const char *name, void *peer);
/* Buffer to build one frame in (dist_frame_begin/end), then conn_frame_done.
 * hint: about how big the frame will be (0 if small or unknown). */
struct buf *conn_frame_buf(struct conn *c, size_t hint);
void conn_frame_done(struct conn *c);
/* Write every dirty connection's queue (the loop's before-sleep hook). */
void conn_flush_dirty(struct conn_host *h);
/* Mark closed now (fd shut, node told), free at the end of the turn. */
void conn_close(struct conn *c, const char *why);
void conn_reap(struct conn_host *h);
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
struct conn *conn_new_up(struct conn_host *h, const char *peer_name, uint64_t flags,
                         uint32_t creation);
bool conn_input(struct conn *c, const uint8_t *p, size_t len);
size_t conn_take_output(struct conn *c, struct buf *to);

#endif
