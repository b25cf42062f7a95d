/* gen.h - the gen_server protocol seen from a process on this node:
 * {'$gen_call', {From, Tag}, Req}, {'$gen_cast', Req}, {system, From, Msg}
 * and plain messages.  Owns: decoding those envelopes, replies {Tag, Reply}
 * (Tag kept byte-exact; sent to the alias of an [alias|Ref] tag), the sys protocol
 * (get_state, get_status, terminate, suspend/resume, debug).  Calls the
 * behaviour of the process's kind; never touches a socket. */
#ifndef KV_GEN_H
#define KV_GEN_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "runtime/node.h"

/* Behaviour results. */
enum gen_result { GEN_REPLY = 0, GEN_NOREPLY = 1, GEN_STOP = 2 };

/* Reply shapes per caller, from the caller's handshake flags and the tag of
 * its call (raw term bytes).  gen_reply_by_alias: reply by ALIAS_SEND to
 * *alias (the ref in an [alias|Ref] tag), as gen:reply does, when the peer
 * takes it (DFLAG_ALIAS).  gen_sys_state_wrapped: sys:get_state answers
 * {ok, State} (OTP 26+) rather than a bare State (OTP 25); see gen.c. */
bool gen_reply_by_alias(uint64_t peer_flags, struct span tag, struct span *alias);
bool gen_sys_state_wrapped(uint64_t peer_flags, struct span tag);

/* A message arrived for local process id (term without 131). */
void gen_deliver(struct node *n, uint32_t id, struct span msg);

#endif
