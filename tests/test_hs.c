/* test_hs.c - the handshake state machine (c_src/hs.c) against a real OTP
 * handshake (tests/golden/hs_golden.h, captured by capture_handshake.py),
 * against itself, and against every malformed packet we could think of. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/hs.h"
#include "golden/hs_golden.h"

#define COOKIE GOLDEN_COOKIE
#define A_NAME "kv@host"
#define C_NAME "client@host"

/* ---- reading the golden stream (trusted test data, fixed layout) ---- */

struct pkt {
    const uint8_t *p; /* header included */
    size_t n;
};

/* The i-th 2-byte-length packet of a golden stream. */
static struct pkt golden_pkt(const uint8_t *s, size_t n, int i)
{
    size_t pos = 0;
    for (;;) {
        assert_true(pos + 2 <= n);
        size_t len = ((size_t)s[pos] << 8) | s[pos + 1];
        assert_true(pos + 2 + len <= n);
        if (i-- == 0)
            return (struct pkt){s + pos, 2 + len};
        pos += 2 + len;
    }
}

static uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint64_t rd64(const uint8_t *p) { return ((uint64_t)rd32(p) << 32) | rd32(p + 4); }

/* Fields of the captured packets; offsets count the 2-byte header. */
struct golden {
    struct pkt i_name, i_reply, a_status, a_chal, a_ack;
    uint64_t i_flags, a_flags;
    uint32_t i_creation, a_creation, i_challenge, a_challenge;
};

static struct golden golden(void)
{
    struct golden g;
    g.i_name = golden_pkt(golden_i2a, sizeof golden_i2a, 0);
    g.i_reply = golden_pkt(golden_i2a, sizeof golden_i2a, 1);
    g.a_status = golden_pkt(golden_a2i, sizeof golden_a2i, 0);
    g.a_chal = golden_pkt(golden_a2i, sizeof golden_a2i, 1);
    g.a_ack = golden_pkt(golden_a2i, sizeof golden_a2i, 2);
    assert_int_equal(g.i_name.p[2], 'N');
    assert_int_equal(g.i_reply.p[2], 'r');
    assert_int_equal(g.a_status.p[2], 's');
    assert_int_equal(g.a_chal.p[2], 'N');
    assert_int_equal(g.a_ack.p[2], 'a');
    g.i_flags = rd64(g.i_name.p + 3);
    g.i_creation = rd32(g.i_name.p + 11);
    g.i_challenge = rd32(g.i_reply.p + 3);
    g.a_flags = rd64(g.a_chal.p + 3);
    g.a_challenge = rd32(g.a_chal.p + 11);
    g.a_creation = rd32(g.a_chal.p + 15);
    return g;
}

/* ---- building packets ---- */

/* Appends a packet (header + body) to out; returns the bytes written. */
static size_t mk(uint8_t *out, unsigned hdr, const void *body, size_t n)
{
    if (hdr == 4) {
        put_n32(out, (uint32_t)n);
    } else {
        put_n16(out, (uint16_t)n);
    }
    memcpy(out + hdr, body, n);
    return hdr + n;
}

/* Initiator 'N' body; nlen is what the packet claims, name holds len bytes. */
static size_t body_name(uint8_t *b, uint64_t flags, uint32_t creation, const char *name,
                        size_t len, uint16_t nlen)
{
    b[0] = 'N';
    put_n32(b + 1, (uint32_t)(flags >> 32));
    put_n32(b + 5, (uint32_t)flags);
    put_n32(b + 9, creation);
    put_n16(b + 13, nlen);
    memcpy(b + 15, name, len);
    return 15 + len;
}

/* Acceptor 'N' (challenge) body. */
static size_t body_chal(uint8_t *b, uint64_t flags, uint32_t chal, uint32_t creation,
                        const char *name)
{
    size_t len = strlen(name);
    b[0] = 'N';
    put_n32(b + 1, (uint32_t)(flags >> 32));
    put_n32(b + 5, (uint32_t)flags);
    put_n32(b + 9, chal);
    put_n32(b + 13, creation);
    put_n16(b + 17, (uint16_t)len);
    memcpy(b + 19, name, len);
    return 19 + len;
}

static size_t mk_name(uint8_t *out, uint64_t flags, const char *name)
{
    uint8_t b[600];
    size_t len = strlen(name);
    return mk(out, 2, b, body_name(b, flags, 7, name, len, (uint16_t)len));
}

static size_t mk_text(uint8_t *out, const char *text)
{
    uint8_t b[300];
    b[0] = 's';
    memcpy(b + 1, text, strlen(text));
    return mk(out, 2, b, 1 + strlen(text));
}

/* ---- driving a machine like conn.c will ---- */

static void out_is(struct hs *h, const void *want, size_t n)
{
    assert_int_equal(buf_avail(&h->out), n);
    assert_memory_equal(buf_head(&h->out), want, n);
}

/* hs_feed on an exact-size heap copy, so ASan sees any read past the end. */
static long feed_exact(struct hs *h, const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, p, n);
    long r = hs_feed(h, copy, n);
    free(copy);
    return r;
}

/* Feeds in[] in chunks of `step` bytes (0: one chunk) the way a caller with
 * an input buffer does: unconsumed bytes stay and more are appended.  Answers
 * `status` when the acceptor asks.  Returns the bytes left unconsumed. */
static size_t drive(struct hs *h, const uint8_t *in, size_t n, size_t first, size_t step,
                    const char *status)
{
    uint8_t pending[4096];
    size_t plen = 0, pos = 0;
    assert_true(n <= sizeof pending);
    while (pos < n) {
        size_t take = pos == 0 && first ? first : step ? step : n - pos;
        if (take > n - pos)
            take = n - pos;
        memcpy(pending + plen, in + pos, take);
        plen += take;
        pos += take;
        for (;;) {
            long r = feed_exact(h, pending, plen);
            if (r < 0)
                return plen;
            assert_true((size_t)r <= plen);
            memmove(pending, pending + r, plen - (size_t)r);
            plen -= (size_t)r;
            if (h->state != HS_A_NEED_STATUS)
                break;
            hs_accept_status(h, status);
        }
    }
    return plen;
}

/* Moves everything queued in from->out into to (through hs_feed). */
static long pump(struct hs *from, struct hs *to)
{
    long r = 0;
    if (buf_avail(&from->out) == 0)
        return 0;
    r = hs_feed(to, buf_head(&from->out), buf_avail(&from->out));
    if (r > 0)
        buf_consume(&from->out, (size_t)r);
    return r;
}

/* ---- golden: our acceptor and our initiator against real OTP bytes ---- */

static void test_golden_digests(void **state)
{
    (void)state;
    struct golden g = golden();
    uint8_t d[16];
    hs_digest(COOKIE, g.a_challenge, d);
    assert_memory_equal(d, g.i_reply.p + 7, 16);
    hs_digest(COOKIE, g.i_challenge, d);
    assert_memory_equal(d, g.a_ack.p + 3, 16);
    /* decimal(unsigned 32-bit): the largest challenge must not go negative */
    static const uint8_t big[16] = {0x50, 0x30, 0x4a, 0x2a, 0xdf, 0xed, 0x30, 0x6b,
                                    0xac, 0x18, 0xc4, 0x98, 0x78, 0xe3, 0x43, 0x2a};
    hs_digest(COOKIE, 4294967295u, d);
    assert_memory_equal(d, big, 16);
}

static void test_golden_acceptor(void **state)
{
    (void)state;
    struct golden g = golden();
    struct hs h;
    hs_init_accept(&h, GOLDEN_ACCEPTOR, g.a_flags, g.a_creation, COOKIE, g.a_challenge, 2);
    assert_int_equal(h.state, HS_A_RECV_NAME);
    assert_int_equal(buf_avail(&h.out), 0);

    assert_int_equal(hs_feed(&h, g.i_name.p, g.i_name.n), (long)g.i_name.n);
    assert_int_equal(h.state, HS_A_NEED_STATUS);
    assert_string_equal(h.peer_name, GOLDEN_INITIATOR);
    assert_true(h.peer_flags == g.i_flags);
    assert_int_equal(h.peer_creation, g.i_creation);
    assert_int_equal(buf_avail(&h.out), 0);

    hs_accept_status(&h, "ok");
    assert_int_equal(h.state, HS_A_RECV_REPLY);
    /* the status and the challenge, byte for byte as OTP sent them */
    out_is(&h, golden_a2i, g.a_status.n + g.a_chal.n);
    buf_reset(&h.out);

    assert_int_equal(hs_feed(&h, g.i_reply.p, g.i_reply.n), (long)g.i_reply.n);
    assert_int_equal(h.state, HS_DONE);
    assert_int_equal(h.err, HS_OK);
    assert_int_equal(h.peer_challenge, g.i_challenge);
    out_is(&h, g.a_ack.p, g.a_ack.n);
    hs_free(&h);
}

static void test_golden_initiator(void **state)
{
    (void)state;
    struct golden g = golden();
    struct hs h;
    hs_init_connect(&h, GOLDEN_INITIATOR, GOLDEN_ACCEPTOR, g.i_flags, g.i_creation, COOKIE,
                    g.i_challenge, 2);
    assert_int_equal(h.state, HS_C_RECV_STATUS);
    out_is(&h, g.i_name.p, g.i_name.n);
    buf_reset(&h.out);

    size_t first = g.a_status.n + g.a_chal.n;
    assert_int_equal(hs_feed(&h, golden_a2i, first), (long)first);
    assert_int_equal(h.state, HS_C_RECV_ACK);
    assert_string_equal(h.status, "ok");
    assert_true(h.peer_flags == g.a_flags);
    assert_int_equal(h.peer_creation, g.a_creation);
    assert_int_equal(h.peer_challenge, g.a_challenge);
    out_is(&h, g.i_reply.p, g.i_reply.n);

    assert_int_equal(hs_feed(&h, g.a_ack.p, g.a_ack.n), (long)g.a_ack.n);
    assert_int_equal(h.state, HS_DONE);
    hs_free(&h);
}

/* The whole golden stream cut at every point, and one byte at a time, with a
 * tick and half a frame behind it that must be left to the caller. */
static void test_golden_acceptor_splits(void **state)
{
    (void)state;
    struct golden g = golden();
    static const uint8_t after[] = {0, 0, 0, 0, 0, 0, 0, 9, 112, 131};
    uint8_t in[sizeof golden_i2a + sizeof after];
    memcpy(in, golden_i2a, sizeof golden_i2a);
    memcpy(in + sizeof golden_i2a, after, sizeof after);
    for (size_t k = 0; k <= sizeof in + 1; k++) {
        struct hs h;
        hs_init_accept(&h, GOLDEN_ACCEPTOR, g.a_flags, g.a_creation, COOKIE, g.a_challenge, 2);
        size_t step = k == sizeof in + 1 ? 1 : 0; /* last round: byte by byte */
        size_t left = drive(&h, in, sizeof in, step ? 1 : k, step, "ok");
        assert_int_equal(h.state, HS_DONE);
        assert_int_equal(left, sizeof after);
        out_is(&h, golden_a2i, sizeof golden_a2i);
        hs_free(&h);
    }
}

static void test_golden_initiator_splits(void **state)
{
    (void)state;
    struct golden g = golden();
    static const uint8_t after[] = {0, 0, 0, 0, 0, 0};
    uint8_t in[sizeof golden_a2i + sizeof after];
    memcpy(in, golden_a2i, sizeof golden_a2i);
    memcpy(in + sizeof golden_a2i, after, sizeof after);
    for (size_t k = 0; k <= sizeof in + 1; k++) {
        struct hs h;
        hs_init_connect(&h, GOLDEN_INITIATOR, GOLDEN_ACCEPTOR, g.i_flags, g.i_creation, COOKIE,
                        g.i_challenge, 2);
        size_t step = k == sizeof in + 1 ? 1 : 0;
        size_t left = drive(&h, in, sizeof in, step ? 1 : k, step, NULL);
        assert_int_equal(h.state, HS_DONE);
        assert_int_equal(left, sizeof after);
        out_is(&h, golden_i2a, sizeof golden_i2a);
        hs_free(&h);
    }
}

/* The golden packets re-framed with the 4-byte headers TLS distribution uses. */
static void test_golden_acceptor_hdr4(void **state)
{
    (void)state;
    struct golden g = golden();
    uint8_t in[128], want[128];
    size_t n = 0, wn = 0;
    n += mk(in + n, 4, g.i_name.p + 2, g.i_name.n - 2);
    n += mk(in + n, 4, g.i_reply.p + 2, g.i_reply.n - 2);
    wn += mk(want + wn, 4, g.a_status.p + 2, g.a_status.n - 2);
    wn += mk(want + wn, 4, g.a_chal.p + 2, g.a_chal.n - 2);
    wn += mk(want + wn, 4, g.a_ack.p + 2, g.a_ack.n - 2);
    for (size_t k = 0; k <= n; k++) {
        struct hs h;
        hs_init_accept(&h, GOLDEN_ACCEPTOR, g.a_flags, g.a_creation, COOKIE, g.a_challenge, 4);
        assert_int_equal(drive(&h, in, n, k, 0, "ok"), 0);
        assert_int_equal(h.state, HS_DONE);
        out_is(&h, want, wn);
        hs_free(&h);
    }
}

/* ---- our two sides talking to each other ---- */

struct pair {
    struct hs a, c;
};

static void pair_init(struct pair *p, const char *acookie, const char *ccookie, unsigned hdr)
{
    hs_init_accept(&p->a, A_NAME, HS_OUR_FLAGS, 11, acookie, 0xdeadbeef, hdr);
    hs_init_connect(&p->c, C_NAME, A_NAME, HS_OUR_FLAGS, 22, ccookie, 0x01020304, hdr);
}

static void pair_free(struct pair *p)
{
    hs_free(&p->a);
    hs_free(&p->c);
}

/* Runs the exchange until nothing moves; answers status when asked. */
static void pair_run(struct pair *p, const char *status)
{
    for (int i = 0; i < 10; i++) {
        pump(&p->c, &p->a);
        if (p->a.state == HS_A_NEED_STATUS)
            hs_accept_status(&p->a, status);
        pump(&p->a, &p->c);
    }
}

static void check_pair_done(struct pair *p)
{
    assert_int_equal(p->a.state, HS_DONE);
    assert_int_equal(p->c.state, HS_DONE);
    assert_string_equal(p->a.peer_name, C_NAME);
    assert_true(p->a.peer_flags == HS_OUR_FLAGS);
    assert_true(p->c.peer_flags == HS_OUR_FLAGS);
    assert_int_equal(p->a.peer_creation, 22);
    assert_int_equal(p->c.peer_creation, 11);
    assert_int_equal(p->a.peer_challenge, 0x01020304);
    assert_int_equal(p->c.peer_challenge, 0xdeadbeef);
    assert_int_equal(buf_avail(&p->a.out), 0);
    assert_int_equal(buf_avail(&p->c.out), 0);
}

static void test_self_ok(void **state)
{
    (void)state;
    for (unsigned hdr = 2; hdr <= 4; hdr += 2) {
        struct pair p;
        pair_init(&p, "sekrit", "sekrit", hdr);
        pair_run(&p, "ok");
        check_pair_done(&p);
        assert_string_equal(p.c.status, "ok");
        pair_free(&p);
    }
}

static void test_self_ok_simultaneous(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, "sekrit", "sekrit", 2);
    pair_run(&p, "ok_simultaneous");
    check_pair_done(&p);
    assert_string_equal(p.a.status, "ok_simultaneous");
    assert_string_equal(p.c.status, "ok_simultaneous");
    pair_free(&p);
}

static void test_self_alive_true(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, "sekrit", "sekrit", 2);
    pair_run(&p, "alive");
    check_pair_done(&p);
    assert_int_equal(p.a.alive_confirmed, 1);
    assert_string_equal(p.c.status, "alive");
    pair_free(&p);
}

/* Wrong cookie: the acceptor sees a bad digest and must not send 'a'. */
static void test_self_wrong_cookie(void **state)
{
    (void)state;
    struct pair p;
    pair_init(&p, "right", "wrong", 2);
    pump(&p.c, &p.a);
    hs_accept_status(&p.a, "ok");
    pump(&p.a, &p.c);
    assert_int_equal(p.c.state, HS_C_RECV_ACK);
    size_t before = buf_avail(&p.a.out);
    assert_int_equal(pump(&p.c, &p.a), -1);
    assert_int_equal(p.a.state, HS_FAILED);
    assert_int_equal(p.a.err, HS_E_DIGEST);
    assert_int_equal(buf_avail(&p.a.out), before);
    assert_int_equal(before, 0);
    /* failure is sticky */
    assert_int_equal(hs_feed(&p.a, (const uint8_t *)"\0", 1), -1);
    pair_free(&p);
}

/* The initiator checks the acceptor's 'a' too. */
static void test_initiator_bad_ack(void **state)
{
    (void)state;
    struct pair p;
    uint8_t b[32], pk[40];
    pair_init(&p, "sekrit", "sekrit", 2);
    pump(&p.c, &p.a);
    hs_accept_status(&p.a, "ok");
    pump(&p.a, &p.c);
    b[0] = 'a';
    hs_digest("other", p.c.our_challenge, b + 1);
    size_t n = mk(pk, 2, b, 17);
    assert_int_equal(hs_feed(&p.c, pk, n), -1);
    assert_int_equal(p.c.err, HS_E_DIGEST);
    pair_free(&p);
}

/* ---- acceptor: malformed and hostile input ---- */

static void accept_init(struct hs *h) { hs_init_accept(h, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2); }

/* Feeds one buffer to a fresh acceptor and expects failure with err. */
static void accept_fails(const uint8_t *in, size_t n, enum hs_err err)
{
    struct hs h;
    accept_init(&h);
    assert_int_equal(feed_exact(&h, in, n), -1);
    assert_int_equal(h.state, HS_FAILED);
    assert_int_equal(h.err, err);
    hs_free(&h);
}

static void test_truncated_name(void **state)
{
    (void)state;
    uint8_t in[64];
    size_t n = mk_name(in, HS_OUR_FLAGS, C_NAME);
    /* every strict prefix is "need more", consuming nothing */
    for (size_t k = 0; k < n; k++) {
        struct hs h;
        accept_init(&h);
        assert_int_equal(feed_exact(&h, in, k), 0);
        assert_int_equal(h.state, HS_A_RECV_NAME);
        hs_free(&h);
    }
    /* a complete packet whose length stops inside the fixed fields */
    for (size_t body = 0; body < 15; body++) {
        uint8_t t[64];
        size_t tn = mk(t, 2, in + 2, body);
        accept_fails(t, tn, HS_E_PACKET);
    }
}

static void test_trailing_garbage(void **state)
{
    (void)state;
    uint8_t b[64], in[70];
    size_t bn = body_name(b, HS_OUR_FLAGS, 1, C_NAME, strlen(C_NAME), strlen(C_NAME));
    b[bn++] = 'x';
    accept_fails(in, mk(in, 2, b, bn), HS_E_PACKET);

    /* a reply with one byte too many or too few */
    for (int extra = -1; extra <= 1; extra += 2) {
        struct hs h;
        uint8_t r[32], pk[40];
        accept_init(&h);
        size_t n = mk_name(pk, HS_OUR_FLAGS, C_NAME);
        assert_int_equal(hs_feed(&h, pk, n), (long)n);
        hs_accept_status(&h, "ok");
        r[0] = 'r';
        put_n32(r + 1, 5);
        hs_digest(COOKIE, 42, r + 5);
        r[21] = 0;
        n = mk(pk, 2, r, (size_t)(21 + extra));
        assert_int_equal(hs_feed(&h, pk, n), -1);
        assert_int_equal(h.err, HS_E_PACKET);
        hs_free(&h);
    }
}

static void test_empty_packet(void **state)
{
    (void)state;
    static const uint8_t in[] = {0, 0};
    accept_fails(in, sizeof in, HS_E_PACKET);
}

/* A length over max_packet fails as soon as the header is seen. */
static void test_oversized(void **state)
{
    (void)state;
    static const uint8_t big2[] = {0x04, 0x01}; /* 1025 */
    accept_fails(big2, sizeof big2, HS_E_PACKET);
    static const uint8_t huge2[] = {0xff, 0xff, 'N'};
    accept_fails(huge2, sizeof huge2, HS_E_PACKET);

    struct hs h;
    static const uint8_t huge4[] = {0xff, 0xff, 0xff, 0xff};
    hs_init_accept(&h, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 4);
    assert_int_equal(hs_feed(&h, huge4, 3), 0); /* header itself incomplete */
    assert_int_equal(hs_feed(&h, huge4, 4), -1);
    assert_int_equal(h.err, HS_E_PACKET);
    hs_free(&h);

    /* exactly max_packet is fine, one more is not */
    uint8_t in[64];
    size_t n = mk_name(in, HS_OUR_FLAGS, C_NAME);
    accept_init(&h);
    h.max_packet = n - 2;
    assert_int_equal(hs_feed(&h, in, n), (long)n);
    hs_free(&h);
    accept_init(&h);
    h.max_packet = n - 3;
    assert_int_equal(hs_feed(&h, in, n), -1);
    assert_int_equal(h.err, HS_E_PACKET);
    hs_free(&h);
}

static void test_old_version(void **state)
{
    (void)state;
    /* 'n' Version:16 Flags:32 Name: the version-5 send_name */
    uint8_t b[64], in[70];
    b[0] = 'n';
    put_n16(b + 1, 5);
    put_n32(b + 3, (uint32_t)HS_OUR_FLAGS);
    memcpy(b + 7, C_NAME, strlen(C_NAME));
    accept_fails(in, mk(in, 2, b, 7 + strlen(C_NAME)), HS_E_VERSION);

    /* and the version-5 challenge, at the initiator */
    struct hs h;
    hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
    size_t n = mk_text(in, "ok");
    b[0] = 'n';
    put_n16(b + 1, 5);
    put_n32(b + 3, (uint32_t)HS_OUR_FLAGS);
    put_n32(b + 7, 99);
    memcpy(b + 11, A_NAME, strlen(A_NAME));
    n += mk(in + n, 2, b, 11 + strlen(A_NAME));
    assert_int_equal(hs_feed(&h, in, n), -1);
    assert_int_equal(h.err, HS_E_VERSION);
    hs_free(&h);
}

static void test_missing_flags(void **state)
{
    (void)state;
    uint64_t lack = DFLAG_BIG_CREATION | DFLAG_MAP_TAG | DFLAG_HANDSHAKE_23;
    uint8_t in[64];
    size_t n = mk_name(in, (DFLAG_MANDATORY_25 & ~lack) | DFLAG_PUBLISHED, C_NAME);
    struct hs h;
    accept_init(&h);
    assert_int_equal(hs_feed(&h, in, n), -1);
    assert_int_equal(h.state, HS_FAILED);
    assert_int_equal(h.err, HS_E_FLAGS);
    assert_true(h.missing == lack);
    static const uint8_t want[] = {0, 12, 's', 'n', 'o', 't', '_', 'a', 'l', 'l', 'o', 'w', 'e', 'd'};
    out_is(&h, want, sizeof want);
    assert_string_equal(h.status, "not_allowed");
    hs_free(&h);

    /* only the OTP 25 set is required: a peer without the OTP 26 bits joins */
    n = mk_name(in, DFLAG_MANDATORY_25, C_NAME);
    accept_init(&h);
    assert_int_equal(hs_feed(&h, in, n), (long)n);
    assert_int_equal(h.state, HS_A_NEED_STATUS);
    assert_true(h.missing == 0);
    hs_free(&h);
}

static void test_initiator_missing_flags(void **state)
{
    (void)state;
    struct hs h;
    uint8_t b[64], in[128];
    hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
    size_t n = mk_text(in, "ok");
    n += mk(in + n, 2, b, body_chal(b, DFLAG_MANDATORY_25 & ~DFLAG_UTF8_ATOMS, 9, 9, A_NAME));
    buf_reset(&h.out);
    assert_int_equal(hs_feed(&h, in, n), -1);
    assert_int_equal(h.err, HS_E_FLAGS);
    assert_true(h.missing == DFLAG_UTF8_ATOMS);
    assert_int_equal(buf_avail(&h.out), 0); /* no 'r' */
    hs_free(&h);
}

static void test_bad_names(void **state)
{
    (void)state;
    char long_name[301];
    memset(long_name, 'a', 300);
    memcpy(long_name + 295, "@host", 6); /* 300 bytes */
    const char *bad[] = {"noat", "a@b@c", "@host", "alive@", "", "@", "sp ace@h",
                         "del\x7f@h", "tab\t@h", long_name};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t in[400];
        accept_fails(in, mk_name(in, HS_OUR_FLAGS, bad[i]), HS_E_NAME);
    }
    /* a NUL inside the name */
    uint8_t b[64], in[70];
    accept_fails(in, mk(in, 2, b, body_name(b, HS_OUR_FLAGS, 1, "a\0b@h", 5, 5)), HS_E_NAME);
    /* NameLen pointing past the end of a complete packet */
    accept_fails(in, mk(in, 2, b, body_name(b, HS_OUR_FLAGS, 1, C_NAME, strlen(C_NAME), 40)),
                 HS_E_PACKET);
    accept_fails(in, mk(in, 2, b, body_name(b, HS_OUR_FLAGS, 1, C_NAME, strlen(C_NAME), 0xffff)),
                 HS_E_PACKET);
}

static void test_valid_node_name(void **state)
{
    (void)state;
    char n255[256], n256[257];
    memset(n255, 'x', sizeof n255);
    n255[100] = '@';
    memset(n256, 'x', sizeof n256);
    n256[100] = '@';
    assert_true(hs_valid_node_name("a@b", 3));
    assert_true(hs_valid_node_name("kv_cnode@host.example.com", 25));
    assert_true(hs_valid_node_name("\xc3\xa9t\xc3\xa9@h", 7)); /* UTF-8 bytes pass */
    assert_true(hs_valid_node_name(n255, 255));
    assert_false(hs_valid_node_name(n256, 256));
    assert_false(hs_valid_node_name("a@b", 0));
    assert_false(hs_valid_node_name("a@b", 2)); /* "a@" */
    assert_false(hs_valid_node_name("a@b@", 4));
    assert_false(hs_valid_node_name("a\nb@c", 5));
}

static void test_unexpected_tags(void **state)
{
    (void)state;
    uint8_t in[64];
    /* a status before any name */
    accept_fails(in, mk_text(in, "ok"), HS_E_TAG);
    static const uint8_t x[] = {0, 1, 'X'};
    accept_fails(x, sizeof x, HS_E_TAG);
    static const uint8_t r[] = {0, 1, 'r'};
    accept_fails(r, sizeof r, HS_E_TAG);

    /* the initiator wants 's' first, then 'N', then 'a' */
    struct hs h;
    uint8_t b[64];
    hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
    size_t n = mk(in, 2, b, body_chal(b, HS_OUR_FLAGS, 1, 1, A_NAME));
    assert_int_equal(hs_feed(&h, in, n), -1);
    assert_int_equal(h.err, HS_E_TAG);
    hs_free(&h);

    hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
    n = mk_text(in, "ok");
    n += mk_text(in + n, "ok");
    assert_int_equal(hs_feed(&h, in, n), -1);
    assert_int_equal(h.err, HS_E_TAG);
    hs_free(&h);
}

/* The acceptor stops at the name and leaves the reply for after the status. */
static void test_stops_at_need_status(void **state)
{
    (void)state;
    uint8_t in[128];
    size_t n = mk_name(in, HS_OUR_FLAGS, C_NAME);
    size_t first = n;
    n += mk_text(in + n, "true");
    struct hs h;
    accept_init(&h);
    assert_int_equal(hs_feed(&h, in, n), (long)first);
    assert_int_equal(hs_feed(&h, in + first, n - first), 0);
    assert_int_equal(h.state, HS_A_NEED_STATUS);
    hs_accept_status(&h, "alive");
    assert_int_equal(h.state, HS_A_RECV_ALIVE_ANS);
    assert_int_equal(hs_feed(&h, in + first, n - first), (long)(n - first));
    assert_int_equal(h.state, HS_A_RECV_REPLY);
    assert_int_equal(h.alive_confirmed, 1);
    hs_free(&h);
}

/* ---- status flows ---- */

static void acceptor_refuses(const char *status, const char *sent)
{
    uint8_t in[64], want[32];
    struct hs h;
    accept_init(&h);
    size_t n = mk_name(in, HS_OUR_FLAGS, C_NAME);
    assert_int_equal(hs_feed(&h, in, n), (long)n);
    hs_accept_status(&h, status);
    assert_int_equal(h.state, HS_FAILED);
    assert_int_equal(h.err, HS_E_REFUSED);
    out_is(&h, want, mk_text(want, sent));
    assert_int_equal(hs_feed(&h, in, n), -1);
    hs_free(&h);
}

static void test_acceptor_refuses(void **state)
{
    (void)state;
    acceptor_refuses("nok", "nok");
    acceptor_refuses("not_allowed", "not_allowed");
    acceptor_refuses("whatever", "nok");
}

static void test_acceptor_alive_false(void **state)
{
    (void)state;
    uint8_t in[64], want[32];
    struct hs h;
    const char *answers[] = {"false", "maybe", "true!"};
    enum hs_err errs[] = {HS_E_REFUSED, HS_E_PACKET, HS_E_PACKET};
    for (int i = 0; i < 3; i++) {
        accept_init(&h);
        size_t n = mk_name(in, HS_OUR_FLAGS, C_NAME);
        assert_int_equal(hs_feed(&h, in, n), (long)n);
        hs_accept_status(&h, "alive");
        out_is(&h, want, mk_text(want, "alive"));
        n = mk_text(in, answers[i]);
        assert_int_equal(hs_feed(&h, in, n), -1);
        assert_int_equal(h.err, errs[i]);
        assert_int_equal(h.alive_confirmed, 0);
        out_is(&h, want, mk_text(want, "alive")); /* no challenge */
        hs_free(&h);
    }
}

static void initiator_refused(const char *status, const char *kept)
{
    uint8_t in[64];
    struct hs h;
    hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
    buf_reset(&h.out);
    size_t n = mk_text(in, status);
    assert_int_equal(hs_feed(&h, in, n), -1);
    assert_int_equal(h.err, HS_E_STATUS);
    assert_string_equal(h.status, kept);
    assert_int_equal(buf_avail(&h.out), 0);
    hs_free(&h);
}

static void test_initiator_refused(void **state)
{
    (void)state;
    initiator_refused("nok", "nok");
    initiator_refused("not_allowed", "not_allowed");
    initiator_refused("", "");
    initiator_refused("named:", "named:");
    initiator_refused("a_very_long_status_text", "a_very_long_sta");
}

static void test_initiator_alive(void **state)
{
    (void)state;
    uint8_t in[64], want[32];
    struct hs h;
    hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
    buf_reset(&h.out);
    size_t n = mk_text(in, "alive");
    assert_int_equal(hs_feed(&h, in, n), (long)n);
    assert_int_equal(h.state, HS_C_RECV_CHALLENGE);
    out_is(&h, want, mk_text(want, "true"));
    hs_free(&h);
}

static void test_initiator_wrong_node(void **state)
{
    (void)state;
    uint8_t b[64], in[128];
    struct hs h;
    const char *others[] = {"kv@other", "kv@hos", "kv@hostt", "KV@host"};
    for (int i = 0; i < 4; i++) {
        hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
        buf_reset(&h.out);
        size_t n = mk_text(in, "ok");
        n += mk(in + n, 2, b, body_chal(b, HS_OUR_FLAGS, 1, 1, others[i]));
        assert_int_equal(hs_feed(&h, in, n), -1);
        assert_int_equal(h.err, HS_E_WRONG_NODE);
        assert_int_equal(buf_avail(&h.out), 0);
        hs_free(&h);
    }
}

static void test_initiator_truncated_challenge(void **state)
{
    (void)state;
    uint8_t b[64], in[128];
    size_t bn = body_chal(b, HS_OUR_FLAGS, 1, 1, A_NAME);
    for (size_t cut = 0; cut < bn; cut++) {
        struct hs h;
        hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
        size_t n = mk_text(in, "ok");
        n += mk(in + n, 2, b, cut);
        assert_int_equal(feed_exact(&h, in, n), -1);
        assert_int_equal(h.err, HS_E_PACKET);
        hs_free(&h);
    }
    /* one byte too many */
    struct hs h;
    hs_init_connect(&h, C_NAME, A_NAME, HS_OUR_FLAGS, 1, COOKIE, 42, 2);
    b[bn] = 0;
    size_t n = mk_text(in, "ok");
    n += mk(in + n, 2, b, bn + 1);
    assert_int_equal(feed_exact(&h, in, n), -1);
    assert_int_equal(h.err, HS_E_PACKET);
    hs_free(&h);
}

/* An 'a' must be exactly 16 digest bytes. */
static void test_initiator_bad_ack_length(void **state)
{
    (void)state;
    for (size_t len = 0; len <= 18; len++) {
        struct pair p;
        uint8_t b[32], pk[40];
        if (len == 17)
            continue;
        pair_init(&p, "sekrit", "sekrit", 2);
        pump(&p.c, &p.a);
        hs_accept_status(&p.a, "ok");
        pump(&p.a, &p.c);
        b[0] = 'a';
        hs_digest("sekrit", p.c.our_challenge, b + 1);
        b[17] = 0;
        size_t n = mk(pk, 2, b, len);
        assert_int_equal(feed_exact(&p.c, pk, n), -1);
        assert_int_equal(p.c.err, HS_E_PACKET);
        pair_free(&p);
    }
}

static void test_bad_own_names(void **state)
{
    (void)state;
    struct hs h;
    hs_init_accept(&h, "nohost", HS_OUR_FLAGS, 1, COOKIE, 1, 2);
    assert_int_equal(h.state, HS_FAILED);
    assert_int_equal(h.err, HS_E_NAME);
    hs_free(&h);
    hs_init_connect(&h, C_NAME, "peer", HS_OUR_FLAGS, 1, COOKIE, 1, 2);
    assert_int_equal(h.state, HS_FAILED);
    assert_int_equal(h.err, HS_E_NAME);
    assert_int_equal(buf_avail(&h.out), 0);
    hs_free(&h);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = HS_OK; e <= HS_E_NOMEM + 1; e++)
        assert_non_null(hs_strerror((enum hs_err)e));
    assert_string_equal(hs_strerror(HS_E_DIGEST), "wrong digest (cookie mismatch)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_digests),
        cmocka_unit_test(test_golden_acceptor),
        cmocka_unit_test(test_golden_initiator),
        cmocka_unit_test(test_golden_acceptor_splits),
        cmocka_unit_test(test_golden_initiator_splits),
        cmocka_unit_test(test_golden_acceptor_hdr4),
        cmocka_unit_test(test_self_ok),
        cmocka_unit_test(test_self_ok_simultaneous),
        cmocka_unit_test(test_self_alive_true),
        cmocka_unit_test(test_self_wrong_cookie),
        cmocka_unit_test(test_initiator_bad_ack),
        cmocka_unit_test(test_truncated_name),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_empty_packet),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_old_version),
        cmocka_unit_test(test_missing_flags),
        cmocka_unit_test(test_initiator_missing_flags),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_valid_node_name),
        cmocka_unit_test(test_unexpected_tags),
        cmocka_unit_test(test_stops_at_need_status),
        cmocka_unit_test(test_acceptor_refuses),
        cmocka_unit_test(test_acceptor_alive_false),
        cmocka_unit_test(test_initiator_refused),
        cmocka_unit_test(test_initiator_alive),
        cmocka_unit_test(test_initiator_wrong_node),
        cmocka_unit_test(test_initiator_truncated_challenge),
        cmocka_unit_test(test_initiator_bad_ack_length),
        cmocka_unit_test(test_bad_own_names),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
