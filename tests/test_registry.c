/* test_registry.c - the KV.Registry (c_src/registry.c): the pure name table
 * (reg_*: linear probing with backward-shift deletion, slot reuse), and the
 * registry process's calls and casts on a bare node with no sockets:
 * lookup/create/register/unregister/count/unknown, canonical names (one
 * entry per Erlang value whatever its encoding), monitors on registered
 * pids (local and remote) and the whole call path through a connection. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kvtest.h"

/* A term given as a string literal (embedded NULs included). */
struct enc {
    const char *p;
    size_t n;
};
#define E(s) {s, sizeof s - 1}

/* ---- the pure table ---- */

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Name i: its index, then filler up to 4..63 bytes, so both inline
 * (<= 24) and heap names occur. */
static size_t name_of(uint32_t i, uint8_t *out)
{
    size_t len = 4 + (i * 7) % 60;
    memcpy(out, &i, 4);
    for (size_t k = 4; k < len; k++)
        out[k] = (uint8_t)(i * 13 + k * 31);
    return len;
}

static struct epid pid_n(uint32_t i)
{
    struct epid p = {0, i, i ^ 0x55, 7};
    return p;
}

static void test_reg_basic(void **state)
{
    struct reg *r = reg_new(42);
    assert_non_null(r);
    const uint8_t a[] = "alpha", b[] = "a name longer than twenty-four bytes";
    assert_int_equal(reg_find(r, a, 5), REG_NONE);
    struct epid pa = pid_n(1), pb = pid_n(2);
    uint32_t sa = reg_add(r, a, 5, &pa);
    uint32_t sb = reg_add(r, b, sizeof b - 1, &pb);
    assert_int_not_equal(sa, REG_NONE);
    assert_int_not_equal(sb, REG_NONE);
    assert_int_equal(reg_find(r, a, 5), sa);
    assert_int_equal(reg_find(r, b, sizeof b - 1), sb);
    assert_memory_equal(reg_name(r, sa), a, 5);
    assert_memory_equal(reg_name(r, sb), b, sizeof b - 1);
    assert_true(epid_eq(&r->ents[sb].pid, &pb));
    /* a prefix or an extension is another name */
    assert_int_equal(reg_find(r, a, 4), REG_NONE);
    assert_int_equal(reg_find(r, b, sizeof b - 2), REG_NONE);
    assert_int_equal(reg_find(r, (const uint8_t *)"", 0), REG_NONE);
    assert_int_equal(r->count, 2);
    reg_del(r, sa);
    assert_int_equal(reg_find(r, a, 5), REG_NONE);
    assert_int_equal(reg_find(r, b, sizeof b - 1), sb);
    assert_int_equal(r->count, 1);
    /* the empty name is a name too */
    uint32_t se = reg_add(r, (const uint8_t *)"", 0, &pa);
    assert_int_equal(reg_find(r, (const uint8_t *)"", 0), se);
    reg_free(r);
}

/* 10k names, delete a random half, every other still found, every deleted
 * one gone; then add them back into the freed slots. */
static void test_reg_many_delete_half(void **state)
{
    enum { N = 10000 };
    struct reg *r = reg_new(0xfeedULL);
    static uint32_t slot[N];
    static bool gone[N];
    uint8_t nm[64];
    for (uint32_t i = 0; i < N; i++) {
        size_t len = name_of(i, nm);
        assert_int_equal(reg_find(r, nm, len), REG_NONE);
        struct epid p = pid_n(i);
        slot[i] = reg_add(r, nm, len, &p);
        assert_int_not_equal(slot[i], REG_NONE);
    }
    assert_int_equal(r->count, N);
    uint32_t dels = 0;
    for (uint32_t i = 0; i < N; i++) {
        gone[i] = rng() & 1;
        if (gone[i]) {
            reg_del(r, slot[i]);
            dels++;
        }
    }
    assert_int_equal(r->count, N - dels);
    for (uint32_t i = 0; i < N; i++) {
        size_t len = name_of(i, nm);
        uint32_t s = reg_find(r, nm, len);
        if (gone[i]) {
            assert_int_equal(s, REG_NONE);
        } else {
            assert_int_equal(s, slot[i]);
            struct epid p = pid_n(i);
            assert_true(epid_eq(&r->ents[s].pid, &p));
        }
    }
    /* back in: freed slots are reused, the slab does not grow */
    uint32_t nents = r->nents;
    for (uint32_t i = 0; i < N; i++)
        if (gone[i]) {
            size_t len = name_of(i, nm);
            struct epid p = pid_n(i + N);
            slot[i] = reg_add(r, nm, len, &p);
            assert_int_not_equal(slot[i], REG_NONE);
        }
    assert_int_equal(r->nents, nents);
    assert_int_equal(r->count, N);
    for (uint32_t i = 0; i < N; i++) {
        size_t len = name_of(i, nm);
        assert_int_equal(reg_find(r, nm, len), slot[i]);
    }
    /* and all out again, in random order */
    for (uint32_t i = N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rng() % (i + 1)), tmp = slot[i];
        slot[i] = slot[j];
        slot[j] = tmp;
    }
    for (uint32_t i = 0; i < N; i++)
        reg_del(r, slot[i]);
    assert_int_equal(r->count, 0);
    for (uint32_t i = 0; i < r->tabcap; i++)
        assert_int_equal(r->tab[i], 0);
    reg_free(r);
}

/* Names chosen so their home positions in the 64-entry index are 62, 63,
 * 0 and 1: long probe runs that wrap around the end of the table.  Every
 * deletion order must leave the others findable. */
static void test_reg_collisions_wrap(void **state)
{
    enum { K = 24 };
    const uint64_t seed = 7;
    uint8_t names[K][8];
    int want[4] = {8, 8, 4, 4}, homes[4] = {62, 63, 0, 1};
    int got = 0;
    for (uint32_t i = 0; got < K; i++) {
        uint8_t nm[8];
        memcpy(nm, &i, 4);
        memcpy(nm + 4, "colz", 4);
        uint32_t h = (uint32_t)term_hash(nm, 8, seed) & 63;
        for (int k = 0; k < 4; k++)
            if (h == (uint32_t)homes[k] && want[k] > 0) {
                want[k]--;
                memcpy(names[got++], nm, 8);
            }
    }
    for (int round = 0; round < 200; round++) {
        struct reg *r = reg_new(seed);
        uint32_t slot[K];
        for (int i = 0; i < K; i++) {
            struct epid p = pid_n((uint32_t)i);
            slot[i] = reg_add(r, names[i], 8, &p);
        }
        assert_int_equal(r->tabcap, 64);
        int order[K];
        for (int i = 0; i < K; i++)
            order[i] = i;
        for (int i = K - 1; i > 0; i--) {
            int j = (int)(rng() % (uint64_t)(i + 1)), tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        bool dead[K] = {false};
        for (int d = 0; d < K; d++) {
            reg_del(r, slot[order[d]]);
            dead[order[d]] = true;
            for (int i = 0; i < K; i++)
                assert_int_equal(reg_find(r, names[i], 8), dead[i] ? REG_NONE : slot[i]);
        }
        reg_free(r);
    }
}

static void test_reg_slot_reuse(void **state)
{
    struct reg *r = reg_new(1);
    struct epid p = pid_n(1);
    uint32_t a = reg_add(r, (const uint8_t *)"a", 1, &p);
    uint32_t b = reg_add(r, (const uint8_t *)"b-is-a-long-heap-allocated-name", 31, &p);
    uint32_t c = reg_add(r, (const uint8_t *)"c", 1, &p);
    reg_del(r, b);
    /* a heap name freed, an inline name reuses its slot (and vice versa) */
    uint32_t d = reg_add(r, (const uint8_t *)"d", 1, &p);
    assert_int_equal(d, b);
    reg_del(r, a);
    uint32_t e = reg_add(r, (const uint8_t *)"e-is-another-long-heap-name-xx", 30, &p);
    assert_int_equal(e, a);
    assert_int_equal(reg_find(r, (const uint8_t *)"c", 1), c);
    assert_int_equal(reg_find(r, (const uint8_t *)"d", 1), d);
    assert_int_equal(reg_find(r, (const uint8_t *)"e-is-another-long-heap-name-xx", 30), e);
    assert_int_equal(r->nents, 3);
    reg_free(r);
}

/* ---- the registry process ---- */

static enum gen_result rcall(struct tnode *t, const struct buf *req, struct buf *out)
{
    buf_reset(out);
    return gen_call_direct(&t->n, kt_registry(&t->n), cur_make(req->data, req->len), out);
}

/* {Op, Name} with Name given as raw term bytes. */
static void req2(struct buf *b, const char *op, const void *name, size_t n)
{
    buf_reset(b);
    ext_put_tuple(b, 2);
    kt_atom(b, op);
    buf_put(b, name, n);
}

static bool reply_is_atom(const struct buf *out, const char *atom)
{
    struct span s = {out->data, out->len};
    return kt_span_atom(s, atom);
}

/* {ok, Pid} -> Pid */
static struct epid reply_ok_pid(struct tnode *t, const struct buf *out)
{
    struct cur c = cur_make(out->data, out->len);
    uint32_t ar;
    struct epid p;
    assert_true(ext_get_tuple(&c, &ar));
    assert_int_equal(ar, 2);
    assert_true(ext_atom_eq(&c, "ok"));
    assert_true(ext_skip(&c, NULL));
    assert_true(node_get_pid(&t->n, &c, &p));
    assert_int_equal(cur_left(&c), 0);
    return p;
}

static bool reply_is_error(const struct buf *out, const char *what)
{
    struct buf want;
    buf_init(&want);
    ext_put_tuple(&want, 2);
    kt_atom(&want, "error");
    kt_atom(&want, what);
    bool ok = want.len == out->len && memcmp(want.data, out->data, want.len) == 0;
    buf_free(&want);
    return ok;
}

static int64_t reply_int(const struct buf *out)
{
    struct cur c = cur_make(out->data, out->len);
    int64_t v;
    assert_true(ext_get_int(&c, &v));
    return v;
}

static int64_t count(struct tnode *t)
{
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    kt_atom(&req, "count");
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    int64_t v = reply_int(&out);
    buf_free(&req);
    buf_free(&out);
    return v;
}

static const char BIN_SHOP[] = "m\0\0\0\x08shopping"; /* <<"shopping">> */
#define BIN_SHOP_N 13

static void test_registry_calls(void **state)
{
    struct tnode *t = kt_node_new();
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    assert_int_equal(count(t), 0);
    req2(&req, "lookup", BIN_SHOP, BIN_SHOP_N);
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    assert_true(reply_is_atom(&out, "error"));
    req2(&req, "create", BIN_SHOP, BIN_SHOP_N);
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    struct epid b = reply_ok_pid(t, &out);
    assert_int_equal(b.node, 0);
    assert_int_equal(b.creation, KT_CREATION);
    struct proc *bp = proc_get(&t->n, &b);
    assert_non_null(bp);
    assert_ptr_equal(proc_beh(&t->n, bp), &bucket_behaviour);
    /* create again: the same bucket */
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    struct epid b2 = reply_ok_pid(t, &out);
    assert_true(epid_eq(&b, &b2));
    req2(&req, "lookup", BIN_SHOP, BIN_SHOP_N);
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    b2 = reply_ok_pid(t, &out);
    assert_true(epid_eq(&b, &b2));
    assert_int_equal(count(t), 1);

    /* register the bucket under another name, then again: taken */
    buf_reset(&req);
    ext_put_tuple(&req, 3);
    kt_atom(&req, "register");
    kt_atom(&req, "other");
    assert_true(node_put_pid(&t->n, &req, &b));
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    assert_true(reply_is_atom(&out, "ok"));
    assert_int_equal(count(t), 2);
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    {
        struct buf want;
        buf_init(&want);
        ext_put_tuple(&want, 2);
        kt_atom(&want, "error");
        ext_put_tuple(&want, 2);
        kt_atom(&want, "already_registered");
        node_put_pid(&t->n, &want, &b);
        assert_int_equal(out.len, want.len);
        assert_memory_equal(out.data, want.data, want.len);
        buf_free(&want);
    }
    /* register with something that is not a pid: not a call we know */
    buf_reset(&req);
    ext_put_tuple(&req, 3);
    kt_atom(&req, "register");
    kt_atom(&req, "third");
    kt_atom(&req, "not_a_pid");
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    assert_true(reply_is_error(&out, "unknown_call"));
    assert_int_equal(count(t), 2);

    /* unregister, twice (absent is ok too) */
    buf_reset(&req);
    ext_put_tuple(&req, 2);
    kt_atom(&req, "unregister");
    kt_atom(&req, "other");
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    assert_true(reply_is_atom(&out, "ok"));
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    assert_true(reply_is_atom(&out, "ok"));
    assert_int_equal(count(t), 1);
    assert_non_null(proc_get(&t->n, &b)); /* unregistering kills nothing */
    /* unregistering a bucket's own name leaves the bucket alone too */
    req2(&req, "unregister", BIN_SHOP, BIN_SHOP_N);
    assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
    assert_int_equal(count(t), 0);
    assert_non_null(proc_get(&t->n, &b));
    proc_exit(&t->n, b.id, R_NORMAL); /* and its end finds no entry to drop */
    assert_int_equal(count(t), 0);

    /* anything else: {error, unknown_call}, never a crash */
    static const struct enc bad[] = {
        E("w\3foo"),                          /* foo */
        E("h\1w\6lookup"),                    /* {lookup} */
        E("h\3w\6lookupw\1aw\1b"),            /* {lookup, a, b} */
        E("h\2w\5countw\1a"),                 /* {count, a} */
        E("h\4w\x08registerw\1aw\1bw\1c"),    /* {register, a, b, c} */
        E("h\2w\x08registerw\1a"),            /* {register, a} */
        E("h\3w\6createw\1aw\1b"),            /* {create, a, b} */
        E("h\2w\5bogusw\1a"),                 /* {bogus, a} */
        E("h\0"),                             /* {} */
        E("a\5"),                             /* 5 */
        E("j"),                               /* [] */
        E("k\0\5count"),                      /* "count" */
        E("h\2k\0\6lookupw\1a"),              /* {"lookup", a} */
        E("h\2w\6lookup"),                    /* {lookup, <missing>}: cut short */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_reset(&req);
        buf_put(&req, bad[i].p, bad[i].n);
        assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
        if (!reply_is_error(&out, "unknown_call"))
            fail_msg("request %zu not refused as unknown_call", i);
    }
    assert_int_equal(count(t), 0);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

static void test_registry_cast(void **state)
{
    struct tnode *t = kt_node_new();
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    req2(&req, "create", BIN_SHOP, BIN_SHOP_N);
    gen_cast_direct(&t->n, kt_registry(&t->n), cur_make(req.data, req.len));
    gen_cast_direct(&t->n, kt_registry(&t->n), cur_make(req.data, req.len));
    assert_int_equal(count(t), 1);
    req2(&req, "lookup", BIN_SHOP, BIN_SHOP_N);
    rcall(t, &req, &out);
    struct epid b = reply_ok_pid(t, &out);
    assert_non_null(proc_get(&t->n, &b));
    /* unknown casts are ignored */
    static const struct enc bad[] = {E("w\3foo"), E("h\3w\6createw\1aw\1b"),
                                     E("h\2w\6lookupw\1a"), E("h\0"), E("h\1w\6create")};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_reset(&req);
        buf_put(&req, bad[i].p, bad[i].n);
        gen_cast_direct(&t->n, kt_registry(&t->n), cur_make(req.data, req.len));
    }
    assert_int_equal(count(t), 1);
    assert_int_equal(t->n.procs->live, 3);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

/* The same Erlang value in different encodings is one name; different
 * values that look alike are different names. */

static const struct enc same[][4] = {
    /* 'abc': ATOM_EXT, SMALL_ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT */
    {E("d\0\3abc"), E("s\3abc"), E("v\0\3abc"), E("w\3abc")},
    /* 5: SMALL_INTEGER, INTEGER, SMALL_BIG, SMALL_BIG with a high zero byte */
    {E("a\5"), E("b\0\0\0\5"), E("n\1\0\5"), E("n\2\0\5\0")},
    /* 70000: INTEGER, SMALL_BIG, LARGE_BIG */
    {E("b\0\1\x11\x70"), E("n\3\0\x70\x11\1"), E("o\0\0\0\3\0\x70\x11\1"),
     E("n\4\0\x70\x11\1\0")},
    /* "ab": STRING_EXT, LIST_EXT of small integers, LIST_EXT of INTEGER_EXT */
    {E("k\0\2ab"), E("l\0\0\0\2a\x61" "a\x62j"), E("l\0\0\0\2b\0\0\0\x61" "b\0\0\0\x62j"),
     E("l\0\0\0\1a\x61k\0\1b")},
    /* #{a => 1, b => 2} in both orders, keys in two atom encodings */
    {E("t\0\0\0\2w\1aa\1w\1ba\2"), E("t\0\0\0\2w\1ba\2w\1aa\1"),
     E("t\0\0\0\2d\0\1ba\2s\1aa\1"), E("t\0\0\0\2s\1aa\1v\0\1ba\2")},
    /* {'\xfc'} (u with diaeresis): Latin-1 ATOM_EXT vs UTF-8 */
    {E("h\1d\0\1\xfc"), E("h\1w\2\xc3\xbc"), E("h\1s\1\xfc"), E("h\1v\0\2\xc3\xbc")},
};

static const struct enc different[] = {
    E("a\1"),                          /* 1 */
    E("F\x3f\xf0\0\0\0\0\0\0"),        /* 1.0 */
    E("k\0\1a"),                       /* "a" */
    E("w\1a"),                         /* 'a' */
    E("m\0\0\0\1a"),                   /* <<"a">> */
    E("h\1w\1a"),                      /* {a} */
    E("l\0\0\0\1w\1aj"),               /* [a] */
    E("l\0\0\0\1w\1aw\1a"),            /* [a|a] */
    E("n\1\1\1"),                      /* -1 */
    E("F\x80\0\0\0\0\0\0\0"),          /* -0.0 */
    E("F\0\0\0\0\0\0\0\0"),            /* 0.0 */
    E("a\0"),                          /* 0 */
    E("M\0\0\0\1\3\xe0"),              /* <<7:3>> */
    E("M\0\0\0\1\4\xe0"),              /* <<14:4>> */
};

static void test_registry_canonical_names(void **state)
{
    struct tnode *t = kt_node_new();
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    for (size_t g = 0; g < sizeof same / sizeof same[0]; g++) {
        req2(&req, "create", same[g][0].p, same[g][0].n);
        assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
        struct epid b = reply_ok_pid(t, &out);
        for (size_t k = 0; k < 4; k++) {
            req2(&req, "lookup", same[g][k].p, same[g][k].n);
            assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
            if (reply_is_atom(&out, "error"))
                fail_msg("group %zu: encoding %zu not found", g, k);
            struct epid p = reply_ok_pid(t, &out);
            assert_true(epid_eq(&p, &b));
            req2(&req, "create", same[g][k].p, same[g][k].n);
            rcall(t, &req, &out);
            p = reply_ok_pid(t, &out);
            assert_true(epid_eq(&p, &b));
        }
        assert_int_equal(count(t), (int64_t)g + 1);
    }
    int64_t base = count(t);
    size_t nd = sizeof different / sizeof different[0];
    struct epid pids[sizeof different / sizeof different[0]];
    for (size_t i = 0; i < nd; i++) {
        req2(&req, "create", different[i].p, different[i].n);
        assert_int_equal(rcall(t, &req, &out), GEN_REPLY);
        pids[i] = reply_ok_pid(t, &out);
        for (size_t j = 0; j < i; j++)
            if (epid_eq(&pids[i], &pids[j]))
                fail_msg("names %zu and %zu share a bucket", i, j);
    }
    assert_int_equal(count(t), base + (int64_t)nd);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

/* A bucket that ends leaves the registry; a local pid registered by name is
 * watched by a monitor, and its end removes that name too. */
static void test_registry_local_deaths(void **state)
{
    struct tnode *t = kt_node_new();
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    req2(&req, "create", "w\1a", 3);
    rcall(t, &req, &out);
    struct epid a = reply_ok_pid(t, &out);
    req2(&req, "create", "w\1b", 3);
    rcall(t, &req, &out);
    struct epid b = reply_ok_pid(t, &out);
    /* b also under the name alias_b (a monitor), and a under two more */
    const char *aliases[] = {"w\7alias_b", "w\4a_x1", "w\4a_x2"};
    const struct epid *who[] = {&b, &a, &a};
    for (int i = 0; i < 3; i++) {
        buf_reset(&req);
        ext_put_tuple(&req, 3);
        kt_atom(&req, "register");
        buf_put(&req, aliases[i], strlen(aliases[i]));
        node_put_pid(&t->n, &req, who[i]);
        rcall(t, &req, &out);
        assert_true(reply_is_atom(&out, "ok"));
    }
    assert_int_equal(count(t), 5);
    assert_int_equal(t->n.procs->mh_count, 3);
    proc_exit(&t->n, b.id, R_KILLED);
    assert_int_equal(count(t), 3);
    req2(&req, "lookup", "w\7alias_b", 9);
    rcall(t, &req, &out);
    assert_true(reply_is_atom(&out, "error"));
    req2(&req, "lookup", "w\1b", 3);
    rcall(t, &req, &out);
    assert_true(reply_is_atom(&out, "error"));
    proc_exit(&t->n, a.id, R_NORMAL);
    assert_int_equal(count(t), 0);
    assert_int_equal(t->n.procs->mh_count, 0);
    /* registering a dead local pid: ok, but nothing is kept */
    buf_reset(&req);
    ext_put_tuple(&req, 3);
    kt_atom(&req, "register");
    kt_atom(&req, "ghost");
    node_put_pid(&t->n, &req, &a);
    rcall(t, &req, &out);
    assert_true(reply_is_atom(&out, "ok"));
    assert_int_equal(count(t), 0);
    assert_int_equal(t->n.procs->live, 2);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

/* A pid on a connected peer: the registry sends MONITOR_P; the peer's
 * MONITOR_P_EXIT removes the name; unregister sends DEMONITOR_P; a peer
 * that cannot be reached keeps no name. */
static void test_registry_remote_pids(void **state)
{
    struct tnode *t = kt_node_new();
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    struct buf req, out, rp;
    buf_init(&req);
    buf_init(&out);
    buf_init(&rp);
    kt_pid(&rp, KT_PEER, 99, 0, KT_PEER_CREATION);
    buf_reset(&req);
    ext_put_tuple(&req, 3);
    kt_atom(&req, "register");
    kt_atom(&req, "remote");
    buf_put(&req, rp.data, rp.len);
    rcall(t, &req, &out);
    assert_true(reply_is_atom(&out, "ok"));
    assert_int_equal(count(t), 1);
    struct kt_frames f;
    struct dist_msg m;
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_MONITOR_P);
    assert_true(kt_span_is(m.to, &rp));
    struct buf ref;
    buf_init(&ref);
    buf_put(&ref, m.ref.p, m.ref.n);
    assert_false(kt_next(&f, &m));
    buf_free(&f.raw);

    /* the peer says the process died: PAYLOAD_MONITOR_P_EXIT */
    struct buf fr;
    buf_init(&fr);
    size_t st = kt_frame(&fr, 4, DOP_PAYLOAD_MONITOR_P_EXIT);
    buf_put(&fr, rp.data, rp.len);
    struct epid regpid = kt_local_pid(t, kt_registry(&t->n));
    node_put_pid(&t->n, &fr, &regpid);
    buf_put(&fr, ref.data, ref.len);
    ext_put_version(&fr);
    kt_atom(&fr, "crashed");
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    assert_int_equal(count(t), 0);
    assert_int_equal(t->n.procs->mh_count, 0);

    /* again, then unregister: DEMONITOR_P with the same ref */
    rcall(t, &req, &out);
    assert_int_equal(count(t), 1);
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_MONITOR_P);
    buf_reset(&ref);
    buf_put(&ref, m.ref.p, m.ref.n);
    buf_free(&f.raw);
    req2(&req, "unregister", "w\6remote", 8);
    rcall(t, &req, &out);
    assert_int_equal(count(t), 0);
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_DEMONITOR_P);
    assert_true(kt_span_is(m.ref, &ref));
    assert_true(kt_span_is(m.to, &rp));
    buf_free(&f.raw);
    /* a late MONITOR_P_EXIT for the old ref is ignored */
    assert_true(kt_feed(c, &fr));
    assert_int_equal(count(t), 0);

    /* a pid on a node we cannot reach (no sockets here): no name */
    buf_reset(&req);
    ext_put_tuple(&req, 3);
    kt_atom(&req, "register");
    kt_atom(&req, "far");
    kt_pid(&req, "far@away", 1, 0, 1);
    rcall(t, &req, &out);
    assert_true(reply_is_atom(&out, "ok"));
    assert_int_equal(count(t), 0);
    assert_int_equal(t->n.procs->mh_count, 0);

    buf_free(&fr);
    buf_free(&ref);
    buf_free(&rp);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

/* A peer without DIST_MONITOR (an ei C node) gets no MONITOR_P; the monitor
 * stays local and fires when its connection goes. */
static void test_registry_peer_without_monitors(void **state)
{
    struct tnode *t = kt_node_new();
    struct conn *c = kt_conn(t, "ei@host", KT_BEAM_FLAGS & ~(DFLAG_DIST_MONITOR |
                                                            DFLAG_DIST_MONITOR_NAME));
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    buf_reset(&req);
    ext_put_tuple(&req, 3);
    kt_atom(&req, "register");
    kt_atom(&req, "cnode_proc");
    kt_pid(&req, "ei@host", 5, 0, KT_PEER_CREATION);
    rcall(t, &req, &out);
    assert_true(reply_is_atom(&out, "ok"));
    assert_int_equal(count(t), 1);
    assert_int_equal(conn_take_output(c, NULL), 0);
    conn_close(c, NULL);
    assert_int_equal(count(t), 0);
    assert_int_equal(t->n.procs->mh_count, 0);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

/* The whole path: REG_SEND of a $gen_call from a peer, through conn_input,
 * the registry, and the reply frame back to From with the tag byte-exact
 * (an [alias|Ref] tag, as OTP 24+ sends). */
static void test_registry_call_over_connection(void **state)
{
    struct tnode *t = kt_node_new();
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    struct buf fr, from, tag;
    buf_init(&fr);
    buf_init(&from);
    buf_init(&tag);
    kt_pid(&from, KT_PEER, 42, 3, KT_PEER_CREATION);
    buf_put(&tag, "l\0\0\0\1w\5alias", 12);
    kt_ref(&tag, KT_PEER, KT_PEER_CREATION, 777);
    static const struct enc reqs[] = {E("h\2w\6createw\4shop"), E("h\2w\6lookupw\4shop"),
                                      E("w\5count"), E("h\2w\3badw\1x")};
    /* four calls in one read */
    for (int i = 0; i < 4; i++) {
        size_t st = kt_frame(&fr, 4, DOP_REG_SEND);
        buf_put(&fr, from.data, from.len);
        kt_atom(&fr, "");
        kt_atom(&fr, "Elixir.KV.Registry");
        ext_put_version(&fr);
        ext_put_tuple(&fr, 3);
        kt_atom(&fr, "$gen_call");
        ext_put_tuple(&fr, 2);
        buf_put(&fr, from.data, from.len);
        buf_put(&fr, tag.data, tag.len);
        buf_put(&fr, reqs[i].p, reqs[i].n);
        kt_frame_end(&fr, st);
        buf_put_n32(&fr, 0); /* and a tick after each */
    }
    assert_true(kt_feed(c, &fr));
    struct kt_frames f;
    struct dist_msg m;
    kt_out(c, &f);
    struct epid bucket = {0};
    for (int i = 0; i < 4; i++) {
        assert_true(kt_next(&f, &m));
        assert_int_equal(m.op, DOP_SEND);
        assert_true(kt_span_is(m.to, &from));
        struct span r = kt_reply(m.msg, &tag);
        struct buf rb;
        buf_init(&rb);
        buf_put(&rb, r.p, r.n);
        if (i == 0)
            bucket = reply_ok_pid(t, &rb);
        if (i == 1) {
            struct epid p = reply_ok_pid(t, &rb);
            assert_true(epid_eq(&p, &bucket));
        }
        if (i == 2)
            assert_int_equal(reply_int(&rb), 1);
        if (i == 3)
            assert_true(reply_is_error(&rb, "unknown_call"));
        buf_free(&rb);
    }
    /* the four ticks were answered, one each */
    size_t ticks = 0, pos = 0;
    for (;;) {
        struct span body;
        long k = dist_cut(f.raw.data + pos, f.raw.len - pos, UINT64_MAX, &body);
        if (k <= 0)
            break;
        ticks += body.n == 0;
        pos += (size_t)k;
    }
    assert_int_equal(ticks, 4);
    buf_free(&f.raw);
    buf_free(&fr);
    buf_free(&from);
    buf_free(&tag);
    kt_node_free(t);
}

/* sys:get_state of the registry: a well-formed {Names, Refs} term. */
static void test_registry_state(void **state)
{
    struct tnode *t = kt_node_new();
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    for (int i = 0; i < 30; i++) {
        uint8_t nm[5] = {'b', 0, 0, 0, (uint8_t)i}; /* INTEGER_EXT i */
        req2(&req, "create", nm, 5);
        rcall(t, &req, &out);
    }
    buf_reset(&out);
    assert_true(gen_state_direct(&t->n, kt_registry(&t->n), &out));
    static const struct term_limits lim = {100, 100000};
    assert_int_equal(term_walk(out.data, out.len, &lim), (long)out.len);
    struct cur c = cur_make(out.data, out.len);
    uint32_t ar;
    assert_true(ext_get_tuple(&c, &ar));
    assert_int_equal(ar, 2);
    uint8_t tg;
    uint32_t nmap;
    assert_true(cur_u8(&c, &tg));
    assert_int_equal(tg, 't');
    assert_true(cur_n32(&c, &nmap));
    assert_int_equal(nmap, 30);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reg_basic),
        cmocka_unit_test(test_reg_many_delete_half),
        cmocka_unit_test(test_reg_collisions_wrap),
        cmocka_unit_test(test_reg_slot_reuse),
        cmocka_unit_test(test_registry_calls),
        cmocka_unit_test(test_registry_cast),
        cmocka_unit_test(test_registry_canonical_names),
        cmocka_unit_test(test_registry_local_deaths),
        cmocka_unit_test(test_registry_remote_pids),
        cmocka_unit_test(test_registry_peer_without_monitors),
        cmocka_unit_test(test_registry_call_over_connection),
        cmocka_unit_test(test_registry_state),
    };
    return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
