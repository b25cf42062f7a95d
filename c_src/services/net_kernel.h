/* net_kernel.h - the net_kernel service: enough of OTP's net_kernel for
 * net_adm:ping/1 ({is_auth, Node} -> yes).  Registered as net_kernel. */
#ifndef KV_NET_KERNEL_H
#define KV_NET_KERNEL_H

#include "runtime/gen.h"

extern const struct behaviour net_kernel_behaviour;

#endif
