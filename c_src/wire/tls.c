/* tls.c - distribution over TLS with OpenSSL 3 (see tls.h): the C side of
 * OTP's inet_tls_dist.  Owns the host's SSL_CTX (h->tls_ctx, one for both
 * directions) and one SSL per connection, bound to the conn's non-blocking
 * socket.  Does not touch conn's buffers or the distribution handshake: it
 * moves bytes, and tells conn when the TLS handshake is done
 * or failed by tls_drive's result (it calls nothing in conn.c, so the two
 * files do not call each other).  epoll is level-triggered, so the
 * only events it must arrange itself are the ones OpenSSL hides: bytes it has
 * already buffered (tls_pending) and a read that needs the socket writable
 * (tls_wants_write). */
#include "wire/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wire/conn.h"
#include "base/log.h"
#include "base/loop.h"

struct tls {
    SSL *ssl;          /* owned */
    bool client;
    bool verify;       /* --tls-verify peer: the verify result counts */
    bool named;        /* client: SNI and expected host name set */
    bool want_write;   /* the handshake or a read waits for a writable socket */
    bool eof;          /* the peer closed: reads return 0 from now on */
    bool failed;       /* fatal error: reads and writes fail, no close_notify */
};

/* --- start-up --- */

/* The reason of the newest OpenSSL error, or fallback. */
static const char *ossl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : fallback;
}

/* Why a PEM file did not load, from the first error on the queue (the last
 * one only says "PEM lib"). */
static const char *load_reason(bool key)
{
    unsigned long e;
    const char *first = NULL;
    while ((e = ERR_get_error()) != 0) {
        int lib = ERR_GET_LIB(e), r = ERR_GET_REASON(e);
        if (lib == ERR_LIB_PEM && (r == PEM_R_BAD_PASSWORD_READ ||
                                   r == PEM_R_PROBLEMS_GETTING_PASSWORD))
            return "the key is encrypted; give an unencrypted PEM key";
        if ((lib == ERR_LIB_PEM && r == PEM_R_NO_START_LINE) ||
            (lib == ERR_LIB_OSSL_DECODER && r == ERR_R_UNSUPPORTED))
            return key ? "no PEM private key in it" : "no PEM certificate in it";
        if (!first)
            first = ERR_reason_error_string(e);
    }
    return first ? first : "unknown error";
}

static void asn1_time_str(const ASN1_TIME *t, char *out, size_t n)
{
    out[0] = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    if (ASN1_TIME_print(b, t) == 1) {
        int k = BIO_read(b, out, (int)n - 1);
        out[k > 0 ? k : 0] = 0;
    }
    BIO_free(b);
}

/* Never prompt on a terminal for an encrypted key: fail the load instead. */
static int no_password(char *buf, int size, int rwflag, void *u) { return -1; }

static int init_fail(SSL_CTX *ctx, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int init_fail(SSL_CTX *ctx, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return -1;
}

/* Our own certificate must be valid now and, when peers are verified, chain
 * to --tls-cacert: the peers check it against the same CAs, so a node that
 * would be refused by everyone says so at start-up. */
static int check_own_cert(SSL_CTX *ctx, const struct tls_opts *cfg, char *err, size_t errlen)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    char when[64];
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        asn1_time_str(X509_get0_notAfter(x), when, sizeof when);
        return init_fail(ctx, err, errlen, "TLS certificate %s expired on %s", cfg->tls_cert,
                         when);
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        asn1_time_str(X509_get0_notBefore(x), when, sizeof when);
        return init_fail(ctx, err, errlen, "TLS certificate %s is not valid before %s",
                         cfg->tls_cert, when);
    }
    if (!cfg->tls_verify_peer)
        return 0;
    STACK_OF(X509) *chain = NULL;
    SSL_CTX_get0_chain_certs(ctx, &chain);
    X509_STORE_CTX *sc = X509_STORE_CTX_new();
    if (!sc || X509_STORE_CTX_init(sc, SSL_CTX_get_cert_store(ctx), x, chain) != 1) {
        X509_STORE_CTX_free(sc);
        return init_fail(ctx, err, errlen, "cannot check TLS certificate %s: %s", cfg->tls_cert,
                         ossl_reason("out of memory"));
    }
    int ok = X509_verify_cert(sc);
    int verr = X509_STORE_CTX_get_error(sc);
    X509_STORE_CTX_free(sc);
    if (ok != 1)
        return init_fail(ctx, err, errlen,
                         "TLS certificate %s is not signed by a CA in %s (%s); peers checking "
                         "it against that file would refuse this node",
                         cfg->tls_cert, cfg->tls_cacert, X509_verify_cert_error_string(verr));
    return 0;
}

static int readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

int tls_global_init(struct conn_host *n, const struct tls_opts *cfg, char *err, size_t errlen)
{
    if (readable("TLS certificate", cfg->tls_cert, err, errlen) < 0 ||
        readable("TLS key", cfg->tls_key, err, errlen) < 0 ||
        (cfg->tls_cacert && readable("TLS CA file", cfg->tls_cacert, err, errlen) < 0))
        return -1;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx)
        return init_fail(NULL, err, errlen, "cannot set up TLS: %s", ossl_reason("out of memory"));
    SSL_CTX_set_min_proto_version(ctx, cfg->tls_min_version == 13 ? TLS1_3_VERSION
                                                                   : TLS1_2_VERSION);
    /* No renegotiation: a write never has to wait for a read.  An EOF
     * without close_notify is a plain EOF: dist frames carry their own
     * lengths, so truncation cannot go unnoticed. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* conn retries a blocked write from its queue, whose buffer may have
     * grown (and moved) meanwhile; it hands over whole chunks and takes
     * back what was written. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read whole socket buffers, not record by record: two syscalls per
     * 16 KB record otherwise.  Costs the tls_pending check in conn. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024); /* several records per read */
    /* Dist connections live long and are few: no resumption. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);

    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1)
        return init_fail(ctx, err, errlen, "cannot load TLS certificate %s: %s", cfg->tls_cert,
                         load_reason(false));
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            return init_fail(ctx, err, errlen, "TLS key %s does not match certificate %s",
                             cfg->tls_key, cfg->tls_cert);
        return init_fail(ctx, err, errlen, "cannot load TLS key %s: %s", cfg->tls_key,
                         load_reason(true));
    }
    if (SSL_CTX_check_private_key(ctx) != 1)
        return init_fail(ctx, err, errlen, "TLS key %s does not match certificate %s",
                         cfg->tls_key, cfg->tls_cert);
    if (cfg->tls_cacert) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_cacert, NULL) != 1)
            return init_fail(ctx, err, errlen, "cannot load TLS CA file %s: %s",
                             cfg->tls_cacert, ossl_reason("no certificate found"));
        /* Tell clients which CAs we accept (a client holding several
         * certificates picks one by it). */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_cacert);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
    }
    if (check_own_cert(ctx, cfg, err, errlen) < 0)
        return -1;
    /* Both directions, like inet_tls_dist with verify_peer on client and
     * server and fail_if_no_peer_cert: a peer without a certificate signed
     * by one of our CAs is refused.  As a client we also check the host
     * part of the node name against the server's certificate, as OTP does
     * through server_name_indication. */
    SSL_CTX_set_verify(ctx,
                       cfg->tls_verify_peer ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                            : SSL_VERIFY_NONE,
                       NULL);
    ERR_clear_error();
    n->tls_ctx = ctx;
    return 0;
}

void tls_global_free(struct conn_host *n)
{
    SSL_CTX_free(n->tls_ctx);
    n->tls_ctx = NULL;
}

/* --- per connection --- */

struct tls *tls_new(struct conn_host *n, int fd, bool client)
{
    if (!n->tls_ctx)
        return NULL;
    struct tls *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ssl = SSL_new(n->tls_ctx);
    if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1) {
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    t->client = client;
    t->verify = n->tls_verify_peer;
    if (client)
        SSL_set_connect_state(t->ssl);
    else
        SSL_set_accept_state(t->ssl);
    return t;
}

void tls_free(struct conn *c)
{
    struct tls *t = c->tls;
    if (!t)
        return;
    /* One non-blocking close_notify, best effort; never after an error. */
    if (!t->failed && SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
    SSL_free(t->ssl);
    free(t);
    c->tls = NULL;
}

/* conn's epoll interest, kept in c->want_write as conn keeps it. */
static void want_write(struct conn *c, bool want)
{
    if (want != c->want_write && c->fd >= 0) {
        c->want_write = want;
        loop_mod_fd(c->host->loop, c->fd, LOOP_READ | (want ? LOOP_WRITE : 0));
    }
}

/* Client: SNI and the expected name are the host part of the node name. */
static void set_peer_host(struct conn *c)
{
    struct tls *t = c->tls;
    t->named = true;
    const char *at = c->name[0] ? strchr(c->name, '@') : NULL;
    if (!at || !at[1])
        return;
    const char *host = at + 1;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(t->ssl, host);
    if (!c->host->tls_verify_peer)
        return;
    X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(vp, host);
    else
        SSL_set1_host(t->ssl, host);
}

/* Why an SSL call failed, for a log line a user can act on. */
static void reason(struct tls *t, int e, int saved_errno, char *out, size_t n)
{
    /* Under --tls-verify none OpenSSL still records why it would have
     * refused the peer; that is not why this failed. */
    long vr = t->verify ? SSL_get_verify_result(t->ssl) : X509_V_OK;
    unsigned long ec = ERR_peek_last_error();
    if (vr != X509_V_OK) {
        snprintf(out, n, "peer certificate rejected: %s", X509_verify_cert_error_string(vr));
    } else if (e == SSL_ERROR_SSL && ec) {
        const char *r = ERR_reason_error_string(ec);
        int rc = ERR_GET_REASON(ec);
        bool plain = !t->client && (rc == SSL_R_WRONG_VERSION_NUMBER || rc == SSL_R_HTTP_REQUEST ||
                                    rc == SSL_R_PACKET_LENGTH_TOO_LONG ||
                                    rc == SSL_R_RECORD_LENGTH_MISMATCH);
        /* An alert from the peer: it refused us (our certificate, its CA,
         * the host name in it, or the TLS version). */
        bool alert = rc >= SSL_AD_REASON_OFFSET;
        snprintf(out, n, "%s%s", r ? r : "TLS protocol error",
                 plain   ? " (not TLS: a plain-TCP node? this node runs distribution over TLS)"
                 : alert ? " (alert from the peer: it refused the handshake; does its CA file "
                           "hold our CA, and does our certificate name our host?)"
                         : "");
    } else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && saved_errno == 0)) {
        snprintf(out, n, "connection closed by the peer%s",
                 SSL_is_init_finished(t->ssl) ? "" : " during the TLS handshake");
    } else if (e == SSL_ERROR_SYSCALL) {
        snprintf(out, n, "%s", strerror(saved_errno));
    } else {
        snprintf(out, n, "TLS error %d", e);
    }
}

static void log_up(struct conn *c)
{
    struct tls *t = c->tls;
    char subj[256] = "no certificate";
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    if (x)
        X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
    const char *verified = c->host->tls_verify_peer ? "verified" : "not verified";
    if (c->outgoing)
        LOGI("TLS to %s (%s): %s %s, peer %s (%s)", c->name[0] ? c->name : "?", c->addr,
             SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl), subj, verified);
    else
        LOGI("TLS from %s: %s %s, peer %s (%s)", c->addr, SSL_get_version(t->ssl),
             SSL_get_cipher_name(t->ssl), subj, verified);
}

int tls_drive(struct conn *c)
{
    struct tls *t = c->tls;
    if (!t || c->state != CS_TLS)
        return 0;
    if (t->client && !t->named)
        set_peer_host(c);
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t->ssl);
    int saved = errno;
    if (r == 1) {
        t->want_write = false;
        log_up(c);
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        t->want_write = e == SSL_ERROR_WANT_WRITE;
        want_write(c, t->want_write);
        return 0;
    }
    t->failed = true;
    char why[320];
    reason(t, e, saved, why, sizeof why);
    if (c->outgoing)
        LOGW("TLS connection to %s (%s) failed: %s", c->name[0] ? c->name : "?", c->addr, why);
    else
        LOGW("TLS connection from %s refused: %s", c->addr, why);
    ERR_clear_error();
    return -1;
}

static void log_io_error(struct conn *c, int e, int saved)
{
    char why[320];
    reason(c->tls, e, saved, why, sizeof why);
    /* Before the dist handshake is done this is still a refusal: in TLS 1.3
     * a server checks the client's certificate after the client is done. */
    if (c->state == CS_UP)
        LOGI("TLS error on the connection %s %s (%s): %s", c->outgoing ? "to" : "from",
             c->name[0] ? c->name : "?", c->addr, why);
    else if (c->outgoing)
        LOGW("TLS connection to %s (%s) failed: %s", c->name[0] ? c->name : "?", c->addr, why);
    else
        LOGW("TLS connection from %s refused: %s", c->addr, why);
    ERR_clear_error();
}

/* Fills p as far as OpenSSL can without blocking, so a short count means
 * the socket is drained (conn relies on that). */
ssize_t tls_read(struct conn *c, void *p, size_t n)
{
    struct tls *t = c->tls;
    if (t->failed)
        return -1;
    if (t->eof)
        return 0;
    size_t got = 0;
    while (got < n) {
        size_t k = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(t->ssl, (char *)p + got, n - got, &k) == 1) {
            got += k;
            t->want_write = false;
            continue;
        }
        int saved = errno;
        int e = SSL_get_error(t->ssl, 0);
        if (e == SSL_ERROR_WANT_READ) {
            t->want_write = false;
            break;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            /* e.g. answering a TLS 1.3 KeyUpdate into a full socket */
            t->want_write = true;
            want_write(c, true);
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            t->eof = true;
            return got > 0 ? (ssize_t)got : 0;
        }
        t->failed = true;
        log_io_error(c, e, saved);
        return -1; /* the conn closes: bytes read so far do not matter */
    }
    return got > 0 ? (ssize_t)got : -2;
}

ssize_t tls_write(struct conn *c, const void *p, size_t n)
{
    struct tls *t = c->tls;
    if (t->failed)
        return -1;
    size_t done = 0;
    while (done < n) {
        size_t k = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_write_ex(t->ssl, (const char *)p + done, n - done, &k) == 1) {
            done += k;
            continue;
        }
        int saved = errno;
        int e = SSL_get_error(t->ssl, 0);
        /* Blocked: conn keeps EPOLLOUT while its queue holds bytes and
         * retries from the same first byte.  WANT_READ cannot happen
         * without renegotiation; if it did, the next read moves it on. */
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
            break;
        t->failed = true;
        log_io_error(c, e, saved);
        return -1;
    }
    return (ssize_t)done;
}

bool tls_wants_write(struct conn *c) { return c->tls && c->tls->want_write; }

bool tls_pending(struct conn *c) { return c->tls && SSL_has_pending(c->tls->ssl) == 1; }
