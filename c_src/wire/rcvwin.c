/* rcvwin.c - the receive buffer policy of a distribution socket (see
 * rcvwin.h).  Pure. */
#include "wire/rcvwin.h"

int rcvwin_at_up(bool known, uint32_t rtt_us)
{
    return known && rtt_us < RCVWIN_RTT_US ? RCVWIN_SMALL : 0;
}

int rcvwin_on_frame(uint32_t len)
{
    return len >= RCVWIN_BIG_FRAME ? RCVWIN_BIG : 0;
}
