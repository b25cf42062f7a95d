/* rcvwin.h - how big a receive buffer a distribution socket asks for: a
 * pure policy, no I/O (conn.c reads TCP_INFO and sets SO_RCVBUF).
 *
 * Why.  Under load kv_cnode reads a connection once per coalescing turn.
 * Between two turns a BEAM peer's small frames (a gen_server:call is three:
 * MONITOR_P, the request, DEMONITOR_P) wait unread in the socket.  With the
 * kernel's autotuned buffer the advertised window still advances while
 * they wait, so Linux acknowledges at once each time more than one
 * "full-sized" segment has come in since the last ACK; until the peer has
 * sent one segment of 536 bytes or more, that is every two or three small
 * frames.  The peer's TCP then never has anything unacknowledged for long
 * and sends every message as its own segment: on loopback, three writes per
 * call, each carrying our socket's receive path and those ACKs inside the
 * peer's own writev.  With a fixed, modest buffer the window stops
 * advancing while frames wait unread, those ACKs go (the read that drains
 * the frames, or the reply, acknowledges them), and the peer's stack
 * gathers what it writes meanwhile into fewer segments.  Whether a
 * connection had ever carried a large segment used to decide which of the
 * two ways it ran (bench/README: the 64-caller ratios split in two).
 *
 * Only where the round trip is short (loopback, LAN): a fixed buffer caps
 * the window, which a long path needs for bulk.  The first frame too large
 * for the modest buffer lifts it for good to RCVWIN_BIG (the kernel caps
 * that at net.core.rmem_max), so big values are not held to it; by then
 * the large segments have taught the kernel a large segment size, which
 * keeps those immediate ACKs rare anyway. */
#ifndef KV_RCVWIN_H
#define KV_RCVWIN_H

#include <stdbool.h>
#include <stdint.h>

#define RCVWIN_RTT_US 1000        /* below this smoothed round trip: modest */
#define RCVWIN_SMALL 65536        /* SO_RCVBUF while small (the kernel doubles it) */
#define RCVWIN_BIG_FRAME 32768    /* a frame this long lifts it */
#define RCVWIN_BIG (4 << 20)      /* SO_RCVBUF once lifted (capped by rmem_max) */

/* The SO_RCVBUF to set when a connection comes up, given its smoothed round
 * trip in µs (TCP_INFO's tcpi_rtt; known is false when it could not be
 * read): RCVWIN_SMALL, or 0 to leave the kernel's autotuning. */
int rcvwin_at_up(bool known, uint32_t rtt_us);

/* While small: the SO_RCVBUF to set once a frame of len bytes (its length
 * prefix) is seen, or 0 to stay small.  Inline: asked for every frame. */
static inline int rcvwin_on_frame(uint32_t len)
{
    return len >= RCVWIN_BIG_FRAME ? RCVWIN_BIG : 0;
}

#endif
