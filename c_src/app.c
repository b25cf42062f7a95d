/* app.c - the services this node serves (see app.h): net_kernel, the
 * registry (which spawns the buckets) and, on request, a counter.  The one
 * place below main.c that names services; the runtime knows only struct
 * behaviour. */
#include "app.h"

#include <stdio.h>

#include "runtime/proc.h"
#include "services/net_kernel.h"
#include "services/registry.h"

/* services/counter.c: one file, no header of its own */
extern const struct behaviour counter_behaviour;

static uint32_t start(struct node *n, const struct behaviour *b, const char *name)
{
    uint32_t id = proc_spawn(n, b, NULL);
    if (id == PROC_NONE)
        return PROC_NONE;
    if (proc_register(n, name, id) != 0) {
        fprintf(stderr, "kv_cnode: cannot register %s as %s\n", b->name, name);
        proc_exit(n, id, R_NORMAL);
        return PROC_NONE;
    }
    return id;
}

int app_start(struct node *n, const struct app_opts *o, struct app *out)
{
    out->net_kernel = start(n, &net_kernel_behaviour, "net_kernel");
    out->registry = start(n, &registry_behaviour, o->registry);
    out->counter = o->counter ? start(n, &counter_behaviour, o->counter) : PROC_NONE;
    if (out->net_kernel == PROC_NONE || out->registry == PROC_NONE ||
        (o->counter && out->counter == PROC_NONE))
        return 1;
    return 0;
}
