/* test_atomcache.c - the distribution header atom cache (c_src/proto/atomcache.c)
 * against real traffic: a BEAM (OTP 25, and OTP 29 from the chroot build)
 * talking to kv_cnode with DIST_HDR_ATOM_CACHE, recorded by
 * tests/golden/capture_atomcache.py (both directions, each replayed through
 * a fresh cache; every frame must turn into a pass-through frame that
 * dist_decode accepts), the two-BEAM frames of tests/golden/frames_*.bin,
 * our own encoder round-tripped through the decoder, every truncation of
 * real frames, and hand-made malformed headers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kvtest.h"
#include "proto/atomcache.h"

static const struct term_limits LIM = {1000, 1u << 24};
#define MAXF (64u << 20)

static struct ac *ac_new(void)
{
    struct ac *a = malloc(sizeof *a);
    assert_non_null(a);
    ac_init(a);
    return a;
}

static void ac_del(struct ac *a)
{
    ac_free(a);
    free(a);
}

/* ac_frame_decode, returning what ac_frame_in made as a plain span (0 when
 * ac_frame_in accepted, whatever the decode said).  Its decode (walked, or
 * taken from a template) must be exactly the full decode of the same
 * bytes, and so must the walked decode. */
static int frame_in(struct ac *a, const uint8_t *p, size_t n, uint64_t max, struct span *out,
                    const char **why)
{
    struct ac_in in;
    struct dist_msg m1, m2, m3;
    const char *w2 = NULL, *w3 = NULL;
    *why = NULL;
    int r1 = ac_frame_decode(a, p, n, &LIM, max, &in, &m1, why);
    if (r1 != 0 && in.body.p == NULL)
        return -1; /* ac_frame_in refused it */
    *out = in.body;
    int r2 = dist_decode(in.body.p, in.body.n, &LIM, &m2, &w2);
    int r3 = dist_decode_walked(in.body.p, in.body.n, in.ctl_len, &in.fields, &m3, &w3);
    assert_int_equal(r1, r2);
    assert_int_equal(r3, r2);
    if (r1 == 0) {
        const struct dist_msg *ms[2] = {&m1, &m3};
        for (int k = 0; k < 2; k++) {
            const struct dist_msg *x = ms[k];
            assert_int_equal(x->op, m2.op);
            assert_int_equal(x->kind, m2.kind);
            const struct span *s1[] = {&x->from, &x->to, &x->ref, &x->reason, &x->msg};
            const struct span *s2[] = {&m2.from, &m2.to, &m2.ref, &m2.reason, &m2.msg};
            for (int i = 0; i < 5; i++) {
                assert_ptr_equal(s1[i]->p, s2[i]->p);
                assert_int_equal(s1[i]->n, s2[i]->n);
            }
            assert_int_equal(x->has_id, m2.has_id);
            assert_int_equal(x->id, m2.id);
        }
    }
    return 0;
}

/* Replay a whole-frames file; returns frames decoded, counts refs seen. */
static size_t replay(const char *file, bool need_decode, size_t *refs_seen)
{
    size_t n, pos = 0, done = 0;
    uint8_t *p = kt_slurp(file, &n);
    struct ac *a = ac_new();
    *refs_seen = 0;
    for (;;) {
        struct span body;
        long k = dist_cut(p + pos, n - pos, UINT64_MAX, &body);
        if (k == DIST_NEED_MORE)
            break;
        assert_true(k > 0);
        pos += (size_t)k;
        if (body.n == 0)
            continue;
        struct span out;
        const char *why = NULL;
        if (body.n > 2 && body.p[2] > 0)
            *refs_seen += body.p[2];
        if (frame_in(a, body.p, body.n, MAXF, &out, &why) != 0)
            fail_msg("%s frame %zu: %s", file, done, why);
        assert_true(out.n > 2 && out.p[0] == 'p' && out.p[1] == 131);
        struct dist_msg m;
        if (need_decode && dist_decode(out.p, out.n, &LIM, &m, &why) != 0)
            fail_msg("%s frame %zu: dist_decode: %s", file, done, why);
        if (!need_decode) {
            long l = term_walk_versioned(out.p + 1, out.n - 1, &LIM);
            assert_true(l > 0);
        }
        done++;
    }
    assert_int_equal(pos, n);
    ac_del(a);
    free(p);
    return done;
}

static void test_golden_kv_traffic(void **state)
{
    const char *files[] = {"golden/ac25_frames_beam_to_kv.bin", "golden/ac25_frames_kv_to_beam.bin",
                           "golden/ac29_frames_beam_to_kv.bin", "golden/ac29_frames_kv_to_beam.bin"};
    for (int i = 0; i < 4; i++) {
        size_t refs;
        size_t got = replay(files[i], true, &refs);
        assert_true(got > 100);
        assert_true(refs > got); /* atoms really went by reference */
    }
}

/* Two BEAMs (they also negotiate FRAGMENTS, but send short frames in 131 68). */
static void test_golden_two_beams(void **state)
{
    size_t refs;
    assert_true(replay("golden/frames_initiator_to_acceptor.bin", false, &refs) > 0);
    assert_true(refs > 0);
    assert_true(replay("golden/frames_acceptor_to_initiator.bin", false, &refs) > 0);
}

/* Every strict prefix of every real frame fails with a reason, each on a
 * cache that holds what the frames before it left. */
static void test_golden_prefixes(void **state)
{
    size_t n, pos = 0, tried = 0;
    uint8_t *p = kt_slurp("golden/ac29_frames_beam_to_kv.bin", &n);
    struct ac *a = ac_new();
    struct ac *t = ac_new();
    for (int f = 0; f < 60; f++) {
        struct span body, out;
        long k = dist_cut(p + pos, n - pos, UINT64_MAX, &body);
        assert_true(k > 0);
        pos += (size_t)k;
        if (body.n == 0)
            continue;
        const char *why = NULL;
        for (size_t cut = 0; cut < body.n; cut++) {
            /* a copy of the cache state: a prefix may still store entries */
            memcpy(t->in, a->in, sizeof a->in);
            uint8_t *dup = malloc(cut ? cut : 1);
            memcpy(dup, body.p, cut);
            why = NULL;
            struct ac_atom saved[AC_SIZE];
            memcpy(saved, t->in, sizeof saved);
            for (size_t s = 0; s < AC_SIZE; s++)
                if (saved[s].txt) {
                    t->in[s].txt = malloc(saved[s].len ? saved[s].len : 1);
                    memcpy(t->in[s].txt, saved[s].txt, saved[s].len);
                }
            int rc = frame_in(t, dup, cut, MAXF, &out, &why);
            struct dist_msg m;
            if (rc == 0)
                rc = dist_decode(out.p, out.n, &LIM, &m, &why);
            assert_int_equal(rc, -1);
            if (!why)
                fail_msg("frame %d cut %zu: no reason", f, cut);
            for (size_t s = 0; s < AC_SIZE; s++) {
                free(t->in[s].txt);
                t->in[s].txt = NULL;
            }
            free(dup);
            tried++;
        }
        assert_int_equal(frame_in(a, body.p, body.n, MAXF, &out, &why), 0);
    }
    assert_true(tried > 1000);
    ac_del(t);
    ac_del(a);
    free(p);
}

/* Our encoder: what we send decodes, through the peer's cache, to exactly
 * the pass-through frame we built; the second time atoms are cached refs. */
static void test_roundtrip(void **state)
{
    /* 'p', 131 {6, Pid, '', 'Elixir.KV.Registry'}, 131 {ok, Pid, Ref, fun} */
    static const uint8_t pid[] = {88, 119, 8, 'k', 'v', '@', 'h', 'o', 's', 't', 'x',
                                  0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3};
    static const uint8_t ref[] = {90, 0, 2, 119, 9, 'p', 'e', 'e', 'r', '@', 'h', 'o', 's', 't',
                                  0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8};
    struct buf b;
    buf_init(&b);
    buf_put(&b, "p\x83\x68\x04\x61\x06", 6);
    buf_put(&b, pid, sizeof pid);
    buf_put(&b, "\x77\x00", 2);
    buf_put(&b, "\x77\x12" "Elixir.KV.Registry", 20);
    buf_put(&b, "\x83\x68\x04\x77\x02ok", 7);
    buf_put(&b, pid, sizeof pid);
    buf_put(&b, ref, sizeof ref);
    /* NEW_FUN: Size Arity Uniq Index NumFree=1 Module OldIndex OldUniq Pid Free */
    size_t fs = b.len;
    buf_put(&b, "\x70\0\0\0\0\x01", 6);
    for (int i = 0; i < 16; i++)
        buf_put_u8(&b, (uint8_t)i);
    buf_put(&b, "\0\0\0\x01\0\0\0\x01", 8);
    buf_put(&b, "\x77\x04mod1\x61\x01\x61\x02", 10);
    buf_put(&b, pid, sizeof pid);
    /* a non-ASCII Latin-1 atom as a free variable: sent plain, as it was */
    buf_put(&b, "\x64\x00\x03" "ab\xe9", 6);
    put_n32(b.data + fs + 1, (uint32_t)(b.len - fs - 1));
    struct dist_msg m;
    const char *why = NULL;
    if (dist_decode(b.data, b.len, &LIM, &m, &why) != 0)
        fail_msg("built frame: %s", why);

    struct ac *me = ac_new(), *peer = ac_new();
    size_t hdr_first = 0;
    for (int round = 0; round < 4; round++) {
        struct span hdr, terms, out;
        /* other numbers each round (a pid's id, a ref word): from the
         * second round on both sides copy them into a template */
        b.data[6 + 11 + 3] = (uint8_t)round;
        b.data[106] = (uint8_t)(0x40 + round); /* the last byte of the ref's words */
        assert_true(ac_frame_out(me, b.data, b.len, &hdr, &terms));
        assert_true(hdr.n >= 3 && hdr.p[0] == 131 && hdr.p[1] == 68);
        assert_true(hdr.p[2] == 6); /* kv@hostx, '', Registry, ok, peer@host, mod1 */
        /* header and terms: refs only, no texts, after the first round */
        if (round == 0)
            hdr_first = hdr.n + terms.n;
        else
            assert_true(hdr.n + terms.n < hdr_first - 30);
        if (round > 0)
            assert_true(hdr.n + terms.n < b.len - 40);
        struct buf f;
        buf_init(&f);
        buf_put(&f, hdr.p, hdr.n);
        buf_put(&f, terms.p, terms.n);
        assert_int_equal(frame_in(peer, f.data, f.len, MAXF, &out, &why), 0);
        /* the same bytes come back */
        assert_int_equal(out.n, b.len);
        assert_memory_equal(out.p, b.data, b.len);
        /* and stay while the peer sends on the same connection (a reply
         * or a monitor made while this frame is delivered: walked in
         * round 0, from a template after) */
        struct span ph, pt;
        assert_true(ac_frame_out(peer, b.data, b.len, &ph, &pt));
        assert_memory_equal(out.p, b.data, b.len);
        buf_free(&f);
    }
    /* rounds 2-4 were copied from an out template */
    int made = 0;
    for (int i = 0; i < AC_TPL; i++)
        made += me->otpl[i].n != 0;
    assert_int_equal(made, 1);
    /* not ours: no 'p', a 131 missing, trailing garbage */
    struct span h, t;
    assert_false(ac_frame_out(me, b.data + 1, b.len - 1, &h, &t));
    buf_put_u8(&b, 0);
    assert_false(ac_frame_out(me, b.data, b.len, &h, &t));
    ac_del(me);
    ac_del(peer);
    buf_free(&b);
}

/* Frame templates: a frame that differs from an earlier one only in its
 * numbers is copied from it with its own numbers; a changed structure
 * misses; a header that refills a slot drops every template (the output
 * holds the atom's text).  Checked against a cache that walks everything. */
static void test_templates(void **state)
{
    struct ac *a = ac_new(), *plain = ac_new();
    plain->memo_off = true;
    plain->tpl_off = true;
    static const uint8_t f1[] = {131, 68, 1, 0x08, 0, 1, 'x', 104, 2, 97, 5, 82, 0};
    static uint8_t f2[] = {131, 68, 1, 0x00, 0, 104, 3, 97, 5, 82, 0, 109, 0, 0, 0, 2, 'a', 'b'};
    static const uint8_t f3[] = {131, 68, 1, 0x08, 0, 2, 'y', 'z', 104, 1, 97, 1};
    static const uint8_t f4[] = {131, 68, 1, 0x00, 0, 104, 3, 97, 5, 82, 0, 106, 106};
    struct {
        const uint8_t *p;
        size_t n;
        uint8_t op, b0;
        const char *atom;
    } steps[] = {
        {f1, sizeof f1, 5, 0, "x"},  {f2, sizeof f2, 5, 'a', "x"}, {f2, sizeof f2, 19, 'q', "x"},
        {f2, sizeof f2, 20, 'r', "x"}, {f4, sizeof f4, 5, 0, "x"},  {f3, sizeof f3, 0, 0, NULL},
        {f2, sizeof f2, 6, 's', "yz"}, {f2, sizeof f2, 7, 't', "yz"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        if (steps[i].p == f2) {
            f2[8] = steps[i].op;
            f2[16] = steps[i].b0;
        }
        struct span o1, o2;
        const char *why = NULL;
        struct ac_in in;
        assert_int_equal(ac_frame_in(a, steps[i].p, steps[i].n, &LIM, MAXF, &in, &why), 0);
        o1 = in.body;
        assert_int_equal(frame_in(plain, steps[i].p, steps[i].n, MAXF, &o2, &why), 0);
        assert_int_equal(o1.n, o2.n);
        assert_memory_equal(o1.p, o2.p, o2.n);
        if (steps[i].atom) {
            size_t al = strlen(steps[i].atom);
            /* 'p' 131 104 ar 97 op 119 len text ... */
            assert_int_equal(o1.p[5], steps[i].op);
            assert_int_equal(o1.p[7], al);
            assert_memory_equal(o1.p + 8, steps[i].atom, al);
            if (steps[i].b0)
                assert_int_equal(o1.p[8 + al + 5], steps[i].b0);
            struct dist_msg m;
            assert_int_equal(dist_decode_walked(o1.p, o1.n, in.ctl_len, &in.fields, &m, &why),
                             dist_decode(o1.p, o1.n, &LIM, &m, &why));
        }
    }
    /* the steps above did use templates: the second f2 was one */
    int used = 0;
    for (int i = 0; i < AC_TPL; i++)
        used += a->tpl[i].n != 0;
    assert_true(used >= 2);
    /* other limits do not reuse a template made under these */
    const struct term_limits tight = {0, 1u << 20};
    struct ac_in in;
    const char *why;
    assert_int_equal(ac_frame_in(a, f2, sizeof f2, &tight, MAXF, &in, &why), -1);
    ac_del(a);
    ac_del(plain);
}

/* ac_frame_rewrite, the form conn.c sends our frames in, against
 * ac_frame_out on a cache that walks everything: the same bytes at out,
 * whether a template hit writes them straight into the room before the
 * frame, gathers the varying runs first (no room), or grows a buffer
 * whose consumed prefix buf_reserve compacts away (a header form longer
 * than the frame: many one-letter atoms, each a ref plus a header byte). */
static void put_rw_frame(struct buf *b, int kind, uint8_t n1, uint8_t n2)
{
    static const uint8_t pid[] = {88, 119, 6, 'p', 'e', 'e', 'r', '@', 'h', 0, 0, 0, 9,
                                  0, 0, 0, 0, 0, 0, 0, 1};
    buf_put(b, "p\x83", 2);
    if (kind == 0) { /* ALIAS_SEND-like: {33, Pid, Ref} {Ref-ish, {ok, Pid}} */
        buf_put(b, "\x68\x03\x61\x21", 4);
        buf_put(b, pid, sizeof pid);
        b->data[b->len - 9] = n1;
        buf_put(b, "\x5a\x00\x02\x77\x06peer@h\0\0\0\x01\0\0\0\x07\0\0\0", 22);
        buf_put_u8(b, n2);
        buf_put(b, "\x83\x68\x02\x77\x02ok", 7);
        buf_put(b, pid, sizeof pid);
        b->data[b->len - 5] = n2;
    } else { /* 24 one-letter atoms and a number */
        buf_put(b, "\x68\x19", 2);
        for (int i = 0; i < 24; i++) {
            uint8_t at[3] = {119, 1, (uint8_t)('a' + i)};
            buf_put(b, at, 3);
        }
        buf_put_u8(b, 97);
        buf_put_u8(b, n1);
    }
}

/* An empty b made ready for a frame: room bytes of it before the frame,
 * after a consumed 40-byte prefix when asked (3 bytes of it unread).
 * *out: where the header form goes; returns where the frame begins. */
static size_t place_frame(struct buf *b, bool prefix, size_t room, size_t *out)
{
    *out = 0;
    if (prefix) {
        buf_put(b, "0123456789012345678901234567890123456789", 40);
        buf_consume(b, 37);
        *out = 40;
    }
    assert_true(buf_reserve(b, room));
    b->len += room;
    return b->len;
}

static void test_rewrite_in_place(void **state)
{
    for (int kind = 0; kind < 2; kind++) {
        for (int how = 0; how < 3; how++) {
            struct ac *a = ac_new(), *plain = ac_new();
            plain->tpl_off = true;
            for (int round = 0; round < 4; round++) {
                struct buf ref;
                buf_init(&ref);
                put_rw_frame(&ref, kind, (uint8_t)(round * 3), (uint8_t)(0x40 + round));
                struct span h, t;
                assert_true(ac_frame_out(plain, ref.data, ref.len, &h, &t));
                struct buf b;
                buf_init(&b);
                size_t out, in = place_frame(&b, how == 2, how == 0 ? AC_OUT_ROOM : 0, &out);
                put_rw_frame(&b, kind, (uint8_t)(round * 3), (uint8_t)(0x40 + round));
                if (how == 2)
                    b.cap = b.len; /* no spare capacity: growing must compact (or move) it */
                size_t off = b.off, body;
                assert_true(ac_frame_rewrite(a, &b, out, in, false, &body));
                out -= off - b.off;
                assert_int_equal(body, out);
                assert_int_equal(b.len - out, h.n + t.n);
                assert_memory_equal(b.data + out, h.p, h.n);
                assert_memory_equal(b.data + out + h.n, t.p, t.n);
                if (how == 2)
                    assert_memory_equal(b.data + b.off, "789", 3);
                /* the long form did move the prefix down */
                if (how == 2 && kind == 1 && round > 0)
                    assert_int_equal(b.off, 0);
                buf_free(&b);
                buf_free(&ref);
            }
            /* rounds 1-3 were template hits */
            int made = 0;
            for (int i = 0; i < AC_TPL; i++)
                made += a->otpl[i].n != 0;
            assert_int_equal(made, 1);
            ac_del(a);
            ac_del(plain);
        }
    }
}

/* Frames with a big binary (>= AC_LAZY): ac_frame_rewrite leaves a big
 * end where it is and writes only what precedes it, and copies anything
 * that a ref, a dropped 131 or a fun's size follows.  Every shape against
 * ac_frame_out on a walking cache, in every placement: room before the
 * frame and leave to begin later (the end must not move), room only, none,
 * and a header form longer than its frame in a buffer that must compact. */
static void put_big(struct buf *b, size_t n, uint8_t fill)
{
    uint8_t h[5] = {109, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    buf_put(b, h, 5);
    assert_true(buf_reserve(b, n));
    memset(b->data + b->len, fill, n);
    b->len += n;
}

static void put_big_frame(struct buf *b, int kind, uint8_t v)
{
    static const uint8_t pid[] = {88, 119, 6, 'p', 'e', 'e', 'r', '@', 'h', 0, 0, 0, 9,
                                  0, 0, 0, 0, 0, 0, 0, 1};
    buf_put(b, "p\x83", 2);
    switch (kind) {
    case 0: /* a reply: {33, Pid, Ref} {[alias|Ref], Big} - the binary ends it */
    case 1: /* ... {Big, ok}: an atom after it */
    case 2: /* two big binaries, then the end */
        buf_put(b, "\x68\x03\x61\x21", 4);
        buf_put(b, pid, sizeof pid);
        buf_put(b, "\x5a\x00\x01\x77\x06peer@h\0\0\0\x01\0\0\0", 18);
        buf_put_u8(b, v);
        buf_put(b, "\x83\x68\x02", 3);
        if (kind == 0) {
            buf_put(b, "\x6c\0\0\0\x01\x77\x05" "alias\x68\x00", 14); /* [alias|{}] */
            put_big(b, 3 * AC_LAZY, v);
        } else if (kind == 1) {
            put_big(b, AC_LAZY, v);
            buf_put(b, "\x77\x02ok", 4);
        } else {
            put_big(b, AC_LAZY + 1, v);
            put_big(b, 2 * AC_LAZY, (uint8_t)(v + 1));
        }
        break;
    case 3: /* the binary in the control message, a payload after it (a 131 dropped) */
        buf_put(b, "\x68\x02\x61\x02", 4);
        put_big(b, AC_LAZY, v);
        buf_put(b, "\x83\x61", 2);
        buf_put_u8(b, v);
        break;
    case 4: { /* inside a fun's free variables: its Size follows it */
        size_t fs = b->len;
        buf_put(b, "\x70\0\0\0\0\x00", 6);
        for (int i = 0; i < 16; i++)
            buf_put_u8(b, (uint8_t)i);
        buf_put(b, "\0\0\0\x01\0\0\0\x01", 8);
        buf_put(b, "\x77\x04mod1\x61\x01\x61\x02", 10);
        buf_put(b, pid, sizeof pid);
        put_big(b, AC_LAZY, v);
        put_n32(b->data + fs + 1, (uint32_t)(b->len - fs - 1));
        break;
    }
    default: /* 24 one-letter atoms (a header form longer than they are), then the binary */
        buf_put(b, "\x68\x19", 2);
        for (int i = 0; i < 24; i++) {
            uint8_t at[3] = {119, 1, (uint8_t)('a' + i)};
            buf_put(b, at, 3);
        }
        put_big(b, 2 * AC_LAZY, v);
        break;
    }
}

static void test_rewrite_big_tail(void **state)
{
    for (int kind = 0; kind < 6; kind++) {
        for (int how = 0; how < 4; how++) {
            struct ac *a = ac_new(), *plain = ac_new();
            plain->tpl_off = true;
            for (int round = 0; round < 3; round++) {
                struct buf ref, b;
                buf_init(&ref);
                buf_init(&b);
                put_big_frame(&ref, kind, (uint8_t)(7 + round));
                struct span h, t;
                assert_true(ac_frame_out(plain, ref.data, ref.len, &h, &t));
                size_t out, in = place_frame(&b, how == 3, how <= 1 ? AC_OUT_ROOM : 0, &out);
                put_big_frame(&b, kind, (uint8_t)(7 + round));
                if (how == 3)
                    b.cap = b.len; /* no spare capacity */
                size_t off = b.off, end = b.len, body;
                bool may_move = how == 0;
                assert_true(ac_frame_rewrite(a, &b, out, in, may_move, &body));
                out -= off - b.off;
                assert_int_equal(b.len - body, h.n + t.n);
                assert_memory_equal(b.data + body, h.p, h.n);
                assert_memory_equal(b.data + body + h.n, t.p, t.n);
                if (may_move && (kind == 0 || kind == 2 || kind == 5)) {
                    /* its big end stayed: the frame ends where it ended */
                    assert_true(body > out);
                    assert_int_equal(b.len, end);
                } else {
                    assert_int_equal(body, out);
                }
                if (how == 3)
                    assert_memory_equal(b.data + b.off, "789", 3);
                buf_free(&b);
                buf_free(&ref);
            }
            ac_del(a);
            ac_del(plain);
        }
    }
}

/* A frame: header bytes then terms {1, <atom ref 0>} style. */
static int feed(struct ac *a, const uint8_t *p, size_t n, const char **why)
{
    struct span out;
    *why = NULL;
    return frame_in(a, p, n, MAXF, &out, why);
}

static void expect_fail(struct ac *a, const uint8_t *p, size_t n, const char *sub)
{
    const char *why;
    assert_int_equal(feed(a, p, n, &why), -1);
    assert_non_null(why);
    if (sub && !strstr(why, sub))
        fail_msg("reason \"%s\" lacks \"%s\"", why, sub);
}

static void test_malformed(void **state)
{
    struct ac *a = ac_new();
    const char *why;
    /* valid: one new entry 'x' in slot 5*256+7 (segment 5), ctl {ref0} */
    static const uint8_t ok1[] = {131, 68, 1, 0x0d, 7, 1, 'x', 104, 1, 82, 0};
    if (feed(a, ok1, sizeof ok1, &why) != 0)
        fail_msg("ok1: %s", why);
    /* the cached form of the same slot works now */
    static const uint8_t ok2[] = {131, 68, 1, 0x05, 7, 104, 1, 82, 0};
    assert_int_equal(feed(a, ok2, sizeof ok2, &why), 0);
    /* ref to an empty slot */
    static const uint8_t empty[] = {131, 68, 1, 0x05, 8, 104, 1, 82, 0};
    expect_fail(a, empty, sizeof empty, "empty slot");
    /* ATOM_CACHE_REF index past the header's refs */
    static const uint8_t badix[] = {131, 68, 1, 0x05, 7, 104, 1, 82, 1};
    expect_fail(a, badix, sizeof badix, "past the header");
    /* long atoms flag (nibble after the last ref): 2-byte lengths */
    static const uint8_t lng[] = {131, 68, 1, 0x18, 9, 0, 2, 'y', 'z', 104, 1, 82, 0};
    assert_int_equal(feed(a, lng, sizeof lng, &why), 0);
    /* the same bytes read with 1-byte lengths break: flag cleared */
    static const uint8_t lng_off[] = {131, 68, 1, 0x08, 9, 0, 2, 'y', 'z', 104, 1, 82, 0};
    expect_fail(a, lng_off, sizeof lng_off, NULL);
    /* a long-atom length past the end and over an atom's size */
    static const uint8_t lng_big[] = {131, 68, 1, 0x18, 9, 0x04, 0x00, 'y'};
    expect_fail(a, lng_big, sizeof lng_big, "longer than an atom");
    static const uint8_t lng_short[] = {131, 68, 1, 0x18, 9, 0x00, 0x09, 'y'};
    expect_fail(a, lng_short, sizeof lng_short, "truncated");
    /* counts past the end: 5 refs announced, flags and refs missing */
    static const uint8_t cnt[] = {131, 68, 5, 0x55};
    expect_fail(a, cnt, sizeof cnt, "flags truncated");
    static const uint8_t cnt2[] = {131, 68, 3, 0x55, 0x05, 7, 7};
    expect_fail(a, cnt2, sizeof cnt2, "ref truncated");
    /* 255 refs, the most one byte can say, all to cached slot 5*256+7 */
    uint8_t big[3 + 128 + 255 + 4];
    size_t k = 0;
    big[k++] = 131; big[k++] = 68; big[k++] = 255;
    for (int i = 0; i < 128; i++)
        big[k++] = i < 127 ? 0x55 : 0x05; /* last byte: ref 254, flags nibble 0 */
    for (int i = 0; i < 255; i++)
        big[k++] = 7;
    big[k++] = 104; big[k++] = 1; big[k++] = 97;
    big[sizeof big - 1] = 1;
    assert_int_equal(feed(a, big, sizeof big, &why), 0);
    /* fragments are not negotiated */
    static const uint8_t frag[] = {131, 69, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0};
    expect_fail(a, frag, sizeof frag, "fragment");
    static const uint8_t frag2[] = {131, 70, 0};
    expect_fail(a, frag2, sizeof frag2, "fragment");
    /* pass-through 'p' on a connection with the cache, other headers */
    static const uint8_t pt[] = {'p', 131, 104, 1, 97, 1};
    expect_fail(a, pt, sizeof pt, "131");
    static const uint8_t other[] = {131, 71, 0};
    expect_fail(a, other, sizeof other, "unknown");
    /* no control, a 131 after the header, trailing bytes, bad tags */
    static const uint8_t noctl[] = {131, 68, 0};
    expect_fail(a, noctl, sizeof noctl, "no control");
    static const uint8_t v131[] = {131, 68, 0, 131, 104, 1, 97, 1};
    expect_fail(a, v131, sizeof v131, "131 after");
    static const uint8_t trail[] = {131, 68, 0, 97, 1, 97, 2, 97};
    expect_fail(a, trail, sizeof trail, "trailing");
    static const uint8_t tag[] = {131, 68, 0, 80, 0, 0, 0, 1};
    expect_fail(a, tag, sizeof tag, "tag");
    /* a lying arity is refused before anything is owed */
    static const uint8_t arity[] = {131, 68, 0, 105, 0xff, 0xff, 0xff, 0xff, 106};
    expect_fail(a, arity, sizeof arity, "arity");
    /* an entry whose text is not UTF-8, or of 256 characters, is refused
     * when the header stores it (a ref to it then needs no check) */
    static const uint8_t utf[] = {131, 68, 1, 0x08, 1, 1, 0xff, 104, 2, 97, 6, 82, 0};
    expect_fail(a, utf, sizeof utf, "not an atom");
    uint8_t l256[3 + 1 + 1 + 2 + 256 + 3];
    k = 0;
    l256[k++] = 131; l256[k++] = 68; l256[k++] = 1;
    l256[k++] = 0x18; /* new entry, segment 0; long atoms */
    l256[k++] = 2;
    l256[k++] = 1; l256[k++] = 0; /* 256 bytes */
    memset(l256 + k, 'a', 256);
    k += 256;
    l256[k++] = 104; l256[k++] = 1; l256[k++] = 82;
    expect_fail(a, l256, sizeof l256 - 0, "not an atom");
    /* 255 two-byte characters (510 bytes) are an atom: stored, and a ref to
     * it expands to ATOM_UTF8_EXT */
    uint8_t l255[3 + 1 + 1 + 2 + 510 + 4];
    k = 0;
    l255[k++] = 131; l255[k++] = 68; l255[k++] = 1;
    l255[k++] = 0x18;
    l255[k++] = 3;
    l255[k++] = 510 >> 8; l255[k++] = 510 & 0xff;
    for (int i = 0; i < 255; i++) {
        l255[k++] = 0xc3;
        l255[k++] = 0xa9;
    }
    l255[k++] = 104; l255[k++] = 1; l255[k++] = 82; l255[k++] = 0;
    struct span out;
    assert_int_equal(frame_in(a, l255, k, MAXF, &out, &why), 0);
    assert_int_equal(out.n, 1 + 1 + 2 + 3 + 510);
    assert_int_equal(out.p[4], 118); /* ATOM_UTF8_EXT */
    /* the result is bounded */
    assert_int_equal(frame_in(a, ok2, sizeof ok2, 3, &out, &why), -1);
    assert_non_null(strstr(why, "max-message-bytes"));
    ac_del(a);
}

/* The header memo and the frame templates give the same bytes as a plain
 * decode and walk of every frame: two caches replay the same traffic side
 * by side; a limit one byte too small is refused. */
static void test_paths_agree(void **state)
{
    const char *files[] = {"golden/ac25_frames_beam_to_kv.bin", "golden/ac29_frames_beam_to_kv.bin",
                           "golden/frames_initiator_to_acceptor.bin"};
    for (int f = 0; f < 3; f++) {
        size_t n, pos = 0, frames = 0;
        uint8_t *p = kt_slurp(files[f], &n);
        struct ac *fast = ac_new(), *plain = ac_new();
        plain->memo_off = true;
        plain->tpl_off = true;
        for (;;) {
            struct span body;
            long k = dist_cut(p + pos, n - pos, UINT64_MAX, &body);
            if (k == DIST_NEED_MORE)
                break;
            assert_true(k > 0);
            pos += (size_t)k;
            if (body.n == 0)
                continue;
            struct span o1, o3;
            const char *why = NULL;
            assert_int_equal(frame_in(fast, body.p, body.n, MAXF, &o1, &why), 0);
            assert_int_equal(frame_in(plain, body.p, body.n, MAXF, &o3, &why), 0);
            assert_int_equal(o1.n, o3.n);
            assert_memory_equal(o1.p, o3.p, o3.n);
            /* the bound: too small a limit is refused */
            assert_int_equal(frame_in(fast, body.p, body.n, o3.n - 1, &o1, &why), -1);
            frames++;
        }
        assert_true(frames > 10);
        ac_del(fast);
        ac_del(plain);
        free(p);
    }
}

/* The walk's limits are dist_decode's: a frame whose expanded terms nest
 * deeper, or hold more sub-terms, than the limits is refused by
 * ac_frame_in itself, one within them is not; a fun's Size is made to
 * match the expanded bytes. */
static void test_limits_and_funs(void **state)
{
    struct ac *a = ac_new();
    const char *why;
    /* slot 0 = 'x' (new), payload: depth-3 nest {{{x}}} */
    static const uint8_t nest[] = {131, 68, 1, 0x08, 0, 1, 'x',
                                   104, 2, 97, 2, 82, 0,          /* ctl {2, x}: not SEND, */
                                   104, 1, 104, 1, 104, 1, 82, 0}; /* but walked first */
    struct ac_in in;
    const struct term_limits l2 = {2, 1u << 20}, l3 = {3, 1u << 20}, t4 = {10, 4}, t5 = {10, 5};
    assert_int_equal(ac_frame_in(a, nest, sizeof nest, &l2, MAXF, &in, &why), -1);
    assert_non_null(strstr(why, "deep"));
    assert_int_equal(ac_frame_in(a, nest, sizeof nest, &l3, MAXF, &in, &why), 0);
    /* {{{x}}} is 4 sub-terms */
    assert_int_equal(ac_frame_in(a, nest, sizeof nest, &t4, MAXF, &in, &why), 0);
    static const uint8_t many[] = {131, 68, 1, 0x00, 0, 104, 1, 97, 1,
                                   104, 4, 82, 0, 82, 0, 82, 0, 82, 0};
    assert_int_equal(ac_frame_in(a, many, sizeof many, &t4, MAXF, &in, &why), -1);
    assert_non_null(strstr(why, "too many"));
    assert_int_equal(ac_frame_in(a, many, sizeof many, &t5, MAXF, &in, &why), 0);
    assert_int_equal(in.fields.n, 1);
    /* a fun whose module and pid node are refs: its Size grows with them */
    struct buf b;
    buf_init(&b);
    static const uint8_t head[] = {131, 68, 1, 0x00, 0, /* cached slot 0 ('x') */
                                   104, 1, 97, 1};      /* ctl {1} */
    static const uint8_t fix[] = {0, 0, 0, 0, 0, 0, 0, 1, /* Index 0, NumFree 1 */
                                  82, 0, 97, 0, 97, 0,    /* Module x, OldIndex, OldUniq */
                                  88, 82, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                  82, 0};                 /* the free variable: x */
    buf_put(&b, head, sizeof head);
    size_t fs = b.len;
    buf_put_u8(&b, 112);
    buf_put_n32(&b, 0);
    buf_put_u8(&b, 0); /* arity */
    for (int i = 0; i < 16; i++)
        buf_put_u8(&b, 0);
    buf_put(&b, fix, sizeof fix);
    put_n32(b.data + fs + 1, (uint32_t)(b.len - fs - 1));
    assert_int_equal(ac_frame_in(a, b.data, b.len, &LIM, MAXF, &in, &why), 0);
    /* 'p' 131 {1} 131 fun: 3 refs became 3-byte atoms (+1 each) */
    const uint8_t *fun = in.body.p + 1 + 1 + 4 + 1;
    assert_int_equal(fun[0], 112);
    uint32_t size = (uint32_t)fun[1] << 24 | fun[2] << 16 | fun[3] << 8 | fun[4];
    assert_int_equal(size, in.body.n - 7 - 1);
    assert_true(term_walk(fun, in.body.n - 7, &LIM) == (long)(in.body.n - 7));
    buf_free(&b);
    ac_del(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_kv_traffic),
        cmocka_unit_test(test_golden_two_beams),
        cmocka_unit_test(test_paths_agree),
        cmocka_unit_test(test_golden_prefixes),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_limits_and_funs),
        cmocka_unit_test(test_templates),
        cmocka_unit_test(test_rewrite_in_place),
        cmocka_unit_test(test_rewrite_big_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
