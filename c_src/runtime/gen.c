/* gen.c - gen_server envelopes, replies and system messages (see gen.h). */
#include "runtime/gen.h"

#include <ei.h>

#include "services/bucket.h"
#include "base/log.h"
#include "proto/hs.h"
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

/* The reference in a gen call tag: [alias|Ref] (gen:do_call, send_request)
 * or [[alias|Ref]|_] (both shapes gen:reply sends to the alias; OTP
 * lib/stdlib/src/gen.erl, identical in 25, 27 and 29).  False for any other
 * tag (a plain Ref from an older or hand-made caller). */
static bool alias_pair(struct cur *c, struct span *ref)
{
    uint32_t len;
    if (!ext_get_list_header(c, &len) || len != 1 || !ext_atom_eq(c, "alias") ||
        !ext_skip(c, NULL) || !ext_skip(c, ref))
        return false;
    struct cur r = cur_make(ref->p, ref->n);
    struct ext_ref x;
    return ext_get_ref(&r, &x) && cur_left(&r) == 0;
}

static bool tag_alias(struct span tag, struct span *ref)
{
    struct cur c = cur_make(tag.p, tag.n);
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

/* The flags of the node a From pid lives on (0 when unknown). */
static uint64_t caller_flags(struct node *n, struct span from)
{
    struct cur c = cur_make(from.p, from.n);
    struct epid pid;
    if (!node_get_pid(n, &c, &pid) || pid.node == 0)
        return 0;
    struct peer *p = node_peer(n, pid.node);
    return p ? p->flags : 0;
}

/* {Tag, Reply} to the caller: to its alias when it has one, as gen:reply
 * does (a reply after the caller's timeout is then dropped by its node),
 * else to From's pid. */
static void reply_send(struct node *n, uint32_t id, struct span from, struct span tag)
{
    struct span msg = {n->scratch.data, n->scratch.len};
    struct span alias;
    struct epid self;
    if (gen_reply_by_alias(caller_flags(n, from), tag, &alias)) {
        proc_pid(n, id, &self);
        node_send_alias(n, from, &self, alias, msg);
    } else {
        node_send_raw(n, from, msg);
    }
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
        put_state(n, p, id, out);
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
            if (p->kind != PK_BUCKET) {
                /* net_kernel and the registry outlive their callers here */
                ext_put_tuple(out, 2);
                ext_put_atomz(out, "error");
                ext_put_atomz(out, "not_allowed");
                reply_send(n, id, from, tag);
                return;
            }
            ext_put_atomz(out, "ok");
            /* sys.erl replies before terminating: the caller's own monitor
             * must not fire first.  Nothing leaves the node before the loop
             * turn ends, and by then proc_exit has taken the bucket out of
             * the registry. */
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
        reply_send(n, id, from, tag);
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
