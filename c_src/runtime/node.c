/* node.c - this node (see node.h): start-up (listener, epmd), the
 * acceptor's status decision, the connections' callbacks (conn_ops),
 * routing of decoded signals to processes, and shutdown.  The peer table,
 * pid/ref coding and outgoing signals are peer.c's: processes (proc.c,
 * gen.c) call those and never this file, so calls go one way. */
#include "runtime/node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ei.h>

#include "wire/conn.h"
#include "proto/dist.h"
#include "wire/epmd.h"
#include "runtime/gen.h"
#include "proto/hs.h"
#include "base/log.h"
#include "runtime/proc.h"
#include "wire/tls.h"

/* --- incoming signals --- */

/* The local process a control field names (pid of this node or a
 * registered name); PROC_NONE if none is alive.  *name_idx is set for
 * names. */
static uint32_t resolve_local(struct node *n, struct span t, int *name_idx, bool *foreign)
{
    struct cur c = cur_make(t.p, t.n);
    *name_idx = -1;
    *foreign = false;
    struct span a;
    if (ext_atom_utf8(&c, &a)) { /* the usual case: compare in place */
        for (uint32_t i = 0; a.n < sizeof n->procs->names[i].name && i < n->procs->nnames; i++)
            if (eq_small((const uint8_t *)n->procs->names[i].name, a.p, a.n) &&
                !n->procs->names[i].name[a.n]) {
                *name_idx = (int)i;
                return n->procs->names[i].id;
            }
        return PROC_NONE;
    }
    if (ext_is_atom(&c)) {
        char name[EXT_ATOM_MAX + 1];
        if (!ext_get_atom(&c, name, sizeof name, NULL))
            return PROC_NONE;
        for (uint32_t i = 0; i < n->procs->nnames; i++)
            if (strcmp(n->procs->names[i].name, name) == 0) {
                *name_idx = (int)i;
                return n->procs->names[i].id;
            }
        return PROC_NONE;
    }
    struct epid pid;
    if (!node_get_pid(n, &c, &pid))
        return PROC_NONE;
    if (pid.node != 0) {
        *foreign = true;
        return PROC_NONE;
    }
    return proc_get(n, &pid) ? pid.id : PROC_NONE;
}

/* watcher: m->from, decoded by invalid_signal. */
static void handle_monitor(struct node *n, struct peer *p, const struct dist_msg *m,
                           const struct epid *watcher)
{
    struct eref ref;
    struct cur rc = cur_make(m->ref.p, m->ref.n);
    if (!node_get_ref(n, &rc, &ref))
        return;
    int name_idx;
    bool foreign;
    uint32_t id = resolve_local(n, m->to, &name_idx, &foreign);
    if (id == PROC_NONE) {
        /* noproc at once; From in the exit is what the watcher named, so
         * the fields go back as they came */
        node_send_noproc(n, p, m->to, m->from, m->ref);
        return;
    }
    if (mon_find(n, &ref))
        return; /* duplicate reference: keep the first */
    struct mon *mo = mon_alloc(n);
    if (!mo)
        return;
    mo->ref = ref;
    mo->watcher = *watcher;
    proc_pid(n, id, &mo->target);
    mo->local_target = true;
    mo->peer = p;
    mo->name = (int16_t)name_idx;
    mon_insert(n, mo);
}

static void handle_demonitor(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct eref ref;
    struct cur rc = cur_make(m->ref.p, m->ref.n);
    if (!node_get_ref(n, &rc, &ref))
        return;
    struct mon *mo = mon_find(n, &ref);
    if (mo && mo->local_target && mo->peer == p)
        mon_remove(n, mo);
}

static void handle_monitor_exit(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct eref ref;
    struct cur rc = cur_make(m->ref.p, m->ref.n);
    if (!node_get_ref(n, &rc, &ref))
        return;
    struct mon *mo = mon_find(n, &ref);
    if (mo && !mo->local_target && mo->peer == p)
        mon_fire(n, mo, m->reason);
}

static bool get_two_pids(struct node *n, const struct dist_msg *m, struct epid *from,
                         struct epid *to)
{
    struct cur fc = cur_make(m->from.p, m->from.n), tc = cur_make(m->to.p, m->to.n);
    return node_get_pid(n, &fc, from) && node_get_pid(n, &tc, to);
}

static void handle_link(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct epid from, to;
    if (!get_two_pids(n, m, &from, &to))
        return;
    if (!proc_get(n, &to)) {
        node_send_exit(n, p, &to, &from, R_NOPROC);
        return;
    }
    lnk_add(n, to.id, &from, from.node ? node_peer(n, from.node) : NULL);
}

static void handle_unlink(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct epid from, to;
    if (!get_two_pids(n, m, &from, &to))
        return;
    if (proc_get(n, &to)) {
        struct lnk *l = lnk_find(n, to.id, &from);
        if (l)
            lnk_remove(n, l);
    }
    if (m->has_id)
        node_send_unlink_ack(n, p, m->id, &to, &from);
}

static void handle_exit(struct node *n, struct peer *p, const struct dist_msg *m, bool link)
{
    struct epid from, to;
    if (!get_two_pids(n, m, &from, &to) || !proc_get(n, &to))
        return;
    proc_exit_signal(n, to.id, &from, m->reason, link);
}

/* erts dist.c refuses ("invalid_message": the connection closes) a link,
 * unlink, exit or monitor whose sender is not a process of the sending
 * node, one aimed at a process of a third node, and a monitor of a process
 * on a third node.  So every link and monitor belongs to the peer whose
 * connection it goes with, and a peer cannot make us dial other nodes. */
static const char *invalid_signal(struct node *n, struct peer *p, const struct dist_msg *m,
                                  struct epid *from)
{
    struct epid pid;
    struct cur c = cur_make(m->from.p, m->from.n);
    switch (m->kind) {
    case DK_LINK:
    case DK_UNLINK:
    case DK_UNLINK_ACK:
    case DK_EXIT:
    case DK_EXIT2:
    case DK_MONITOR:
    case DK_DEMONITOR:
        if (!node_get_pid(n, &c, from) || from->node != p->idx)
            return "sender is not a process of the peer";
        break;
    default:
        return NULL;
    }
    c = cur_make(m->to.p, m->to.n);
    if (ext_is_pid(&c) && (!node_get_pid(n, &c, &pid) || pid.node != 0))
        return "target is a process of another node";
    return NULL;
}

/* A decoded frame arrived from an authenticated peer (conn_ops.frame). */
static void node_handle(struct node *n, struct peer *p, const struct dist_msg *m)
{
    struct epid from; /* the sender, for the kinds invalid_signal checks */
    const char *bad = invalid_signal(n, p, m, &from);
    if (bad) {
        LOGW("connection to %s (%s): %s (control operation %d), disconnecting", p->name,
             p->conn ? p->conn->addr : "?", bad, m->op);
        if (p->conn)
            conn_close(p->conn, NULL);
        return;
    }
    switch (m->kind) {
    case DK_SEND: {
        struct epid to;
        struct cur tc = cur_make(m->to.p, m->to.n);
        if (node_get_pid(n, &tc, &to) && proc_get(n, &to))
            gen_deliver(n, to.id, m->msg);
        break; /* unknown or dead pid: dropped, as the BEAM does */
    }
    case DK_REG_SEND: {
        int name_idx;
        bool foreign;
        uint32_t id = resolve_local(n, m->to, &name_idx, &foreign);
        if (id != PROC_NONE)
            gen_deliver(n, id, m->msg);
        else
            LOGD("message to an unregistered name dropped");
        break;
    }
    case DK_MONITOR: handle_monitor(n, p, m, &from); break;
    case DK_DEMONITOR: handle_demonitor(n, p, m); break;
    case DK_MONITOR_EXIT: handle_monitor_exit(n, p, m); break;
    case DK_LINK: handle_link(n, p, m); break;
    case DK_UNLINK: handle_unlink(n, p, m); break;
    case DK_UNLINK_ACK: break;
    case DK_EXIT: handle_exit(n, p, m, true); break;
    case DK_EXIT2: handle_exit(n, p, m, false); break;
    case DK_GROUP_LEADER: break;
    }
}

/* --- connection life --- */

void node_conn_status(struct node *n, struct conn *c)
{
    const char *name = c->hs.peer_name;
    if (strcmp(name, n->name) == 0) {
        conn_set_status(c, "not_allowed");
        return;
    }
    struct peer *p = node_peer_find(n, name); /* lookup only: no state per stranger */
    if (!p || !p->conn || p->conn == c) {
        conn_set_status(c, "ok");
        return;
    }
    if (p->up) {
        conn_set_status(c, "alive");
        return;
    }
    /* Simultaneous connect: the node with the greater name keeps its own
     * outgoing attempt (dist_util's rule). */
    if (strcmp(n->name, name) > 0) {
        conn_set_status(c, "nok");
        return;
    }
    struct conn *old = p->conn;
    conn_set_status(c, "ok_simultaneous");
    p->conn = NULL; /* so closing old is not a nodedown */
    conn_move_output(old, c);
    old->peer = NULL;
    conn_close(old, NULL);
    c->peer = p;
    p->conn = c;
}

void node_conn_up(struct node *n, struct conn *c)
{
    struct peer *p = c->peer;
    if (!c->outgoing) {
        p = node_peer_get(n, c->hs.peer_name); /* proven now: intern */
        if (!p) {
            conn_close(c, "peer table full");
            return;
        }
        if (p->conn && p->conn != c) {
            struct conn *old = p->conn;
            if (old->state == CS_UP || p->up) {
                conn_close(old, "replaced by a new connection from the same node");
            } else {
                /* our own attempt still pending: its queued frames move here */
                p->conn = NULL;
                conn_move_output(old, c);
                old->peer = NULL;
                conn_close(old, NULL);
            }
        }
        c->peer = p;
        p->conn = c;
    }
    p->up = true;
    p->flags = c->hs.peer_flags;
    p->creation = c->hs.peer_creation;
    LOGI("node %s up (%s, %s)", p->name, c->addr, c->outgoing ? "outgoing" : "incoming");
    proc_peer_up(n, p);
}

static void on_conn_connecting(void *owner, struct conn *c)
{
    struct peer *p = c->peer;
    p->conn = c;
    p->up = false;
}

void node_conn_down(struct node *n, struct conn *c)
{
    struct peer *p = c->peer;
    if (!p || p->conn != c)
        return;
    bool was_up = p->up;
    p->conn = NULL;
    p->up = false;
    if (was_up)
        LOGI("node %s down", p->name);
    proc_peer_down(n, p);
    node_peer_release(n, p);
}

static void on_conn_up(void *owner, struct conn *c) { node_conn_up(owner, c); }
static void on_conn_down(void *owner, struct conn *c) { node_conn_down(owner, c); }
static void on_conn_status(void *owner, struct conn *c) { node_conn_status(owner, c); }
static void on_conn_frame(void *owner, struct conn *c, const struct dist_msg *m)
{
    node_handle(owner, c->peer, m);
}
/* What every connection of this node reports through (n->wire.ops). */
static const struct conn_ops node_conn_ops = {
    .connecting = on_conn_connecting,
    .up = on_conn_up,
    .down = on_conn_down,
    .frame = on_conn_frame,
    .status = on_conn_status,
};

/* --- listener --- */

static void resume_accept(struct loop *l, uint64_t id, void *data)
{
    struct node *n = data;
    if (!n->stopping && n->listen_fd >= 0)
        loop_mod_fd(l, n->listen_fd, LOOP_READ);
}

static void on_accept(struct loop *l, int fd, int ev, void *data)
{
    struct node *n = data;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int cfd = accept4(fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The pending connection stays queued and the listener stays
                 * readable: pause accepting for 100 ms instead of spinning. */
                static uint64_t last_log;
                uint64_t now = loop_now(l);
                if (!last_log || now - last_log >= 10000) {
                    last_log = now;
                    LOGW("cannot accept connections: %s; pausing accept (100 ms at a time)",
                         strerror(errno));
                }
                loop_mod_fd(l, fd, 0);
                loop_timer_add(l, 100, resume_accept, n);
            }
            return;
        }
        if (n->stopping || n->wire.nconns >= n->cfg->max_connections) {
            char addr[80];
            LOGW("connection from %s refused: --max-connections %u reached",
                 conn_addr_str((struct sockaddr *)&sa, addr, sizeof addr),
                 n->cfg->max_connections);
            close(cfd);
            continue;
        }
        /* Never refused for wrong digests: the brake holds verdicts (conn.c). */
        conn_accept(&n->wire, cfd, (struct sockaddr *)&sa);
    }
}

/* Dual stack: one IPv6 socket that takes IPv4 too (as mapped addresses);
 * IPv4 only when the host has no IPv6 at all. */
static int listen_socket(struct node *n, int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
        sa->sin6_family = AF_INET6;
        sa->sin6_addr = in6addr_any;
        sa->sin6_port = htons((uint16_t)n->cfg->port);
        sl = sizeof *sa;
    } else {
        struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
        sa->sin_family = AF_INET;
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
        sa->sin_port = htons((uint16_t)n->cfg->port);
        sl = sizeof *sa;
    }
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    n->port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                       : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static int listen_on(struct node *n)
{
    int fd = listen_socket(n, AF_INET6);
    if (fd < 0 && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL || errno == EPROTONOSUPPORT)) {
        LOGW("no IPv6 on this host (%s): listening on IPv4 only", strerror(errno));
        fd = listen_socket(n, AF_INET);
    }
    if (fd < 0)
        return -1;
    n->listen_fd = fd;
    return loop_add_fd(n->loop, fd, LOOP_READ, on_accept, n);
}

/* --- epmd registration --- */

static uint16_t epmd_port_env(void)
{
    const char *e = getenv("ERL_EPMD_PORT");
    int p = e ? atoi(e) : 0;
    return (p > 0 && p < 65536) ? (uint16_t)p : EPMD_DEFAULT_PORT;
}

/* epmd on this host: over IPv6 (::1) with --inet6, as erl_epmd registers
 * an inet6_tcp node; 127.0.0.1 otherwise, or when ::1 does not answer. */
static int epmd_dial(const struct node *n)
{
    for (int v6 = n->cfg->inet6; v6 >= 0; v6--) {
        int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        struct sockaddr_storage ss = {0};
        socklen_t sl;
        if (v6) {
            struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
            sa->sin6_family = AF_INET6;
            sa->sin6_addr = in6addr_loopback;
            sa->sin6_port = htons(epmd_port_env());
            sl = sizeof *sa;
        } else {
            struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
            sa->sin_family = AF_INET;
            sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            sa->sin_port = htons(epmd_port_env());
            sl = sizeof *sa;
        }
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&ss, sl) == 0)
            return fd;
        close(fd);
    }
    return -1;
}

static void start_epmd_daemon(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        char port[16];
        snprintf(port, sizeof port, "%u", epmd_port_env());
        setenv("ERL_EPMD_PORT", port, 1);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("epmd", "epmd", "-daemon", (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

/* Register; 0 ok, 1 name taken, -1 epmd unreachable or garbage. */
static int epmd_register(struct node *n, uint32_t *creation)
{
    int fd = epmd_dial(n);
    if (fd < 0)
        return -1;
    struct buf req;
    buf_init(&req);
    epmd_enc_alive2(&req, n->port, n->cfg->alive);
    ssize_t w = write(fd, req.data, req.len);
    buf_free(&req);
    if (w < 0) {
        close(fd);
        return -1;
    }
    uint8_t resp[16];
    size_t got = 0;
    uint8_t result = 1;
    for (;;) {
        ssize_t r = read(fd, resp + got, sizeof resp - got);
        if (r <= 0) {
            close(fd);
            return -1;
        }
        got += (size_t)r;
        long k = epmd_dec_alive2_resp(resp, got, &result, creation);
        if (k < 0) {
            close(fd);
            return -1;
        }
        if (k > 0)
            break;
        if (got == sizeof resp) {
            close(fd);
            return -1;
        }
    }
    if (result != 0) {
        close(fd);
        return 1;
    }
    n->epmd_fd = fd;
    return 0;
}

static void on_epmd(struct loop *l, int fd, int ev, void *data);

static void epmd_retry(struct loop *l, uint64_t id, void *data)
{
    struct node *n = data;
    n->epmd_timer = 0;
    if (n->stopping)
        return;
    uint32_t creation;
    int r = epmd_register(n, &creation);
    if (r == 0) {
        LOGI("registered with epmd again as %s (port %u)", n->cfg->alive, n->port);
        loop_add_fd(l, n->epmd_fd, LOOP_READ, on_epmd, n);
        return;
    }
    if (r < 0)
        start_epmd_daemon();
    n->epmd_timer = loop_timer_add(l, 1000, epmd_retry, n);
}

/* The registration socket is only ever read for EOF: epmd went away. */
static void on_epmd(struct loop *l, int fd, int ev, void *data)
{
    struct node *n = data;
    uint8_t tmp[64];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r > 0 || (r < 0 && errno == EAGAIN))
        return;
    LOGW("lost the epmd connection; registering again");
    loop_del_fd(l, fd);
    close(fd);
    n->epmd_fd = -1;
    n->epmd_timer = loop_timer_add(l, 200, epmd_retry, n);
}

/* --- start / stop --- */

static void before_sleep(struct loop *l, void *data)
{
    struct node *n = data;
    conn_flush_dirty(&n->wire);
    conn_reap(&n->wire);
    node_peers_sweep(n);
}

/* Identity and tables, no I/O; shared by node_start and node_init_bare.
 * seed NULL: a random hash seed. */
static int node_init_tables(struct node *n, const struct node_opts *cfg, struct loop *l,
                            const uint64_t *seed)
{
    memset(n, 0, sizeof *n);
    n->cfg = cfg;
    n->loop = l;
    n->listen_fd = n->epmd_fd = -1;
    snprintf(n->name, sizeof n->name, "%s", cfg->name);
    ext_put_atom(&n->atom, n->name, strlen(n->name));
    n->lim.max_depth = cfg->max_depth;
    n->lim.max_terms = cfg->max_message_bytes; /* a term is at least a byte */
    if (seed)
        n->hash_seed = *seed;
    else if (RAND_bytes((unsigned char *)&n->hash_seed, sizeof n->hash_seed) != 1)
        return 1;
    brake_init(&n->wire.brake, n->hash_seed);
    n->cappeers = 64;
    n->peers = calloc(n->cappeers, sizeof *n->peers);
    n->npeers = 1; /* index 0 is this node */
    n->peer_hash_cap = 4096;
    n->peer_hash = calloc(n->peer_hash_cap, sizeof *n->peer_hash);
    n->procs = proc_table_new();
    if (!n->peers || !n->peer_hash || !n->procs)
        return 1;
    struct conn_host *w = &n->wire;
    w->loop = l;
    w->ops = &node_conn_ops;
    w->owner = n;
    w->name = n->name;
    w->cookie = cfg->cookie;
    w->ticktime = cfg->ticktime;
    w->setuptime_ms = cfg->setuptime_ms;
    w->max_message_bytes = cfg->max_message_bytes;
    w->max_out_bytes = cfg->max_out_bytes;
    w->lim = &n->lim;
    w->tls_verify_peer = cfg->tls_verify_peer;
    w->inet6 = cfg->inet6;
    buf_reserve(&n->scratch, 64 * 1024);
    return 0;
}

/* Test and fuzz seam: a node with its tables but no listener, epmd, TLS
 * or processes.  Connections come from conn_new_up (conn.h). */
int node_init_bare(struct node *n, const struct node_opts *cfg, struct loop *l,
                   uint32_t creation, uint64_t seed)
{
    if (node_init_tables(n, cfg, l, &seed) != 0)
        return 1;
    n->creation = n->wire.creation = creation;
    return 0;
}

int node_start(struct node *n, const struct node_opts *cfg, struct loop *l)
{
    if (node_init_tables(n, cfg, l, NULL) != 0)
        return 1;
    if (cfg->tls_cert) {
        char err[512];
        struct tls_opts to = {cfg->tls_cert, cfg->tls_key, cfg->tls_cacert, cfg->tls_verify_peer,
                              cfg->tls_min_version};
        if (tls_global_init(&n->wire, &to, err, sizeof err) < 0) {
            fprintf(stderr, "kv_cnode: %s\n", err);
            return 2;
        }
        n->wire.tls = true;
    }
    /* Room for --max-connections sockets and a few more (listener, epmd,
     * signals, stdio): raise the soft fd limit towards the hard one. */
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->max_connections + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want) ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (listen_on(n) < 0) {
        fprintf(stderr, "kv_cnode: cannot listen on port %u: %s\n", cfg->port, strerror(errno));
        return 1;
    }
    int r = epmd_register(n, &n->creation);
    if (r < 0) {
        start_epmd_daemon();
        for (int i = 0; i < 50 && r < 0; i++) {
            struct timespec ts = {0, 100 * 1000000};
            nanosleep(&ts, NULL);
            r = epmd_register(n, &n->creation);
        }
    }
    if (r == 1) {
        fprintf(stderr, "kv_cnode: the name %s is already in use on this host (epmd)\n",
                cfg->alive);
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "kv_cnode: cannot register with epmd on port %u\n", epmd_port_env());
        return 1;
    }
    n->wire.creation = n->creation;
    loop_add_fd(l, n->epmd_fd, LOOP_READ, on_epmd, n);
    loop_set_before_sleep(l, before_sleep, n);
    LOGI("node %s up on port %u (creation %u)", n->name, n->port, n->creation);
    for (int i = 0; i < cfg->nconnect; i++) {
        struct peer *p = node_peer_get(n, cfg->connect[i]);
        if (!p || !node_connect(n, p))
            LOGW("cannot connect to %s", cfg->connect[i]);
    }
    return 0;
}

void node_shutdown(struct node *n)
{
    n->stopping = true;
    LOGI("shutting down");
    /* ordinary processes first, then the system ones (GEN_SYSTEM) that
     * may watch them */
    struct proc_table *t = n->procs;
    for (uint32_t id = 0; id < t->n; id++)
        if (t->v[id].beh && !(proc_beh(n, &t->v[id])->flags & GEN_SYSTEM))
            proc_exit(n, id, R_SHUTDOWN);
    for (uint32_t id = 0; id < t->n; id++)
        if (t->v[id].beh)
            proc_exit(n, id, R_SHUTDOWN);
    /* Flush what watchers must be told, for up to a second. */
    uint64_t deadline = loop_clock_ms() + 1000;
    for (;;) {
        conn_flush_dirty(&n->wire);
        conn_reap(&n->wire);
        bool pending = false;
        for (struct conn *c = n->wire.conns; c; c = c->next)
            if (c->state == CS_UP && c->out.head) {
                pending = true;
                c->dirty = false;
            }
        if (!pending || loop_clock_ms() >= deadline)
            break;
        struct pollfd pf[256];
        int np = 0;
        for (struct conn *c = n->wire.conns; c && np < 256; c = c->next)
            if (c->state == CS_UP && c->out.head) {
                pf[np].fd = c->fd;
                pf[np].events = POLLOUT;
                np++;
                /* requeue for the next flush */
                c->dirty = true;
                c->dirty_next = n->wire.dirty;
                n->wire.dirty = c;
            }
        poll(pf, (nfds_t)np, 50);
    }
    while (n->wire.conns)
        conn_close(n->wire.conns, NULL);
    conn_reap(&n->wire);
    if (n->epmd_fd >= 0) {
        close(n->epmd_fd); /* epmd forgets us when this socket closes */
        n->epmd_fd = -1;
    }
    if (n->listen_fd >= 0) {
        close(n->listen_fd);
        n->listen_fd = -1;
    }
}

void node_free(struct node *n)
{
    for (uint32_t i = 1; i < n->npeers; i++) {
        if (!n->peers[i])
            continue;
        buf_free(&n->peers[i]->atom);
        free(n->peers[i]);
    }
    free(n->peers);
    free(n->peer_hash);
    proc_table_free(n->procs);
    buf_free(&n->atom);
    buf_free(&n->scratch);
    buf_free(&n->canon);
    if (n->cfg && n->cfg->tls_cert)
        tls_global_free(&n->wire);
}
