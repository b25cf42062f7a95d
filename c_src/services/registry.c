/* registry.c - KV.Registry: the name table and the registry process (see
 * registry.h).  The table is a slab of 64-byte entries (names up to 24
 * canonical bytes stored inline) plus a linear-probing index of slot
 * numbers with backward-shift deletion, so no tombstones accumulate. */
#include "services/registry.h"

#include <stdlib.h>
#include <string.h>

#include "services/bucket.h"
#include "base/log.h"
#include "proto/ext.h"
#include "proto/term.h"

/* --- pure table --- */

struct reg *reg_new(uint64_t seed)
{
    struct reg *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->seed = seed;
    r->free_head = REG_NONE;
    r->tabcap = 64;
    r->tab = calloc(r->tabcap, sizeof *r->tab);
    if (!r->tab) {
        free(r);
        return NULL;
    }
    return r;
}

static void ent_clear_name(struct reg_ent *e)
{
    if (e->len != UINT32_MAX && e->len > REG_INLINE)
        free(e->name.ptr);
    e->len = UINT32_MAX;
}

void reg_free(struct reg *r)
{
    if (!r)
        return;
    for (uint32_t i = 0; i < r->nents; i++)
        ent_clear_name(&r->ents[i]);
    free(r->ents);
    free(r->tab);
    buf_free(&r->canon);
    free(r);
}

const uint8_t *reg_name(const struct reg *r, uint32_t slot)
{
    const struct reg_ent *e = &r->ents[slot];
    return e->len <= REG_INLINE ? e->name.in : e->name.ptr;
}

uint32_t reg_find(const struct reg *r, const uint8_t *name, size_t len)
{
    uint64_t h = term_hash(name, len, r->seed);
    uint32_t mask = r->tabcap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint32_t s = r->tab[i];
        if (!s)
            return REG_NONE;
        const struct reg_ent *e = &r->ents[s - 1];
        if (e->hash == h && e->len == len && memcmp(reg_name(r, s - 1), name, len) == 0)
            return s - 1;
    }
}

static void tab_place(struct reg *r, uint32_t slot)
{
    uint32_t mask = r->tabcap - 1;
    uint32_t i = (uint32_t)r->ents[slot].hash & mask;
    while (r->tab[i])
        i = (i + 1) & mask;
    r->tab[i] = slot + 1;
}

static bool tab_grow(struct reg *r)
{
    uint32_t cap = r->tabcap * 2;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t)
        return false;
    free(r->tab);
    r->tab = t;
    r->tabcap = cap;
    for (uint32_t s = 0; s < r->nents; s++)
        if (r->ents[s].len != UINT32_MAX)
            tab_place(r, s);
    return true;
}

uint32_t reg_add(struct reg *r, const uint8_t *name, size_t len, const struct epid *pid)
{
    if (len >= UINT32_MAX)
        return REG_NONE;
    /* keep the load under 1/2: probes stay short */
    if ((r->count + 1) * 2 > r->tabcap && !tab_grow(r))
        return REG_NONE;
    uint32_t slot;
    if (r->free_head != REG_NONE) {
        slot = r->free_head;
        r->free_head = r->ents[slot].pid.id;
    } else {
        if (r->nents == r->capents) {
            uint32_t cap = r->capents ? r->capents * 2 : 64;
            struct reg_ent *e = realloc(r->ents, (size_t)cap * sizeof *e);
            if (!e)
                return REG_NONE;
            r->ents = e;
            r->capents = cap;
        }
        slot = r->nents++;
    }
    struct reg_ent *e = &r->ents[slot];
    memset(e, 0, sizeof *e);
    if (len > REG_INLINE) {
        e->name.ptr = malloc(len);
        if (!e->name.ptr) {
            e->len = UINT32_MAX;
            e->pid.id = r->free_head;
            r->free_head = slot;
            return REG_NONE;
        }
        memcpy(e->name.ptr, name, len);
    } else {
        memcpy(e->name.in, name, len);
    }
    e->len = (uint32_t)len;
    e->hash = term_hash(name, len, r->seed);
    e->pid = *pid;
    tab_place(r, slot);
    r->count++;
    return slot;
}

void reg_del(struct reg *r, uint32_t slot)
{
    uint32_t mask = r->tabcap - 1;
    uint32_t i = (uint32_t)r->ents[slot].hash & mask;
    while (r->tab[i] != slot + 1) {
        if (!r->tab[i])
            return; /* not indexed: nothing to do */
        i = (i + 1) & mask;
    }
    /* backward-shift: pull later members of the probe run into the hole */
    uint32_t j = i;
    for (;;) {
        r->tab[i] = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (!r->tab[j])
                goto done;
            uint32_t home = (uint32_t)r->ents[r->tab[j] - 1].hash & mask;
            /* stay if home lies cyclically in (i, j] */
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                continue;
            break;
        }
        r->tab[i] = r->tab[j];
        i = j;
    }
done:
    ent_clear_name(&r->ents[slot]);
    r->ents[slot].mon = NULL;
    r->ents[slot].pid.id = r->free_head;
    r->free_head = slot;
    r->count--;
}

/* --- behaviour --- */

/* Canonical bytes of a name term, in the registry's reusable buffer. */
static bool canon_name(struct reg *r, struct span t, struct span *out)
{
    if (term_is_canon(t.p, t.n)) { /* a binary: no copy */
        *out = t;
        return true;
    }
    buf_reset(&r->canon);
    if (!term_canon(t.p, t.n, &r->canon))
        return false;
    out->p = r->canon.data;
    out->n = r->canon.len;
    return true;
}

static bool put_ok_pid(struct gen *g, struct buf *out, const struct epid *pid)
{
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "ok") && gen_put_pid(g, out, pid);
}

static bool put_error(struct buf *out, const char *what)
{
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "error") && ext_put_atomz(out, what);
}

/* Start a bucket for a name known to be absent, watched through its spawn
 * monitor (tagged with its slot).  false on exhaustion. */
static bool create_bucket(struct gen *g, struct span name, struct epid *pid)
{
    struct reg *r = g->state;
    if (gen_spawn(g, &bucket_behaviour, NULL, pid) == GEN_NONE)
        return false;
    uint32_t slot = reg_add(r, name.p, name.n, pid);
    if (slot == REG_NONE) {
        gen_exit(g, pid, R_NORMAL);
        return false;
    }
    /* its exit tells us (DOWN) before anything about it leaves the node */
    gen_monitor_child(g, pid, slot);
    return true;
}

static void forget_monitor(struct gen *g, struct reg_ent *e)
{
    if (!e->mon)
        return;
    gen_demonitor(g, e->mon);
    e->mon = NULL;
}

static enum gen_result call_register(struct gen *g, struct span name, struct cur *c,
                                     struct buf *out)
{
    struct reg *r = g->state;
    struct epid pid;
    if (!gen_get_pid(g, c, &pid)) /* not a pid: not a call we know */
        return put_error(out, "unknown_call") ? GEN_REPLY : GEN_NOREPLY;
    uint32_t slot = reg_find(r, name.p, name.n);
    if (slot != REG_NONE) {
        const struct epid *cur = &r->ents[slot].pid;
        ext_put_tuple(out, 2);
        ext_put_atomz(out, "error");
        ext_put_tuple(out, 2);
        ext_put_atomz(out, "already_registered");
        gen_put_pid(g, out, cur);
        return GEN_REPLY;
    }
    if (!gen_alive(g, &pid))
        return ext_put_atomz(out, "ok") ? GEN_REPLY : GEN_NOREPLY; /* dead: DOWN at once */
    slot = reg_add(r, name.p, name.n, &pid);
    if (slot == REG_NONE)
        return put_error(out, "system_limit") ? GEN_REPLY : GEN_NOREPLY;
    /* The entry holds the monitor before anything can fire: an unreachable
     * node's DOWN (noconnection) may come back before gen_monitor returns,
     * and removes the name through handle_info. */
    if (!gen_monitor(g, &pid, slot, &r->ents[slot].mon))
        reg_del(r, slot);
    return ext_put_atomz(out, "ok") ? GEN_REPLY : GEN_NOREPLY;
}

static void unregister_slot(struct gen *g, uint32_t slot)
{
    struct reg *r = g->state;
    struct reg_ent *e = &r->ents[slot];
    if (e->mon)
        forget_monitor(g, e);
    else if (e->pid.node == 0)
        gen_demonitor_child(g, &e->pid); /* a bucket we own lives on, unnamed */
    reg_del(r, slot);
}

static enum gen_result registry_call(struct gen *g, struct cur req, struct buf *out,
                                     struct span *stop)
{
    struct reg *r = g->state;
    uint32_t ar;
    struct span nm, name;
    struct cur c = req;
    if (ext_atom_eq(&c, "count"))
        return ext_put_int(out, r->count) ? GEN_REPLY : GEN_NOREPLY;
    if (!ext_get_tuple(&c, &ar) || ar < 2 || ar > 3)
        goto unknown;
    bool lookup = ext_atom_eq(&c, "lookup"), create = !lookup && ext_atom_eq(&c, "create");
    bool reg = !lookup && !create && ext_atom_eq(&c, "register");
    bool unreg = !lookup && !create && !reg && ext_atom_eq(&c, "unregister");
    if (!(((lookup || create || unreg) && ar == 2) || (reg && ar == 3)))
        goto unknown;
    ext_skip(&c, NULL);
    if (!ext_skip(&c, &nm) || !canon_name(r, nm, &name))
        goto unknown;
    uint32_t slot = reg_find(r, name.p, name.n);
    if (lookup) {
        if (slot == REG_NONE)
            return ext_put_atomz(out, "error") ? GEN_REPLY : GEN_NOREPLY;
        return put_ok_pid(g, out, &r->ents[slot].pid) ? GEN_REPLY : GEN_NOREPLY;
    }
    if (create) {
        struct epid pid;
        if (slot != REG_NONE)
            pid = r->ents[slot].pid;
        else if (!create_bucket(g, name, &pid))
            return put_error(out, "system_limit") ? GEN_REPLY : GEN_NOREPLY;
        return put_ok_pid(g, out, &pid) ? GEN_REPLY : GEN_NOREPLY;
    }
    if (unreg) {
        if (slot != REG_NONE)
            unregister_slot(g, slot);
        return ext_put_atomz(out, "ok") ? GEN_REPLY : GEN_NOREPLY;
    }
    return call_register(g, name, &c, out);
unknown:
    LOGD("registry: unknown call");
    return put_error(out, "unknown_call") ? GEN_REPLY : GEN_NOREPLY;
}

static enum gen_result registry_cast(struct gen *g, struct cur req, struct span *stop)
{
    struct reg *r = g->state;
    uint32_t ar;
    struct span nm, name;
    struct cur c = req;
    if (!ext_get_tuple(&c, &ar) || ar != 2 || !ext_atom_eq(&c, "create")) {
        LOGD("registry: unknown cast ignored");
        return GEN_NOREPLY;
    }
    ext_skip(&c, NULL);
    if (!ext_skip(&c, &nm) || !canon_name(r, nm, &name))
        return GEN_NOREPLY;
    struct epid pid;
    if (reg_find(r, name.p, name.n) == REG_NONE && !create_bucket(g, name, &pid))
        LOGW("registry: cannot create a bucket (process or memory limit)");
    return GEN_NOREPLY;
}

/* handle_info({'DOWN', Ref, process, Pid, Reason}, State), as the guide's
 * registry has it: the name of a process that ended goes.  The decoded
 * view gives the slot (the monitor's tag); the entry must still be the one
 * that monitor was for: same ref (a name registered by monitor), or, for a
 * bucket we own, the same pid (pids are never reused: the serial grows). */
static enum gen_result registry_info(struct gen *g, struct span msg, const struct gen_sig *sig,
                                     struct span *stop)
{
    struct reg *r = g->state;
    if (!sig) {
        LOGD("registry: unexpected message ignored");
        return GEN_NOREPLY;
    }
    if (sig->kind != GEN_SIG_DOWN) {
        LOGI("registry: exit signal ignored (it traps exits)");
        return GEN_NOREPLY;
    }
    uint32_t slot = sig->tag;
    if (slot >= r->nents || r->ents[slot].len == UINT32_MAX)
        return GEN_NOREPLY;
    struct reg_ent *e = &r->ents[slot];
    if (e->mon ? !eref_eq(gen_monitor_ref(e->mon), &sig->ref) : !epid_eq(&e->pid, &sig->pid))
        return GEN_NOREPLY;
    e->mon = NULL; /* a DOWN's monitor is already gone */
    reg_del(r, slot);
    return GEN_NOREPLY;
}

static bool registry_init(struct gen *g, void *arg)
{
    g->state = reg_new(gen_seed(g));
    return g->state != NULL;
}

/* The registry ends (shutdown): every name goes, monitors with them. */
static void registry_terminate(struct gen *g, struct span reason)
{
    struct reg *r = g->state;
    for (uint32_t s = 0; s < r->nents; s++)
        if (r->ents[s].len != UINT32_MAX)
            unregister_slot(g, s);
    reg_free(r);
    g->state = NULL;
}

/* {Names, Refs} like the guide's state: a map name -> pid, and a map of
 * monitor refs -> name for the names we watch by monitor. */
static bool registry_state(struct gen *g, struct buf *out)
{
    struct reg *r = g->state;
    bool ok = ext_put_tuple(out, 2) && buf_put_u8(out, 't') && buf_put_n32(out, r->count);
    for (uint32_t s = 0; ok && s < r->nents; s++) {
        const struct reg_ent *e = &r->ents[s];
        if (e->len == UINT32_MAX)
            continue;
        ok = buf_put(out, reg_name(r, s), e->len) && gen_put_pid(g, out, &e->pid);
    }
    uint32_t nref = 0;
    for (uint32_t s = 0; s < r->nents; s++)
        if (r->ents[s].len != UINT32_MAX && r->ents[s].mon)
            nref++;
    ok = ok && buf_put_u8(out, 't') && buf_put_n32(out, nref);
    for (uint32_t s = 0; ok && s < r->nents; s++) {
        const struct reg_ent *e = &r->ents[s];
        if (e->len == UINT32_MAX || !e->mon)
            continue;
        ok = gen_put_ref(g, out, gen_monitor_ref(e->mon)) && buf_put(out, reg_name(r, s), e->len);
    }
    return ok;
}

const struct behaviour registry_behaviour = {
    .name = "the registry",
    .flags = GEN_SYSTEM | GEN_TRAP_EXIT,
    .init = registry_init,
    .handle_call = registry_call,
    .handle_cast = registry_cast,
    .handle_info = registry_info,
    .terminate = registry_terminate,
    .get_state = registry_state,
};
