/* pid.h - pids and references as the runtime holds them: a pid or ref of
 * any node, the node named by its peer index (0 = this node).  Owns only
 * the two value types and their equality; encoding needs the peer table
 * (node.h) and goes through gen.h's gen_put_pid / gen_get_pid. */
#ifndef KV_PID_H
#define KV_PID_H

#include <stdbool.h>
#include <stdint.h>

/* A pid anywhere: node is a peer index (0 = this node). */
struct epid {
    uint32_t node, id, serial, creation;
};

/* A reference anywhere. */
struct eref {
    uint32_t node, creation;
    uint8_t len;
    uint32_t w[5];
};

static inline bool epid_eq(const struct epid *a, const struct epid *b)
{
    return a->node == b->node && a->id == b->id && a->serial == b->serial &&
           a->creation == b->creation;
}

static inline bool eref_eq(const struct eref *a, const struct eref *b)
{
    if (a->node != b->node || a->creation != b->creation || a->len != b->len)
        return false;
    for (int i = 0; i < a->len; i++)
        if (a->w[i] != b->w[i])
            return false;
    return true;
}

#endif
