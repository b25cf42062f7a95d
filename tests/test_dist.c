/* test_dist.c - frame cutting and control-message decoding (c_src/dist.c)
 * against real BEAM traffic (tests/golden/p_frames_*.bin, captured from an
 * OTP 25 node talking to kv_cnode by tests/fuzz/capture_frames.py; and the
 * atom-cache frames of two BEAMs, frames_*.bin), against hand-built frames
 * for every operation, and against every malformed frame we could think of:
 * each must fail with a reason, never crash or read past the frame. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kvtest.h"

static const struct term_limits LIM = {1000, 1u << 24};

/* ---- golden files, found beside this source file ---- */

/* ---- the reference cutter: (offset, length) of every body ---- */

struct cutlist {
    size_t off[4096], len[4096];
    size_t n;
};

static void cut_all(const uint8_t *p, size_t n, struct cutlist *out)
{
    size_t pos = 0;
    out->n = 0;
    for (;;) {
        struct span body;
        long k = dist_cut(p + pos, n - pos, UINT64_MAX, &body);
        if (k == DIST_NEED_MORE)
            break;
        assert_true(k > 0);
        assert_true(out->n < 4096);
        out->off[out->n] = (size_t)(body.p - p);
        out->len[out->n] = body.n;
        out->n++;
        pos += (size_t)k;
    }
    assert_int_equal(pos, n); /* the inputs here are whole frames */
}

/* Deliver p as the given pieces into a growing buffer, cutting after each
 * piece as conn.c does; the bodies found must equal ref (by content). */
static void check_stream(const uint8_t *p, size_t n, const size_t *cuts, size_t ncuts,
                         const struct cutlist *ref)
{
    struct buf in;
    buf_init(&in);
    size_t from = 0, got = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        buf_put(&in, p + from, to - from);
        from = to;
        for (;;) {
            struct span body;
            long k = dist_cut(buf_head(&in), buf_avail(&in), UINT64_MAX, &body);
            if (k == DIST_NEED_MORE)
                break;
            assert_true(k > 0);
            assert_true(got < ref->n);
            assert_int_equal(body.n, ref->len[got]);
            assert_memory_equal(body.p, p + ref->off[got], body.n);
            got++;
            buf_consume(&in, (size_t)k);
        }
    }
    assert_int_equal(got, ref->n);
    assert_int_equal(buf_avail(&in), 0);
    buf_free(&in);
}

/* The first k frames of the captured BEAM stream with ticks around them. */
static uint8_t *ticked_stream(size_t k, size_t *n)
{
    size_t gn;
    uint8_t *g = kt_slurp("golden/p_frames_beam_to_kv.bin", &gn);
    struct buf b;
    buf_init(&b);
    buf_put_n32(&b, 0);
    size_t pos = 0;
    for (size_t i = 0; i < k && pos + 4 <= gn; i++) {
        uint32_t len = ((uint32_t)g[pos] << 24) | ((uint32_t)g[pos + 1] << 16) |
                       ((uint32_t)g[pos + 2] << 8) | g[pos + 3];
        buf_put(&b, g + pos, 4 + len);
        pos += 4 + len;
        if (i % 3 == 0)
            buf_put_n32(&b, 0); /* a tick */
    }
    buf_put_n32(&b, 0);
    buf_put_n32(&b, 0);
    free(g);
    *n = b.len;
    return b.data;
}

/* ---- cutting ---- */

static void test_cut_basic(void **state)
{
    struct span body;
    const uint8_t tick[4] = {0, 0, 0, 0};
    const uint8_t f[9] = {0, 0, 0, 5, 'p', 1, 2, 3, 4};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(dist_cut(tick, i, 100, &body), DIST_NEED_MORE);
    assert_int_equal(dist_cut(tick, 4, 100, &body), 4);
    assert_int_equal(body.n, 0);
    for (size_t i = 0; i < 9; i++)
        assert_int_equal(dist_cut(f, i, 100, &body), DIST_NEED_MORE);
    assert_int_equal(dist_cut(f, 9, 100, &body), 9);
    assert_ptr_equal(body.p, f + 4);
    assert_int_equal(body.n, 5);
    assert_int_equal(dist_cut(NULL, 0, 100, &body), DIST_NEED_MORE);
}

static void test_cut_too_big(void **state)
{
    struct span body;
    const uint8_t over[4] = {0, 0, 0, 101};
    const uint8_t at[4] = {0, 0, 0, 100};
    const uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    /* refused from the header alone: nothing is buffered for it */
    assert_int_equal(dist_cut(over, 4, 100, &body), DIST_E_TOO_BIG);
    assert_int_equal(dist_cut(at, 4, 100, &body), DIST_NEED_MORE);
    assert_int_equal(dist_cut(huge, 4, 100, &body), DIST_E_TOO_BIG);
    assert_int_equal(dist_cut(huge, 4, UINT64_MAX, &body), DIST_NEED_MORE);
    assert_int_equal(dist_cut(huge, 4, 0xfffffffe, &body), DIST_E_TOO_BIG);
    /* a tick is never too big */
    const uint8_t tick[4] = {0};
    assert_int_equal(dist_cut(tick, 4, 0, &body), 4);
}

/* Every split point of a multi-frame buffer with ticks, then every pair of
 * split points of a shorter one, then one byte at a time. */
static void test_cut_every_split(void **state)
{
    size_t n;
    uint8_t *p = ticked_stream(40, &n);
    static struct cutlist ref;
    cut_all(p, n, &ref);
    assert_true(ref.n > 40);
    for (size_t s = 0; s <= n; s++)
        check_stream(p, n, &s, 1, &ref);
    size_t *ones = malloc(n * sizeof *ones);
    for (size_t i = 0; i < n; i++)
        ones[i] = i;
    check_stream(p, n, ones, n, &ref);
    free(ones);
    free(p);

    p = ticked_stream(4, &n);
    cut_all(p, n, &ref);
    for (size_t a = 0; a <= n; a++)
        for (size_t b = a; b <= n; b++) {
            size_t cuts[2] = {a, b};
            check_stream(p, n, cuts, 2, &ref);
        }
    free(p);
}

/* The whole captured stream (a 70 KB frame among them) in reads of many
 * sizes, as a socket would deliver it. */
static void test_cut_golden_chunks(void **state)
{
    size_t n;
    uint8_t *p = kt_slurp("golden/p_frames_beam_to_kv.bin", &n);
    static struct cutlist ref;
    cut_all(p, n, &ref);
    assert_true(ref.n > 100);
    static const size_t sizes[] = {1, 2, 3, 5, 7, 13, 64, 1000, 4096, 65536, 100000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t nc = (n + sizes[k] - 1) / sizes[k];
        size_t *cuts = malloc(nc * sizeof *cuts);
        for (size_t i = 0; i < nc; i++)
            cuts[i] = i * sizes[k];
        check_stream(p, n, cuts, nc, &ref);
        free(cuts);
    }
    free(p);
}

/* ---- decoding real traffic ---- */

static bool span_inside(struct span s, const uint8_t *p, size_t n)
{
    return s.n == 0 || (s.p >= p && s.p + s.n <= p + n);
}

/* The op byte of a control tuple written by a BEAM (small tuple, small int). */
static int golden_op(const uint8_t *body)
{
    assert_int_equal(body[0], 'p');
    assert_int_equal(body[1], 131);
    assert_int_equal(body[2], 104);
    assert_int_equal(body[4], 97);
    return body[5];
}

static void decode_stream(const char *file, const int *want_ops, size_t nwant)
{
    size_t n;
    uint8_t *p = kt_slurp(file, &n);
    static struct cutlist ref;
    cut_all(p, n, &ref);
    bool seen[64] = {false};
    for (size_t i = 0; i < ref.n; i++) {
        const uint8_t *b = p + ref.off[i];
        size_t bn = ref.len[i];
        if (bn == 0)
            continue;
        struct dist_msg m;
        const char *why = NULL;
        if (dist_decode(b, bn, &LIM, &m, &why) != 0)
            fail_msg("%s frame %zu refused: %s", file, i, why);
        assert_int_equal(m.op, golden_op(b));
        seen[m.op & 63] = true;
        assert_true(span_inside(m.from, b, bn) && span_inside(m.to, b, bn) &&
                    span_inside(m.ref, b, bn) && span_inside(m.reason, b, bn) &&
                    span_inside(m.msg, b, bn));
        switch (m.kind) {
        case DK_REG_SEND: {
            struct cur c = cur_make(m.to.p, m.to.n);
            assert_true(ext_is_atom(&c));
            assert_true(m.msg.n > 0);
            break;
        }
        case DK_SEND: assert_true(m.msg.n > 0); break;
        case DK_MONITOR:
        case DK_DEMONITOR: assert_true(m.ref.n > 0 && m.from.n > 0 && m.to.n > 0); break;
        case DK_MONITOR_EXIT:
        case DK_EXIT:
        case DK_EXIT2: assert_true(m.reason.n > 0); break;
        case DK_UNLINK:
        case DK_UNLINK_ACK:
            if (m.op == DOP_UNLINK_ID || m.op == DOP_UNLINK_ID_ACK)
                assert_true(m.has_id);
            break;
        default: break;
        }
    }
    for (size_t i = 0; i < nwant; i++)
        if (!seen[want_ops[i]])
            fail_msg("%s: no frame with op %d", file, want_ops[i]);
    free(p);
}

static void test_decode_golden_beam(void **state)
{
    static const int ops[] = {1, 6, 7, 16, 19, 20, 22, 23, 24, 26, 28, 35};
    decode_stream("golden/p_frames_beam_to_kv.bin", ops, sizeof ops / sizeof ops[0]);
}

/* What kv_cnode itself sent must pass its own decoder too. */
static void test_decode_golden_ours(void **state)
{
    static const int ops[] = {2, 19, 20, 24, 28, 36};
    decode_stream("golden/p_frames_kv_to_beam.bin", ops, sizeof ops / sizeof ops[0]);
}

/* Two BEAMs negotiate the atom cache: such frames are refused by name. */
static void test_decode_golden_atom_cache(void **state)
{
    const char *files[] = {"golden/frames_initiator_to_acceptor.bin",
                           "golden/frames_acceptor_to_initiator.bin"};
    for (int f = 0; f < 2; f++) {
        size_t n;
        uint8_t *p = kt_slurp(files[f], &n);
        static struct cutlist ref;
        cut_all(p, n, &ref);
        size_t refused = 0;
        for (size_t i = 0; i < ref.n; i++) {
            if (ref.len[i] == 0)
                continue;
            struct dist_msg m;
            const char *why = NULL;
            assert_int_equal(dist_decode(p + ref.off[i], ref.len[i], &LIM, &m, &why), -1);
            assert_non_null(why);
            assert_non_null(strstr(why, "atom-cache header"));
            refused++;
        }
        assert_true(refused > 0);
        free(p);
    }
}

/* Every strict prefix of a real frame body is refused with a reason. */
static void test_decode_golden_prefixes(void **state)
{
    size_t n;
    uint8_t *p = kt_slurp("golden/p_frames_beam_to_kv.bin", &n);
    static struct cutlist ref;
    cut_all(p, n, &ref);
    size_t tried = 0;
    for (size_t i = 0; i < ref.n; i++) {
        if (ref.len[i] == 0 || ref.len[i] > 2000)
            continue;
        for (size_t k = 0; k < ref.len[i]; k++) {
            /* a copy of exactly k bytes: ASan sees any read past it */
            uint8_t *b = malloc(k ? k : 1);
            memcpy(b, p + ref.off[i], k);
            struct dist_msg m;
            const char *why = NULL;
            assert_int_equal(dist_decode(b, k, &LIM, &m, &why), -1);
            assert_non_null(why);
            free(b);
            tried++;
        }
    }
    assert_true(tried > 10000);
    free(p);
}

/* ---- hand-built frames for every operation ---- */

/* Field letters: f from-pid, t to-pid, n to-name, N from-name, r ref,
 * e reason, x ignored term (cookie or trace token), i unlink id. */
struct opcase {
    int op;
    enum dist_kind kind;
    const char *fields;
    char payload; /* 'M' message, 'R' reason, 0 */
};

static const struct opcase cases[] = {
    {DOP_LINK, DK_LINK, "ft", 0},
    {DOP_SEND, DK_SEND, "xt", 'M'},
    {DOP_EXIT, DK_EXIT, "fte", 0},
    {DOP_UNLINK, DK_UNLINK, "ft", 0},
    {DOP_REG_SEND, DK_REG_SEND, "fxn", 'M'},
    {DOP_GROUP_LEADER, DK_GROUP_LEADER, "ft", 0},
    {DOP_EXIT2, DK_EXIT2, "fte", 0},
    {DOP_SEND_TT, DK_SEND, "xtx", 'M'},
    {DOP_EXIT_TT, DK_EXIT, "ftxe", 0},
    {DOP_REG_SEND_TT, DK_REG_SEND, "fxnx", 'M'},
    {DOP_EXIT2_TT, DK_EXIT2, "ftxe", 0},
    {DOP_MONITOR_P, DK_MONITOR, "ftr", 0},
    {DOP_MONITOR_P, DK_MONITOR, "fnr", 0},
    {DOP_DEMONITOR_P, DK_DEMONITOR, "ftr", 0},
    {DOP_DEMONITOR_P, DK_DEMONITOR, "fnr", 0},
    {DOP_MONITOR_P_EXIT, DK_MONITOR_EXIT, "ftre", 0},
    {DOP_MONITOR_P_EXIT, DK_MONITOR_EXIT, "Ntre", 0},
    {DOP_SEND_SENDER, DK_SEND, "ft", 'M'},
    {DOP_SEND_SENDER_TT, DK_SEND, "ftx", 'M'},
    {DOP_PAYLOAD_EXIT, DK_EXIT, "ft", 'R'},
    {DOP_PAYLOAD_EXIT_TT, DK_EXIT, "ftx", 'R'},
    {DOP_PAYLOAD_EXIT2, DK_EXIT2, "ft", 'R'},
    {DOP_PAYLOAD_EXIT2_TT, DK_EXIT2, "ftx", 'R'},
    {DOP_PAYLOAD_MONITOR_P_EXIT, DK_MONITOR_EXIT, "ftr", 'R'},
    {DOP_PAYLOAD_MONITOR_P_EXIT, DK_MONITOR_EXIT, "Ntr", 'R'},
    {DOP_UNLINK_ID, DK_UNLINK, "ift", 0},
    {DOP_UNLINK_ID_ACK, DK_UNLINK_ACK, "ift", 0},
};

struct parts {
    struct buf from, to, name, fname, ref, reason, token, cookie, msg;
};

static void parts_init(struct parts *q)
{
    KT_TERM(&q->from, kt_pid(&q->from, KT_PEER, 77, 1, KT_PEER_CREATION));
    KT_TERM(&q->to, kt_pid(&q->to, KT_NODE, 5, 0, KT_CREATION));
    KT_TERM(&q->name, kt_atom(&q->name, "Elixir.KV.Registry"));
    KT_TERM(&q->fname, kt_atom(&q->fname, "some_name"));
    KT_TERM(&q->ref, kt_ref(&q->ref, KT_PEER, KT_PEER_CREATION, 4242));
    KT_TERM(&q->reason, ext_put_tuple(&q->reason, 2); kt_atom(&q->reason, "shutdown");
            kt_atom(&q->reason, "because"));
    KT_TERM(&q->token, ext_put_tuple(&q->token, 5); kt_small(&q->token, 0);
            kt_small(&q->token, 17); kt_small(&q->token, 1);
            kt_pid(&q->token, KT_PEER, 1, 0, KT_PEER_CREATION); kt_small(&q->token, 0));
    KT_TERM(&q->cookie, kt_atom(&q->cookie, ""));
    KT_TERM(&q->msg, ext_put_tuple(&q->msg, 2); kt_atom(&q->msg, "hello");
            ext_put_list_header(&q->msg, 2); kt_small(&q->msg, 1); kt_small(&q->msg, 2);
            ext_put_nil(&q->msg));
}

static void parts_free(struct parts *q)
{
    struct buf *all[] = {&q->from, &q->to, &q->name, &q->fname, &q->ref,
                         &q->reason, &q->token, &q->cookie, &q->msg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        buf_free(all[i]);
}

/* Body (no length) of the frame for case k with the given unlink id. */
static void build_case(struct buf *b, const struct opcase *k, const struct parts *q,
                       uint64_t id)
{
    size_t nf = strlen(k->fields);
    buf_reset(b);
    buf_put_u8(b, 'p');
    ext_put_version(b);
    ext_put_tuple(b, (uint32_t)nf + 1);
    kt_small(b, (uint8_t)k->op);
    bool tokens = false;
    for (size_t i = 0; i < nf; i++) {
        const struct buf *f = NULL;
        switch (k->fields[i]) {
        case 'f': f = &q->from; break;
        case 't': f = &q->to; break;
        case 'n': f = &q->name; break;
        case 'N': f = &q->fname; break;
        case 'r': f = &q->ref; break;
        case 'e': f = &q->reason; break;
        case 'x': /* the sends' first unused field is '', the rest trace tokens */
            f = !tokens && (k->kind == DK_SEND || k->kind == DK_REG_SEND) ? &q->cookie : &q->token;
            tokens = true;
            break;
        case 'i': ext_put_u64(b, id); continue;
        }
        buf_put(b, f->data, f->len);
    }
    if (k->payload) {
        const struct buf *f = k->payload == 'M' ? &q->msg : &q->reason;
        ext_put_version(b);
        buf_put(b, f->data, f->len);
    }
}

static void test_decode_each_op(void **state)
{
    struct parts q;
    parts_init(&q);
    struct buf b;
    buf_init(&b);
    static const uint64_t ids[] = {0, 1, 255, 256, 0x7fffffff, 0x80000000ull,
                                   0x123456789abcull, UINT64_MAX};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct opcase *k = &cases[i];
        for (size_t j = 0; j < (strchr(k->fields, 'i') ? sizeof ids / sizeof ids[0] : 1); j++) {
            build_case(&b, k, &q, ids[j]);
            struct dist_msg m;
            const char *why = NULL;
            if (k->op == DOP_UNLINK_ID && ids[j] == 0) { /* never issued: refused */
                assert_int_equal(dist_decode(b.data, b.len, &LIM, &m, &why), -1);
                assert_string_equal(why, "unlink id 0");
                continue;
            }
            if (dist_decode(b.data, b.len, &LIM, &m, &why) != 0)
                fail_msg("op %d (%s) refused: %s", k->op, k->fields, why);
            assert_int_equal(m.op, k->op);
            assert_int_equal(m.kind, k->kind);
            bool from_name = strchr(k->fields, 'N') != NULL;
            if (strchr(k->fields, 'f') || from_name)
                assert_true(kt_span_is(m.from, from_name ? &q.fname : &q.from));
            else
                assert_int_equal(m.from.n, 0);
            if (strchr(k->fields, 't'))
                assert_true(kt_span_is(m.to, &q.to));
            if (strchr(k->fields, 'n'))
                assert_true(kt_span_is(m.to, &q.name));
            if (strchr(k->fields, 'r'))
                assert_true(kt_span_is(m.ref, &q.ref));
            else
                assert_int_equal(m.ref.n, 0);
            if (strchr(k->fields, 'e') || k->payload == 'R')
                assert_true(kt_span_is(m.reason, &q.reason));
            else
                assert_int_equal(m.reason.n, 0);
            if (k->payload == 'M')
                assert_true(kt_span_is(m.msg, &q.msg));
            else
                assert_int_equal(m.msg.n, 0);
            assert_int_equal(m.has_id, strchr(k->fields, 'i') != NULL);
            if (m.has_id)
                assert_true(m.id == ids[j]);
        }
    }
    buf_free(&b);
    parts_free(&q);
}

/* ---- malformed frames ---- */

static void expect_refused(const struct buf *b, const char *reason)
{
    /* an exact-size copy, so ASan catches any read past the body */
    uint8_t *p = malloc(b->len ? b->len : 1);
    if (b->len)
        memcpy(p, b->data, b->len);
    struct dist_msg m;
    const char *why = NULL;
    int r = dist_decode(p, b->len, &LIM, &m, &why);
    free(p);
    if (r != -1)
        fail_msg("accepted, wanted refusal '%s'", reason);
    assert_non_null(why);
    if (!strstr(why, reason))
        fail_msg("refused with '%s', wanted '%s'", why, reason);
}

/* Frame body: 'p' 131 {Op, fields...} [131 payload] from raw pieces. */
static void body(struct buf *b, uint32_t arity, int op)
{
    buf_reset(b);
    buf_put_u8(b, 'p');
    ext_put_version(b);
    ext_put_tuple(b, arity);
    if (op >= 0 && op < 256)
        kt_small(b, (uint8_t)op);
    else
        ext_put_int(b, op);
}

static void put(struct buf *b, const struct buf *t) { buf_put(b, t->data, t->len); }

static void test_decode_wrong_arity(void **state)
{
    struct parts q;
    parts_init(&q);
    struct buf b;
    buf_init(&b);
    body(&b, 2, DOP_LINK); /* one field short */
    put(&b, &q.from);
    expect_refused(&b, "wrong arity");
    body(&b, 4, DOP_LINK); /* one extra */
    put(&b, &q.from); put(&b, &q.to); put(&b, &q.to);
    expect_refused(&b, "wrong arity");
    body(&b, 3, DOP_REG_SEND);
    put(&b, &q.from); put(&b, &q.name);
    ext_put_version(&b); put(&b, &q.msg);
    expect_refused(&b, "wrong arity");
    body(&b, 6, DOP_MONITOR_P_EXIT);
    put(&b, &q.from); put(&b, &q.to); put(&b, &q.ref); put(&b, &q.reason); put(&b, &q.reason);
    expect_refused(&b, "wrong arity");
    body(&b, 1, DOP_UNLINK_ID);
    expect_refused(&b, "wrong arity");
    /* a large-tuple header with a small arity is still checked */
    buf_reset(&b);
    buf_put(&b, "p\x83i\0\0\0\3", 7);
    kt_small(&b, DOP_LINK); put(&b, &q.from); put(&b, &q.to);
    struct dist_msg m;
    const char *why;
    assert_int_equal(dist_decode(b.data, b.len, &LIM, &m, &why), 0);
    buf_free(&b);
    parts_free(&q);
}

static void test_decode_wrong_types(void **state)
{
    struct parts q;
    parts_init(&q);
    struct buf b;
    buf_init(&b);
    body(&b, 3, DOP_LINK); /* atom where a pid goes */
    put(&b, &q.name); put(&b, &q.to);
    expect_refused(&b, "wrong type");
    body(&b, 3, DOP_LINK); /* ref where a pid goes */
    put(&b, &q.from); put(&b, &q.ref);
    expect_refused(&b, "wrong type");
    body(&b, 4, DOP_MONITOR_P); /* pid where the ref goes */
    put(&b, &q.from); put(&b, &q.to); put(&b, &q.to);
    expect_refused(&b, "wrong type");
    body(&b, 4, DOP_MONITOR_P); /* tuple as target */
    put(&b, &q.from); put(&b, &q.reason); put(&b, &q.ref);
    expect_refused(&b, "wrong type");
    body(&b, 4, DOP_REG_SEND); /* pid where the name goes */
    put(&b, &q.from); put(&b, &q.cookie); put(&b, &q.to);
    ext_put_version(&b); put(&b, &q.msg);
    expect_refused(&b, "wrong type");
    body(&b, 5, DOP_MONITOR_P_EXIT); /* ref where 'to' goes */
    put(&b, &q.from); put(&b, &q.ref); put(&b, &q.ref); put(&b, &q.reason);
    expect_refused(&b, "wrong type");
    body(&b, 4, DOP_UNLINK_ID); /* atom id */
    put(&b, &q.name); put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "wrong type");
    body(&b, 4, DOP_UNLINK_ID); /* negative id */
    ext_put_int(&b, -5); put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "unlink id");
    body(&b, 4, DOP_UNLINK_ID); /* negative big id */
    buf_put(&b, "n\2\1\1\1", 5); put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "unlink id");
    body(&b, 4, DOP_UNLINK_ID); /* id wider than 64 bits */
    buf_put(&b, "n\x09\0\1\1\1\1\1\1\1\1\1", 12); put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "unlink id");
    body(&b, 4, DOP_UNLINK_ID); /* float id */
    buf_put(&b, "F\x3f\xf0\0\0\0\0\0\0", 9); put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "wrong type");
    buf_free(&b);
    parts_free(&q);
}

static void test_decode_bad_ops(void **state)
{
    struct parts q;
    parts_init(&q);
    struct buf b;
    buf_init(&b);
    static const int unknown[] = {0, 5, 9, 10, 11, 14, 15, 17, 30, 31, 32, 37, 99, 255, -1,
                                  1000, 70000};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        body(&b, 3, unknown[i]);
        put(&b, &q.from); put(&b, &q.to);
        expect_refused(&b, "unknown control operation");
    }
    static const int not_negotiated[] = {DOP_SPAWN_REQUEST, DOP_ALIAS_SEND, DOP_ALIAS_SEND_TT};
    for (size_t i = 0; i < 3; i++) {
        body(&b, 3, not_negotiated[i]);
        put(&b, &q.from); put(&b, &q.ref);
        ext_put_version(&b); put(&b, &q.msg);
        expect_refused(&b, "not negotiated");
    }
    /* SPAWN_REQUEST in its real 6-tuple shape */
    body(&b, 7, DOP_SPAWN_REQUEST);
    put(&b, &q.ref); put(&b, &q.from); put(&b, &q.from);
    ext_put_tuple(&b, 3); kt_atom(&b, "erlang"); kt_atom(&b, "apply"); kt_small(&b, 2);
    ext_put_nil(&b); ext_put_nil(&b);
    ext_put_version(&b); ext_put_nil(&b);
    expect_refused(&b, "not negotiated");
    /* op that is not an integer, control that is not a tuple */
    buf_reset(&b);
    buf_put(&b, "p\x83h\3", 4);
    kt_atom(&b, "link"); put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "not a tuple starting with an integer");
    buf_reset(&b);
    buf_put(&b, "p\x83", 2);
    kt_atom(&b, "link");
    expect_refused(&b, "not a tuple starting with an integer");
    buf_reset(&b);
    buf_put(&b, "p\x83h\0", 4);
    expect_refused(&b, "not a tuple starting with an integer");
    buf_reset(&b);
    buf_put(&b, "p\x83j", 3);
    expect_refused(&b, "not a tuple starting with an integer");
    /* op as a bignum beyond int64 */
    buf_reset(&b);
    buf_put(&b, "p\x83h\3n\x09\0\1\1\1\1\1\1\1\1\1", 16);
    put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "not a tuple starting with an integer");
    buf_free(&b);
    parts_free(&q);
}

static void test_decode_headers(void **state)
{
    struct parts q;
    parts_init(&q);
    struct buf b;
    buf_init(&b);
    /* 131 68: atom-cache header (DFLAG_DIST_HDR_ATOM_CACHE never offered) */
    buf_put(&b, "\x83\x44\x01\x08\x00\x05hello", 11);
    expect_refused(&b, "atom-cache header");
    buf_reset(&b);
    buf_put(&b, "\x83\x44", 2);
    expect_refused(&b, "atom-cache header");
    /* 131 69 / 131 70: fragments (DFLAG_FRAGMENTS never offered) */
    buf_reset(&b);
    buf_put(&b, "\x83\x45\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\2\0", 19);
    expect_refused(&b, "fragment header");
    buf_reset(&b);
    buf_put(&b, "\x83\x46\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\1", 18);
    expect_refused(&b, "fragment header");
    /* other first bytes */
    buf_reset(&b);
    expect_refused(&b, "empty frame body");
    buf_put(&b, "\x83", 1);
    expect_refused(&b, "does not start with 112");
    buf_reset(&b);
    buf_put(&b, "q\x83h\1a\1", 6);
    expect_refused(&b, "does not start with 112");
    buf_reset(&b);
    buf_put(&b, "\x83h\3a\1", 5);
    expect_refused(&b, "does not start with 112");
    /* 'p' alone, 'p' without 131 */
    buf_reset(&b);
    buf_put_u8(&b, 'p');
    expect_refused(&b, "term:");
    buf_reset(&b);
    buf_put(&b, "ph\3a\1", 5);
    put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "term:");
    buf_free(&b);
    parts_free(&q);
}

static void test_decode_payload_rules(void **state)
{
    struct parts q;
    parts_init(&q);
    struct buf b;
    buf_init(&b);
    body(&b, 4, DOP_REG_SEND); /* message missing */
    put(&b, &q.from); put(&b, &q.cookie); put(&b, &q.name);
    expect_refused(&b, "payload missing");
    body(&b, 3, DOP_PAYLOAD_EXIT); /* reason missing */
    put(&b, &q.from); put(&b, &q.to);
    expect_refused(&b, "payload missing");
    body(&b, 3, DOP_LINK); /* payload where none belongs */
    put(&b, &q.from); put(&b, &q.to);
    ext_put_version(&b); put(&b, &q.msg);
    expect_refused(&b, "unexpected payload");
    body(&b, 3, DOP_LINK); /* a single stray byte */
    put(&b, &q.from); put(&b, &q.to);
    buf_put_u8(&b, 0);
    expect_refused(&b, "unexpected payload");
    body(&b, 4, DOP_REG_SEND); /* two messages */
    put(&b, &q.from); put(&b, &q.cookie); put(&b, &q.name);
    ext_put_version(&b); put(&b, &q.msg);
    ext_put_version(&b); put(&b, &q.msg);
    expect_refused(&b, "trailing bytes");
    body(&b, 4, DOP_REG_SEND); /* message then garbage */
    put(&b, &q.from); put(&b, &q.cookie); put(&b, &q.name);
    ext_put_version(&b); put(&b, &q.msg); buf_put_u8(&b, 0xff);
    expect_refused(&b, "trailing bytes");
    body(&b, 4, DOP_REG_SEND); /* message without its 131 */
    put(&b, &q.from); put(&b, &q.cookie); put(&b, &q.name);
    put(&b, &q.msg);
    expect_refused(&b, "term:");
    buf_free(&b);
    parts_free(&q);
}

/* Truncated and lying terms, in the control and in the payload. */
static void test_decode_truncated_terms(void **state)
{
    struct parts q;
    parts_init(&q);
    struct buf b, whole;
    buf_init(&b);
    buf_init(&whole);
    /* every cut of a complete REG_SEND */
    body(&whole, 4, DOP_REG_SEND);
    put(&whole, &q.from); put(&whole, &q.cookie); put(&whole, &q.name);
    ext_put_version(&whole); put(&whole, &q.msg);
    for (size_t k = 0; k < whole.len; k++) {
        buf_reset(&b);
        buf_put(&b, whole.data, k);
        expect_refused(&b, k == 0 ? "empty" : "");
    }
    /* a binary whose length lies */
    body(&b, 4, DOP_REG_SEND);
    put(&b, &q.from); put(&b, &q.cookie); put(&b, &q.name);
    buf_put(&b, "\x83m\x7f\xff\xff\xff", 6);
    buf_put(&b, "abc", 3);
    expect_refused(&b, "term: length or arity past the end");
    /* a list whose arity lies, in the control */
    buf_reset(&b);
    buf_put(&b, "p\x83h\3a\1l\xff\xff\xff\xff", 11);
    expect_refused(&b, "term: length or arity past the end");
    /* atom-cache references need the header we refuse */
    buf_reset(&b);
    buf_put(&b, "p\x83h\3a\1R\0R\1", 9);
    expect_refused(&b, "term: unknown or unsupported tag");
    /* an atom over 255 characters */
    body(&b, 4, DOP_REG_SEND);
    put(&b, &q.from); put(&b, &q.cookie);
    buf_put(&b, "v\x01\x2c", 3);
    for (int i = 0; i < 300; i++)
        buf_put_u8(&b, 'a');
    ext_put_version(&b); put(&b, &q.msg);
    expect_refused(&b, "term: atom");
    /* nested deeper than the limit, as the message */
    body(&b, 4, DOP_REG_SEND);
    put(&b, &q.from); put(&b, &q.cookie); put(&b, &q.name);
    ext_put_version(&b);
    for (int i = 0; i < 2000; i++)
        buf_put(&b, "l\0\0\0\1", 5);
    ext_put_nil(&b);
    for (int i = 0; i < 2000; i++)
        ext_put_nil(&b);
    expect_refused(&b, "term: nested too deep");
    /* a reference with 6 words */
    body(&b, 4, DOP_MONITOR_P);
    put(&b, &q.from); put(&b, &q.to);
    buf_put(&b, "Z\0\6", 3);
    kt_atom(&b, KT_PEER);
    for (int i = 0; i < 7; i++)
        buf_put_n32(&b, 1);
    expect_refused(&b, "term: illegal field");
    buf_free(&b);
    buf_free(&whole);
    parts_free(&q);
}

/* dist_frame_begin/end build what dist_cut cuts. */
static void test_frame_build(void **state)
{
    struct buf b;
    buf_init(&b);
    buf_put(&b, "junk", 4);
    size_t st = dist_frame_begin(&b);
    ext_put_version(&b);
    ext_put_tuple(&b, 3);
    kt_small(&b, DOP_LINK);
    kt_pid(&b, KT_NODE, 1, 0, 1);
    kt_pid(&b, KT_PEER, 2, 0, 1);
    assert_true(dist_frame_end(&b, st));
    struct span body;
    long k = dist_cut(b.data + 4, b.len - 4, 1u << 20, &body);
    assert_int_equal(k, (long)(b.len - 4));
    struct dist_msg m;
    const char *why;
    assert_int_equal(dist_decode(body.p, body.n, &LIM, &m, &why), 0);
    assert_int_equal(m.kind, DK_LINK);
    buf_free(&b);
}

/* ---- through a connection: a bad frame closes only its connection ---- */

/* A $gen_call `count` to the registry from peer's pid 1, as a whole frame. */
static void count_call(struct buf *b, const char *peer)
{
    size_t st = kt_frame(b, 4, DOP_REG_SEND);
    kt_pid(b, peer, 1, 0, 1);
    kt_atom(b, "");
    kt_atom(b, "Elixir.KV.Registry");
    ext_put_version(b);
    ext_put_tuple(b, 3);
    kt_atom(b, "$gen_call");
    ext_put_tuple(b, 2);
    kt_pid(b, peer, 1, 0, 1);
    kt_ref(b, peer, 1, 42);
    kt_atom(b, "count");
    kt_frame_end(b, st);
}

/* HARDENING 8-10: garbage, a lying length, a length over the limit, a term
 * nested 2,000,000 deep, an atom-cache header, an unknown operation: each
 * closes that connection only; a good call before it in the same read is
 * still answered; another peer is served throughout. */
static void test_conn_bad_frames(void **state)
{
    struct tnode *t = kt_node_new();
    t->cfg.max_message_bytes = 16u << 20;
    t->n.wire.max_message_bytes = t->cfg.max_message_bytes; /* the connections take a copy */
    struct buf bad, b;
    buf_init(&bad);
    buf_init(&b);
    for (int k = 0; k < 6; k++) {
        buf_reset(&bad);
        switch (k) {
        case 0: /* garbage with a plausible length */
            buf_put(&bad, "\0\0\0\x08garbage!", 12);
            break;
        case 1: /* a binary whose length lies, inside a good frame length */
            buf_put_n32(&bad, 13);
            buf_put(&bad, "p\x83h\3a\6", 6);
            buf_put(&bad, "m\xff\xff\xff\xf0" "ab", 7);
            break;
        case 2: /* over --max-message-bytes: refused from the header */
            buf_put_n32(&bad, (16u << 20) + 1);
            break;
        case 3: { /* a list nested 2,000,000 deep as the message */
            size_t st = kt_frame(&bad, 4, DOP_REG_SEND);
            kt_pid(&bad, "bad@host", 1, 0, 1);
            kt_atom(&bad, "");
            kt_atom(&bad, "Elixir.KV.Registry");
            ext_put_version(&bad);
            buf_reserve(&bad, 2000000u * 6 + 16);
            for (int i = 0; i < 2000000; i++)
                buf_put(&bad, "l\0\0\0\1", 5);
            ext_put_nil(&bad);
            for (int i = 0; i < 2000000; i++)
                ext_put_nil(&bad);
            kt_frame_end(&bad, st);
            break;
        }
        case 4: /* an atom-cache header */
            buf_put(&bad, "\0\0\0\x05\x83\x44\0\0\0", 9);
            break;
        case 5: { /* an operation never negotiated */
            size_t st = kt_frame(&bad, 3, DOP_ALIAS_SEND);
            kt_pid(&bad, "bad@host", 1, 0, 1);
            kt_ref(&bad, "bad@host", 1, 1);
            ext_put_version(&bad);
            kt_atom(&bad, "hi");
            kt_frame_end(&bad, st);
            break;
        }
        }
        struct conn *c = kt_conn(t, "bad@host", KT_BEAM_FLAGS);
        buf_reset(&b);
        count_call(&b, "bad@host");
        buf_put(&b, bad.data, bad.len);
        count_call(&b, "bad@host"); /* after the bad frame: never handled */
        if (kt_feed(c, &b))
            fail_msg("bad input %d: connection kept", k);
        struct kt_frames f;
        struct dist_msg m;
        kt_out(c, &f);
        assert_int_equal(kt_count_frames(&f), 1); /* the first call's reply only */
        buf_free(&f.raw);
        conn_reap(&t->n.wire);
        /* another peer is served */
        struct conn *g = kt_conn(t, "good@host", KT_BEAM_FLAGS);
        buf_reset(&b);
        count_call(&b, "good@host");
        assert_true(kt_feed(g, &b));
        kt_out(g, &f);
        assert_true(kt_next(&f, &m));
        assert_int_equal(m.op, DOP_SEND);
        buf_free(&f.raw);
        conn_close(g, NULL);
        conn_reap(&t->n.wire);
    }
    assert_int_equal(t->n.wire.nconns, 0);
    assert_int_equal(t->n.procs->mh_count, 0);
    buf_free(&bad);
    buf_free(&b);
    kt_node_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_basic),
        cmocka_unit_test(test_cut_too_big),
        cmocka_unit_test(test_cut_every_split),
        cmocka_unit_test(test_cut_golden_chunks),
        cmocka_unit_test(test_decode_golden_beam),
        cmocka_unit_test(test_decode_golden_ours),
        cmocka_unit_test(test_decode_golden_atom_cache),
        cmocka_unit_test(test_decode_golden_prefixes),
        cmocka_unit_test(test_decode_each_op),
        cmocka_unit_test(test_decode_wrong_arity),
        cmocka_unit_test(test_decode_wrong_types),
        cmocka_unit_test(test_decode_bad_ops),
        cmocka_unit_test(test_decode_headers),
        cmocka_unit_test(test_decode_payload_rules),
        cmocka_unit_test(test_decode_truncated_terms),
        cmocka_unit_test(test_frame_build),
        cmocka_unit_test(test_conn_bad_frames),
    };
    return cmocka_run_group_tests_name("dist", tests, NULL, NULL);
}
