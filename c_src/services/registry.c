/* registry.c - KV.Registry: the name table and the registry process (see
 * registry.h).  The table is a slab of 64-byte entries (names up to 24
 * canonical bytes stored inline) plus a linear-probing index of slot
 * numbers with backward-shift deletion, so no tombstones accumulate. */
#include "services/registry.h"

#include <stdlib.h>
#include <string.h>

#include "services/bucket.h"
#include "base/log.h"
#include "runtime/proc.h"
#include "proto/hs.h"
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

/* Canonical bytes of a name term, in n's reusable buffer. */
static bool canon_name(struct node *n, struct span t, struct span *out)
{
    if (term_is_canon(t.p, t.n)) { /* a binary: no copy */
        *out = t;
        return true;
    }
    buf_reset(&n->canon);
    if (!term_canon(t.p, t.n, &n->canon))
        return false;
    out->p = n->canon.data;
    out->n = n->canon.len;
    return true;
}

static bool put_ok_pid(struct node *n, struct buf *out, const struct epid *pid)
{
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "ok") && node_put_pid(n, out, pid);
}

static bool put_error(struct buf *out, const char *what)
{
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "error") && ext_put_atomz(out, what);
}

/* Start a bucket for a name known to be absent.  false on exhaustion. */
static bool create_bucket(struct node *n, struct span name, struct epid *pid)
{
    uint32_t id = proc_spawn(n, PK_BUCKET, NULL);
    if (id == PROC_NONE)
        return false;
    proc_pid(n, id, pid);
    uint32_t slot = reg_add(n->reg, name.p, name.n, pid);
    if (slot == REG_NONE) {
        proc_exit(n, id, R_NORMAL);
        return false;
    }
    proc_by_id(n, id)->reg_slot = slot;
    return true;
}

static void forget_monitor(struct node *n, struct reg_ent *e)
{
    struct mon *m = e->mon;
    if (!m)
        return;
    if (m->peer && m->sent && m->peer->up)
        node_send_demonitor_p(n, m->peer, &m->watcher, &m->target, &m->ref);
    mon_remove(n, m);
    e->mon = NULL;
}

/* Monitor pid on behalf of the registry; the entry at slot owns the
 * monitor.  A dead local pid gets no entry (noproc at once). */
static bool watch(struct node *n, uint32_t slot, const struct epid *pid)
{
    struct mon *m = mon_alloc(n);
    if (!m)
        return false;
    node_make_ref(n, &m->ref);
    proc_pid(n, n->registry_pid, &m->watcher);
    m->target = *pid;
    m->tag = slot;
    if (pid->node == 0) {
        m->local_target = true;
    } else {
        m->peer = node_peer(n, pid->node);
        if (!m->peer) {
            mon_remove(n, m);
            return false;
        }
    }
    mon_insert(n, m);
    n->reg->ents[slot].mon = m;
    struct peer *p = m->peer;
    if (p && p->up) {
        if (node_peer_takes_monitors(p)) {
            m->sent = true;
            node_send_monitor_p(n, p, &m->watcher, &m->target, &m->ref);
        }
    } else if (p && !p->conn && !node_connect(n, p)) {
        /* Unreachable.  A connect that failed at once already fired the
         * monitor (noconnection) and removed the name; otherwise fire it
         * here.  Either way m must not be touched after this. */
        if (n->reg->ents[slot].len != UINT32_MAX && n->reg->ents[slot].mon == m)
            mon_fire(n, m, R_NOCONNECTION);
    }
    return true;
}

static enum gen_result call_register(struct node *n, struct span name, struct cur *c,
                                     struct buf *out)
{
    struct epid pid;
    if (!node_get_pid(n, c, &pid)) /* not a pid: not a call we know */
        return put_error(out, "unknown_call") ? GEN_REPLY : GEN_NOREPLY;
    uint32_t slot = reg_find(n->reg, name.p, name.n);
    if (slot != REG_NONE) {
        const struct epid *cur = &n->reg->ents[slot].pid;
        ext_put_tuple(out, 2);
        ext_put_atomz(out, "error");
        ext_put_tuple(out, 2);
        ext_put_atomz(out, "already_registered");
        node_put_pid(n, out, cur);
        return GEN_REPLY;
    }
    if (pid.node == 0 && !proc_get(n, &pid))
        return ext_put_atomz(out, "ok") ? GEN_REPLY : GEN_NOREPLY; /* dead: DOWN at once */
    slot = reg_add(n->reg, name.p, name.n, &pid);
    if (slot == REG_NONE)
        return put_error(out, "system_limit") ? GEN_REPLY : GEN_NOREPLY;
    if (!watch(n, slot, &pid))
        reg_del(n->reg, slot);
    return ext_put_atomz(out, "ok") ? GEN_REPLY : GEN_NOREPLY;
}

static void unregister_slot(struct node *n, uint32_t slot)
{
    struct reg_ent *e = &n->reg->ents[slot];
    if (e->mon) {
        forget_monitor(n, e);
    } else if (e->pid.node == 0) {
        struct proc *b = proc_by_id(n, e->pid.id);
        if (b && b->kind == PK_BUCKET && b->reg_slot == slot)
            b->reg_slot = PROC_NONE;
    }
    reg_del(n->reg, slot);
}

enum gen_result registry_call(struct node *n, uint32_t id, struct cur req, struct buf *out)
{
    uint32_t ar;
    struct span nm, name;
    struct cur c = req;
    if (ext_atom_eq(&c, "count"))
        return ext_put_int(out, n->reg->count) ? GEN_REPLY : GEN_NOREPLY;
    if (!ext_get_tuple(&c, &ar) || ar < 2 || ar > 3)
        goto unknown;
    bool lookup = ext_atom_eq(&c, "lookup"), create = !lookup && ext_atom_eq(&c, "create");
    bool reg = !lookup && !create && ext_atom_eq(&c, "register");
    bool unreg = !lookup && !create && !reg && ext_atom_eq(&c, "unregister");
    if (!(((lookup || create || unreg) && ar == 2) || (reg && ar == 3)))
        goto unknown;
    ext_skip(&c, NULL);
    if (!ext_skip(&c, &nm) || !canon_name(n, nm, &name))
        goto unknown;
    uint32_t slot = reg_find(n->reg, name.p, name.n);
    if (lookup) {
        if (slot == REG_NONE)
            return ext_put_atomz(out, "error") ? GEN_REPLY : GEN_NOREPLY;
        return put_ok_pid(n, out, &n->reg->ents[slot].pid) ? GEN_REPLY : GEN_NOREPLY;
    }
    if (create) {
        struct epid pid;
        if (slot != REG_NONE)
            pid = n->reg->ents[slot].pid;
        else if (!create_bucket(n, name, &pid))
            return put_error(out, "system_limit") ? GEN_REPLY : GEN_NOREPLY;
        return put_ok_pid(n, out, &pid) ? GEN_REPLY : GEN_NOREPLY;
    }
    if (unreg) {
        if (slot != REG_NONE)
            unregister_slot(n, slot);
        return ext_put_atomz(out, "ok") ? GEN_REPLY : GEN_NOREPLY;
    }
    return call_register(n, name, &c, out);
unknown:
    LOGD("registry: unknown call");
    return put_error(out, "unknown_call") ? GEN_REPLY : GEN_NOREPLY;
}

void registry_cast(struct node *n, uint32_t id, struct cur req)
{
    uint32_t ar;
    struct span nm, name;
    struct cur c = req;
    if (!ext_get_tuple(&c, &ar) || ar != 2 || !ext_atom_eq(&c, "create")) {
        LOGD("registry: unknown cast ignored");
        return;
    }
    ext_skip(&c, NULL);
    if (!ext_skip(&c, &nm) || !canon_name(n, nm, &name))
        return;
    struct epid pid;
    if (reg_find(n->reg, name.p, name.n) == REG_NONE && !create_bucket(n, name, &pid))
        LOGW("registry: cannot create a bucket (process or memory limit)");
}

/* {Names, Refs} like the guide's state: a map name -> pid, and a map of
 * monitor refs -> name for the names we watch by monitor. */
bool registry_state(struct node *n, struct buf *out)
{
    struct reg *r = n->reg;
    bool ok = ext_put_tuple(out, 2) && buf_put_u8(out, 't') && buf_put_n32(out, r->count);
    for (uint32_t s = 0; ok && s < r->nents; s++) {
        const struct reg_ent *e = &r->ents[s];
        if (e->len == UINT32_MAX)
            continue;
        ok = buf_put(out, reg_name(r, s), e->len) && node_put_pid(n, out, &e->pid);
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
        ok = node_put_ref(n, out, &e->mon->ref) && buf_put(out, reg_name(r, s), e->len);
    }
    return ok;
}

void registry_on_down(struct node *n, uint32_t slot, const struct eref *ref, struct span reason)
{
    struct reg *r = n->reg;
    if (slot >= r->nents || r->ents[slot].len == UINT32_MAX || !r->ents[slot].mon ||
        !eref_eq(&r->ents[slot].mon->ref, ref))
        return;
    r->ents[slot].mon = NULL; /* already removed by the caller */
    reg_del(r, slot);
}

void registry_drop_bucket(struct node *n, uint32_t slot, uint32_t bucket_id)
{
    struct reg *r = n->reg;
    if (slot >= r->nents || r->ents[slot].len == UINT32_MAX || r->ents[slot].mon ||
        r->ents[slot].pid.node != 0 || r->ents[slot].pid.id != bucket_id)
        return;
    reg_del(r, slot);
}

void registry_on_exit(struct node *n)
{
    struct reg *r = n->reg;
    for (uint32_t s = 0; s < r->nents; s++)
        if (r->ents[s].len != UINT32_MAX)
            unregister_slot(n, s);
}
