/* rcvwin.c - the receive buffer policy of a distribution socket (see
 * rcvwin.h).  Pure; rcvwin_on_frame is inline there. */
#include "wire/rcvwin.h"

int rcvwin_at_up(bool known, uint32_t rtt_us)
{
    return known && rtt_us < RCVWIN_RTT_US ? RCVWIN_SMALL : 0;
}
