/* test_bucket.c - buckets (c_src/bucket.c): the pure key/value table
 * (put/get/take/count, replace, growth, backward-shift deletion) and the
 * bucket process's calls, casts, state and stop on a bare node: keys by
 * canonical value, values byte-exact (10 MB included, also through a
 * connection), unknown requests answered, never a crash. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kvtest.h"

struct enc {
    const char *p;
    size_t n;
};
#define E(s) {s, sizeof s - 1}
#define L(s) s, sizeof s - 1

static const uint64_t SEED = 0xabcdef;

static size_t key_of(uint32_t i, uint8_t *k)
{
    /* canonical INTEGER_EXT-like bytes with a varying tail */
    k[0] = 'b';
    memcpy(k + 1, &i, 4);
    size_t n = 5 + i % 7;
    for (size_t j = 5; j < n; j++)
        k[j] = (uint8_t)(i + j);
    return n;
}

static void test_bucket_basic(void **state)
{
    struct bucket *b = NULL;
    size_t vl = 99;
    assert_null(bucket_get(NULL, (const uint8_t *)"k", 1, SEED, &vl));
    assert_int_equal(bucket_count(NULL), 0);
    assert_true(bucket_put(&b, (const uint8_t *)"k", 1, (const uint8_t *)"v1", 2, SEED));
    assert_non_null(b);
    const uint8_t *v = bucket_get(b, (const uint8_t *)"k", 1, SEED, &vl);
    assert_non_null(v);
    assert_int_equal(vl, 2);
    assert_memory_equal(v, "v1", 2);
    /* replace: same count, new value */
    assert_true(bucket_put(&b, (const uint8_t *)"k", 1, (const uint8_t *)"value2", 6, SEED));
    assert_int_equal(bucket_count(b), 1);
    v = bucket_get(b, (const uint8_t *)"k", 1, SEED, &vl);
    assert_int_equal(vl, 6);
    assert_memory_equal(v, "value2", 6);
    /* empty key and empty value are fine */
    assert_true(bucket_put(&b, (const uint8_t *)"", 0, (const uint8_t *)"", 0, SEED));
    v = bucket_get(b, (const uint8_t *)"", 0, SEED, &vl);
    assert_non_null(v);
    assert_int_equal(vl, 0);
    assert_int_equal(bucket_count(b), 2);
    /* a key's prefix is another key */
    assert_null(bucket_get(b, (const uint8_t *)"kk", 2, SEED, &vl));
    /* take */
    const uint8_t *tv;
    size_t tl;
    void *rec = bucket_take(b, (const uint8_t *)"k", 1, SEED, &tv, &tl);
    assert_non_null(rec);
    assert_int_equal(tl, 6);
    assert_memory_equal(tv, "value2", 6);
    bucket_rec_free(rec);
    assert_null(bucket_take(b, (const uint8_t *)"k", 1, SEED, &tv, &tl));
    assert_null(bucket_take(NULL, (const uint8_t *)"k", 1, SEED, &tv, &tl));
    assert_int_equal(bucket_count(b), 1);
    bucket_free(b);
    bucket_free(NULL);
}

/* 50k keys (many growths), delete a random subset, the rest intact. */
static void test_bucket_growth_and_deletions(void **state)
{
    enum { N = 50000 };
    struct bucket *b = NULL;
    uint8_t k[16], v[32];
    for (uint32_t i = 0; i < N; i++) {
        size_t kl = key_of(i, k);
        memset(v, (int)(i & 0xff), sizeof v);
        assert_true(bucket_put(&b, k, kl, v, 1 + i % 31, SEED));
    }
    assert_int_equal(bucket_count(b), N);
    static bool gone[N];
    uint64_t x = 12345;
    uint32_t left = N;
    for (uint32_t i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        gone[i] = (x >> 33) % 3 == 0;
        if (gone[i]) {
            size_t kl = key_of(i, k);
            const uint8_t *tv;
            size_t tl;
            void *rec = bucket_take(b, k, kl, SEED, &tv, &tl);
            assert_non_null(rec);
            assert_int_equal(tl, 1 + i % 31);
            assert_int_equal(tv[0], i & 0xff);
            bucket_rec_free(rec);
            left--;
        }
    }
    assert_int_equal(bucket_count(b), left);
    for (uint32_t i = 0; i < N; i++) {
        size_t kl = key_of(i, k), vl;
        const uint8_t *gv = bucket_get(b, k, kl, SEED, &vl);
        if (gone[i]) {
            assert_null(gv);
        } else {
            assert_non_null(gv);
            assert_int_equal(vl, 1 + i % 31);
            assert_int_equal(gv[vl - 1], i & 0xff);
        }
    }
    bucket_free(b);
}

/* ---- behaviour ---- */

static uint32_t new_bucket(struct tnode *t)
{
    uint32_t id = proc_spawn(&t->n, &bucket_behaviour, NULL);
    assert_int_not_equal(id, PROC_NONE);
    return id;
}

static enum gen_result bcall(struct tnode *t, uint32_t id, const struct buf *req,
                             struct buf *out)
{
    buf_reset(out);
    return gen_call_direct(&t->n, id, cur_make(req->data, req->len), out);
}

static void put_req(struct buf *r, struct enc k, const void *v, size_t vn)
{
    buf_reset(r);
    ext_put_tuple(r, 3);
    kt_atom(r, "put");
    buf_put(r, k.p, k.n);
    buf_put(r, v, vn);
}

static void key_req(struct buf *r, const char *op, struct enc k)
{
    buf_reset(r);
    ext_put_tuple(r, 2);
    kt_atom(r, op);
    buf_put(r, k.p, k.n);
}

static bool out_is(const struct buf *out, const void *p, size_t n)
{
    return out->len == n && memcmp(out->data, p, n) == 0;
}

static bool out_atom(const struct buf *out, const char *a)
{
    struct span s = {out->data, out->len};
    return kt_span_atom(s, a);
}

static void test_bucket_calls(void **state)
{
    struct tnode *t = kt_node_new();
    uint32_t id = new_bucket(t);
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    struct enc milk = E("w\4milk");
    /* get on an empty bucket, delete on an empty bucket, keys */
    key_req(&req, "get", milk);
    assert_int_equal(bcall(t, id, &req, &out), GEN_REPLY);
    assert_true(out_atom(&out, "nil"));
    key_req(&req, "delete", milk);
    assert_int_equal(bcall(t, id, &req, &out), GEN_REPLY);
    assert_true(out_atom(&out, "nil"));
    buf_reset(&req);
    kt_atom(&req, "keys");
    assert_int_equal(bcall(t, id, &req, &out), GEN_REPLY);
    assert_true(out_is(&out, "j", 1));
    /* put / get / replace */
    put_req(&req, milk, "a\3", 2);
    assert_int_equal(bcall(t, id, &req, &out), GEN_REPLY);
    assert_true(out_atom(&out, "ok"));
    key_req(&req, "get", milk);
    bcall(t, id, &req, &out);
    assert_true(out_is(&out, "a\3", 2));
    put_req(&req, milk, L("h\2w\4lotsa\x63"));
    bcall(t, id, &req, &out);
    key_req(&req, "get", milk);
    bcall(t, id, &req, &out);
    assert_true(out_is(&out, L("h\2w\4lotsa\x63")));
    /* the same key in another atom encoding */
    key_req(&req, "get", (struct enc)E("d\0\4milk"));
    bcall(t, id, &req, &out);
    assert_true(out_is(&out, L("h\2w\4lotsa\x63")));
    /* 1 and 1.0 are different keys; "a" and 'a' too */
    static const struct enc ks[] = {E("a\1"), E("F\x3f\xf0\0\0\0\0\0\0"), E("k\0\1a"), E("w\1a"),
                                    E("m\0\0\0\1a")};
    for (size_t i = 0; i < 5; i++) {
        uint8_t v[2] = {'a', (uint8_t)(10 + i)};
        put_req(&req, ks[i], v, 2);
        bcall(t, id, &req, &out);
    }
    for (size_t i = 0; i < 5; i++) {
        uint8_t v[2] = {'a', (uint8_t)(10 + i)};
        key_req(&req, "get", ks[i]);
        bcall(t, id, &req, &out);
        assert_true(out_is(&out, v, 2));
    }
    /* keys: a proper list of the 6 canonical keys */
    buf_reset(&req);
    kt_atom(&req, "keys");
    bcall(t, id, &req, &out);
    struct cur c = cur_make(out.data, out.len);
    uint32_t nk;
    assert_true(ext_get_list_header(&c, &nk));
    assert_int_equal(nk, 6);
    for (uint32_t i = 0; i < nk; i++)
        assert_true(ext_skip(&c, NULL));
    uint8_t tl;
    assert_true(cur_u8(&c, &tl));
    assert_int_equal(tl, 'j');
    assert_int_equal(cur_left(&c), 0);
    /* delete returns the old value */
    key_req(&req, "delete", milk);
    bcall(t, id, &req, &out);
    assert_true(out_is(&out, L("h\2w\4lotsa\x63")));
    key_req(&req, "get", milk);
    bcall(t, id, &req, &out);
    assert_true(out_atom(&out, "nil"));
    /* unknown calls */
    static const struct enc bad[] = {
        E("w\3foo"), E("h\1w\3get"), E("h\3w\3getw\1aw\1b"), E("h\2w\3putw\1a"),
        E("h\4w\3putw\1aw\1bw\1c"), E("h\0"), E("j"), E("a\1"),
        E("h\2w\4keysw\1a"), E("h\3w\6deletew\1aw\1b"), E("h\2k\0\3getw\1a")};
    struct buf want;
    buf_init(&want);
    ext_put_tuple(&want, 2);
    kt_atom(&want, "error");
    kt_atom(&want, "unknown_call");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_reset(&req);
        buf_put(&req, bad[i].p, bad[i].n);
        assert_int_equal(bcall(t, id, &req, &out), GEN_REPLY);
        if (!out_is(&out, want.data, want.len))
            fail_msg("request %zu not answered unknown_call", i);
    }
    assert_int_equal(bucket_count(proc_by_id(&t->n, id)->state), 5);
    buf_free(&want);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

static void test_bucket_cast_and_state(void **state)
{
    struct tnode *t = kt_node_new();
    uint32_t id = new_bucket(t);
    struct buf req, out;
    buf_init(&req);
    buf_init(&out);
    for (int i = 0; i < 20; i++) {
        uint8_t k[5] = {'b', 0, 0, 0, (uint8_t)i};
        put_req(&req, (struct enc){(const char *)k, 5}, "w\3yes", 5);
        gen_cast_direct(&t->n, id, cur_make(req.data, req.len));
    }
    /* unknown casts are ignored */
    static const struct enc bad[] = {E("w\3foo"), E("h\2w\3putw\1a"), E("h\2w\3getw\1a"),
                                     E("h\0")};
    for (size_t i = 0; i < 4; i++) {
        buf_reset(&req);
        buf_put(&req, bad[i].p, bad[i].n);
        gen_cast_direct(&t->n, id, cur_make(req.data, req.len));
    }
    struct proc *p = proc_by_id(&t->n, id);
    assert_int_equal(bucket_count(p->state), 20);
    buf_reset(&out);
    assert_true(gen_state_direct(&t->n, id, &out));
    static const struct term_limits lim = {10, 1000};
    assert_int_equal(term_walk(out.data, out.len, &lim), (long)out.len);
    assert_int_equal(out.data[0], 't');
    assert_int_equal(out.data[4], 20);
    /* an empty bucket's state is the empty map */
    uint32_t id2 = new_bucket(t);
    buf_reset(&out);
    assert_true(gen_state_direct(&t->n, id2, &out));
    assert_true(out_is(&out, "t\0\0\0\0", 5));
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

/* Values are kept as the bytes received: every term type, unchanged (not
 * canonicalised), and a 10 MB binary. */
static void test_bucket_values_byte_exact(void **state)
{
    struct tnode *t = kt_node_new();
    uint32_t id = new_bucket(t);
    struct buf req, out, big;
    buf_init(&req);
    buf_init(&out);
    buf_init(&big);
    static const struct enc vals[] = {
        E("d\0\3abc"),                           /* ATOM_EXT stays ATOM_EXT */
        E("k\0\2ab"),                            /* STRING_EXT stays */
        E("n\2\0\5\0"),                          /* a non-canonical big */
        E("t\0\0\0\2w\1ba\2w\1aa\1"),            /* map in its received order */
        E("M\0\0\0\2\3\xff\xe0"),                /* bitstring */
        E("c1.00000000000000000000e+00\0\0\0\0\0"), /* old FLOAT_EXT */
        E("q" "w\6erlang" "w\4self" "a\0"),       /* fun erlang:self/0 */
    };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t k[2] = {'a', (uint8_t)i};
        put_req(&req, (struct enc){(const char *)k, 2}, vals[i].p, vals[i].n);
        bcall(t, id, &req, &out);
        assert_true(out_atom(&out, "ok"));
        key_req(&req, "get", (struct enc){(const char *)k, 2});
        bcall(t, id, &req, &out);
        if (!out_is(&out, vals[i].p, vals[i].n))
            fail_msg("value %zu changed", i);
    }
    /* 10 MB */
    size_t n = 10u << 20;
    buf_put_u8(&big, 'm');
    buf_put_n32(&big, (uint32_t)n);
    buf_reserve(&big, n);
    for (size_t i = 0; i < n; i++)
        big.data[big.len + i] = (uint8_t)(i * 2654435761u >> 13);
    big.len += n;
    put_req(&req, (struct enc)E("w\3big"), big.data, big.len);
    bcall(t, id, &req, &out);
    assert_true(out_atom(&out, "ok"));
    key_req(&req, "get", (struct enc)E("w\3big"));
    bcall(t, id, &req, &out);
    assert_int_equal(out.len, big.len);
    assert_memory_equal(out.data, big.data, big.len);
    key_req(&req, "delete", (struct enc)E("w\3big"));
    bcall(t, id, &req, &out);
    assert_int_equal(out.len, big.len);
    assert_memory_equal(out.data, big.data, big.len);
    buf_free(&big);
    buf_free(&req);
    buf_free(&out);
    kt_node_free(t);
}

/* A $gen_call frame from a peer to a bucket pid (SEND_SENDER, as OTP 25
 * sends to pids) and the reply, through the connection. */
static void send_call(struct tnode *t, struct conn *c, uint32_t id, const struct buf *from,
                      const struct buf *tag, const void *req, size_t rn, size_t chunk)
{
    struct buf fr;
    buf_init(&fr);
    size_t st = kt_frame(&fr, 3, DOP_SEND_SENDER);
    buf_put(&fr, from->data, from->len);
    kt_put_local_pid(t, &fr, id);
    ext_put_version(&fr);
    ext_put_tuple(&fr, 3);
    kt_atom(&fr, "$gen_call");
    ext_put_tuple(&fr, 2);
    buf_put(&fr, from->data, from->len);
    buf_put(&fr, tag->data, tag->len);
    buf_put(&fr, req, rn);
    kt_frame_end(&fr, st);
    for (size_t pos = 0; pos < fr.len; pos += chunk) {
        size_t k = fr.len - pos < chunk ? fr.len - pos : chunk;
        assert_true(conn_input(c, fr.data + pos, k));
    }
    buf_free(&fr);
}

static void test_bucket_10mb_over_connection(void **state)
{
    struct tnode *t = kt_node_new();
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    uint32_t id = new_bucket(t);
    struct buf from, tag, req;
    buf_init(&from);
    buf_init(&tag);
    buf_init(&req);
    kt_pid(&from, KT_PEER, 10, 0, KT_PEER_CREATION);
    kt_ref(&tag, KT_PEER, KT_PEER_CREATION, 5);
    size_t n = 10u << 20;
    struct buf val;
    buf_init(&val);
    buf_put_u8(&val, 'm');
    buf_put_n32(&val, (uint32_t)n);
    buf_reserve(&val, n);
    for (size_t i = 0; i < n; i++)
        val.data[val.len + i] = (uint8_t)(i ^ (i >> 8) ^ (i >> 16));
    val.len += n;
    put_req(&req, (struct enc)E("w\3big"), val.data, val.len);
    send_call(t, c, id, &from, &tag, req.data, req.len, 65536); /* as 64 KiB reads */
    struct kt_frames f;
    struct dist_msg m;
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    struct span r = kt_reply(m.msg, &tag);
    assert_true(kt_span_atom(r, "ok"));
    buf_free(&f.raw);
    key_req(&req, "get", (struct enc)E("d\0\3big"));
    send_call(t, c, id, &from, &tag, req.data, req.len, 7);
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    r = kt_reply(m.msg, &tag);
    assert_int_equal(r.n, val.len);
    assert_memory_equal(r.p, val.data, val.len);
    buf_free(&f.raw);
    buf_free(&val);
    buf_free(&req);
    buf_free(&from);
    buf_free(&tag);
    kt_node_free(t);
}

/* sys:terminate (GenServer.stop / Agent.stop): the reply is ok, and the
 * bucket has left the registry before the reply could leave the node. */
static void test_bucket_stop(void **state)
{
    struct tnode *t = kt_node_new();
    struct conn *c = kt_conn(t, KT_PEER, KT_BEAM_FLAGS);
    struct buf req, out, from, tag, fr;
    buf_init(&req);
    buf_init(&out);
    buf_init(&from);
    buf_init(&tag);
    buf_init(&fr);
    req.len = 0;
    ext_put_tuple(&req, 2);
    kt_atom(&req, "create");
    kt_atom(&req, "doomed");
    gen_call_direct(&t->n, kt_registry(&t->n), cur_make(req.data, req.len), &out);
    struct cur oc = cur_make(out.data, out.len);
    uint32_t ar;
    struct epid b;
    assert_true(ext_get_tuple(&oc, &ar) && ext_skip(&oc, NULL) && node_get_pid(&t->n, &oc, &b));
    kt_pid(&from, KT_PEER, 11, 0, KT_PEER_CREATION);
    kt_ref(&tag, KT_PEER, KT_PEER_CREATION, 6);
    /* the peer monitors the bucket first, as GenServer.stop does */
    size_t st = kt_frame(&fr, 4, DOP_MONITOR_P);
    buf_put(&fr, from.data, from.len);
    node_put_pid(&t->n, &fr, &b);
    kt_ref(&fr, KT_PEER, KT_PEER_CREATION, 1000);
    kt_frame_end(&fr, st);
    /* {system, {From, Tag}, {terminate, {shutdown, bye}}} */
    st = kt_frame(&fr, 3, DOP_SEND_SENDER);
    buf_put(&fr, from.data, from.len);
    node_put_pid(&t->n, &fr, &b);
    ext_put_version(&fr);
    ext_put_tuple(&fr, 3);
    kt_atom(&fr, "system");
    ext_put_tuple(&fr, 2);
    buf_put(&fr, from.data, from.len);
    buf_put(&fr, tag.data, tag.len);
    ext_put_tuple(&fr, 2);
    kt_atom(&fr, "terminate");
    ext_put_tuple(&fr, 2);
    kt_atom(&fr, "shutdown");
    kt_atom(&fr, "bye");
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    assert_null(proc_get(&t->n, &b));
    assert_int_equal(kt_reg(&t->n)->count, 0);
    struct kt_frames f;
    struct dist_msg m;
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_SEND); /* the reply first */
    assert_true(kt_span_atom(kt_reply(m.msg, &tag), "ok"));
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_PAYLOAD_MONITOR_P_EXIT); /* then the DOWN */
    struct buf reason;
    buf_init(&reason);
    ext_put_tuple(&reason, 2);
    kt_atom(&reason, "shutdown");
    kt_atom(&reason, "bye");
    assert_true(kt_span_is(m.reason, &reason));
    assert_false(kt_next(&f, &m));
    buf_free(&f.raw);
    /* a call to the dead bucket is dropped; a monitor gets noproc at once */
    buf_reset(&fr);
    st = kt_frame(&fr, 4, DOP_MONITOR_P);
    buf_put(&fr, from.data, from.len);
    node_put_pid(&t->n, &fr, &b);
    kt_ref(&fr, KT_PEER, KT_PEER_CREATION, 1001);
    kt_frame_end(&fr, st);
    assert_true(kt_feed(c, &fr));
    kt_out(c, &f);
    assert_true(kt_next(&f, &m));
    assert_int_equal(m.op, DOP_PAYLOAD_MONITOR_P_EXIT);
    assert_true(kt_span_atom(m.reason, "noproc"));
    buf_free(&f.raw);
    buf_free(&reason);
    buf_free(&fr);
    buf_free(&req);
    buf_free(&out);
    buf_free(&from);
    buf_free(&tag);
    kt_node_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_basic),
        cmocka_unit_test(test_bucket_growth_and_deletions),
        cmocka_unit_test(test_bucket_calls),
        cmocka_unit_test(test_bucket_cast_and_state),
        cmocka_unit_test(test_bucket_values_byte_exact),
        cmocka_unit_test(test_bucket_10mb_over_connection),
        cmocka_unit_test(test_bucket_stop),
    };
    return cmocka_run_group_tests_name("bucket", tests, NULL, NULL);
}
