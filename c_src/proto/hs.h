/* hs.h - the distribution handshake (version 6, OTP 23+) as a pure state
 * machine, for both the accepting and the connecting side.
 * Owns: packet cutting (2-byte lengths over TCP, 4-byte inside TLS), name and
 * flag checks, challenge/digest computation and comparison, the packets to
 * send (h->out).  Does not touch sockets, clocks or the node's tables: the
 * caller feeds bytes in, sends what appears in h->out, and answers the one
 * question the machine cannot (the acceptor's status, hs_accept_status). */
#ifndef KV_HS_H
#define KV_HS_H

#include <stdint.h>

#include "base/buf.h"

/* Distribution flags (erts/emulator/beam/dist.h). */
#define DFLAG_PUBLISHED 0x1ULL
#define DFLAG_ATOM_CACHE 0x2ULL
#define DFLAG_EXTENDED_REFERENCES 0x4ULL
#define DFLAG_DIST_MONITOR 0x8ULL
#define DFLAG_FUN_TAGS 0x10ULL
#define DFLAG_DIST_MONITOR_NAME 0x20ULL
#define DFLAG_HIDDEN_ATOM_CACHE 0x40ULL
#define DFLAG_NEW_FUN_TAGS 0x80ULL
#define DFLAG_EXTENDED_PIDS_PORTS 0x100ULL
#define DFLAG_EXPORT_PTR_TAG 0x200ULL
#define DFLAG_BIT_BINARIES 0x400ULL
#define DFLAG_NEW_FLOATS 0x800ULL
#define DFLAG_UNICODE_IO 0x1000ULL
#define DFLAG_DIST_HDR_ATOM_CACHE 0x2000ULL
#define DFLAG_SMALL_ATOM_TAGS 0x4000ULL
#define DFLAG_INTERNAL_TAGS 0x8000ULL
#define DFLAG_UTF8_ATOMS 0x10000ULL
#define DFLAG_MAP_TAG 0x20000ULL
#define DFLAG_BIG_CREATION 0x40000ULL
#define DFLAG_SEND_SENDER 0x80000ULL
#define DFLAG_BIG_SEQTRACE_LABELS 0x100000ULL
#define DFLAG_PENDING_CONNECT 0x200000ULL
#define DFLAG_EXIT_PAYLOAD 0x400000ULL
#define DFLAG_FRAGMENTS 0x800000ULL
#define DFLAG_HANDSHAKE_23 0x1000000ULL
#define DFLAG_UNLINK_ID 0x2000000ULL
#define DFLAG_MANDATORY_25_DIGEST 0x4000000ULL
#define DFLAG_SPAWN (1ULL << 32)
#define DFLAG_NAME_ME (1ULL << 33)
#define DFLAG_V4_NC (1ULL << 34)
#define DFLAG_ALIAS (1ULL << 35)
/* OTP 28+ (erts dist.h: DFLAG_ALTACT_SIG, 0x20 << 32): ALTACT_SIG_SEND.  Never
 * advertised by us; read only to tell an OTP 28+ caller apart (gen.c). */
#define DFLAG_ALTACT_SIG (1ULL << 37)

/* What an OTP 25 node requires of its peers; kv_cnode requires the same so
 * that OTP 25 ei/jinterface peers can still join.  OTP 26's additions
 * (V4_NC, UNLINK_ID) are advertised by us and used when the peer has them. */
#define DFLAG_MANDATORY_25                                                         \
    (DFLAG_EXTENDED_REFERENCES | DFLAG_FUN_TAGS | DFLAG_EXTENDED_PIDS_PORTS |      \
     DFLAG_UTF8_ATOMS | DFLAG_NEW_FUN_TAGS | DFLAG_BIG_CREATION | DFLAG_NEW_FLOATS | \
     DFLAG_MAP_TAG | DFLAG_EXPORT_PTR_TAG | DFLAG_BIT_BINARIES | DFLAG_HANDSHAKE_23)
#define DFLAG_MANDATORY_26 (DFLAG_V4_NC | DFLAG_UNLINK_ID)

/* Exactly what kv_cnode implements.  Hidden node: never PUBLISHED.
 * DIST_HDR_ATOM_CACHE: used only when the peer sets it too (proto/atomcache). */
#define HS_OUR_FLAGS                                                                 \
    (DFLAG_MANDATORY_25 | DFLAG_MANDATORY_26 | DFLAG_DIST_MONITOR |                  \
     DFLAG_DIST_MONITOR_NAME | DFLAG_SMALL_ATOM_TAGS | DFLAG_SEND_SENDER |           \
     DFLAG_EXIT_PAYLOAD | DFLAG_UNICODE_IO | DFLAG_DIST_HDR_ATOM_CACHE)

#define HS_MAX_NAME 255

enum hs_role { HS_ROLE_ACCEPT, HS_ROLE_CONNECT };

enum hs_state {
    HS_A_RECV_NAME,      /* acceptor: waiting for the peer's 'N' */
    HS_A_NEED_STATUS,    /* acceptor: name known; caller calls hs_accept_status */
    HS_A_RECV_ALIVE_ANS, /* acceptor: sent "alive", waiting for 's' true|false */
    HS_A_RECV_REPLY,     /* acceptor: sent challenge, waiting for 'r' */
    HS_C_RECV_STATUS,    /* initiator: sent 'N', waiting for 's' */
    HS_C_RECV_CHALLENGE, /* initiator: waiting for the acceptor's 'N' */
    HS_C_RECV_ACK,       /* initiator: sent 'r', waiting for 'a' */
    HS_DONE,             /* handshake complete: frames follow */
    HS_FAILED            /* h->err says why; send h->out (if any), then close */
};

enum hs_err {
    HS_OK = 0,
    HS_E_PACKET,      /* malformed or truncated packet, or a length over the limit */
    HS_E_TAG,         /* unexpected packet tag for this state */
    HS_E_VERSION,     /* old handshake ('n' packet, no HANDSHAKE_23) */
    HS_E_NAME,        /* illegal node name */
    HS_E_FLAGS,       /* peer lacks mandatory flags (h->missing) */
    HS_E_DIGEST,      /* wrong digest: wrong cookie */
    HS_E_STATUS,      /* acceptor refused us (h->status says how) */
    HS_E_WRONG_NODE,  /* acceptor's name is not the node we called */
    HS_E_REFUSED,     /* we refused the peer (nok, not_allowed, alive->false) */
    HS_E_NOMEM
};

struct hs {
    enum hs_role role;
    enum hs_state state;
    enum hs_err err;
    unsigned hdr; /* packet length header: 2 (TCP) or 4 (TLS) */
    char our_name[HS_MAX_NAME + 1];
    uint64_t our_flags;
    uint32_t our_creation;
    const char *cookie; /* borrowed: outlives the handshake */
    uint32_t our_challenge;
    /* learnt from the peer */
    char peer_name[HS_MAX_NAME + 1];
    uint64_t peer_flags;
    uint32_t peer_creation;
    uint32_t peer_challenge;
    uint64_t missing;  /* mandatory flags the peer lacked (HS_E_FLAGS) */
    char status[16];   /* initiator: status received; acceptor: status sent */
    int alive_confirmed; /* acceptor: peer answered "true" to our "alive" */
    size_t max_packet; /* largest packet accepted (default 1024) */
    struct buf out;    /* owned: packets to send, with their length headers */
};

/* Acceptor.  challenge comes from a CSPRNG (RAND_bytes) except in tests. */
void hs_init_accept(struct hs *h, const char *our_name, uint64_t flags, uint32_t creation,
                    const char *cookie, uint32_t challenge, unsigned hdr);
/* Initiator: queues our 'N' packet in h->out at once. */
void hs_init_connect(struct hs *h, const char *our_name, const char *peer_name,
                     uint64_t flags, uint32_t creation, const char *cookie,
                     uint32_t challenge, unsigned hdr);
/* Feed received bytes.  Returns the bytes consumed (0..n) or -1 when the
 * handshake failed (h->state == HS_FAILED, h->err set).  It stops consuming
 * at HS_DONE and at HS_A_NEED_STATUS, so bytes after the last handshake
 * packet (the first frames) are left for the caller. */
long hs_feed(struct hs *h, const uint8_t *p, size_t n);
/* Acceptor in HS_A_NEED_STATUS: "ok", "ok_simultaneous", "nok",
 * "not_allowed" or "alive".  Queues the status (and the challenge after ok). */
void hs_accept_status(struct hs *h, const char *status);
void hs_free(struct hs *h);
const char *hs_strerror(enum hs_err e);

/* Pure helpers, exposed for tests. */
void hs_digest(const char *cookie, uint32_t challenge, uint8_t out[16]);
/* "alive@host": exactly one '@', both parts non-empty, <= 255 bytes, no
 * control characters or spaces. */
int hs_valid_node_name(const char *name, size_t len);

#endif
