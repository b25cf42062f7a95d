/* tls.h - distribution over TLS (OpenSSL), behind the same calls conn.c
 * makes for plain TCP.  Owns: the SSL_CTX (per node) and one SSL per conn. */
#ifndef KV_TLS_H
#define KV_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct conn;
struct conn_host;

/* What the certificates are (the owner fills it from its options). */
struct tls_opts {
    const char *tls_cert, *tls_key, *tls_cacert;
    int tls_verify_peer;
    int tls_min_version; /* 12 or 13 */
};

/* Load certificates into h->tls_ctx; 0, or -1 with a one-line reason in err. */
int tls_global_init(struct conn_host *h, const struct tls_opts *cfg, char *err, size_t errlen);
void tls_global_free(struct conn_host *h);
struct tls *tls_new(struct conn_host *h, int fd, bool client);
/* Advance the TLS handshake: 1 done, 0 in progress, -1 failed (logged;
 * the caller closes). */
int tls_drive(struct conn *c);
/* >0 bytes, 0 EOF, -2 would block, -1 error. */
ssize_t tls_read(struct conn *c, void *p, size_t n);
/* bytes written (0 = would block), -1 error. */
ssize_t tls_write(struct conn *c, const void *p, size_t n);
/* The handshake or a read waits for a writable socket: keep EPOLLOUT and
 * call tls_read (or tls_drive) when it comes.  Blocked writes need no flag:
 * conn keeps EPOLLOUT while its queue holds bytes. */
bool tls_wants_write(struct conn *c);
/* OpenSSL holds bytes already read from the socket (no epoll event will
 * come for them): keep calling tls_read until it returns -2. */
bool tls_pending(struct conn *c);
void tls_free(struct conn *c);

#endif
