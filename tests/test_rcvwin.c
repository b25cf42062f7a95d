/* test_rcvwin.c - the receive buffer policy of a distribution socket
 * (c_src/wire/rcvwin.c): modest only over a short path (and not when the
 * round trip is unknown), lifted by a frame too big for it and not by
 * anything shorter. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>

#include "wire/rcvwin.h"

static void test_short_path_only(void **state)
{
    (void)state;
    assert_int_equal(rcvwin_at_up(true, 0), RCVWIN_SMALL);
    assert_int_equal(rcvwin_at_up(true, 60), RCVWIN_SMALL);        /* loopback */
    assert_int_equal(rcvwin_at_up(true, RCVWIN_RTT_US - 1), RCVWIN_SMALL);
    assert_int_equal(rcvwin_at_up(true, RCVWIN_RTT_US), 0);        /* a long path keeps autotuning */
    assert_int_equal(rcvwin_at_up(true, 40000), 0);
    assert_int_equal(rcvwin_at_up(false, 60), 0);                  /* unknown: leave it */
}

static void test_big_frame_lifts(void **state)
{
    (void)state;
    assert_int_equal(rcvwin_on_frame(0), 0);                       /* a tick */
    assert_int_equal(rcvwin_on_frame(200), 0);
    assert_int_equal(rcvwin_on_frame(RCVWIN_BIG_FRAME - 1), 0);
    assert_int_equal(rcvwin_on_frame(RCVWIN_BIG_FRAME), RCVWIN_BIG);
    assert_int_equal(rcvwin_on_frame(UINT32_MAX), RCVWIN_BIG);
    /* the lifted buffer is larger than the modest one, and a frame that
     * lifts it would not fit the modest one's window (about half of it) */
    assert_true(RCVWIN_BIG > RCVWIN_SMALL);
    assert_true(RCVWIN_BIG_FRAME <= RCVWIN_SMALL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_path_only),
        cmocka_unit_test(test_big_frame_lifts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
