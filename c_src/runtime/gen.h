/* gen.h - the gen_server protocol seen from a process on this node:
 * {'$gen_call', {From, Tag}, Req}, {'$gen_cast', Req}, {system, From, Msg}
 * and plain messages.  Owns: decoding those envelopes, replies {Tag, Reply}
 * (Tag kept byte-exact, so [alias|Ref] tags work), the sys protocol
 * (get_state, get_status, terminate, suspend/resume, debug).  Calls the
 * behaviour of the process's kind; never touches a socket. */
#ifndef KV_GEN_H
#define KV_GEN_H

#include <stdint.h>

#include "base/buf.h"
#include "runtime/node.h"

/* Behaviour results. */
enum gen_result { GEN_REPLY = 0, GEN_NOREPLY = 1, GEN_STOP = 2 };

/* A message arrived for local process id (term without 131). */
void gen_deliver(struct node *n, uint32_t id, struct span msg);

#endif
