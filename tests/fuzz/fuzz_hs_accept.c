/* fuzz_hs_accept.c - libFuzzer target: the accepting side of the
 * handshake (hs.c) fed what a stranger sends, in reads of a chosen size,
 * then frame cutting on whatever follows the handshake.
 * Input: [challenge:4][status:1][chunk:1][bytes...].  challenge is ours
 * (the seeds carry the one their captured digest answers, so the fuzzer
 * starts from complete handshakes); status picks our answer to the name
 * (ok, ok_simultaneous, nok, not_allowed, alive, garbage), its top bit
 * selects 4-byte (TLS) packet lengths; chunk is the read size (0 = all).
 * Checks: no crash, consumed <= offered, only whole packets with legal tags
 * go out, and a finished handshake has a valid name and mandatory flags. */
#include "fuzz_common.h"

static const char *const statuses[] = {"ok", "ok_simultaneous", "nok", "not_allowed", "alive",
                                       "bogus"};

/* Our output: whole packets, each tagged s, N or a. */
static void check_out(const struct hs *h)
{
    struct cur c = cur_make(buf_head(&h->out), buf_avail(&h->out));
    while (cur_left(&c) > 0) {
        uint32_t len = 0;
        uint16_t l16 = 0;
        if (h->hdr == 4) {
            FZ_CHECK(cur_n32(&c, &len));
        } else {
            FZ_CHECK(cur_n16(&c, &l16));
            len = l16;
        }
        uint8_t tag = 0;
        FZ_CHECK(len >= 1 && cur_peek_u8(&c, &tag));
        FZ_CHECK(tag == 's' || tag == 'N' || tag == 'a');
        FZ_CHECK(cur_skip(&c, len));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6)
        return 0;
    uint32_t chal = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
                    data[3];
    const char *status = statuses[(data[4] & 0x7f) % 6];
    unsigned hdr = data[4] & 0x80 ? 4 : 2;
    size_t chunk = data[5] ? data[5] : SIZE_MAX;
    data += 6;
    size -= 6;
    struct hs h;
    hs_init_accept(&h, "kv@localhost", HS_OUR_FLAGS, FZ_CREATION, "goldencookie", chal, hdr);
    struct buf in;
    buf_init(&in);
    size_t pos = 0;
    while (pos < size && h.state != HS_FAILED && h.state != HS_DONE) {
        size_t k = size - pos < chunk ? size - pos : chunk;
        buf_put(&in, data + pos, k);
        pos += k;
        for (;;) {
            size_t avail = buf_avail(&in);
            long used = hs_feed(&h, buf_head(&in), avail);
            if (used < 0) {
                FZ_CHECK(h.state == HS_FAILED && h.err != HS_OK);
                break;
            }
            FZ_CHECK((size_t)used <= avail);
            buf_consume(&in, (size_t)used);
            if (h.state == HS_A_NEED_STATUS) {
                FZ_CHECK(hs_valid_node_name(h.peer_name, strlen(h.peer_name)));
                hs_accept_status(&h, status);
                continue;
            }
            if (used == 0 || h.state == HS_DONE || h.state == HS_FAILED)
                break;
        }
        check_out(&h);
    }
    if (h.state == HS_DONE) {
        FZ_CHECK(hs_valid_node_name(h.peer_name, strlen(h.peer_name)));
        FZ_CHECK((h.peer_flags & DFLAG_MANDATORY_25) == DFLAG_MANDATORY_25);
        /* the first frames may have come in the same read */
        buf_put(&in, data + pos, size - pos);
        struct cur c = cur_make(buf_head(&in), buf_avail(&in));
        static const struct term_limits lim = {64, 1u << 20};
        for (;;) {
            struct span body;
            long k = dist_cut(cur_ptr(&c), cur_left(&c), 1u << 20, &body);
            if (k <= 0)
                break;
            struct dist_msg m;
            const char *why;
            if (body.n)
                (void)dist_decode(body.p, body.n, &lim, &m, &why);
            cur_skip(&c, (size_t)k);
        }
    }
    buf_free(&in);
    hs_free(&h);
    return 0;
}
