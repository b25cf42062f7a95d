/* node.h - this node: identity, listener, peers and connections by name,
 * and routing of signals between connections and local processes.
 * Owns: struct node (the one context passed everywhere; no globals), the
 * peer table (remote node names, interned only after a peer is proven or
 * when we must reach it), pid/ref minting and encoding, and the callbacks
 * its connections report through (conn.h's struct conn_ops).  Names no
 * service: what runs here is spawned from the top (main.c, app.c). */
#ifndef KV_NODE_H
#define KV_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "proto/ext.h"
#include "base/loop.h"
#include "proto/term.h"
#include "runtime/peer.h"
#include "runtime/pid.h"
#include "wire/conn.h"

struct conn;
struct mon;
struct lnk;
struct proc_table;

#define NODE_MAX_CONNECT 64

/* The runtime's options (config.c fills them from the command line). */
struct node_opts {
    char name[256];      /* full node name alive@host */
    char alive[256];     /* part before '@' */
    int longnames;
    char cookie[256];
    unsigned port;       /* 0 = any */
    unsigned ticktime;   /* seconds */
    unsigned setuptime_ms;
    const char *connect[NODE_MAX_CONNECT];
    int nconnect;
    uint64_t max_message_bytes;
    uint64_t max_out_bytes;
    unsigned max_connections;
    unsigned max_depth;
    int inet6;           /* connect out over IPv6 (erl's -proto_dist inet6_tcp) */
    /* TLS (issue 4) */
    const char *tls_cert, *tls_key, *tls_cacert;
    int tls_verify_peer;
    int tls_min_version; /* 12 or 13 */
};

struct node {
    const struct node_opts *cfg;
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
    struct conn_host wire;  /* the connections (conn.h), reporting to us */
    struct proc_table *procs;
    uint64_t ref_ctr;
    uint64_t hash_seed;
    struct term_limits lim;
    struct buf scratch;     /* reused for replies; never shrinks below 64 KiB */
    struct buf canon;       /* reused for canonical names and keys */
    bool stopping;
    int exit_code;
};

/* Set up (listen, register with epmd, connect --connect peers); 0 or exit
 * code.  No process runs yet: the caller spawns its services next, before
 * the loop runs (so before any frame can arrive). */
int node_start(struct node *n, const struct node_opts *cfg, struct loop *l);
/* Test and fuzz seam: tables and identity (name from cfg) with a fixed
 * hash seed; no listener, epmd or TLS.  0 or 1. */
int node_init_bare(struct node *n, const struct node_opts *cfg, struct loop *l,
                   uint32_t creation, uint64_t seed);
/* Orderly shutdown: processes end with `shutdown`, watchers told, output
 * flushed, connections closed, epmd unregistered. */
void node_shutdown(struct node *n);
void node_free(struct node *n);

/* Connection state changes (conn_ops.up, .down, .status, .auth_failed:
 * node.c's table given to every connection through n->wire). */
void node_conn_up(struct node *n, struct conn *c);
/* Acceptor: decide the status for the peer's name (always answers). */
void node_conn_status(struct node *n, struct conn *c);
void node_conn_down(struct node *n, struct conn *c);

#endif
