/* fuzz_atomcache.c - libFuzzer target: the atom-cache header decoder and
 * frame rewriter (proto/atomcache.c).  The input is a byte stream of whole
 * frames (Len:32 body) from one peer, fed through one cache so that slots
 * carry from frame to frame, as on a connection.  Checks: nothing reads
 * past a frame (ASan), every refusal has a reason, an accepted frame comes
 * out in the pass-through form within the size bound, and whatever
 * dist_decode then accepts survives our own encoder: sent through a second
 * pair of caches it decodes again to a frame dist_decode accepts, of the
 * same length or shorter (Latin-1 atoms may come back in the UTF-8 form).
 * ac_frame_rewrite on a twin of our sending cache (the frame in place,
 * with and without room before it, allowed to begin later or not, and
 * leaving verbatim ends of a few bytes where they are) gives the same
 * bytes as ac_frame_out.
 * A second cache with the header memo and the frame templates off reads
 * the same stream: it must agree byte for byte (a template hit is exactly
 * what the walk would have made).  The walk inside ac_frame_in is dist_decode's: what
 * it accepts, dist_decode_walked and dist_decode decode alike; what it
 * refuses only for the limits (a third cache with wide ones accepts), the
 * limits refuse in dist_decode too. */
#include "fuzz_common.h"

#include "proto/atomcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct term_limits lim = {64, 1u << 16};
    const uint64_t max = 1u << 20;
    struct ac *in = malloc(sizeof *in), *me = malloc(sizeof *me), *peer = malloc(sizeof *peer);
    struct ac *slow = malloc(sizeof *slow), *wide = malloc(sizeof *wide);
    struct ac *twin = malloc(sizeof *twin);
    static const struct term_limits wide_lim = {1u << 20, UINT64_MAX};
    FZ_CHECK(in && me && peer && slow && wide && twin);
    ac_init(twin);
    twin->lazy = 1 + size % 8; /* its verbatim ends stay where they are */
    ac_init(slow);
    slow->memo_off = true;
    slow->tpl_off = true;
    ac_init(wide);
    ac_init(in);
    ac_init(me);
    ac_init(peer);
    struct buf f;
    buf_init(&f);
    size_t pos = 0;
    for (;;) {
        struct span body;
        long k = dist_cut(data + pos, size - pos, max, &body);
        if (k <= 0)
            break;
        pos += (size_t)k;
        if (body.n == 0)
            continue;
        struct ac_in ai, ai2, aw;
        const char *why = NULL, *why2 = NULL, *whyw = NULL;
        struct dist_msg m0;
        const char *why0 = NULL;
        int rc0 = ac_frame_decode(in, body.p, body.n, &lim, max, &ai, &m0, &why0);
        int rc = ai.body.p ? 0 : -1;
        why = why0;
        int rc2 = ac_frame_in(slow, body.p, body.n, &lim, max, &ai2, &why2);
        int rcw = ac_frame_in(wide, body.p, body.n, &wide_lim, max, &aw, &whyw);
        FZ_CHECK(rc == rc2);
        struct dist_msg m, m2;
        if (rc != 0) {
            FZ_CHECK(why && why[0]);
            if (rcw == 0)
                FZ_CHECK(dist_decode(aw.body.p, aw.body.n, &lim, &m, &why2) != 0);
            continue;
        }
        FZ_CHECK(rcw == 0);
        struct span out = ai.body;
        FZ_CHECK(out.n == ai2.body.n && memcmp(out.p, ai2.body.p, out.n) == 0);
        FZ_CHECK(out.n >= 3 && out.n <= max && out.p[0] == 'p' && out.p[1] == 131);
        int d1 = dist_decode_walked(out.p, out.n, ai.ctl_len, &ai.fields, &m, &why);
        int d2 = dist_decode(out.p, out.n, &lim, &m2, &why2);
        FZ_CHECK(d1 == d2);
        FZ_CHECK((rc0 == 0) == (d1 == 0));
        if (d1 != 0) {
            FZ_CHECK(why && why[0]);
            continue;
        }
        /* ac_frame_decode (walked, or from a template) agrees too */
        FZ_CHECK(rc0 == 0 && m0.op == m2.op && m0.kind == m2.kind && m0.msg.p == m2.msg.p &&
                 m0.msg.n == m2.msg.n && m0.from.p == m2.from.p && m0.from.n == m2.from.n &&
                 m0.to.p == m2.to.p && m0.to.n == m2.to.n && m0.ref.p == m2.ref.p &&
                 m0.ref.n == m2.ref.n && m0.reason.p == m2.reason.p &&
                 m0.reason.n == m2.reason.n && m0.id == m2.id && m0.has_id == m2.has_id);
        FZ_CHECK(m.op == m2.op && m.kind == m2.kind && m.msg.p == m2.msg.p &&
                 m.msg.n == m2.msg.n && m.from.p == m2.from.p && m.from.n == m2.from.n &&
                 m.to.p == m2.to.p && m.to.n == m2.to.n && m.ref.p == m2.ref.p &&
                 m.ref.n == m2.ref.n && m.reason.p == m2.reason.p && m.reason.n == m2.reason.n);
        /* our encoder on what we accepted, and back */
        struct buf plain;
        buf_init(&plain);
        FZ_CHECK(buf_put(&plain, out.p, out.n));
        struct span hdr, terms;
        struct ac_in back;
        FZ_CHECK(ac_frame_out(me, buf_head(&plain), buf_avail(&plain), &hdr, &terms));
        buf_reset(&f);
        FZ_CHECK(buf_put(&f, hdr.p, hdr.n) && buf_put(&f, terms.p, terms.n));
        struct buf place;
        buf_init(&place);
        size_t room = pos % 2 ? AC_OUT_ROOM : 0;
        FZ_CHECK(buf_reserve(&place, room));
        place.len = room;
        FZ_CHECK(buf_put(&place, out.p, out.n));
        size_t at;
        bool may_move = pos % 4 < 2;
        FZ_CHECK(ac_frame_rewrite(twin, &place, 0, room, may_move, &at));
        FZ_CHECK(may_move || at == 0);
        FZ_CHECK(place.len - at == f.len && memcmp(place.data + at, f.data, f.len) == 0);
        buf_free(&place);
        FZ_CHECK(ac_frame_in(peer, buf_head(&f), buf_avail(&f), &lim, max, &back, &why) == 0);
        FZ_CHECK(back.body.n <= buf_avail(&plain));
        FZ_CHECK(dist_decode_walked(back.body.p, back.body.n, back.ctl_len, &back.fields, &m,
                                    &why) == 0);
        buf_free(&plain);
    }
    buf_free(&f);
    ac_free(in);
    ac_free(me);
    ac_free(peer);
    ac_free(slow);
    ac_free(wide);
    ac_free(twin);
    free(twin);
    free(slow);
    free(wide);
    free(in);
    free(me);
    free(peer);
    return 0;
}
