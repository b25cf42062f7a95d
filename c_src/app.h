/* app.h - the application: which services this node serves, started once
 * the node is up (main.c) or bare (the cmocka and fuzz harnesses).
 * Owns nothing at run time: the processes are the runtime's. */
#ifndef KV_APP_H
#define KV_APP_H

#include <stdint.h>

struct node;

struct app_opts {
    const char *registry;  /* registered name of the registry */
    const char *counter;   /* --counter NAME: a counter process; NULL = none */
};

/* Process ids of what was started (UINT32_MAX: not started). */
struct app {
    uint32_t net_kernel, registry, counter;
};

/* Spawn and register the services; 0, or 1 when one cannot start. */
int app_start(struct node *n, const struct app_opts *o, struct app *out);

#endif
