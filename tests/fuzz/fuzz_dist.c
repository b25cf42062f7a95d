/* fuzz_dist.c - libFuzzer target: dist_cut over a byte stream and
 * dist_decode on every frame cut from it.  The input is what a peer sends
 * after the handshake.  Checks: no crash or read past the input (ASan),
 * every refusal has a reason, every span of a decoded message lies inside
 * its frame and is exactly one term, a strict prefix of a frame is never a
 * frame.  Input starting with 'p' is decoded as one frame body instead. */
#include "fuzz_common.h"

#include "proto/ext.h"

static void check_term_span(struct span s, const uint8_t *b, size_t bn)
{
    static const struct term_limits lim = {100000, UINT64_MAX};
    if (s.n == 0)
        return;
    FZ_CHECK(s.p >= b && s.p + s.n <= b + bn);
    FZ_CHECK(term_walk(s.p, s.n, &lim) == (long)s.n);
}

static void check_body(const uint8_t *b, size_t bn)
{
    static const struct term_limits lim = {64, 1u << 20};
    struct dist_msg m;
    const char *why = NULL;
    if (dist_decode(b, bn, &lim, &m, &why) != 0) {
        FZ_CHECK(why != NULL && why[0] != 0);
        return;
    }
    FZ_CHECK(m.op > 0);
    check_term_span(m.from, b, bn);
    check_term_span(m.to, b, bn);
    check_term_span(m.ref, b, bn);
    check_term_span(m.reason, b, bn);
    check_term_span(m.msg, b, bn);
    struct cur c = cur_make(m.to.p, m.to.n);
    if (m.kind == DK_REG_SEND)
        FZ_CHECK(ext_is_atom(&c));
    if (m.kind == DK_LINK || m.kind == DK_UNLINK || m.kind == DK_EXIT || m.kind == DK_EXIT2)
        FZ_CHECK(ext_is_pid(&c));
    if (m.kind == DK_SEND || m.kind == DK_REG_SEND)
        FZ_CHECK(m.msg.n > 0);
    /* the readers the node uses on these spans stay inside */
    struct ext_pid pid;
    struct ext_ref ref;
    struct cur fc = cur_make(m.from.p, m.from.n), rc = cur_make(m.ref.p, m.ref.n);
    if (ext_is_pid(&fc))
        (void)ext_get_pid(&fc, &pid);
    if (m.ref.n)
        (void)ext_get_ref(&rc, &ref);
}

/* Input starting with 'p' is one frame body (so mutations need not keep a
 * length prefix right); anything else is a stream of Len:32 frames. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && data[0] == 'p') {
        check_body(data, size);
        return 0;
    }
    size_t pos = 0;
    while (pos < size) {
        struct span body;
        long k = dist_cut(data + pos, size - pos, 1u << 20, &body);
        if (k <= 0)
            break; /* need more, or too big: the connection would close */
        FZ_CHECK((size_t)k <= size - pos && body.p == data + pos + 4 && body.n + 4 == (size_t)k);
        struct span dummy;
        FZ_CHECK(dist_cut(data + pos, (size_t)k - 1, 1u << 20, &dummy) == DIST_NEED_MORE);
        if (body.n)
            check_body(body.p, body.n);
        pos += (size_t)k;
    }
    return 0;
}
