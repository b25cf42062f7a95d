/* fuzz_hs_connect.c - libFuzzer target: the connecting side of the
 * handshake (hs.c) fed what the node we called answers, in reads of a
 * chosen size.
 * Input: [challenge:4][chunk:1][namelen:1][peer name][bytes...].  challenge
 * is ours (the seeds carry the one their captured 'a' digest answers);
 * chunk's top bit selects 4-byte (TLS) packet lengths, its low 7 bits the
 * read size (0 = all); the name is the node we think we call.
 * Checks: no crash, consumed <= offered, our output is whole packets
 * tagged N, s or r, a finished handshake talked to the node we called. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6)
        return 0;
    uint32_t chal = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
                    data[3];
    unsigned hdr = data[4] & 0x80 ? 4 : 2;
    size_t chunk = data[4] & 0x7f ? (size_t)(data[4] & 0x7f) : SIZE_MAX;
    size_t nl = data[5];
    if (size < 6 + nl)
        return 0;
    char name[256];
    memcpy(name, data + 6, nl);
    name[nl] = 0;
    data += 6 + nl;
    size -= 6 + nl;
    struct hs h;
    hs_init_connect(&h, "kv@localhost", name, HS_OUR_FLAGS, FZ_CREATION, "goldencookie", chal,
                    hdr);
    struct buf in;
    buf_init(&in);
    size_t pos = 0;
    while (pos < size && h.state != HS_FAILED && h.state != HS_DONE) {
        size_t k = size - pos < chunk ? size - pos : chunk;
        buf_put(&in, data + pos, k);
        pos += k;
        size_t avail = buf_avail(&in);
        long used = hs_feed(&h, buf_head(&in), avail);
        if (used < 0) {
            FZ_CHECK(h.state == HS_FAILED);
            break;
        }
        FZ_CHECK((size_t)used <= avail);
        buf_consume(&in, (size_t)used);
        struct cur c = cur_make(buf_head(&h.out), buf_avail(&h.out));
        while (cur_left(&c) > 0) {
            uint32_t len = 0;
            uint16_t l16 = 0;
            if (hdr == 4) {
                FZ_CHECK(cur_n32(&c, &len));
            } else {
                FZ_CHECK(cur_n16(&c, &l16));
                len = l16;
            }
            uint8_t tag = 0;
            FZ_CHECK(len >= 1 && cur_peek_u8(&c, &tag));
            FZ_CHECK(tag == 'N' || tag == 's' || tag == 'r');
            FZ_CHECK(cur_skip(&c, len));
        }
    }
    if (h.state == HS_DONE) {
        FZ_CHECK(strcmp(h.peer_name, name) == 0);
        FZ_CHECK((h.peer_flags & DFLAG_MANDATORY_25) == DFLAG_MANDATORY_25);
    }
    buf_free(&in);
    hs_free(&h);
    return 0;
}
