/* epmd.c - the epmd protocol for kv_cnode (see epmd.h).
 * Owns: the byte layout of ALIVE2 and PORT_PLEASE2 requests and their
 * replies.  The pure encoders and parsers come first and touch no socket;
 * any I/O that drives them belongs below them. */
#include "wire/epmd.h"

#include <string.h>

#define EPMD_ALIVE2_REQ 120
#define EPMD_ALIVE2_X_RESP 118
#define EPMD_ALIVE2_RESP 121
#define EPMD_PORT_PLEASE2_REQ 122
#define EPMD_PORT2_RESP 119

#define EPMD_NODE_HIDDEN 72
#define EPMD_PROTO_TCP 0
#define EPMD_DIST_VERSION 6
/* epmd itself stores at most 255 bytes of name; a bigger extra than this
 * is a lie or garbage, not something worth waiting for. */
#define EPMD_MAX_NAME 255
#define EPMD_MAX_EXTRA 1024

/* ---- pure encoders and parsers ---- */

/* An alive part as epmd takes it: non-empty, <= 255 bytes, no '@' (that
 * would be a whole node name), no NUL (epmd rejects it). */
static int epmd_valid_alive(const char *alive, size_t n)
{
    return n > 0 && n <= EPMD_MAX_NAME && memchr(alive, '@', n) == NULL;
}

/* Returns 0, or EPMD_ERR for a bad name or no memory (b is then unchanged). */
int epmd_enc_alive2(struct buf *b, uint16_t port, const char *alive)
{
    size_t n = strlen(alive);
    if (!epmd_valid_alive(alive, n))
        return EPMD_ERR;
    size_t body = 13 + n; /* tag port type proto hi lo nlen name elen */
    if (!buf_reserve(b, 2 + body))
        return EPMD_ERR;
    /* Cannot fail after the reserve above. */
    buf_put_n16(b, (uint16_t)body);
    buf_put_u8(b, EPMD_ALIVE2_REQ);
    buf_put_n16(b, port);
    buf_put_u8(b, EPMD_NODE_HIDDEN);
    buf_put_u8(b, EPMD_PROTO_TCP);
    buf_put_n16(b, EPMD_DIST_VERSION);
    buf_put_n16(b, EPMD_DIST_VERSION);
    buf_put_n16(b, (uint16_t)n);
    buf_put(b, alive, n);
    buf_put_n16(b, 0);
    return 0;
}

/* Returns 0, or EPMD_ERR for a bad name or no memory (b is then unchanged). */
int epmd_enc_port_please2(struct buf *b, const char *alive)
{
    size_t n = strlen(alive);
    if (!epmd_valid_alive(alive, n))
        return EPMD_ERR;
    if (!buf_reserve(b, 2 + 1 + n))
        return EPMD_ERR;
    /* Cannot fail after the reserve above. */
    buf_put_n16(b, (uint16_t)(1 + n));
    buf_put_u8(b, EPMD_PORT_PLEASE2_REQ);
    buf_put(b, alive, n);
    return 0;
}

/* 118 Result:8 Creation:32 (OTP 23+ epmd) or 121 Result:8 Creation:16. */
long epmd_dec_alive2_resp(const uint8_t *p, size_t n, uint8_t *result, uint32_t *creation)
{
    struct cur c = cur_make(p, n);
    uint8_t tag, res;
    uint16_t cr16;
    uint32_t cr32;
    if (!cur_u8(&c, &tag))
        return EPMD_NEED_MORE;
    if (tag == EPMD_ALIVE2_X_RESP) {
        if (!cur_u8(&c, &res) || !cur_n32(&c, &cr32))
            return EPMD_NEED_MORE;
    } else if (tag == EPMD_ALIVE2_RESP) {
        if (!cur_u8(&c, &res) || !cur_n16(&c, &cr16))
            return EPMD_NEED_MORE;
        cr32 = cr16;
    } else {
        return EPMD_ERR;
    }
    *result = res;
    *creation = cr32;
    return (long)c.pos;
}

/* 119 Result:8, and when Result == 0: PortNo:16 NodeType:8 Protocol:8
 * Highest:16 Lowest:16 NLen:16 Name ELen:16 Extra. */
long epmd_dec_port2_resp(const uint8_t *p, size_t n, uint8_t *result, uint16_t *port,
                         uint16_t *highest)
{
    struct cur c = cur_make(p, n);
    uint8_t tag, res, type, proto;
    uint16_t prt, hi, lo, nlen, elen;
    if (!cur_u8(&c, &tag))
        return EPMD_NEED_MORE;
    if (tag != EPMD_PORT2_RESP)
        return EPMD_ERR;
    if (!cur_u8(&c, &res))
        return EPMD_NEED_MORE;
    if (res != 0) {
        *result = res;
        *port = 0;
        *highest = 0;
        return (long)c.pos;
    }
    if (!cur_n16(&c, &prt) || !cur_u8(&c, &type) || !cur_u8(&c, &proto) ||
        !cur_n16(&c, &hi) || !cur_n16(&c, &lo) || !cur_n16(&c, &nlen))
        return EPMD_NEED_MORE;
    /* Judge each length as soon as it is read: a lying one is an error
     * even before the bytes it claims could have arrived. */
    if (nlen == 0 || nlen > EPMD_MAX_NAME)
        return EPMD_ERR;
    if (!cur_skip(&c, nlen) || !cur_n16(&c, &elen))
        return EPMD_NEED_MORE;
    if (elen > EPMD_MAX_EXTRA)
        return EPMD_ERR;
    if (!cur_skip(&c, elen))
        return EPMD_NEED_MORE;
    *result = 0;
    *port = prt;
    *highest = hi;
    return (long)c.pos;
}
