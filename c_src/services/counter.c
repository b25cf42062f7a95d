/* counter.c - a counter process: the example of README's "Serving your own
 * process", and the proof that a service is callbacks and nothing else.
 * Started under a name with --counter NAME (app.c).  From a BEAM node:
 *   gen_server:call({Name, Node}, get)          -> N
 *   gen_server:call({Name, Node}, {add, K})     -> N + K
 *   gen_server:cast({Name, Node}, {add, K}), gen_server:cast(.., reset)
 *   {Name, Node} ! {add, K}                     (handle_info)
 *   sys:get_state({Name, Node})                 -> N
 *   gen_server:stop({Name, Node})               -> ok; watchers get DOWN
 * It includes runtime/gen.h and the term codec, nothing else of the node. */
#include <stdlib.h>

#include "base/log.h"
#include "proto/ext.h"
#include "runtime/gen.h"

struct counter {
    int64_t n;
};

/* {add, K} with K an integer. */
static bool get_add(struct cur c, int64_t *k)
{
    uint32_t ar;
    if (!ext_get_tuple(&c, &ar) || ar != 2 || !ext_atom_eq(&c, "add"))
        return false;
    ext_skip(&c, NULL);
    return ext_get_int(&c, k);
}

static bool counter_init(struct gen *g, void *arg)
{
    struct counter *s = calloc(1, sizeof *s);
    g->state = s;
    return s != NULL;
}

static enum gen_result counter_call(struct gen *g, struct cur req, struct buf *out,
                                    struct span *stop)
{
    struct counter *s = g->state;
    int64_t k;
    if (ext_atom_eq(&req, "get"))
        return ext_put_int(out, s->n) ? GEN_REPLY : GEN_NOREPLY;
    if (get_add(req, &k)) {
        s->n += k;
        return ext_put_int(out, s->n) ? GEN_REPLY : GEN_NOREPLY;
    }
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "error") &&
                   ext_put_atomz(out, "unknown_call")
               ? GEN_REPLY
               : GEN_NOREPLY;
}

static enum gen_result counter_cast(struct gen *g, struct cur req, struct span *stop)
{
    struct counter *s = g->state;
    int64_t k;
    if (ext_atom_eq(&req, "reset"))
        s->n = 0;
    else if (get_add(req, &k))
        s->n += k;
    else
        LOGD("counter: unknown cast ignored");
    return GEN_NOREPLY;
}

static enum gen_result counter_info(struct gen *g, struct span msg, const struct gen_sig *sig,
                                    struct span *stop)
{
    struct counter *s = g->state;
    int64_t k;
    if (!sig && get_add(cur_make(msg.p, msg.n), &k))
        s->n += k;
    else
        LOGD("counter: message ignored");
    return GEN_NOREPLY;
}

static void counter_terminate(struct gen *g, struct span reason)
{
    free(g->state);
    g->state = NULL;
}

static bool counter_state(struct gen *g, struct buf *out)
{
    const struct counter *s = g->state;
    return ext_put_int(out, s->n);
}

const struct behaviour counter_behaviour = {
    .name = "counter",
    .init = counter_init,
    .handle_call = counter_call,
    .handle_cast = counter_cast,
    .handle_info = counter_info,
    .terminate = counter_terminate,
    .get_state = counter_state,
};
