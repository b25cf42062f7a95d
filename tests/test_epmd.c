/* test_epmd.c - epmd request encoders and reply parsers (c_src/epmd.c):
 * exact bytes out, every split point in, garbage and lies rejected. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wire/epmd.h"

/* Parsers run on exact-size heap copies so ASan sees any overread. */
static long alive2(const uint8_t *p, size_t n, uint8_t *res, uint32_t *cr)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    memcpy(c, p, n);
    long r = epmd_dec_alive2_resp(c, n, res, cr);
    free(c);
    return r;
}

static long port2(const uint8_t *p, size_t n, uint8_t *res, uint16_t *port, uint16_t *hi)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    memcpy(c, p, n);
    long r = epmd_dec_port2_resp(c, n, res, port, hi);
    free(c);
    return r;
}

/* ---- encoders ---- */

static void test_enc_alive2(void **state)
{
    (void)state;
    static const uint8_t want[] = {0, 15, 120, 0x12, 0x34, 72, 0, 0, 6, 0, 6, 0, 2, 'k', 'v', 0, 0};
    struct buf b;
    buf_init(&b);
    assert_int_equal(epmd_enc_alive2(&b, 0x1234, "kv"), 0);
    assert_int_equal(buf_avail(&b), sizeof want);
    assert_memory_equal(buf_head(&b), want, sizeof want);
    /* appends behind what is already there */
    assert_int_equal(epmd_enc_alive2(&b, 0x1234, "kv"), 0);
    assert_int_equal(buf_avail(&b), 2 * sizeof want);
    assert_memory_equal(buf_head(&b) + sizeof want, want, sizeof want);
    buf_free(&b);
}

static void test_enc_alive2_long_name(void **state)
{
    (void)state;
    char name[257];
    struct buf b;
    buf_init(&b);
    memset(name, 'n', sizeof name);
    name[255] = '\0';
    assert_int_equal(epmd_enc_alive2(&b, 1, name), 0);
    assert_int_equal(buf_avail(&b), 2 + 13 + 255);
    assert_int_equal(buf_head(&b)[0], 0x01); /* Len = 268 */
    assert_int_equal(buf_head(&b)[1], 0x0c);
    assert_int_equal(buf_head(&b)[11], 0); /* NLen = 255 */
    assert_int_equal(buf_head(&b)[12], 255);
    buf_free(&b);
}

static void test_enc_bad_names(void **state)
{
    (void)state;
    char name[257];
    memset(name, 'n', sizeof name);
    name[256] = '\0';
    const char *bad[] = {"", "kv@host", "@", name};
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(epmd_enc_alive2(&b, 1, bad[i]), EPMD_ERR);
        assert_int_equal(epmd_enc_port_please2(&b, bad[i]), EPMD_ERR);
        assert_int_equal(buf_avail(&b), 0);
    }
    buf_free(&b);
}

static void test_enc_port_please2(void **state)
{
    (void)state;
    static const uint8_t want[] = {0, 3, 122, 'k', 'v'};
    struct buf b;
    buf_init(&b);
    assert_int_equal(epmd_enc_port_please2(&b, "kv"), 0);
    assert_int_equal(buf_avail(&b), sizeof want);
    assert_memory_equal(buf_head(&b), want, sizeof want);
    buf_free(&b);
}

/* ---- ALIVE2 replies ---- */

static void test_dec_alive2_x(void **state)
{
    (void)state;
    static const uint8_t in[] = {118, 0, 0x12, 0x34, 0x56, 0x78, 0xee};
    uint8_t res = 9;
    uint32_t cr = 0;
    for (size_t k = 0; k < 6; k++)
        assert_int_equal(alive2(in, k, &res, &cr), EPMD_NEED_MORE);
    assert_int_equal(res, 9); /* untouched until complete */
    assert_int_equal(alive2(in, 6, &res, &cr), 6);
    assert_int_equal(alive2(in, sizeof in, &res, &cr), 6); /* trailing byte not ours */
    assert_int_equal(res, 0);
    assert_int_equal(cr, 0x12345678);
}

static void test_dec_alive2_old(void **state)
{
    (void)state;
    static const uint8_t in[] = {121, 0, 0, 3};
    uint8_t res = 9;
    uint32_t cr = 0;
    for (size_t k = 0; k < sizeof in; k++)
        assert_int_equal(alive2(in, k, &res, &cr), EPMD_NEED_MORE);
    assert_int_equal(alive2(in, sizeof in, &res, &cr), 4);
    assert_int_equal(res, 0);
    assert_int_equal(cr, 3);
}

static void test_dec_alive2_refused(void **state)
{
    (void)state;
    /* epmd answers a taken name with result 1 and creation 99 */
    static const uint8_t in[] = {118, 1, 0, 0, 0, 99};
    uint8_t res = 0;
    uint32_t cr = 0;
    assert_int_equal(alive2(in, sizeof in, &res, &cr), 6);
    assert_int_equal(res, 1);
}

static void test_dec_alive2_garbage(void **state)
{
    (void)state;
    static const uint8_t tags[] = {0, 119, 120, 122, 'H', 255};
    uint8_t res;
    uint32_t cr;
    for (size_t i = 0; i < sizeof tags; i++) {
        uint8_t in[6] = {tags[i], 0, 0, 0, 0, 1};
        assert_int_equal(alive2(in, 1, &res, &cr), EPMD_ERR);
        assert_int_equal(alive2(in, sizeof in, &res, &cr), EPMD_ERR);
    }
}

/* ---- PORT2 replies ---- */

static const uint8_t port2_ok[] = {119, 0, 0x1f, 0x90, 77, 0, 0, 6, 0, 5, 0, 2, 'k', 'v',
                                   0, 3, 'x', 'y', 'z'};

static void test_dec_port2_splits(void **state)
{
    (void)state;
    uint8_t res = 9;
    uint16_t port = 0, hi = 0;
    for (size_t k = 0; k < sizeof port2_ok; k++)
        assert_int_equal(port2(port2_ok, k, &res, &port, &hi), EPMD_NEED_MORE);
    assert_int_equal(res, 9);
    assert_int_equal(port2(port2_ok, sizeof port2_ok, &res, &port, &hi), (long)sizeof port2_ok);
    assert_int_equal(res, 0);
    assert_int_equal(port, 8080);
    assert_int_equal(hi, 6);
}

/* Bytes arriving in two reads, cut at every point: the caller keeps the
 * first part and parses again with the rest appended. */
static void test_dec_port2_two_reads(void **state)
{
    (void)state;
    for (size_t k = 0; k <= sizeof port2_ok; k++) {
        uint8_t res = 9;
        uint16_t port = 0, hi = 0;
        long r = port2(port2_ok, k, &res, &port, &hi);
        if (k < sizeof port2_ok)
            assert_int_equal(r, EPMD_NEED_MORE);
        r = port2(port2_ok, sizeof port2_ok, &res, &port, &hi);
        assert_int_equal(r, (long)sizeof port2_ok);
        assert_int_equal(port, 8080);
    }
}

static void test_dec_port2_no_node(void **state)
{
    (void)state;
    static const uint8_t in[] = {119, 1};
    uint8_t res = 0;
    uint16_t port = 7, hi = 7;
    assert_int_equal(port2(in, 1, &res, &port, &hi), EPMD_NEED_MORE);
    assert_int_equal(port2(in, 2, &res, &port, &hi), 2);
    assert_int_equal(res, 1);
    assert_int_equal(port, 0);
    assert_int_equal(hi, 0);
}

static void test_dec_port2_lies(void **state)
{
    (void)state;
    uint8_t res;
    uint16_t port, hi;
    uint8_t in[sizeof port2_ok];

    /* NLen 256 is an error as soon as it is read */
    memcpy(in, port2_ok, sizeof in);
    in[10] = 1;
    in[11] = 0;
    assert_int_equal(port2(in, 12, &res, &port, &hi), EPMD_ERR);
    assert_int_equal(port2(in, sizeof in, &res, &port, &hi), EPMD_ERR);
    /* NLen 0: no node has an empty name */
    in[10] = 0;
    in[11] = 0;
    assert_int_equal(port2(in, 12, &res, &port, &hi), EPMD_ERR);
    /* NLen 200 is legal, merely not here yet */
    in[11] = 200;
    assert_int_equal(port2(in, sizeof in, &res, &port, &hi), EPMD_NEED_MORE);
    /* ELen 0xffff */
    memcpy(in, port2_ok, sizeof in);
    in[14] = 0xff;
    in[15] = 0xff;
    assert_int_equal(port2(in, 16, &res, &port, &hi), EPMD_ERR);
    /* wrong tag */
    memcpy(in, port2_ok, sizeof in);
    in[0] = 118;
    assert_int_equal(port2(in, sizeof in, &res, &port, &hi), EPMD_ERR);
    assert_int_equal(port2(in, 1, &res, &port, &hi), EPMD_ERR);
}

/* Random bytes: every answer is ERR, NEED_MORE or a length within n. */
static void test_dec_random(void **state)
{
    (void)state;
    uint32_t x = 12345;
    uint8_t in[64];
    for (int round = 0; round < 20000; round++) {
        size_t n = (x >> 8) % sizeof in;
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            in[i] = (uint8_t)(x >> 16);
        }
        if (n > 0 && round % 2)
            in[0] = round % 4 == 1 ? 119 : 118; /* reach past the tag check */
        uint8_t res;
        uint16_t port, hi;
        uint32_t cr;
        long r = port2(in, n, &res, &port, &hi);
        assert_true(r >= EPMD_ERR && r <= (long)n);
        r = alive2(in, n, &res, &cr);
        assert_true(r >= EPMD_ERR && r <= (long)n);
        x = x * 1103515245u + 12345u;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enc_alive2),
        cmocka_unit_test(test_enc_alive2_long_name),
        cmocka_unit_test(test_enc_bad_names),
        cmocka_unit_test(test_enc_port_please2),
        cmocka_unit_test(test_dec_alive2_x),
        cmocka_unit_test(test_dec_alive2_old),
        cmocka_unit_test(test_dec_alive2_refused),
        cmocka_unit_test(test_dec_alive2_garbage),
        cmocka_unit_test(test_dec_port2_splits),
        cmocka_unit_test(test_dec_port2_two_reads),
        cmocka_unit_test(test_dec_port2_no_node),
        cmocka_unit_test(test_dec_port2_lies),
        cmocka_unit_test(test_dec_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
