/* dist.h - distribution frames and control messages, pure.
 * Owns: cutting 4-byte-length frames from a byte stream (ticks included),
 * checking and decoding a frame body (pass-through 'p', control tuple,
 * optional payload) into struct dist_msg with spans into the frame, and
 * encoding the control messages the node sends.  No sockets, no tables. */
#ifndef KV_DIST_H
#define KV_DIST_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "proto/term.h"

/* Control operations (erts dist.h). */
enum dist_op {
    DOP_LINK = 1, DOP_SEND = 2, DOP_EXIT = 3, DOP_UNLINK = 4, DOP_NODE_LINK = 5,
    DOP_REG_SEND = 6, DOP_GROUP_LEADER = 7, DOP_EXIT2 = 8, DOP_SEND_TT = 12,
    DOP_EXIT_TT = 13, DOP_REG_SEND_TT = 16, DOP_EXIT2_TT = 18, DOP_MONITOR_P = 19,
    DOP_DEMONITOR_P = 20, DOP_MONITOR_P_EXIT = 21, DOP_SEND_SENDER = 22,
    DOP_SEND_SENDER_TT = 23, DOP_PAYLOAD_EXIT = 24, DOP_PAYLOAD_EXIT_TT = 25,
    DOP_PAYLOAD_EXIT2 = 26, DOP_PAYLOAD_EXIT2_TT = 27, DOP_PAYLOAD_MONITOR_P_EXIT = 28,
    DOP_SPAWN_REQUEST = 29, DOP_ALIAS_SEND = 33, DOP_ALIAS_SEND_TT = 34,
    DOP_UNLINK_ID = 35, DOP_UNLINK_ID_ACK = 36
};

/* Normalised signal kinds after decoding. */
enum dist_kind {
    DK_SEND,       /* to (pid), msg; from (pid) for SEND_SENDER, else empty */
    DK_REG_SEND,   /* from (pid), to (atom), msg */
    DK_LINK,       /* from, to (pids) */
    DK_UNLINK,     /* from, to; id when UNLINK_ID (has_id) */
    DK_UNLINK_ACK, /* id, from, to */
    DK_EXIT,       /* from, to, reason: link broken */
    DK_EXIT2,      /* from, to, reason: exit/2 */
    DK_MONITOR,    /* from (pid), to (pid or atom), ref */
    DK_DEMONITOR,  /* from, to, ref */
    DK_MONITOR_EXIT, /* from (pid or atom), to (pid), ref, reason */
    DK_GROUP_LEADER  /* ignored */
};

/* All spans point into the frame and are terms without the 131 byte. */
struct dist_msg {
    int op;
    enum dist_kind kind;
    struct span from, to, ref, reason, msg;
    uint64_t id;
    bool has_id;
};

#define DIST_NEED_MORE 0
#define DIST_E_TOO_BIG (-1)

/* Cut one frame from p[0..n).  Returns bytes consumed (> 0) with *body set
 * (body->n == 0 is a tick), DIST_NEED_MORE, or DIST_E_TOO_BIG when the
 * announced length exceeds max. */
long dist_cut(const uint8_t *p, size_t n, uint64_t max, struct span *body);

/* Decode a non-empty frame body.  Every term is walked with lim first.
 * Returns 0, or -1 with *why naming the problem (the connection closes). */
int dist_decode(const uint8_t *p, size_t n, const struct term_limits *lim,
                struct dist_msg *m, const char **why);

/* The same for a body whose terms were walked with the limits already
 * (ac_frame_in's output: 'p', the control term of ctl_len bytes with its
 * 131, then the payload with its 131, each exactly one term; fields: where
 * the control tuple's elements start, from p): the shape is checked, the
 * terms are not walked again. */
int dist_decode_walked(const uint8_t *p, size_t n, size_t ctl_len,
                       const struct term_marks *fields, struct dist_msg *m, const char **why);

/* Frame building: begin reserves the length and writes 'p'; end patches the
 * length.  Between them put the control term (with 131) and the payload. */
size_t dist_frame_begin(struct buf *b);
bool dist_frame_end(struct buf *b, size_t start);

#endif
