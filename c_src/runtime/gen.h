/* gen.h - the behaviour interface: what a served process is (a struct of
 * callbacks, as a gen_server module is) and everything it may ask of the
 * runtime (reply, send, spawn, monitor, register, pids and refs).  A
 * service includes this header and nothing else of the runtime: it never
 * sees a socket, a connection, a peer or the node's tables (struct node is
 * opaque here).
 * gen.c owns the gen_server protocol around the callbacks: decoding
 * {'$gen_call', {From, Tag}, Req}, {'$gen_cast', Req}, {system, From, Msg}
 * and plain messages, replies {Tag, Reply} (Tag kept byte-exact; sent to
 * the alias of an [alias|Ref] tag), the sys protocol (get_state, get_status,
 * terminate, suspend/resume, debug).  proc.c turns monitors and links into
 * {'DOWN', Ref, process, Pid, Reason} and {'EXIT', Pid, Reason} messages. */
#ifndef KV_GEN_H
#define KV_GEN_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "runtime/pid.h"

struct node; /* opaque to behaviours */
struct mon;  /* a monitor handle, opaque to behaviours */

/* Callback results.  GEN_REPLY: the reply is what the callback appended to
 * out; GEN_STOP: reply (calls), then end the process with *stop. */
enum gen_result { GEN_REPLY = 0, GEN_NOREPLY = 1, GEN_STOP = 2 };

/* What a callback gets: the node (opaque), its own process id and its
 * state, which it may replace (written back when the callback returns). */
struct gen {
    struct node *n;
    uint32_t self;
    void *state;
};

/* A DOWN or EXIT message, decoded: handle_info gets it beside the term
 * bytes, so a watcher need not decode what the runtime just encoded. */
enum gen_sig_kind { GEN_SIG_DOWN = 1, GEN_SIG_EXIT = 2 };
struct gen_sig {
    enum gen_sig_kind kind;
    struct eref ref;     /* DOWN: the monitor's reference */
    struct epid pid;     /* DOWN: the process watched; EXIT: the sender */
    struct span reason;  /* term without 131 */
    uint32_t tag;        /* DOWN: what the watcher gave gen_monitor/gen_spawn
                            (the BEAM has no such field: it spares the
                            watcher a ref -> entry map) */
};

/* Flags. */
#define GEN_TRAP_EXIT 0x1 /* exit signals (but kill) arrive as {'EXIT', From, Reason} */
#define GEN_SYSTEM 0x2    /* the node needs it: kill and sys:terminate are refused
                             while the node runs */

struct behaviour {
    const char *name;   /* for logs */
    uint32_t flags;
    /* Start: set g->state from arg.  false: the process is not started. */
    bool (*init)(struct gen *g, void *arg);
    enum gen_result (*handle_call)(struct gen *g, struct cur req, struct buf *out,
                                   struct span *stop);
    enum gen_result (*handle_cast)(struct gen *g, struct cur req, struct span *stop);
    /* Any other message; sig is set for DOWN and EXIT (msg is then that
     * term, in the BEAM's shape), NULL otherwise. */
    enum gen_result (*handle_info)(struct gen *g, struct span msg, const struct gen_sig *sig,
                                   struct span *stop);
    /* The process ends (before any DOWN or EXIT about it is sent): free the
     * state.  May be NULL. */
    void (*terminate)(struct gen *g, struct span reason);
    /* sys:get_state; NULL answers undefined. */
    bool (*get_state)(struct gen *g, struct buf *out);
    /* The State in sys:get_status; NULL uses get_state. */
    bool (*format_status)(struct gen *g, struct buf *out);
};

/* Well-known exit reasons, encoded as atoms (no 131). */
extern const struct span R_NORMAL, R_KILLED, R_KILL, R_NOPROC, R_NOCONNECTION, R_SHUTDOWN;

#define GEN_NONE UINT32_MAX

/* Processes. */
/* Spawn b with arg (b->init runs now); its pid at *pid.  GEN_NONE when
 * not started. */
uint32_t gen_spawn(struct gen *g, const struct behaviour *b, void *arg, struct epid *pid);
/* Watch a local process: the caller gets {'DOWN', Ref, process, Pid,
 * Reason} with sig->tag = tag when it ends, first of all its watchers.
 * The monitor lives in the child's slot (no record, so a million children
 * cost no monitor memory); one such watcher per process, the last call
 * wins.  Meant for what the caller spawned (spawn_monitor). */
void gen_monitor_child(struct gen *g, const struct epid *pid, uint32_t tag);
/* Forget it (no DOWN will come), if the caller is the one watching. */
void gen_demonitor_child(struct gen *g, const struct epid *pid);
/* Whether pid is a live process (a pid of another node counts as alive). */
bool gen_alive(struct gen *g, const struct epid *pid);
/* End local process pid (exit/2 from the caller, but immediate). */
void gen_exit(struct gen *g, const struct epid *pid, struct span reason);
void gen_self_pid(struct gen *g, struct epid *out);
/* register/2 for the calling process: 0, or -1 (taken or no room). */
int gen_register(struct gen *g, const char *name);
/* The process registered as name, or GEN_NONE. */
uint32_t gen_whereis(struct gen *g, const char *name);

/* Monitors: erlang:monitor(process, Pid).  *hold is set before anything
 * can fire: a DOWN may reach handle_info before gen_monitor returns (an
 * unreachable node: noconnection), and the handler then clears *hold.
 * false: no memory or no such node (nothing was made). */
bool gen_monitor(struct gen *g, const struct epid *pid, uint32_t tag, struct mon **hold);
/* erlang:demonitor(Ref): no DOWN will come; m is gone. */
void gen_demonitor(struct gen *g, struct mon *m);
const struct eref *gen_monitor_ref(const struct mon *m);

/* Messages: send to a pid (dropped when unreachable, as the BEAM does). */
void gen_send(struct gen *g, const struct epid *to, struct span msg);
void gen_make_ref(struct gen *g, struct eref *r);

/* Terms that name pids and refs. */
bool gen_put_pid(struct gen *g, struct buf *b, const struct epid *p);
bool gen_put_ref(struct gen *g, struct buf *b, const struct eref *r);
bool gen_get_pid(struct gen *g, struct cur *c, struct epid *p);
bool gen_get_ref(struct gen *g, struct cur *c, struct eref *r);

/* The node's keyed-hash seed (per run), and a buffer for the current
 * callback's own use (canonical keys): valid until the callback returns. */
uint64_t gen_seed(struct gen *g);
struct buf *gen_tmp(struct gen *g);

/* Reply shapes per caller, from the caller's handshake flags and the tag of
 * its call (raw term bytes).  gen_reply_by_alias: reply by ALIAS_SEND to
 * *alias (the ref in an [alias|Ref] tag), as gen:reply does, when the peer
 * takes it (DFLAG_ALIAS).  gen_sys_state_wrapped: sys:get_state answers
 * {ok, State} (OTP 26+) rather than a bare State (OTP 25); see gen.c. */
bool gen_reply_by_alias(uint64_t peer_flags, struct span tag, struct span *alias);
bool gen_sys_state_wrapped(uint64_t peer_flags, struct span tag);

/* --- the runtime's side (node.c, tests) --- */

/* A message arrived for local process id (term without 131). */
void gen_deliver(struct node *n, uint32_t id, struct span msg);
/* Test seams: run process id's handle_call / handle_cast / get_state
 * directly (no envelope, no reply sent; out is appended to). */
enum gen_result gen_call_direct(struct node *n, uint32_t id, struct cur req, struct buf *out);
void gen_cast_direct(struct node *n, uint32_t id, struct cur req);
bool gen_state_direct(struct node *n, uint32_t id, struct buf *out);

#endif
