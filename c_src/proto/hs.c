/* hs.c - the distribution handshake (version 6) as a pure state machine.
 * Owns: cutting handshake packets out of received bytes, every check on the
 * peer's name, flags and digest, and the packets we answer with (h->out).
 * Touches no socket, clock or node table: see hs.h for the contract. */
#include "proto/hs.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define HS_DEFAULT_MAX_PACKET 1024
/* 'N' Flags:64 Challenge:32 Creation:32 NameLen:16 Name: the largest packet
 * we ever build, so packets are assembled on the stack. */
#define HS_MAX_OUT (1 + 8 + 4 + 4 + 2 + HS_MAX_NAME)
#define HS_DIGEST_LEN 16

static const char *const hs_err_text[] = {
    [HS_OK] = "ok",
    [HS_E_PACKET] = "malformed handshake packet",
    [HS_E_TAG] = "unexpected handshake packet",
    [HS_E_VERSION] = "peer uses the old handshake (version 5)",
    [HS_E_NAME] = "illegal node name",
    [HS_E_FLAGS] = "peer lacks mandatory distribution flags",
    [HS_E_DIGEST] = "wrong digest (cookie mismatch)",
    [HS_E_STATUS] = "peer refused the connection",
    [HS_E_WRONG_NODE] = "peer is not the node we called",
    [HS_E_REFUSED] = "we refused the peer",
    [HS_E_NOMEM] = "out of memory",
};

const char *hs_strerror(enum hs_err e)
{
    if ((unsigned)e < sizeof hs_err_text / sizeof hs_err_text[0] && hs_err_text[e])
        return hs_err_text[e];
    return "unknown handshake error";
}

/* ---- pure helpers ---- */

/* Internal form that can fail: with MD5 unavailable (FIPS provider, no
 * memory) a zero-filled digest must never be compared against the peer's. */
static int hs_digest_ok(const char *cookie, uint32_t challenge, uint8_t out[HS_DIGEST_LEN])
{
    char dec[16];
    int dn = snprintf(dec, sizeof dec, "%" PRIu32, challenge);
    unsigned int olen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && dn > 0 && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) &&
             EVP_DigestUpdate(ctx, cookie, strlen(cookie)) &&
             EVP_DigestUpdate(ctx, dec, (size_t)dn) && EVP_DigestFinal_ex(ctx, out, &olen) &&
             olen == HS_DIGEST_LEN;
    EVP_MD_CTX_free(ctx);
    return ok;
}

void hs_digest(const char *cookie, uint32_t challenge, uint8_t out[16])
{
    if (!hs_digest_ok(cookie, challenge, out))
        memset(out, 0, HS_DIGEST_LEN);
}

int hs_valid_node_name(const char *name, size_t len)
{
    size_t at = 0, ats = 0;
    if (len == 0 || len > HS_MAX_NAME)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x21 || c == 0x7f)
            return 0;
        if (c == '@') {
            at = i;
            ats++;
        }
    }
    return ats == 1 && at > 0 && at < len - 1;
}

/* ---- state changes and output ---- */

static long hs_fail(struct hs *h, enum hs_err e)
{
    h->state = HS_FAILED;
    h->err = e;
    return -1;
}

/* Append one packet with its h->hdr-byte length header. */
static int hs_put_packet(struct hs *h, const uint8_t *body, size_t n)
{
    uint8_t len[4];
    if (h->hdr == 4) {
        put_n32(len, (uint32_t)n);
    } else {
        put_n16(len, (uint16_t)n);
    }
    if (!buf_reserve(&h->out, h->hdr + n) || !buf_put(&h->out, len, h->hdr) ||
        !buf_put(&h->out, body, n)) {
        hs_fail(h, HS_E_NOMEM);
        return 0;
    }
    return 1;
}

static int hs_send_status(struct hs *h, const char *status)
{
    uint8_t p[1 + sizeof h->status];
    size_t n = strlen(status);
    if (n >= sizeof h->status)
        n = sizeof h->status - 1;
    p[0] = 's';
    memcpy(p + 1, status, n);
    return hs_put_packet(h, p, 1 + n);
}

/* Initiator: 'N' Flags:64 Creation:32 NameLen:16 Name. */
static int hs_send_name(struct hs *h)
{
    uint8_t p[HS_MAX_OUT];
    size_t nl = strlen(h->our_name);
    p[0] = 'N';
    put_n32(p + 1, (uint32_t)(h->our_flags >> 32));
    put_n32(p + 5, (uint32_t)h->our_flags);
    put_n32(p + 9, h->our_creation);
    put_n16(p + 13, (uint16_t)nl);
    memcpy(p + 15, h->our_name, nl);
    return hs_put_packet(h, p, 15 + nl);
}

/* Acceptor: 'N' Flags:64 Challenge:32 Creation:32 NameLen:16 Name. */
static int hs_send_challenge(struct hs *h)
{
    uint8_t p[HS_MAX_OUT];
    size_t nl = strlen(h->our_name);
    p[0] = 'N';
    put_n32(p + 1, (uint32_t)(h->our_flags >> 32));
    put_n32(p + 5, (uint32_t)h->our_flags);
    put_n32(p + 9, h->our_challenge);
    put_n32(p + 13, h->our_creation);
    put_n16(p + 17, (uint16_t)nl);
    memcpy(p + 19, h->our_name, nl);
    if (!hs_put_packet(h, p, 19 + nl))
        return 0;
    h->state = HS_A_RECV_REPLY;
    return 1;
}

/* Initiator: 'r' OurChallenge:32 Digest(peer's challenge):16. */
static int hs_send_reply(struct hs *h)
{
    uint8_t p[1 + 4 + HS_DIGEST_LEN];
    p[0] = 'r';
    put_n32(p + 1, h->our_challenge);
    if (!hs_digest_ok(h->cookie, h->peer_challenge, p + 5)) {
        hs_fail(h, HS_E_NOMEM);
        return 0;
    }
    return hs_put_packet(h, p, sizeof p);
}

/* Acceptor: 'a' Digest(peer's challenge):16. */
static int hs_send_ack(struct hs *h)
{
    uint8_t p[1 + HS_DIGEST_LEN];
    p[0] = 'a';
    if (!hs_digest_ok(h->cookie, h->peer_challenge, p + 1)) {
        hs_fail(h, HS_E_NOMEM);
        return 0;
    }
    return hs_put_packet(h, p, sizeof p);
}

/* ---- init ---- */

static void hs_init(struct hs *h, enum hs_role role, const char *our_name, uint64_t flags,
                    uint32_t creation, const char *cookie, uint32_t challenge, unsigned hdr)
{
    memset(h, 0, sizeof *h);
    buf_init(&h->out);
    h->role = role;
    h->hdr = hdr == 4 ? 4 : 2;
    h->our_flags = flags;
    h->our_creation = creation;
    h->cookie = cookie ? cookie : "";
    h->our_challenge = challenge;
    h->max_packet = HS_DEFAULT_MAX_PACKET;
    /* Our own name goes out in a NameLen:16 field and must pass the same
     * check we apply to peers; a bad one is a configuration error. */
    size_t nl = strlen(our_name);
    if (!hs_valid_node_name(our_name, nl)) {
        hs_fail(h, HS_E_NAME);
        return;
    }
    memcpy(h->our_name, our_name, nl + 1);
}

void hs_init_accept(struct hs *h, const char *our_name, uint64_t flags, uint32_t creation,
                    const char *cookie, uint32_t challenge, unsigned hdr)
{
    hs_init(h, HS_ROLE_ACCEPT, our_name, flags, creation, cookie, challenge, hdr);
    if (h->state != HS_FAILED)
        h->state = HS_A_RECV_NAME;
}

void hs_init_connect(struct hs *h, const char *our_name, const char *peer_name,
                     uint64_t flags, uint32_t creation, const char *cookie,
                     uint32_t challenge, unsigned hdr)
{
    hs_init(h, HS_ROLE_CONNECT, our_name, flags, creation, cookie, challenge, hdr);
    if (h->state == HS_FAILED)
        return;
    size_t pl = strlen(peer_name);
    if (!hs_valid_node_name(peer_name, pl)) {
        hs_fail(h, HS_E_NAME);
        return;
    }
    memcpy(h->peer_name, peer_name, pl + 1);
    h->state = HS_C_RECV_STATUS;
    hs_send_name(h);
}

void hs_free(struct hs *h) { buf_free(&h->out); }

/* ---- received packets (body without the length header) ---- */

/* A status or answer text (the whole rest of its packet) equals s. */
static int hs_text_is(const struct span t, const char *s)
{
    size_t n = strlen(s);
    return t.n == n && memcmp(t.p, s, n) == 0;
}

/* The peer's flags must include everything OTP 25 insists on. */
static int hs_check_mandatory(struct hs *h)
{
    h->missing = DFLAG_MANDATORY_25 & ~h->peer_flags;
    return h->missing == 0;
}

/* Acceptor, state HS_A_RECV_NAME: 'N' Flags:64 Creation:32 NameLen:16 Name. */
static long hs_on_name(struct hs *h, struct cur *c)
{
    uint16_t nl;
    struct span name;
    if (!cur_n64(c, &h->peer_flags) || !cur_n32(c, &h->peer_creation) || !cur_n16(c, &nl) ||
        !cur_span(c, nl, &name) || cur_left(c) != 0)
        return hs_fail(h, HS_E_PACKET);
    if (!hs_valid_node_name((const char *)name.p, name.n))
        return hs_fail(h, HS_E_NAME);
    memcpy(h->peer_name, name.p, name.n);
    h->peer_name[name.n] = '\0';
    if (!hs_check_mandatory(h)) {
        /* Tell the peer why before closing, as OTP does. */
        snprintf(h->status, sizeof h->status, "%s", "not_allowed");
        hs_send_status(h, "not_allowed");
        return hs_fail(h, HS_E_FLAGS);
    }
    h->state = HS_A_NEED_STATUS;
    return 0;
}

/* Acceptor, state HS_A_RECV_ALIVE_ANS: 's' "true" | "false". */
static long hs_on_alive_answer(struct hs *h, struct cur *c)
{
    struct span text;
    cur_span(c, cur_left(c), &text);
    if (hs_text_is(text, "true")) {
        h->alive_confirmed = 1;
        return hs_send_challenge(h) ? 0 : -1;
    }
    if (hs_text_is(text, "false"))
        return hs_fail(h, HS_E_REFUSED);
    return hs_fail(h, HS_E_PACKET);
}

/* Acceptor, state HS_A_RECV_REPLY: 'r' Challenge:32 Digest:16. */
static long hs_on_reply(struct hs *h, struct cur *c)
{
    struct span got;
    uint8_t want[HS_DIGEST_LEN];
    if (!cur_n32(c, &h->peer_challenge) || !cur_span(c, HS_DIGEST_LEN, &got) ||
        cur_left(c) != 0)
        return hs_fail(h, HS_E_PACKET);
    if (!hs_digest_ok(h->cookie, h->our_challenge, want))
        return hs_fail(h, HS_E_NOMEM);
    if (CRYPTO_memcmp(want, got.p, HS_DIGEST_LEN) != 0)
        return hs_fail(h, HS_E_DIGEST);
    if (!hs_send_ack(h))
        return -1;
    h->state = HS_DONE;
    return 0;
}

/* Initiator, state HS_C_RECV_STATUS: 's' Status. */
static long hs_on_status(struct hs *h, struct cur *c)
{
    struct span text;
    cur_span(c, cur_left(c), &text);
    /* Kept for the caller's log line; a longer status is cut, never trusted. */
    size_t n = text.n < sizeof h->status ? text.n : sizeof h->status - 1;
    memcpy(h->status, text.p, n);
    h->status[n] = '\0';
    if (hs_text_is(text, "ok") || hs_text_is(text, "ok_simultaneous")) {
        h->state = HS_C_RECV_CHALLENGE;
        return 0;
    }
    if (hs_text_is(text, "alive")) {
        /* The acceptor still has a connection from a node by our name; we
         * are that node restarted, so the old one may go. */
        if (!hs_send_status(h, "true"))
            return -1;
        h->state = HS_C_RECV_CHALLENGE;
        return 0;
    }
    return hs_fail(h, HS_E_STATUS);
}

/* Initiator, state HS_C_RECV_CHALLENGE:
 * 'N' Flags:64 Challenge:32 Creation:32 NameLen:16 Name. */
static long hs_on_challenge(struct hs *h, struct cur *c)
{
    uint16_t nl;
    struct span name;
    if (!cur_n64(c, &h->peer_flags) || !cur_n32(c, &h->peer_challenge) ||
        !cur_n32(c, &h->peer_creation) || !cur_n16(c, &nl) || !cur_span(c, nl, &name) ||
        cur_left(c) != 0)
        return hs_fail(h, HS_E_PACKET);
    if (name.n != strlen(h->peer_name) || memcmp(name.p, h->peer_name, name.n) != 0)
        return hs_fail(h, HS_E_WRONG_NODE);
    if (!hs_check_mandatory(h))
        return hs_fail(h, HS_E_FLAGS);
    if (!hs_send_reply(h))
        return -1;
    h->state = HS_C_RECV_ACK;
    return 0;
}

/* Initiator, state HS_C_RECV_ACK: 'a' Digest:16. */
static long hs_on_ack(struct hs *h, struct cur *c)
{
    struct span got;
    uint8_t want[HS_DIGEST_LEN];
    if (!cur_span(c, HS_DIGEST_LEN, &got) || cur_left(c) != 0)
        return hs_fail(h, HS_E_PACKET);
    if (!hs_digest_ok(h->cookie, h->our_challenge, want))
        return hs_fail(h, HS_E_NOMEM);
    if (CRYPTO_memcmp(want, got.p, HS_DIGEST_LEN) != 0)
        return hs_fail(h, HS_E_DIGEST);
    h->state = HS_DONE;
    return 0;
}

/* The tag each waiting state accepts; 0 for states that take no packet. */
static uint8_t hs_expected_tag(enum hs_state s)
{
    switch (s) {
    case HS_A_RECV_NAME:
    case HS_C_RECV_CHALLENGE:
        return 'N';
    case HS_A_RECV_ALIVE_ANS:
    case HS_C_RECV_STATUS:
        return 's';
    case HS_A_RECV_REPLY:
        return 'r';
    case HS_C_RECV_ACK:
        return 'a';
    default:
        return 0;
    }
}

/* One whole packet body.  Returns 0 or -1 (failed). */
static long hs_packet(struct hs *h, struct cur *c)
{
    uint8_t tag;
    if (!cur_u8(c, &tag))
        return hs_fail(h, HS_E_PACKET);
    if (tag != hs_expected_tag(h->state)) {
        /* 'n' is the version-5 name/challenge: say so rather than "tag". */
        if (tag == 'n' && hs_expected_tag(h->state) == 'N')
            return hs_fail(h, HS_E_VERSION);
        return hs_fail(h, HS_E_TAG);
    }
    switch (h->state) {
    case HS_A_RECV_NAME: return hs_on_name(h, c);
    case HS_A_RECV_ALIVE_ANS: return hs_on_alive_answer(h, c);
    case HS_A_RECV_REPLY: return hs_on_reply(h, c);
    case HS_C_RECV_STATUS: return hs_on_status(h, c);
    case HS_C_RECV_CHALLENGE: return hs_on_challenge(h, c);
    case HS_C_RECV_ACK: return hs_on_ack(h, c);
    default: return hs_fail(h, HS_E_TAG);
    }
}

/* True while a packet from the peer is awaited; hs_feed reads nothing in
 * HS_A_NEED_STATUS, HS_DONE or HS_FAILED. */
static int hs_waiting_for_peer(const struct hs *h)
{
    return hs_expected_tag(h->state) != 0;
}

long hs_feed(struct hs *h, const uint8_t *p, size_t n)
{
    struct cur in = cur_make(p, n);
    if (h->state == HS_FAILED)
        return -1;
    while (hs_waiting_for_peer(h)) {
        struct cur save = in, body;
        uint32_t len;
        uint16_t len16;
        if (h->hdr == 4) {
            if (!cur_n32(&in, &len))
                break;
        } else {
            if (!cur_n16(&in, &len16))
                break;
            len = len16;
        }
        /* Refuse an oversized packet as soon as its header is seen, so a
         * peer cannot make the caller buffer it. */
        if (len > h->max_packet)
            return hs_fail(h, HS_E_PACKET);
        struct span s;
        if (!cur_span(&in, len, &s)) {
            in = save; /* incomplete: leave its header for the next call */
            break;
        }
        body = cur_make(s.p, s.n);
        if (hs_packet(h, &body) < 0)
            return -1;
    }
    return (long)in.pos;
}

void hs_accept_status(struct hs *h, const char *status)
{
    static const char *const known[] = {"ok", "ok_simultaneous", "nok", "not_allowed", "alive"};
    const char *send = "nok"; /* an unknown answer from the caller refuses */
    if (h->state != HS_A_NEED_STATUS)
        return;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(status, known[i]) == 0)
            send = known[i];
    snprintf(h->status, sizeof h->status, "%s", send);
    if (!hs_send_status(h, send))
        return;
    if (strcmp(send, "ok") == 0 || strcmp(send, "ok_simultaneous") == 0)
        hs_send_challenge(h);
    else if (strcmp(send, "alive") == 0)
        h->state = HS_A_RECV_ALIVE_ANS;
    else
        hs_fail(h, HS_E_REFUSED);
}
