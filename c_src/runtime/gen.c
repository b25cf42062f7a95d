/* gen.c - gen_server envelopes, replies and system messages (see gen.h). */
#include "runtime/gen.h"

#include <ei.h>

#include "services/bucket.h"
#include "base/log.h"
#include "runtime/proc.h"
#include "services/registry.h"

/* net_kernel: {is_auth, Node} -> yes, so net_adm:ping/1 answers pong. */
static enum gen_result netk_call(struct node *n, uint32_t id, struct cur req, struct buf *out)
{
    uint32_t ar;
    if (ext_get_tuple(&req, &ar) && ar == 2 && ext_atom_eq(&req, "is_auth"))
        return ext_put_atomz(out, "yes") ? GEN_REPLY : GEN_NOREPLY;
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "error") &&
                   ext_put_atomz(out, "unknown_call")
               ? GEN_REPLY
               : GEN_NOREPLY;
}

static enum gen_result do_call(struct node *n, struct proc *p, uint32_t id, struct cur req,
                               struct buf *out, struct span *stop)
{
    switch (p->kind) {
    case PK_NET_KERNEL: return netk_call(n, id, req, out);
    case PK_REGISTRY: return registry_call(n, id, req, out);
    case PK_BUCKET: return bucket_call(n, id, req, out, stop);
    default: return GEN_NOREPLY;
    }
}

static void do_cast(struct node *n, struct proc *p, uint32_t id, struct cur req)
{
    switch (p->kind) {
    case PK_REGISTRY: registry_cast(n, id, req); break;
    case PK_BUCKET: bucket_cast(n, id, req); break;
    default: LOGD("cast to a process that takes none ignored"); break;
    }
}

static bool put_state(struct node *n, struct proc *p, uint32_t id, struct buf *out)
{
    switch (p->kind) {
    case PK_REGISTRY: return registry_state(n, out);
    case PK_BUCKET: return bucket_state(n, p->state, out);
    default: return ext_put_atomz(out, "undefined");
    }
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

static void reply_send(struct node *n, struct span from)
{
    struct span msg = {n->scratch.data, n->scratch.len};
    node_send_raw(n, from, msg);
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
        put_state(n, p, id, out);
        reply_send(n, from);
        return;
    }
    if (ext_atom_eq(&m, "suspend") || ext_atom_eq(&m, "resume")) {
        ext_put_atomz(out, "ok");
        reply_send(n, from);
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
        put_state(n, p, id, out);
        ext_put_nil(out);
        ext_put_nil(out);
        ext_put_nil(out);
        reply_send(n, from);
        return;
    }
    if (ext_get_tuple(&m, &ar)) {
        if (ar == 2 && ext_atom_eq(&m, "terminate")) {
            struct span reason;
            ext_skip(&m, NULL);
            if (!ext_skip(&m, &reason))
                return;
            if (p->kind != PK_BUCKET) {
                /* net_kernel and the registry outlive their callers here */
                ext_put_tuple(out, 2);
                ext_put_atomz(out, "error");
                ext_put_atomz(out, "not_allowed");
                reply_send(n, from);
                return;
            }
            ext_put_atomz(out, "ok");
            /* sys.erl replies before terminating: the caller's own monitor
             * must not fire first.  Nothing leaves the node before the loop
             * turn ends, and by then proc_exit has taken the bucket out of
             * the registry. */
            reply_send(n, from);
            proc_exit(n, id, reason);
            return;
        }
        if (ar == 2 && ext_atom_eq(&m, "debug")) {
            ext_put_atomz(out, "ok");
            reply_send(n, from);
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
            reply_send(n, from);
            return;
        }
    }
    /* {error, {unknown_system_msg, Msg}} */
    ext_put_tuple(out, 2);
    ext_put_atomz(out, "error");
    ext_put_tuple(out, 2);
    ext_put_atomz(out, "unknown_system_msg");
    buf_put(out, msg.p + msg.pos, cur_left(&msg));
    reply_send(n, from);
}

/* {From, Tag} with From a pid. */
static bool get_from(struct cur *c, struct span *from, struct span *tag)
{
    uint32_t ar;
    if (!ext_get_tuple(c, &ar) || ar != 2 || !ext_is_pid(c))
        return false;
    return ext_skip(c, from) && ext_skip(c, tag);
}

void gen_deliver(struct node *n, uint32_t id, struct span msg)
{
    struct proc *p = proc_by_id(n, id);
    if (!p)
        return;
    struct cur c = cur_make(msg.p, msg.n);
    uint32_t ar;
    struct span from, tag, req;
    if (!ext_get_tuple(&c, &ar))
        goto info;
    if (ar == 3 && ext_atom_eq(&c, "$gen_call")) {
        ext_skip(&c, NULL);
        if (!get_from(&c, &from, &tag) || !ext_skip(&c, &req))
            goto info;
        size_t mark = reply_begin(n, tag);
        struct span stop = {0};
        enum gen_result r = do_call(n, p, id, cur_make(req.p, req.n), &n->scratch, &stop);
        if (r == GEN_NOREPLY || n->scratch.len == mark)
            return;
        reply_send(n, from);
        if (r == GEN_STOP)
            proc_exit(n, id, stop);
        return;
    }
    if (ar == 2 && ext_atom_eq(&c, "$gen_cast")) {
        ext_skip(&c, NULL);
        if (!ext_skip(&c, &req))
            goto info;
        do_cast(n, p, id, cur_make(req.p, req.n));
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
    LOGD("process <0.%u.%u>: unexpected message ignored", id, p->serial);
}
