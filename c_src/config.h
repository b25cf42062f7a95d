/* config.h - command-line options and the cookie, in erl's terms.
 * Owns: parsing argv into struct config (pure apart from reading the cookie
 * file and HOME), and the defaults.  Does not start anything. */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define KV_VERSION "0.1.0"
#define CFG_MAX_CONNECT 64

struct config {
    char name[256];      /* full node name alive@host */
    char alive[256];     /* part before '@' */
    int longnames;
    char cookie[256];
    unsigned port;       /* 0 = any */
    unsigned ticktime;   /* seconds */
    unsigned setuptime_ms;
    const char *connect[CFG_MAX_CONNECT];
    int nconnect;
    char registry[256];
    uint64_t max_message_bytes;
    uint64_t max_out_bytes;
    unsigned max_connections;
    unsigned max_depth;
    int exit_on_stdin_eof;
    int inet6;           /* connect out over IPv6 (erl's -proto_dist inet6_tcp) */
    /* TLS (issue 4) */
    const char *tls_cert, *tls_key, *tls_cacert;
    int tls_verify_peer;
    int tls_min_version; /* 12 or 13 */
};

enum { CFG_OK = 0, CFG_EXIT_OK = 1, CFG_BAD = 2 };

/* Fills cfg.  On CFG_BAD, err holds one line for stderr.  CFG_EXIT_OK means
 * --help or --version was printed. */
int config_parse(struct config *cfg, int argc, char **argv, char *err, size_t errlen);

#endif
