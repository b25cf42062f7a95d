/* proc.c - processes, monitors, links and exit signals (see proc.h).
 * Cost notes: spawn, lookup and every monitor operation are O(1) (slots by
 * index, monitors hashed by reference, intrusive lists for the per-process
 * and per-peer sets); a process's end is O(its monitors + links). */
#include "runtime/proc.h"

#include <stdio.h>

#include <stdlib.h>
#include <string.h>

#include "base/log.h"


/* Reason atoms may arrive in any atom encoding; compare by text. */
static bool reason_is(struct span r, const char *atom)
{
    struct cur c = cur_make(r.p, r.n);
    return ext_atom_eq(&c, atom) && r.n == ((r.p[0] == 100 || r.p[0] == 118) ? 3 : 2) + strlen(atom);
}

struct proc_table *proc_table_new(void)
{
    struct proc_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->free_head = PROC_NONE;
    t->mh_cap = 1024;
    t->mh = calloc(t->mh_cap, sizeof *t->mh);
    if (!t->mh) {
        free(t);
        return NULL;
    }
    return t;
}

void proc_table_free(struct proc_table *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->mh_cap; i++) {
        struct mon *m = t->mh[i];
        while (m) {
            struct mon *nx = m->h_next;
            free(m);
            m = nx;
        }
    }
    while (t->mon_free) {
        struct mon *nx = t->mon_free->h_next;
        free(t->mon_free);
        t->mon_free = nx;
    }
    free(t->mh);
    free(t->v);
    free(t);
}

/* The behaviour's index + 1 in the table (a process slot keeps a byte). */
static uint8_t beh_index(struct proc_table *t, const struct behaviour *b)
{
    for (uint32_t i = 0; i < t->nbehs; i++)
        if (t->behs[i] == b)
            return (uint8_t)(i + 1);
    if (t->nbehs == PROC_MAX_BEHS)
        return 0;
    t->behs[t->nbehs++] = b;
    return (uint8_t)t->nbehs;
}

uint32_t proc_spawn(struct node *n, const struct behaviour *b, void *arg)
{
    struct proc_table *t = n->procs;
    uint8_t bi = beh_index(t, b);
    if (!bi)
        return PROC_NONE;
    uint32_t id;
    if (t->free_head != PROC_NONE) {
        id = t->free_head;
        t->free_head = t->v[id].watcher;
    } else {
        if (t->n == t->cap) {
            uint32_t cap = t->cap ? t->cap * 2 : 1024;
            if (cap > (1u << 27))
                return PROC_NONE; /* pid numbers stay below 2^28, as the BEAM's */
            struct proc *v = realloc(t->v, (size_t)cap * sizeof *v);
            if (!v)
                return PROC_NONE;
            t->v = v;
            t->cap = cap;
        }
        id = t->n++;
        t->v[id].serial = 0;
    }
    struct proc *p = &t->v[id];
    uint32_t serial = p->serial;
    memset(p, 0, sizeof *p);
    p->serial = serial;
    p->beh = bi;
    t->live++;
    if (b->init) {
        struct gen g = {n, id, NULL};
        bool ok = b->init(&g, arg);
        p = &t->v[id]; /* init may spawn: the table may have moved */
        p->state = g.state;
        if (!ok) {
            /* never started: nobody can know its pid yet */
            p->state = NULL;
            p->beh = 0;
            p->serial++;
            p->watcher = t->free_head;
            t->free_head = id;
            t->live--;
            return PROC_NONE;
        }
    }
    return id;
}

struct proc *proc_by_id(struct node *n, uint32_t id)
{
    struct proc_table *t = n->procs;
    if (id >= t->n || t->v[id].beh == 0)
        return NULL;
    return &t->v[id];
}

struct proc *proc_get(struct node *n, const struct epid *pid)
{
    if (pid->node != 0 || pid->creation != n->creation)
        return NULL;
    struct proc *p = proc_by_id(n, pid->id);
    if (!p || p->serial != pid->serial || p->exiting)
        return NULL;
    return p;
}

void proc_pid(struct node *n, uint32_t id, struct epid *out)
{
    out->node = 0;
    out->id = id;
    out->serial = n->procs->v[id].serial;
    out->creation = n->creation;
}

int proc_register(struct node *n, const char *name, uint32_t id)
{
    struct proc_table *t = n->procs;
    if (t->nnames == PROC_MAX_NAMES || proc_whereis(n, name) != PROC_NONE)
        return -1;
    snprintf(t->names[t->nnames].name, sizeof t->names[0].name, "%s", name);
    t->names[t->nnames].id = id;
    t->v[id].name = (uint16_t)(t->nnames + 1);
    t->nnames++;
    return 0;
}

uint32_t proc_whereis(struct node *n, const char *name)
{
    struct proc_table *t = n->procs;
    for (uint32_t i = 0; i < t->nnames; i++)
        if (t->names[i].id != PROC_NONE && strcmp(t->names[i].name, name) == 0)
            return t->names[i].id;
    return PROC_NONE;
}

const char *proc_name_of(struct node *n, int idx)
{
    if (idx < 0 || (uint32_t)idx >= n->procs->nnames)
        return NULL;
    return n->procs->names[idx].name;
}

/* --- monitors --- */

static uint32_t ref_hash(const struct eref *r)
{
    uint32_t h = r->node * 0x9E3779B1u ^ r->creation;
    for (int i = 0; i < r->len; i++)
        h = (h ^ r->w[i]) * 0x01000193u;
    return h ^ (h >> 15);
}

static void mh_grow(struct proc_table *t)
{
    uint32_t cap = t->mh_cap * 2;
    struct mon **mh = calloc(cap, sizeof *mh);
    if (!mh)
        return; /* keep the old table: longer chains, still correct */
    for (uint32_t i = 0; i < t->mh_cap; i++) {
        struct mon *m = t->mh[i];
        while (m) {
            struct mon *nx = m->h_next;
            uint32_t b = ref_hash(&m->ref) & (cap - 1);
            m->h_next = mh[b];
            mh[b] = m;
            m = nx;
        }
    }
    free(t->mh);
    t->mh = mh;
    t->mh_cap = cap;
}

struct mon *mon_alloc(struct node *n)
{
    struct proc_table *t = n->procs;
    struct mon *m = t->mon_free;
    if (m)
        t->mon_free = m->h_next;
    else if (!(m = malloc(sizeof *m)))
        return NULL;
    memset(m, 0, sizeof *m);
    m->name = -1;
    return m;
}

void mon_insert(struct node *n, struct mon *m)
{
    struct proc_table *t = n->procs;
    if (t->mh_count >= t->mh_cap)
        mh_grow(t);
    uint32_t b = ref_hash(&m->ref) & (t->mh_cap - 1);
    m->h_next = t->mh[b];
    t->mh[b] = m;
    t->mh_count++;
    if (m->local_target) {
        struct proc *p = &t->v[m->target.id];
        m->t_prev = NULL;
        m->t_next = p->mons;
        if (p->mons)
            p->mons->t_prev = m;
        p->mons = m;
    }
    if (m->peer) {
        m->p_prev = NULL;
        m->p_next = m->peer->mons;
        if (m->peer->mons)
            m->peer->mons->p_prev = m;
        m->peer->mons = m;
    }
}

struct mon *mon_find(struct node *n, const struct eref *ref)
{
    struct proc_table *t = n->procs;
    for (struct mon *m = t->mh[ref_hash(ref) & (t->mh_cap - 1)]; m; m = m->h_next)
        if (eref_eq(&m->ref, ref))
            return m;
    return NULL;
}

void mon_remove(struct node *n, struct mon *m)
{
    struct proc_table *t = n->procs;
    struct mon **pp = &t->mh[ref_hash(&m->ref) & (t->mh_cap - 1)];
    while (*pp && *pp != m)
        pp = &(*pp)->h_next;
    if (*pp) {
        *pp = m->h_next;
        t->mh_count--;
    }
    if (m->local_target) {
        struct proc *p = &t->v[m->target.id];
        if (m->t_prev)
            m->t_prev->t_next = m->t_next;
        else if (p->mons == m)
            p->mons = m->t_next;
        if (m->t_next)
            m->t_next->t_prev = m->t_prev;
    }
    if (m->peer) {
        if (m->p_prev)
            m->p_prev->p_next = m->p_next;
        else if (m->peer->mons == m)
            m->peer->mons = m->p_next;
        if (m->p_next)
            m->p_next->p_prev = m->p_prev;
    }
    m->h_next = t->mon_free;
    t->mon_free = m;
}

/* --- links --- */

struct lnk *lnk_add(struct node *n, uint32_t local, const struct epid *other, struct peer *p)
{
    struct lnk *l = lnk_find(n, local, other);
    if (l)
        return l;
    l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    struct proc *pr = &n->procs->v[local];
    l->local = local;
    l->other = *other;
    l->peer = p;
    l->l_next = pr->links;
    if (pr->links)
        pr->links->l_prev = l;
    pr->links = l;
    if (p) {
        l->p_next = p->links;
        if (p->links)
            p->links->p_prev = l;
        p->links = l;
    }
    return l;
}

struct lnk *lnk_find(struct node *n, uint32_t local, const struct epid *other)
{
    for (struct lnk *l = n->procs->v[local].links; l; l = l->l_next)
        if (epid_eq(&l->other, other))
            return l;
    return NULL;
}

void lnk_remove(struct node *n, struct lnk *l)
{
    struct proc *pr = &n->procs->v[l->local];
    if (l->l_prev)
        l->l_prev->l_next = l->l_next;
    else if (pr->links == l)
        pr->links = l->l_next;
    if (l->l_next)
        l->l_next->l_prev = l->l_prev;
    if (l->peer) {
        if (l->p_prev)
            l->p_prev->p_next = l->p_next;
        else if (l->peer->links == l)
            l->peer->links = l->p_next;
        if (l->p_next)
            l->p_next->p_prev = l->p_prev;
    }
    free(l);
}

/* --- ending --- */

/* Give local process id a DOWN or EXIT message: the term in the BEAM's
 * shape, and the decoded view beside it.  Runs the watcher's handle_info
 * now, so a watcher has acted on it before the loop turn ends (and before
 * anything queued this turn leaves the node). */
static void deliver_sig(struct node *n, uint32_t id, struct gen_sig *sig)
{
    struct proc *w = proc_by_id(n, id);
    if (!w || w->exiting)
        return;
    const struct behaviour *b = proc_beh(n, w);
    if (!b->handle_info)
        return;
    struct buf msg;
    buf_init(&msg);
    bool ok;
    if (sig->kind == GEN_SIG_DOWN) {
        ok = ext_put_tuple(&msg, 5) && ext_put_atomz(&msg, "DOWN") &&
             node_put_ref(n, &msg, &sig->ref) && ext_put_atomz(&msg, "process") &&
             node_put_pid(n, &msg, &sig->pid);
    } else {
        ok = ext_put_tuple(&msg, 3) && ext_put_atomz(&msg, "EXIT") &&
             node_put_pid(n, &msg, &sig->pid);
    }
    ok = ok && buf_put(&msg, sig->reason.p, sig->reason.n);
    /* Unencodable (cannot happen while the peer is known): the view alone. */
    struct span m = {ok ? msg.data : NULL, ok ? msg.len : 0};
    uint32_t serial = w->serial;
    struct gen g = {n, id, w->state};
    struct span stop = {0};
    enum gen_result r = b->handle_info(&g, m, sig, &stop);
    w = &n->procs->v[id];
    if (w->beh && w->serial == serial && !w->exiting) {
        w->state = g.state;
        if (r == GEN_STOP)
            proc_exit(n, id, stop);
    }
    buf_free(&msg);
}

/* Call after mon_remove with a copy of the record: the watcher may make
 * and drop monitors while handling it. */
static void deliver_down(struct node *n, const struct mon *m, struct span reason)
{
    struct gen_sig sig = {GEN_SIG_DOWN, m->ref, m->target, reason, m->tag};
    deliver_sig(n, m->watcher.id, &sig);
}

/* The reference of the monitor a spawn keeps in the child's slot: made
 * from the child's id and serial, so it needs no storage, and never equal
 * to one node_make_ref mints (their third word is seed >> 32). */
static void spawn_ref(struct node *n, uint32_t id, uint32_t serial, struct eref *r)
{
    r->node = 0;
    r->creation = n->creation;
    r->len = 3;
    memset(r->w, 0, sizeof r->w);
    r->w[0] = id & 0x3FFFF;
    r->w[1] = serial;
    r->w[2] = (uint32_t)(n->hash_seed >> 32) ^ 0x80000000u ^ (id >> 18);
}

void proc_exit(struct node *n, uint32_t id, struct span reason)
{
    struct proc_table *t = n->procs;
    struct proc *p = proc_by_id(n, id);
    if (!p || p->exiting)
        return;
    p->exiting = 1;
    struct epid self;
    proc_pid(n, id, &self);
    /* 1. The behaviour's terminate frees its state. */
    const struct behaviour *b = proc_beh(n, p);
    if (b->terminate) {
        struct gen g = {n, id, p->state};
        b->terminate(&g, reason);
        p = &t->v[id];
    }
    p->state = NULL;
    /* 2. The spawner hears first (a name table drops the name here), before
     * any DOWN, EXIT or reply can leave the node. */
    if (p->watcher) {
        struct gen_sig sig = {GEN_SIG_DOWN, {0}, self, reason, p->wtag};
        spawn_ref(n, id, p->serial, &sig.ref);
        uint32_t w = p->watcher - 1;
        p->watcher = 0;
        deliver_sig(n, w, &sig);
        p = &t->v[id];
    }
    /* 3. Unregister. */
    if (p->name)
        t->names[p->name - 1].id = PROC_NONE;
    /* 4. Monitors on this process fire. */
    while (p->mons) {
        struct mon *m = p->mons;
        if (m->peer) {
            node_send_monitor_exit(n, m->peer, &self, m->name >= 0 ? proc_name_of(n, m->name) : NULL,
                                   &m->watcher, &m->ref, reason);
            mon_remove(n, m);
        } else {
            struct mon copy = *m;
            mon_remove(n, m);
            deliver_down(n, &copy, reason);
        }
        p = &t->v[id]; /* the table may have moved */
    }
    /* 5. Linked processes get an exit signal. */
    while (p->links) {
        struct lnk *l = p->links;
        struct epid other = l->other;
        struct peer *peer = l->peer;
        lnk_remove(n, l);
        if (peer)
            node_send_exit(n, peer, &self, &other, reason);
        else if (other.node == 0)
            proc_exit_signal(n, other.id, &self, reason, true);
        p = &t->v[id];
    }
    /* 6. Free the slot. */
    p->beh = 0;
    p->exiting = 0;
    p->serial++;
    p->watcher = t->free_head;
    t->free_head = id;
    t->live--;
}

void proc_spawn_monitor(struct node *n, uint32_t child, uint32_t watcher, uint32_t tag)
{
    struct proc *p = proc_by_id(n, child);
    if (!p)
        return;
    p->watcher = watcher == PROC_NONE ? 0 : watcher + 1;
    p->wtag = tag;
}

void proc_exit_signal(struct node *n, uint32_t id, const struct epid *from, struct span reason,
                      bool from_link)
{
    struct proc *p = proc_by_id(n, id);
    if (!p || p->exiting)
        return;
    if (from_link) {
        struct lnk *l = lnk_find(n, id, from);
        if (!l)
            return; /* no link (already unlinked): the signal is ignored */
        lnk_remove(n, l);
    }
    bool is_kill = !from_link && reason_is(reason, "kill");
    const struct behaviour *b = proc_beh(n, p);
    if ((b->flags & GEN_SYSTEM) && !n->stopping && is_kill) {
        /* A system process (GEN_SYSTEM) outlives a
         * kill here, as it would under its supervisor: the node stays
         * usable.  Logged and refused. */
        LOGI("exit signal to %s ignored", b->name);
        return;
    }
    if (is_kill) {
        proc_exit(n, id, R_KILLED);
        return;
    }
    if (b->flags & GEN_TRAP_EXIT) {
        struct gen_sig sig = {GEN_SIG_EXIT, {0}, *from, reason, 0};
        deliver_sig(n, id, &sig);
        return;
    }
    if ((b->flags & GEN_SYSTEM) && !n->stopping) {
        LOGI("exit signal to %s ignored", b->name);
        return;
    }
    if (reason_is(reason, "normal") && !(from->node == 0 && from->id == id))
        return;
    proc_exit(n, id, reason);
}

/* --- peers --- */

void proc_peer_down(struct node *n, struct peer *p)
{
    while (p->mons) {
        struct mon copy = *p->mons;
        mon_remove(n, p->mons);
        if (!copy.local_target) /* we watched a process on that peer */
            deliver_down(n, &copy, R_NOCONNECTION);
    }
    while (p->links) {
        struct lnk *l = p->links;
        uint32_t local = l->local;
        struct epid other = l->other;
        /* the link goes, and the local process gets noconnection */
        lnk_remove(n, l);
        proc_exit_signal(n, local, &other, R_NOCONNECTION, false);
    }
}

void proc_peer_up(struct node *n, struct peer *p)
{
    for (struct mon *m = p->mons; m; m = m->p_next)
        if (!m->local_target && !m->sent) {
            /* A peer that takes no MONITOR_P (ei-based C nodes) gets none:
             * the monitor stays local and fires on noconnection. */
            if (node_peer_takes_monitors(p)) {
                m->sent = true;
                node_send_monitor_p(n, p, &m->watcher, &m->target, &m->ref);
            }
        }
}

void mon_fire(struct node *n, struct mon *m, struct span reason)
{
    struct mon copy = *m;
    mon_remove(n, m);
    deliver_down(n, &copy, reason);
}
