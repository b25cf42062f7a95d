/* epmd.h - the epmd protocol: request encoders and reply parsers (pure), and
 * a small blocking-free client used by node.c.
 * Owns: the byte layout of ALIVE2_X / PORT_PLEASE2 and their replies.
 * Parsers follow the contract: consumed bytes (>0), EPMD_NEED_MORE, or
 * EPMD_ERR; they never touch a socket. */
#ifndef KV_EPMD_H
#define KV_EPMD_H

#include <stdint.h>

#include "base/buf.h"

#define EPMD_NEED_MORE 0
#define EPMD_ERR (-1)
#define EPMD_DEFAULT_PORT 4369

/* ALIVE2_REQ (120): port, node type 72 (hidden), protocol 0 (tcp), versions
 * 6..6, name, no extra.  Appends the 2-byte-length-prefixed request. */
int epmd_enc_alive2(struct buf *b, uint16_t port, const char *alive);
/* ALIVE2_X_RESP (118) or ALIVE2_RESP (121): result and creation.
 * *result != 0 means epmd refused (name taken). */
long epmd_dec_alive2_resp(const uint8_t *p, size_t n, uint8_t *result, uint32_t *creation);
/* PORT_PLEASE2_REQ (122) for alive (the part of a node name before '@'). */
int epmd_enc_port_please2(struct buf *b, const char *alive);
/* PORT2_RESP (119): *result != 0 means no such node; else *port and
 * *highest version (must be >= 6 for us).  The name and extra fields are
 * bounds-checked and skipped. */
long epmd_dec_port2_resp(const uint8_t *p, size_t n, uint8_t *result, uint16_t *port,
                         uint16_t *highest);

#endif
