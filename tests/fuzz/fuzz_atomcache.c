/* fuzz_atomcache.c - libFuzzer target: the atom-cache header decoder and
 * frame rewriter (proto/atomcache.c).  The input is a byte stream of whole
 * frames (Len:32 body) from one peer, fed through one cache so that slots
 * carry from frame to frame, as on a connection.  Checks: nothing reads
 * past a frame (ASan), every refusal has a reason, an accepted frame comes
 * out in the pass-through form within the size bound, and whatever
 * dist_decode then accepts survives our own encoder: sent through a second
 * pair of caches it decodes again to a frame dist_decode accepts, of the
 * same length or shorter (Latin-1 atoms may come back in the UTF-8 form).
 * A second cache with the measuring pass always on and the header memo
 * off reads the same stream: it must agree byte for byte. */
#include "fuzz_common.h"

#include "proto/atomcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct term_limits lim = {64, 1u << 16};
    const uint64_t max = 1u << 20;
    struct ac *in = malloc(sizeof *in), *me = malloc(sizeof *me), *peer = malloc(sizeof *peer);
    struct ac *slow = malloc(sizeof *slow);
    FZ_CHECK(in && me && peer && slow);
    ac_init(slow);
    slow->one_pass_max = 0;
    slow->memo_off = true;
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
        struct span out, out2;
        const char *why = NULL, *why2 = NULL;
        int rc = ac_frame_in(in, body.p, body.n, max, &out, &why);
        int rc2 = ac_frame_in(slow, body.p, body.n, max, &out2, &why2);
        FZ_CHECK(rc == rc2);
        if (rc != 0) {
            FZ_CHECK(why && why[0]);
            continue;
        }
        FZ_CHECK(out.n == out2.n && memcmp(out.p, out2.p, out.n) == 0);
        FZ_CHECK(out.n >= 3 && out.n <= max && out.p[0] == 'p' && out.p[1] == 131);
        struct dist_msg m;
        if (dist_decode(out.p, out.n, &lim, &m, &why) != 0) {
            FZ_CHECK(why && why[0]);
            continue;
        }
        /* our encoder on what we accepted, and back */
        struct buf plain;
        buf_init(&plain);
        FZ_CHECK(buf_put(&plain, out.p, out.n));
        struct span hdr, terms, back;
        FZ_CHECK(ac_frame_out(me, buf_head(&plain), buf_avail(&plain), &hdr, &terms));
        buf_reset(&f);
        FZ_CHECK(buf_put(&f, hdr.p, hdr.n) && buf_put(&f, terms.p, terms.n));
        FZ_CHECK(ac_frame_in(peer, buf_head(&f), buf_avail(&f), max, &back, &why) == 0);
        FZ_CHECK(back.n <= buf_avail(&plain));
        FZ_CHECK(dist_decode(back.p, back.n, &lim, &m, &why) == 0);
        buf_free(&plain);
    }
    buf_free(&f);
    ac_free(in);
    ac_free(me);
    ac_free(peer);
    ac_free(slow);
    free(slow);
    free(in);
    free(me);
    free(peer);
    return 0;
}
