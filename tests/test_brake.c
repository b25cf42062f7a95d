/* test_brake.c - the wrong-digest brake (c_src/wire/brake.c) with injected
 * time: the free allowance, the delay growing to its cap, decay within
 * seconds, the same delay for right and wrong digests, the per-address
 * bound on held verdicts (oldest out first), other addresses untouched,
 * IPv4-mapped and /64 keys, and a table that never grows. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "wire/brake.h"

static struct brake *mk(void)
{
    struct brake *b = malloc(sizeof *b);
    assert_non_null(b);
    brake_init(b, 0x1234);
    return b;
}

static struct brake_key v4(const char *s)
{
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    struct brake_key k;
    brake_key_v4(&k, a.s_addr);
    return k;
}

static struct brake_key v6(const char *s)
{
    struct sockaddr_in6 sa = {0};
    sa.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, s, &sa.sin6_addr), 1);
    struct brake_key k;
    brake_key_from_sa(&k, (struct sockaddr *)&sa);
    return k;
}

static void test_free_then_growing_delay(void **st)
{
    struct brake *b = mk();
    struct brake_key k = v4("10.0.0.1");
    uint64_t t = 1000;
    for (int i = 0; i < BRAKE_FREE - 1; i++) {
        assert_int_equal(brake_delay(b, &k, t), 0);
        assert_false(brake_failed(b, &k, t));
    }
    assert_int_equal(brake_delay(b, &k, t), 0);
    assert_true(brake_failed(b, &k, t)); /* the fifth puts it under penalty */
    uint32_t d5 = brake_delay(b, &k, t);
    assert_int_equal(d5, BRAKE_STEP_MS);
    brake_failed(b, &k, t);
    assert_true(brake_delay(b, &k, t) > d5);
    for (int i = 0; i < 1000; i++)
        assert_false(brake_failed(b, &k, t)); /* logged once per episode */
    assert_int_equal(brake_delay(b, &k, t), BRAKE_MAX_DELAY_MS);
    assert_int_equal(brake_score(b, &k, t), BRAKE_SCORE_MAX);
    free(b);
}

static void test_decays_within_seconds(void **st)
{
    struct brake *b = mk();
    struct brake_key k = v4("10.0.0.2");
    for (int i = 0; i < 3000; i++)
        brake_failed(b, &k, 5000);
    assert_int_equal(brake_delay(b, &k, 5000), BRAKE_MAX_DELAY_MS);
    assert_true(brake_score(b, &k, 6000) <= BRAKE_SCORE_MAX / 2);
    /* monotone, and free again within 5 s of the last wrong digest */
    uint32_t prev = BRAKE_MAX_DELAY_MS;
    for (uint64_t t = 5000; t <= 10000; t += 10) {
        uint32_t d = brake_delay(b, &k, t);
        assert_true(d <= prev);
        prev = d;
    }
    assert_int_equal(brake_delay(b, &k, 10000), 0);
    assert_true(brake_score(b, &k, 10000) < BRAKE_FREE);
    assert_int_equal(brake_score(b, &k, 40000), 0); /* gone entirely */
    free(b);
}

static void test_other_addresses_untouched(void **st)
{
    struct brake *b = mk();
    struct brake_key bad = v4("127.0.0.1"), good = v4("127.0.0.2");
    for (int i = 0; i < 500; i++)
        brake_failed(b, &bad, 100);
    assert_int_equal(brake_delay(b, &good, 100), 0);
    struct brake_hold h;
    assert_null(brake_hold(b, &h, &good, 100));
    assert_false(h.on); /* not under penalty: never held */
    free(b);
}

static void test_hold_bound_oldest_first(void **st)
{
    struct brake *b = mk();
    struct brake_key k = v4("192.0.2.7");
    for (int i = 0; i < 50; i++)
        brake_failed(b, &k, 0);
    struct brake_hold *h = calloc(BRAKE_HELD_MAX + 10, sizeof *h);
    assert_non_null(h);
    for (int i = 0; i < BRAKE_HELD_MAX; i++) {
        assert_null(brake_hold(b, &h[i], &k, 1));
        assert_true(h[i].on);
    }
    assert_int_equal(brake_held(b, &k), BRAKE_HELD_MAX);
    for (int i = 0; i < 10; i++) {
        struct brake_hold *out = brake_hold(b, &h[BRAKE_HELD_MAX + i], &k, 1);
        assert_ptr_equal(out, &h[i]); /* the oldest leaves first */
        assert_false(out->on);
        assert_int_equal(brake_held(b, &k), BRAKE_HELD_MAX);
    }
    /* release in any order; twice is harmless */
    for (int i = BRAKE_HELD_MAX + 9; i >= 0; i--) {
        brake_release(b, &h[i]);
        brake_release(b, &h[i]);
    }
    assert_int_equal(brake_held(b, &k), 0);
    free(h);
    free(b);
}

/* A record with held connections is never evicted, however many other
 * addresses fail; the table never grows (a fixed array). */
static void test_held_record_survives_churn(void **st)
{
    struct brake *b = mk();
    struct brake_key k = v4("198.51.100.1");
    for (int i = 0; i < 20; i++)
        brake_failed(b, &k, 0);
    struct brake_hold h;
    brake_hold(b, &h, &k, 0);
    assert_true(h.on);
    for (uint32_t i = 0; i < 100000; i++) {
        struct brake_key o;
        brake_key_v4(&o, htonl(0x0a000000u + i));
        brake_failed(b, &o, 0);
    }
    assert_int_equal(brake_held(b, &k), 1);
    assert_true(brake_delay(b, &k, 0) > 0);
    brake_release(b, &h);
    assert_int_equal(brake_held(b, &k), 0);
    free(b);
}

static void test_keys(void **st)
{
    struct brake_key a = v4("127.0.0.1"), m = v6("::ffff:127.0.0.1");
    assert_memory_equal(&a, &m, sizeof a); /* mapped = the IPv4 address */
    struct brake_key x = v6("2001:db8:1:2::1"), y = v6("2001:db8:1:2:ffff::9");
    assert_memory_equal(&x, &y, sizeof x); /* one /64 */
    struct brake_key z = v6("2001:db8:1:3::1");
    assert_memory_not_equal(&x, &z, sizeof x);
    struct brake_key l = v6("::1");
    assert_memory_not_equal(&l, &a, sizeof l);
    struct brake *b = mk();
    for (int i = 0; i < 10; i++)
        brake_failed(b, &m, 0);
    assert_true(brake_delay(b, &a, 0) > 0);
    assert_int_equal(brake_delay(b, &l, 0), 0);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_then_growing_delay),
        cmocka_unit_test(test_decays_within_seconds),
        cmocka_unit_test(test_other_addresses_untouched),
        cmocka_unit_test(test_hold_bound_oldest_first),
        cmocka_unit_test(test_held_record_survives_churn),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
