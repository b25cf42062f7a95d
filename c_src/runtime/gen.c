/* gen.c - gen_server envelopes, replies and system messages, and the
 * calls a behaviour makes (see gen.h).  Calls behaviours only through
 * struct behaviour. */
#include "runtime/gen.h"

#include <ei.h>

#include "base/log.h"
#include "proto/hs.h"
#include "runtime/node.h"
#include "runtime/proc.h"

/* The state sys:get_state and sys:get_status show: the behaviour's, or
 * undefined for one that has none. */
static bool put_state(struct node *n, struct proc *p, uint32_t id, struct buf *out)
{
    const struct behaviour *b = proc_beh(n, p);
    struct gen g = {n, id, p->state};
    if (b->get_state)
        return b->get_state(&g, out);
    return ext_put_atomz(out, "undefined");
}

static bool put_status_state(struct node *n, struct proc *p, uint32_t id, struct buf *out)
{
    const struct behaviour *b = proc_beh(n, p);
    struct gen g = {n, id, p->state};
    if (b->format_status)
        return b->format_status(&g, out);
    return put_state(n, p, id, out);
}

/* {Tag, Reply} to From: the reply is built in n->scratch after the tuple
 * header and the tag, so behaviours append without copying the tag. */
static size_t reply_begin(struct node *n, struct span tag)
{
    buf_reset(&n->scratch);
    ext_put_tuple(&n->scratch, 2);
    buf_put(&n->scratch, tag.p, tag.n);
    return n->scratch.len;
}

/* The reference in a gen call tag: [alias|Ref] (gen:do_call, send_request)
 * or [[alias|Ref]|_] (both shapes gen:reply sends to the alias; OTP
 * lib/stdlib/src/gen.erl, identical in 25, 27 and 29).  False for any other
 * tag (a plain Ref from an older or hand-made caller). */
static bool is_ref_at(const struct cur *c)
{
    uint8_t t;
    return cur_peek_u8(c, &t) &&
           (t == ERL_NEWER_REFERENCE_EXT || t == ERL_NEW_REFERENCE_EXT || t == ERL_REFERENCE_EXT);
}

static bool alias_pair(struct cur *c, struct span *ref)
{
    uint32_t len;
    if (!ext_get_list_header(c, &len) || len != 1 || !ext_atom_eq(c, "alias") ||
        !ext_skip(c, NULL) || !ext_skip(c, ref))
        return false;
    /* the message was walked whole: a reference tag is a whole reference */
    struct cur r = cur_make(ref->p, ref->n);
    return is_ref_at(&r);
}

/* [alias|Ref] as gen:call encodes it: LIST_EXT of one, 'alias', the tail. */
static const uint8_t ALIAS_HEAD[12] = {108, 0, 0, 0, 1, 119, 5, 'a', 'l', 'i', 'a', 's'};


/* The usual tag, by its bytes: *ref is its Ref.  c moves past it. */
static bool alias_tag_fast(struct cur *c, struct span *ref)
{
    struct cur t = *c;
    struct span h;
    if (!cur_span(&t, sizeof ALIAS_HEAD, &h) || !eq_small(h.p, ALIAS_HEAD, sizeof ALIAS_HEAD) ||
        !is_ref_at(&t) || !ext_skip(&t, ref))
        return false;
    *c = t;
    return true;
}

static bool tag_alias(struct span tag, struct span *ref)
{
    struct cur c = cur_make(tag.p, tag.n);
    if (alias_tag_fast(&c, ref) && cur_left(&c) == 0)
        return true;
    c = cur_make(tag.p, tag.n);
    if (alias_pair(&c, ref))
        return true;
    c = cur_make(tag.p, tag.n);
    uint32_t len;
    return ext_get_list_header(&c, &len) && len == 1 && alias_pair(&c, ref);
}

bool gen_reply_by_alias(uint64_t peer_flags, struct span tag, struct span *alias)
{
    return (peer_flags & DFLAG_ALIAS) && tag_alias(tag, alias);
}

/* Which sys:get_state reply the caller's release expects.  stdlib's sys.erl
 * get_state/1,2 take a bare State up to OTP 25 and {ok, State} from OTP 26
 * on (read from the sys.beam of 25.2, 27.3 and 29.1: do_get_state returns
 * Misc, then {ok, Misc}).  Nothing in the handshake tells 25 from 26/27:
 * their flags are the same (0xD07DF7FBD sent by 25.2 and 27.3, captured
 * here).  What differs is the call's own tag: from OTP 26 on, the alias of
 * gen:do_call (erlang:monitor/3 with {alias, demonitor}) is a pid-reference
 * (erts erl_bif_info/bif.c monitor(): erts_make_pid_ref; ERTS_PID_REF_NUMBERS
 * = 5 words on 64-bit, erl_term.h) sent whole in NEWER_REFERENCE_EXT, which
 * every peer accepts since DFLAG_V4_NC became mandatory in 26 (dist.h
 * DFLAG_DIST_MANDATORY_26); OTP 25 sends it with 3 words (measured: 25.2 -> 3,
 * 27.3 and 29.1 -> 5).  OTP 28+ also say so in the handshake:
 * DFLAG_ALTACT_SIG (dist.h, new in 28; 29.1 sends it). */
bool gen_sys_state_wrapped(uint64_t peer_flags, struct span tag)
{
    if (peer_flags & DFLAG_ALTACT_SIG)
        return true;
    struct span ref;
    if (!tag_alias(tag, &ref))
        return false;
    struct cur r = cur_make(ref.p, ref.n);
    struct ext_ref x;
    return ext_get_ref(&r, &x) && x.len > 3;
}

/* The flags of the node a From pid lives on (0 when unknown); *pid gets
 * the pid decoded (pid->node 0 when it is not a remote pid). */
static uint64_t caller_pid_flags(struct node *n, struct span from, struct epid *pid)
{
    struct cur c = cur_make(from.p, from.n);
    if (!node_get_pid(n, &c, pid) || pid->node == 0) {
        pid->node = 0;
        return 0;
    }
    struct peer *p = node_peer(n, pid->node);
    return p ? p->flags : 0;
}

static uint64_t caller_flags(struct node *n, struct span from)
{
    struct epid pid;
    return caller_pid_flags(n, from, &pid);
}

/* {Tag, Reply} to the caller: to its alias when it has one, as gen:reply
 * does (a reply after the caller's timeout is then dropped by its node),
 * else to From's pid. */
static void reply_send_known(struct node *n, uint32_t id, struct span from, struct span tag,
                             struct span known)
{
    struct span msg = {n->scratch.data, n->scratch.len};
    struct span alias = known;
    struct epid self, to;
    uint64_t flags = caller_pid_flags(n, from, &to);
    if (known.n ? (flags & DFLAG_ALIAS) != 0 : gen_reply_by_alias(flags, tag, &alias)) {
        proc_pid(n, id, &self);
        node_send_alias(n, &to, &self, alias, msg);
    } else {
        node_send_raw(n, from, msg);
    }
}

static void reply_send(struct node *n, uint32_t id, struct span from, struct span tag)
{
    reply_send_known(n, id, from, tag, (struct span){0});
}

/* sys messages, answered as sys.erl's handle_system_msg would. */
static void system_msg(struct node *n, struct proc *p, uint32_t id, struct span from,
                       struct span tag, struct cur msg)
{
    struct buf *out = &n->scratch;
    struct cur m = msg;
    uint32_t ar;
    reply_begin(n, tag);
    if (ext_atom_eq(&m, "get_state")) {
        if (gen_sys_state_wrapped(caller_flags(n, from), tag)) {
            ext_put_tuple(out, 2);
            ext_put_atomz(out, "ok");
        }
        put_state(n, p, id, out);
        reply_send(n, id, from, tag);
        return;
    }
    if (ext_atom_eq(&m, "suspend") || ext_atom_eq(&m, "resume")) {
        ext_put_atomz(out, "ok");
        reply_send(n, id, from, tag);
        return;
    }
    if (ext_atom_eq(&m, "get_status")) {
        struct epid self;
        proc_pid(n, id, &self);
        ext_put_tuple(out, 4);
        ext_put_atomz(out, "status");
        node_put_pid(n, out, &self);
        ext_put_tuple(out, 2);
        ext_put_atomz(out, "module");
        ext_put_atomz(out, "gen_server");
        ext_put_list_header(out, 5);
        ext_put_nil(out);               /* process dictionary */
        ext_put_atomz(out, "running");  /* sys state */
        node_put_pid(n, out, &self);    /* parent: none, so itself */
        ext_put_nil(out);               /* debug options */
        ext_put_list_header(out, 1);    /* formatted status */
        ext_put_tuple(out, 2);
        ext_put_atomz(out, "data");
        ext_put_list_header(out, 1);
        ext_put_tuple(out, 2);
        buf_put(out, "k\0\5State", 8); /* "State" as STRING_EXT */
        put_status_state(n, p, id, out);
        ext_put_nil(out);
        ext_put_nil(out);
        ext_put_nil(out);
        reply_send(n, id, from, tag);
        return;
    }
    if (ext_get_tuple(&m, &ar)) {
        if (ar == 2 && ext_atom_eq(&m, "terminate")) {
            struct span reason;
            ext_skip(&m, NULL);
            if (!ext_skip(&m, &reason))
                return;
            if (proc_beh(n, p)->flags & GEN_SYSTEM) {
                /* system processes outlive their callers here */
                ext_put_tuple(out, 2);
                ext_put_atomz(out, "error");
                ext_put_atomz(out, "not_allowed");
                reply_send(n, id, from, tag);
                return;
            }
            ext_put_atomz(out, "ok");
            /* sys.erl replies before terminating: the caller's own monitor
             * must not fire first.  Nothing leaves the node before the loop
             * turn ends, and by then proc_exit has told the spawner and
             * every local watcher (a name table drops it). */
            reply_send(n, id, from, tag);
            proc_exit(n, id, reason);
            return;
        }
        if (ar == 2 && ext_atom_eq(&m, "debug")) {
            ext_put_atomz(out, "ok");
            reply_send(n, id, from, tag);
            return;
        }
        if (ar == 2 && ext_atom_eq(&m, "replace_state")) {
            /* A fun cannot run here. */
            ext_put_tuple(out, 2);
            ext_put_atomz(out, "error");
            ext_put_tuple(out, 3);
            ext_put_atomz(out, "callback_failed");
            ext_put_tuple(out, 2);
            ext_put_atomz(out, "kv_cnode");
            ext_put_atomz(out, "system_replace_state");
            ext_put_tuple(out, 2);
            ext_put_atomz(out, "error");
            ext_put_atomz(out, "notsup");
            reply_send(n, id, from, tag);
            return;
        }
    }
    /* {error, {unknown_system_msg, Msg}} */
    ext_put_tuple(out, 2);
    ext_put_atomz(out, "error");
    ext_put_tuple(out, 2);
    ext_put_atomz(out, "unknown_system_msg");
    buf_put(out, msg.p + msg.pos, cur_left(&msg));
    reply_send(n, id, from, tag);
}

/* {From, Tag} with From a pid. */
static bool get_from(struct cur *c, struct span *from, struct span *tag)
{
    uint32_t ar;
    if (!ext_get_tuple(c, &ar) || ar != 2 || !ext_is_pid(c))
        return false;
    return ext_skip(c, from) && ext_skip(c, tag);
}

/* {'$gen_call', {From, Tag}, Req} as gen:call sends it, read by its bytes:
 * the 15 bytes up to From, From a pid, Tag [alias|Ref] or any term; Req is
 * the rest (the message is one walked term).  False: the general path. */
static const uint8_t CALL_HEAD[15] = {104, 3, 119, 9, '$', 'g', 'e', 'n', '_', 'c', 'a', 'l', 'l',
                                      104, 2};

/* *alias: the Ref of an [alias|Ref] tag (found here, so the reply need
 * not look again), else empty. */
static bool call_fast(struct span msg, struct span *from, struct span *tag, struct span *req,
                      struct span *alias)
{
    struct cur c = cur_make(msg.p, msg.n);
    struct span h;
    if (!cur_span(&c, sizeof CALL_HEAD, &h) || !eq_small(h.p, CALL_HEAD, sizeof CALL_HEAD) ||
        !ext_is_pid(&c) || !ext_skip(&c, from))
        return false;
    const uint8_t *t0 = cur_ptr(&c);
    if (!alias_tag_fast(&c, alias)) {
        *alias = (struct span){0};
        if (!ext_skip(&c, NULL))
            return false;
    }
    tag->p = t0;
    tag->n = (size_t)(cur_ptr(&c) - t0);
    req->p = cur_ptr(&c);
    req->n = cur_left(&c);
    return req->n > 0;
}

/* Write back the state a callback may have replaced, unless the process
 * ended meanwhile (its slot may hold another one by now). */
static inline bool writeback(struct node *n, uint32_t id, uint32_t serial, const struct gen *g)
{
    struct proc *p = &n->procs->v[id];
    if (!p->beh || p->serial != serial || p->exiting)
        return false;
    p->state = g->state;
    return true;
}

static enum gen_result unknown_call(struct buf *out)
{
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "error") &&
                   ext_put_atomz(out, "unknown_call")
               ? GEN_REPLY
               : GEN_NOREPLY;
}

void gen_deliver(struct node *n, uint32_t id, struct span msg)
{
    struct proc *p = proc_by_id(n, id);
    if (!p)
        return;
    const struct behaviour *b = proc_beh(n, p);
    uint32_t serial = p->serial;
    void *state = p->state;
    struct gen g = {n, id, state};
    struct span stop = {0};
    enum gen_result r;
    struct cur c = cur_make(msg.p, msg.n);
    uint32_t ar = 0;
    struct span from, tag, req, alias = {0};
    bool call = call_fast(msg, &from, &tag, &req, &alias);
    if (!call && !ext_get_tuple(&c, &ar))
        goto info;
    if (!call && ar == 3 && ext_atom_eq(&c, "$gen_call")) {
        ext_skip(&c, NULL);
        if (!get_from(&c, &from, &tag) || !ext_skip(&c, &req))
            goto info;
        call = true;
    }
    if (call) {
        size_t mark = reply_begin(n, tag);
        r = b->handle_call ? b->handle_call(&g, cur_make(req.p, req.n), &n->scratch, &stop)
                           : unknown_call(&n->scratch);
        /* (a lookup leaves the state as it was: one compare) */
        if ((g.state != state && !writeback(n, id, serial, &g)) || r == GEN_NOREPLY ||
            n->scratch.len == mark)
            return;
        reply_send_known(n, id, from, tag, alias);
        if (r == GEN_STOP)
            proc_exit(n, id, stop);
        return;
    }
    if (ar == 2 && ext_atom_eq(&c, "$gen_cast")) {
        ext_skip(&c, NULL);
        if (!ext_skip(&c, &req))
            goto info;
        if (!b->handle_cast) {
            LOGD("cast to a process that takes none ignored");
            return;
        }
        r = b->handle_cast(&g, cur_make(req.p, req.n), &stop);
        if (writeback(n, id, serial, &g) && r == GEN_STOP)
            proc_exit(n, id, stop);
        return;
    }
    if (ar == 3 && ext_atom_eq(&c, "system")) {
        ext_skip(&c, NULL);
        if (!get_from(&c, &from, &tag) || !ext_skip(&c, &req))
            goto info;
        system_msg(n, p, id, from, tag, cur_make(req.p, req.n));
        return;
    }
info:
    if (!b->handle_info) {
        LOGD("process <0.%u.%u>: unexpected message ignored", id, p->serial);
        return;
    }
    r = b->handle_info(&g, msg, NULL, &stop);
    if (writeback(n, id, serial, &g) && r == GEN_STOP)
        proc_exit(n, id, stop);
}

/* --- test seams --- */

enum gen_result gen_call_direct(struct node *n, uint32_t id, struct cur req, struct buf *out)
{
    struct proc *p = proc_by_id(n, id);
    if (!p)
        return GEN_NOREPLY;
    const struct behaviour *b = proc_beh(n, p);
    uint32_t serial = p->serial;
    struct gen g = {n, id, p->state};
    struct span stop = {0};
    enum gen_result r = b->handle_call ? b->handle_call(&g, req, out, &stop) : unknown_call(out);
    if (writeback(n, id, serial, &g) && r == GEN_STOP)
        proc_exit(n, id, stop);
    return r;
}

void gen_cast_direct(struct node *n, uint32_t id, struct cur req)
{
    struct proc *p = proc_by_id(n, id);
    if (!p || !proc_beh(n, p)->handle_cast)
        return;
    uint32_t serial = p->serial;
    struct gen g = {n, id, p->state};
    struct span stop = {0};
    enum gen_result r = proc_beh(n, p)->handle_cast(&g, req, &stop);
    if (writeback(n, id, serial, &g) && r == GEN_STOP)
        proc_exit(n, id, stop);
}

bool gen_state_direct(struct node *n, uint32_t id, struct buf *out)
{
    struct proc *p = proc_by_id(n, id);
    return p && put_state(n, p, id, out);
}

/* --- what a behaviour may ask of the runtime --- */

uint32_t gen_spawn(struct gen *g, const struct behaviour *b, void *arg, struct epid *pid)
{
    uint32_t id = proc_spawn(g->n, b, arg);
    if (id == PROC_NONE)
        return GEN_NONE;
    if (pid)
        proc_pid(g->n, id, pid);
    return id;
}

void gen_monitor_child(struct gen *g, const struct epid *pid, uint32_t tag)
{
    if (pid->node == 0 && proc_get(g->n, pid))
        proc_spawn_monitor(g->n, pid->id, g->self, tag);
}

void gen_demonitor_child(struct gen *g, const struct epid *pid)
{
    struct proc *p = proc_get(g->n, pid);
    if (p && p->watcher == g->self + 1)
        p->watcher = 0;
}

bool gen_alive(struct gen *g, const struct epid *pid)
{
    return pid->node != 0 || proc_get(g->n, pid) != NULL;
}

void gen_exit(struct gen *g, const struct epid *pid, struct span reason)
{
    if (pid->node == 0 && proc_get(g->n, pid))
        proc_exit(g->n, pid->id, reason);
}

void gen_self_pid(struct gen *g, struct epid *out) { proc_pid(g->n, g->self, out); }

int gen_register(struct gen *g, const char *name) { return proc_register(g->n, name, g->self); }

uint32_t gen_whereis(struct gen *g, const char *name)
{
    uint32_t id = proc_whereis(g->n, name);
    return id == PROC_NONE ? GEN_NONE : id;
}

bool gen_monitor(struct gen *g, const struct epid *pid, uint32_t tag, struct mon **hold)
{
    struct node *n = g->n;
    struct mon *m = mon_alloc(n);
    if (!m)
        return false;
    node_make_ref(n, &m->ref);
    proc_pid(n, g->self, &m->watcher);
    m->target = *pid;
    m->tag = tag;
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
    *hold = m;
    struct peer *p = m->peer;
    if (p && p->up) {
        if (node_peer_takes_monitors(p)) {
            m->sent = true;
            node_send_monitor_p(n, p, &m->watcher, &m->target, &m->ref);
        }
    } else if (p && !p->conn && !node_connect(n, p)) {
        /* Unreachable.  A connect that failed at once already fired the
         * monitor (noconnection); otherwise fire it here.  Either way m
         * must not be touched after this. */
        struct eref ref = m->ref;
        if (mon_find(n, &ref) == m)
            mon_fire(n, m, R_NOCONNECTION);
    }
    return true;
}

void gen_demonitor(struct gen *g, struct mon *m)
{
    if (m->peer && m->sent && m->peer->up)
        node_send_demonitor_p(g->n, m->peer, &m->watcher, &m->target, &m->ref);
    mon_remove(g->n, m);
}

const struct eref *gen_monitor_ref(const struct mon *m) { return &m->ref; }

void gen_send(struct gen *g, const struct epid *to, struct span msg)
{
    if (to->node != 0)
        node_send(g->n, to, msg);
    else if (to->id != g->self && proc_get(g->n, to))
        gen_deliver(g->n, to->id, msg); /* local: now, as a nested delivery */
    else
        LOGD("send to itself or a dead local process dropped");
}

void gen_make_ref(struct gen *g, struct eref *r) { node_make_ref(g->n, r); }

bool gen_put_pid(struct gen *g, struct buf *b, const struct epid *p)
{
    return node_put_pid(g->n, b, p);
}

bool gen_put_ref(struct gen *g, struct buf *b, const struct eref *r)
{
    return node_put_ref(g->n, b, r);
}

bool gen_get_pid(struct gen *g, struct cur *c, struct epid *p) { return node_get_pid(g->n, c, p); }

bool gen_get_ref(struct gen *g, struct cur *c, struct eref *r) { return node_get_ref(g->n, c, r); }

uint64_t gen_seed(struct gen *g) { return g->n->hash_seed; }

struct buf *gen_tmp(struct gen *g) { return &g->n->canon; }
