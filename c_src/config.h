/* config.h - command-line options and the cookie, in erl's terms.
 * Owns: parsing argv into struct config (pure apart from reading the cookie
 * file and HOME), and the defaults.  Does not start anything. */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/node.h"

#define KV_VERSION "0.1.0"

struct config {
    struct node_opts node; /* what the runtime takes (runtime/node.h) */
    char registry[256];    /* the services (app.h) */
    char counter[256];     /* --counter NAME, "" = none */
    int exit_on_stdin_eof;
    unsigned busy_wait_us; /* the loop's busy wait (base/loop.h) */
    unsigned coalesce_us;  /* the loop's longest coalescing sleep (base/coal.h) */
};

/* Default busy wait: long enough for the next message of a gen_server:call
 * burst, short next to a tick; measured in bench/ (README). */
#define CFG_BUSY_WAIT_US 30
/* Default longest coalescing sleep: the controller (base/coal.h) turns
 * coalescing on only where it measures more work done, and picks the sleep
 * (25..400 µs) the same way; measured in bench/ (README). */
#define CFG_COALESCE_US 400

enum { CFG_OK = 0, CFG_EXIT_OK = 1, CFG_BAD = 2 };

/* Fills cfg.  On CFG_BAD, err holds one line for stderr.  CFG_EXIT_OK means
 * --help or --version was printed. */
int config_parse(struct config *cfg, int argc, char **argv, char *err, size_t errlen);

#endif
