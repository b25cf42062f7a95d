/* test_fuzz_regress.c - the libFuzzer targets' own code (tests/fuzz/fuzz_*.c,
 * included here with renamed entry points) replayed under cmocka on every
 * input that once broke an invariant (tests/fuzz/regress/<target>/) and on
 * the whole committed seed corpus (tests/fuzz/corpus/<target>/).  So the
 * crashes fuzzing found stay fixed in `make unit` and `make test SANITIZE=1`
 * without clang, and an invariant failure is a test failure, not an abort. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char fz_current[2048]; /* the input being replayed, for the failure */

#define FZ_CHECK(cond)                                                                 \
    do {                                                                               \
        if (!(cond))                                                                   \
            fail_msg("fuzz invariant failed on %s: %s (%s:%d)", fz_current, #cond,     \
                     __FILE__, __LINE__);                                              \
    } while (0)

#define LLVMFuzzerTestOneInput fz_dist_one
#include "fuzz/fuzz_dist.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_term_one
#include "fuzz/fuzz_term.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_hs_accept_one
#include "fuzz/fuzz_hs_accept.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_hs_connect_one
#include "fuzz/fuzz_hs_connect.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_conn_one
#include "fuzz/fuzz_conn.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fz_atomcache_one
#include "fuzz/fuzz_atomcache.c"
#undef LLVMFuzzerTestOneInput

typedef int fz_fn(const uint8_t *, size_t);

/* tests/<rel>, found beside this source file. */
static void path_of(char *out, size_t n, const char *rel)
{
    const char *f = __FILE__;
    const char *slash = strrchr(f, '/');
    snprintf(out, n, "%.*s%s", slash ? (int)(slash - f + 1) : 0, f, rel);
}

/* Run fn on every file in tests/<dir>/; returns how many. */
static size_t replay_dir(const char *dir, fz_fn *fn, bool must_exist)
{
    char path[1024];
    path_of(path, sizeof path, dir);
    DIR *d = opendir(path);
    if (!d) {
        if (must_exist)
            fail_msg("cannot open %s (run from the repository root)", path);
        return 0;
    }
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char fp[2048];
        snprintf(fp, sizeof fp, "%s/%s", path, e->d_name);
        FILE *f = fopen(fp, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        /* an exact-size copy: ASan sees any read past the input */
        uint8_t *p = malloc(len > 0 ? (size_t)len : 1);
        assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
        fclose(f);
        snprintf(fz_current, sizeof fz_current, "%s", fp);
        fn(p, (size_t)len);
        free(p);
        count++;
    }
    closedir(d);
    return count;
}

static void replay(const char *target, fz_fn *fn)
{
    char dir[256];
    snprintf(dir, sizeof dir, "fuzz/regress/%s", target);
    size_t r = replay_dir(dir, fn, false);
    snprintf(dir, sizeof dir, "fuzz/corpus/%s", target);
    size_t c = replay_dir(dir, fn, true);
    assert_true(c > 0);
    print_message("%s: %zu regression inputs, %zu seeds\n", target, r, c);
}

static void test_replay_dist(void **state) { replay("fuzz_dist", fz_dist_one); }
static void test_replay_term(void **state) { replay("fuzz_term", fz_term_one); }
static void test_replay_hs_accept(void **state) { replay("fuzz_hs_accept", fz_hs_accept_one); }
static void test_replay_hs_connect(void **state) { replay("fuzz_hs_connect", fz_hs_connect_one); }
static void test_replay_conn(void **state) { replay("fuzz_conn", fz_conn_one); }
static void test_replay_atomcache(void **state) { replay("fuzz_atomcache", fz_atomcache_one); }

/* fuzz_hs_accept's first finding (clang UBSan, "applying zero offset to
 * null pointer"): buf_head of a buffer that never grew did NULL + 0, which
 * conn.c also does after every handshake read that produced no packet. */
static void test_buf_head_of_empty_buffer(void **state)
{
    struct buf b;
    buf_init(&b);
    assert_null(buf_head(&b));
    assert_int_equal(buf_avail(&b), 0);
    struct hs h;
    hs_init_accept(&h, "kv@localhost", HS_OUR_FLAGS, 1, "c", 1, 2);
    assert_int_equal(hs_feed(&h, (const uint8_t *)"\0", 1), 0); /* half a header */
    assert_null(buf_head(&h.out));
    assert_int_equal(buf_avail(&h.out), 0);
    hs_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_head_of_empty_buffer),
        cmocka_unit_test(test_replay_dist),
        cmocka_unit_test(test_replay_term),
        cmocka_unit_test(test_replay_hs_accept),
        cmocka_unit_test(test_replay_hs_connect),
        cmocka_unit_test(test_replay_conn),
        cmocka_unit_test(test_replay_atomcache),
    };
    return cmocka_run_group_tests_name("fuzz_regress", tests, NULL, NULL);
}
