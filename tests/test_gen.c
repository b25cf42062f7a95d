/* test_gen.c - the reply shapes gen.c picks per caller: ALIAS_SEND for
 * [alias|Ref] tags from peers with DFLAG_ALIAS, and {ok, State} for
 * sys:get_state from OTP 26+ callers (5-word alias refs, as OTP 27.3 and
 * 29.1 send; 3 words from 25.2) or DFLAG_ALTACT_SIG (OTP 28+). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kvtest.h"

static const uint8_t node_atom[] = {119, 6, 'p', '@', 'h', 'o', 's', 't'};

/* [alias|Ref] with a ref of len words; nested: [[alias|Ref]|nil]. */
static struct span tag(struct buf *b, uint8_t len, bool nested)
{
    static const uint32_t w[5] = {1, 2, 3, 4, 5};
    buf_reset(b);
    if (nested)
        ext_put_list_header(b, 1);
    ext_put_list_header(b, 1);
    ext_put_atomz(b, "alias");
    ext_put_ref(b, (struct span){node_atom, sizeof node_atom}, 7, w, len);
    if (nested)
        ext_put_nil(b);
    return (struct span){b->data, b->len};
}

static void test_sys_state_form(void **st)
{
    struct buf b = {0};
    const uint64_t f25 = KT_BEAM_FLAGS | DFLAG_ALIAS;
    assert_false(gen_sys_state_wrapped(f25, tag(&b, 3, false)));       /* OTP 25 */
    assert_true(gen_sys_state_wrapped(f25, tag(&b, 5, false)));        /* OTP 26/27 */
    assert_true(gen_sys_state_wrapped(f25 | DFLAG_ALTACT_SIG, tag(&b, 3, false))); /* 28+ */
    assert_true(gen_sys_state_wrapped(f25, tag(&b, 5, true)));
    /* a plain ref tag (no alias): the old form */
    buf_reset(&b);
    static const uint32_t w[3] = {1, 2, 3};
    ext_put_ref(&b, (struct span){node_atom, sizeof node_atom}, 7, w, 3);
    assert_false(gen_sys_state_wrapped(f25, (struct span){b.data, b.len}));
    buf_free(&b);
}

static void test_reply_by_alias(void **st)
{
    struct buf b = {0};
    struct span alias;
    struct span t = tag(&b, 5, false);
    assert_true(gen_reply_by_alias(DFLAG_ALIAS, t, &alias));
    assert_int_equal(alias.p[0], 90); /* NEWER_REFERENCE_EXT */
    assert_ptr_equal(alias.p + alias.n, t.p + t.n);
    assert_false(gen_reply_by_alias(KT_BEAM_FLAGS & ~DFLAG_ALIAS, t, &alias));
    t = tag(&b, 3, true);
    assert_true(gen_reply_by_alias(DFLAG_ALIAS, t, &alias));
    assert_int_equal(alias.p[0], 90);
    /* truncated tag: no alias */
    t.n -= 4;
    assert_false(gen_reply_by_alias(DFLAG_ALIAS, t, &alias));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sys_state_form),
        cmocka_unit_test(test_reply_by_alias),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
