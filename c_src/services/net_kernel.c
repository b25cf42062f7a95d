/* net_kernel.c - the net_kernel service (see net_kernel.h).  Connection
 * set-up itself is the runtime's (node.c); this process only answers the
 * calls other nodes make to net_kernel by name. */
#include "services/net_kernel.h"

#include "base/log.h"
#include "proto/ext.h"

/* {is_auth, Node} -> yes, so net_adm:ping/1 answers pong. */
static enum gen_result netk_call(struct gen *g, struct cur req, struct buf *out,
                                 struct span *stop)
{
    uint32_t ar;
    if (ext_get_tuple(&req, &ar) && ar == 2 && ext_atom_eq(&req, "is_auth"))
        return ext_put_atomz(out, "yes") ? GEN_REPLY : GEN_NOREPLY;
    return ext_put_tuple(out, 2) && ext_put_atomz(out, "error") &&
                   ext_put_atomz(out, "unknown_call")
               ? GEN_REPLY
               : GEN_NOREPLY;
}

/* It traps exits, as OTP's does: an EXIT from a linked peer process is a
 * message, and ignored. */
static enum gen_result netk_info(struct gen *g, struct span msg, const struct gen_sig *sig,
                                 struct span *stop)
{
    if (sig && sig->kind == GEN_SIG_EXIT)
        LOGI("exit signal to net_kernel ignored");
    else
        LOGD("net_kernel: unexpected message ignored");
    return GEN_NOREPLY;
}

const struct behaviour net_kernel_behaviour = {
    .name = "net_kernel",
    .flags = GEN_SYSTEM | GEN_TRAP_EXIT,
    .handle_call = netk_call,
    .handle_info = netk_info,
};
