/* registry.h - the KV.Registry service: names (any term, compared by
 * canonical bytes) -> pid, with a monitor per name, and bucket creation.
 * Owns: struct reg (the pure name table, and the registry process's state;
 * cmocka drives the table directly) and registry_behaviour: calls, casts,
 * and handle_info for DOWN (the guide's cleanup). */
#ifndef KV_REGISTRY_H
#define KV_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "runtime/gen.h"

#define REG_NONE UINT32_MAX
#define REG_INLINE 24

/* 64 bytes; slots are stable (a slab), the hash holds slot numbers. */
struct reg_ent {
    uint64_t hash;
    union {
        uint8_t in[REG_INLINE];
        uint8_t *ptr;
    } name;
    uint32_t len;       /* canonical name length; UINT32_MAX marks a free slot */
    struct epid pid;
    struct mon *mon;    /* monitor on pid, or NULL for a bucket we own */
};

struct reg {
    struct reg_ent *ents;  /* slab */
    uint32_t nents, capents;
    uint32_t free_head;    /* free slots chain through pid.id */
    uint32_t *tab;         /* open addressing, linear probing: slot + 1, 0 empty */
    uint32_t tabcap;       /* power of two */
    uint32_t count;
    uint64_t seed;
    struct buf canon;      /* reused for canonical names */
};

/* Pure table. */
struct reg *reg_new(uint64_t seed);
void reg_free(struct reg *r);
uint32_t reg_find(const struct reg *r, const uint8_t *name, size_t len);
/* REG_NONE on allocation failure; the caller checked the name is absent. */
uint32_t reg_add(struct reg *r, const uint8_t *name, size_t len, const struct epid *pid);
void reg_del(struct reg *r, uint32_t slot);
const uint8_t *reg_name(const struct reg *r, uint32_t slot);

/* The registry process (its state is a struct reg): spawn it and
 * register it under the registry's name. */
extern const struct behaviour registry_behaviour;

#endif
