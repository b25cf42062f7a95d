/* tls.c - distribution over TLS (see tls.h).  Placeholder until TLS lands:
 * the options are refused at start-up. */
#include "tls.h"

#include <stdio.h>

#include "conn.h"
#include "node.h"

int tls_global_init(struct node *n, const struct config *cfg, char *err, size_t errlen)
{
    snprintf(err, errlen, "TLS distribution is not built yet");
    return -1;
}
void tls_global_free(struct node *n) {}
struct tls *tls_new(struct node *n, int fd, bool client) { return NULL; }
void tls_drive(struct conn *c) {}
ssize_t tls_read(struct conn *c, void *p, size_t n) { return -1; }
ssize_t tls_write(struct conn *c, const void *p, size_t n) { return -1; }
bool tls_wants_write(struct conn *c) { return false; }
void tls_free(struct conn *c) {}
