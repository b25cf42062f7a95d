/* fuzz_common.h - shared by the libFuzzer targets in tests/fuzz/: a bare
 * node with no sockets (node_init_bare), the checks every target applies to
 * what the node sends, and a crash helper that names the broken invariant.
 * Header-only; each target includes it once. */
#ifndef KV_FUZZ_COMMON_H
#define KV_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "app.h"
#include "wire/conn.h"
#include "proto/dist.h"
#include "proto/hs.h"
#include "base/log.h"
#include "base/loop.h"
#include "runtime/node.h"
#include "runtime/proc.h"
#include "services/bucket.h"
#include "services/registry.h"
#include "proto/term.h"

/* An invariant broke: say which, then crash so libFuzzer keeps the input.
 * tests/test_fuzz_regress.c defines its own (a cmocka failure) first. */
#ifndef FZ_CHECK
#define FZ_CHECK(cond)                                                             \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, \
                    __LINE__);                                                     \
            abort();                                                               \
        }                                                                          \
    } while (0)
#endif

/* The identities of tests/fuzz/capture_frames.py's capture, so pids in the
 * seed corpus name this node and its peer. */
#define FZ_NODE "kvcap@localhost"
#define FZ_PEER "capcli@localhost"
#define FZ_CREATION 0x6B000003u
#define FZ_PEER_CREATION 0x63000004u

#define FZ_REGISTRY "Elixir.KV.Registry"

static inline void fz_cfg(struct node_opts *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->name, sizeof cfg->name, "%s", FZ_NODE);
    snprintf(cfg->alive, sizeof cfg->alive, "kvcap");
    snprintf(cfg->cookie, sizeof cfg->cookie, "goldencookie");
    cfg->ticktime = 60;
    cfg->setuptime_ms = 7000;
    cfg->max_message_bytes = 1u << 20;
    cfg->max_out_bytes = 4u << 20;
    cfg->max_connections = 0; /* node_connect fails: no sockets while fuzzing */
    cfg->max_depth = 100;
}

/* Every frame in p[0..n) must be one our own decoder accepts: what the node
 * sends is never malformed, whatever it was fed. */
static inline void fz_check_output(const uint8_t *p, size_t n)
{
    static const struct term_limits lim = {100000, UINT64_MAX};
    size_t pos = 0;
    while (pos < n) {
        struct span body;
        long k = dist_cut(p + pos, n - pos, UINT64_MAX, &body);
        FZ_CHECK(k > 0); /* output is whole frames only */
        if (body.n) {
            struct dist_msg m;
            const char *why = NULL;
            int r = dist_decode(body.p, body.n, &lim, &m, &why);
            if (r != 0)
                fprintf(stderr, "node sent a frame it would refuse: %s\n", why);
            FZ_CHECK(r == 0);
        }
        pos += (size_t)k;
    }
}

#endif
