/* proc.h - the processes of this node: pid table, registered names,
 * monitors and links, exit signals, DOWN/EXIT emission and the cleanup when
 * a peer's connection is lost.
 * Owns: struct proc slots (pid = <index, serial>), struct mon and struct lnk
 * records and the monitor-by-reference hash, the behaviours in use.  A
 * process's state is its behaviour's (freed by the behaviour's terminate);
 * everything here calls a behaviour only through struct behaviour (gen.h). */
#ifndef KV_PROC_H
#define KV_PROC_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "runtime/gen.h"
#include "runtime/node.h"

#define PROC_NONE UINT32_MAX

/* 40 bytes (the behaviour is a one-byte index, not a pointer): a million
 * processes cost 40 MB of slots here. */
struct proc {
    uint32_t serial;
    uint8_t beh;        /* index + 1 in proc_table.behs; 0 = free slot */
    uint8_t exiting;
    uint16_t name;      /* registered-name index + 1, 0 = none */
    uint32_t watcher;   /* spawn monitor: the spawner's id + 1, 0 = none;
                           free slot: next free index */
    uint32_t wtag;      /* spawn monitor: the spawner's tag */
    void *state;        /* behaviour state, owned by the behaviour */
    struct mon *mons;   /* monitors whose target is this process */
    struct lnk *links;
};

struct mon {
    struct mon *h_next;          /* ref hash chain */
    struct mon *t_next, *t_prev; /* on the local target's list */
    struct mon *p_next, *p_prev; /* on the peer's list */
    struct peer *peer;           /* the remote side, NULL if both local */
    struct eref ref;
    struct epid watcher, target;
    uint32_t tag;                /* the local watcher's own use (gen_monitor's tag) */
    int16_t name;                /* by-name monitor of a local name: index, else -1 */
    bool local_target;
    bool sent;                   /* our MONITOR_P went out on the current connection */
};

struct lnk {
    struct lnk *l_next, *l_prev; /* on the local process */
    struct lnk *p_next, *p_prev; /* on the peer */
    struct peer *peer;           /* NULL when other is local */
    uint32_t local;              /* local process index */
    struct epid other;
};

#define PROC_MAX_NAMES 16
#define PROC_MAX_BEHS 32

struct proc_table {
    struct proc *v;
    uint32_t n, cap;       /* slots in use as high-water mark, allocated */
    uint32_t free_head;    /* PROC_NONE when empty */
    uint32_t live;
    struct { char name[256]; uint32_t id; } names[PROC_MAX_NAMES];
    uint32_t nnames;
    struct mon **mh;       /* monitors by ref */
    uint32_t mh_cap, mh_count;
    struct mon *mon_free;  /* recycled records: calls monitor and demonitor
                              each time, so no malloc per call */
    const struct behaviour *behs[PROC_MAX_BEHS];
    uint32_t nbehs;
};

struct proc_table *proc_table_new(void);
void proc_table_free(struct proc_table *t);

/* Spawn b (b->init(arg) runs at once); PROC_NONE when not started. */
uint32_t proc_spawn(struct node *n, const struct behaviour *b, void *arg);
static inline const struct behaviour *proc_beh(const struct node *n, const struct proc *p)
{
    return n->procs->behs[p->beh - 1];
}
/* The live process for a pid of this node, or NULL. */
struct proc *proc_get(struct node *n, const struct epid *pid);
struct proc *proc_by_id(struct node *n, uint32_t id);
void proc_pid(struct node *n, uint32_t id, struct epid *out);
int proc_register(struct node *n, const char *name, uint32_t id);
/* PROC_NONE when no live process has that name. */
uint32_t proc_whereis(struct node *n, const char *name);
const char *proc_name_of(struct node *n, int idx);

/* End a process: its terminate first (it frees the state), then DOWN to
 * its spawner, then DOWN/EXIT to every watcher and linked process, then its
 * slot is recycled.  Local watchers get their DOWN in this call, so a
 * watcher's table has dropped it before any signal or reply leaves the node. */
void proc_exit(struct node *n, uint32_t id, struct span reason);
/* child's spawner watcher (PROC_NONE: none) gets DOWN with tag when it ends. */
void proc_spawn_monitor(struct node *n, uint32_t child, uint32_t watcher, uint32_t tag);
/* An exit signal arrived (exit/2 or a broken link): apply BEAM rules. */
void proc_exit_signal(struct node *n, uint32_t id, const struct epid *from, struct span reason,
                      bool from_link);

/* Monitors. */
struct mon *mon_alloc(struct node *n);
void mon_insert(struct node *n, struct mon *m);  /* hash + lists */
struct mon *mon_find(struct node *n, const struct eref *ref);
void mon_remove(struct node *n, struct mon *m);  /* unhash, unlist, recycle */
/* Our monitor fired (MONITOR_P_EXIT): remove it and tell the watcher. */
void mon_fire(struct node *n, struct mon *m, struct span reason);
/* Links. */
struct lnk *lnk_add(struct node *n, uint32_t local, const struct epid *other, struct peer *p);
struct lnk *lnk_find(struct node *n, uint32_t local, const struct epid *other);
void lnk_remove(struct node *n, struct lnk *l);

/* The peer's connection is gone: fire our monitors on it (noconnection),
 * drop its monitors on us, deliver noconnection over its links. */
void proc_peer_down(struct node *n, struct peer *p);
/* The peer came up: send the MONITOR_Ps we queued for it. */
void proc_peer_up(struct node *n, struct peer *p);

#endif
