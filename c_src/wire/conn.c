/* conn.c - one peer connection (see conn.h).  Reads in large chunks and cuts
 * every whole frame per read; output is a queue of chunks written with one
 * writev per loop turn (before sleeping); EPOLLOUT only while bytes remain.
 * Closing is deferred: a closed conn is unlinked from its host at once but
 * freed in conn_reap at the end of the turn, so no caller holds a freed one. */
#include "wire/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proto/atomcache.h"
#include "proto/dist.h"
#include "wire/epmd.h"
#include "wire/rcvwin.h"
#include "base/log.h"
#include "wire/tls.h"

#define READ_CHUNK (64 * 1024)
#define READS_PER_TURN 16        /* fairness: at most 1 MiB per conn per turn */
#define CHUNK_SOFT (256 * 1024)  /* start a new out chunk past this */
#define MAX_IOV 64

struct obuf {
    struct obuf *next;
    struct buf b;
};

/* Frames queued before the handshake is done wait in c->pend; handshake
 * packets go straight to c->out. */
static struct oq *frame_queue(struct conn *c)
{
    return c->state == CS_UP ? &c->out : &c->pend;
}

static uint64_t next_conn_id = 1;

static void on_io(struct loop *l, int fd, int ev, void *data);
static void on_epmd_io(struct loop *l, int fd, int ev, void *data);
static void on_setup_timeout(struct loop *l, uint64_t id, void *data);
static void on_tick(struct loop *l, uint64_t id, void *data);
static void process_input(struct conn *c);
static void drive_tls(struct conn *c);
static void process_frames(struct conn *c);

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static struct conn *conn_new(struct conn_host *h, bool outgoing)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->host = h;
    c->fd = -1;
    c->epmd_fd = -1;
    c->outgoing = outgoing;
    c->id = next_conn_id++;
    c->last_recv = c->last_send = loop_now(h->loop);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    c->t_setup = loop_timer_add(h->loop, h->setuptime_ms, on_setup_timeout, c);
    return c;
}

static uint32_t random_u32(void)
{
    uint32_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1)
        abort(); /* no CSPRNG: refusing to make guessable challenges */
    return v;
}

static void queue_raw(struct conn *c, const uint8_t *p, size_t len);

static void start_handshake_accept(struct conn *c)
{
    struct conn_host *h = c->host;
    hs_init_accept(&c->hs, h->name, HS_OUR_FLAGS, h->creation, h->cookie, random_u32(),
                   c->tls ? 4 : 2);
    c->state = CS_HANDSHAKE;
}

static void start_handshake_connect(struct conn *c)
{
    struct conn_host *h = c->host;
    hs_init_connect(&c->hs, h->name, c->name, HS_OUR_FLAGS, h->creation, h->cookie,
                    random_u32(), c->tls ? 4 : 2);
    c->state = CS_HANDSHAKE;
    queue_raw(c, buf_head(&c->hs.out), buf_avail(&c->hs.out));
    buf_reset(&c->hs.out);
}

const char *conn_addr_str(const struct sockaddr *sa, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(out, n, "%s:%u", ip, ntohs(a->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) /* an IPv4 peer on the dual-stack socket */
            inet_ntop(AF_INET, a->sin6_addr.s6_addr + 12, ip, sizeof ip);
        else
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(out, n, IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) ? "%s:%u" : "[%s]:%u", ip,
                 ntohs(a->sin6_port));
    } else {
        snprintf(out, n, "?");
    }
    return out;
}

struct conn *conn_accept(struct conn_host *h, int fd, const struct sockaddr *sa)
{
    struct conn *c = conn_new(h, false);
    if (!c) {
        close(fd);
        return NULL;
    }
    set_nonblock(fd);
    c->fd = fd;
    conn_addr_str(sa, c->addr, sizeof c->addr);
    brake_key_from_sa(&c->key, sa);
    loop_add_fd(h->loop, fd, LOOP_READ, on_io, c);
    if (h->tls) {
        c->tls = tls_new(h, fd, false);
        if (!c->tls) {
            conn_close(c, "TLS setup failed");
            return NULL;
        }
        c->state = CS_TLS;
        drive_tls(c);
        return c;
    }
    start_handshake_accept(c);
    return c;
}

/* --- outgoing: epmd lookup, then connect --- */

/* This host's own name is loopback in the family asked for, as OTP's
 * inet:gethostbyname_self makes it (erl -proto_dist inet6_tcp reaches
 * a@thishost over ::1 although /etc/hosts may map the name to IPv4 only). */
static int resolve_self(const char *host, int family, struct sockaddr_storage *sa,
                        socklen_t *len)
{
    char self[256];
    if (gethostname(self, sizeof self) != 0)
        return -1;
    self[sizeof self - 1] = 0;
    size_t hl = strlen(host);
    char *dot = strchr(self, '.');
    bool same = strcasecmp(host, self) == 0 ||
                (dot && (size_t)(dot - self) == hl && strncasecmp(host, self, hl) == 0);
    if (!same)
        return -1;
    memset(sa, 0, sizeof *sa);
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)sa;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        *len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)sa;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof *a;
    }
    return 0;
}

/* The peer's host for family (AF_INET, or AF_INET6 with --inet6, as erl's
 * inet6_tcp resolves it: an IPv6 address, an IPv6 literal, no fallback). */
static int resolve_host(const char *host, int family, struct sockaddr_storage *sa,
                        socklen_t *len)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return resolve_self(host, family, sa, len);
    if (res->ai_addrlen > sizeof *sa) {
        freeaddrinfo(res);
        return -1;
    }
    memset(sa, 0, sizeof *sa);
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void set_port(struct sockaddr_storage *sa, uint16_t port)
{
    if (sa->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
}

static uint16_t epmd_port(void)
{
    const char *e = getenv("ERL_EPMD_PORT");
    int p = e ? atoi(e) : 0;
    return (p > 0 && p < 65536) ? (uint16_t)p : EPMD_DEFAULT_PORT;
}

struct conn *conn_connect(struct conn_host *h, const char *name, void *peer)
{
    struct conn *c = conn_new(h, true);
    if (!c)
        return NULL;
    c->peer = peer;
    snprintf(c->name, sizeof c->name, "%s", name);
    h->ops->connecting(h->owner, c);
    snprintf(c->addr, sizeof c->addr, "%s", c->name);
    const char *at = strchr(c->name, '@');
    struct sockaddr_storage sa;
    socklen_t sl;
    int family = h->inet6 ? AF_INET6 : AF_INET;
    if (!at || resolve_host(at + 1, family, &sa, &sl) != 0) {
        conn_close(c, family == AF_INET6 ? "cannot resolve host for IPv6" : "cannot resolve host");
        return NULL;
    }
    c->sa = sa; /* the peer's host; its port comes from epmd */
    c->sa_len = sl;
    set_port(&sa, epmd_port()); /* epmd on the peer's host, same family (erl_epmd) */
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_close(c, "socket failed");
        return NULL;
    }
    c->epmd_fd = fd;
    c->state = CS_RESOLVE;
    if (connect(fd, (struct sockaddr *)&sa, sl) < 0 && errno != EINPROGRESS) {
        conn_close(c, "cannot reach epmd on the peer's host");
        return NULL;
    }
    loop_add_fd(h->loop, fd, LOOP_WRITE, on_epmd_io, c);
    return c;
}

static void connect_to_port(struct conn *c, uint16_t port)
{
    struct conn_host *h = c->host;
    struct sockaddr_storage sa = c->sa;
    set_port(&sa, port);
    conn_addr_str((struct sockaddr *)&sa, c->addr, sizeof c->addr);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_close(c, "socket failed");
        return;
    }
    set_nonblock(fd);
    c->fd = fd;
    c->state = CS_CONNECT;
    if (connect(fd, (struct sockaddr *)&sa, c->sa_len) < 0 && errno != EINPROGRESS) {
        conn_close(c, "connect failed");
        return;
    }
    loop_add_fd(h->loop, fd, LOOP_WRITE | LOOP_READ, on_io, c);
}

static void on_epmd_io(struct loop *l, int fd, int ev, void *data)
{
    struct conn *c = data;
    if (c->state != CS_RESOLVE)
        return;
    if (ev & LOOP_WRITE && !c->epmd_sent && !(ev & LOOP_READ)) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            conn_close(c, "cannot reach epmd on the peer's host");
            return;
        }
        struct buf req;
        buf_init(&req);
        char alive[256];
        const char *at = strchr(c->name, '@');
        size_t an = (size_t)(at - c->name);
        memcpy(alive, c->name, an);
        alive[an] = 0;
        epmd_enc_port_please2(&req, alive);
        ssize_t w = write(fd, req.data, req.len);
        buf_free(&req);
        if (w < 0) {
            conn_close(c, "epmd write failed");
            return;
        }
        loop_mod_fd(l, fd, LOOP_READ);
        c->epmd_sent = true;
        return;
    }
    if (!(ev & LOOP_READ))
        return;
    uint8_t tmp[512];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r > 0)
        buf_put(&c->epmd_buf, tmp, (size_t)r);
    uint8_t result = 1;
    uint16_t port = 0, highest = 0;
    long k = epmd_dec_port2_resp(buf_head(&c->epmd_buf), buf_avail(&c->epmd_buf),
                                 &result, &port, &highest);
    if (k == EPMD_NEED_MORE && r > 0)
        return;
    loop_del_fd(l, fd);
    close(fd);
    c->epmd_fd = -1;
    buf_free(&c->epmd_buf);
    if (k <= 0 || result != 0) {
        conn_close(c, k < 0 ? "garbage reply from epmd" : "no such node in epmd");
        return;
    }
    if (highest < 6) {
        conn_close(c, "peer speaks only an old distribution version");
        return;
    }
    connect_to_port(c, port);
}

/* --- output --- */

static struct obuf *obuf_new(struct conn *c, struct oq *q)
{
    struct obuf *o = c->spare;
    if (o) {
        c->spare = NULL;
        buf_reset(&o->b);
    } else {
        o = calloc(1, sizeof *o);
        if (!o)
            return NULL;
    }
    o->next = NULL;
    if (q->tail)
        q->tail->next = o;
    else
        q->head = o;
    q->tail = o;
    return o;
}

static void mark_dirty(struct conn *c)
{
    if (!c->dirty && c->state != CS_CLOSED) {
        c->dirty = true;
        c->dirty_next = c->host->dirty;
        c->host->dirty = c;
    }
}

static struct buf *queue_buf(struct conn *c, struct oq *q)
{
    struct obuf *o = q->tail;
    if (!o || o->b.len >= CHUNK_SOFT)
        o = obuf_new(c, q);
    if (!o)
        return NULL;
    q->bytes -= buf_avail(&o->b); /* recounted in queue_done */
    return &o->b;
}

static void queue_done(struct conn *c, struct oq *q)
{
    if (q->tail)
        q->bytes += buf_avail(&q->tail->b);
    c->last_send = loop_now(c->host->loop);
    if (q == &c->out)
        mark_dirty(c);
    /* Over the cap: closed at the end of the turn, never here, because the
     * caller may be walking monitor lists that the close would change. */
    if (c->out.bytes + c->pend.bytes > c->host->max_out_bytes && !c->over_cap) {
        c->over_cap = true;
        mark_dirty(c);
    }
}

struct buf *conn_frame_buf(struct conn *c, size_t hint)
{
    struct oq *q = frame_queue(c);
    /* a big frame to an atom-cache peer starts a chunk of its own, where
     * frame_to_hdr can leave its big end in place */
    if (hint >= AC_LAZY && c->ac && q == &c->out && q->tail && buf_avail(&q->tail->b) > 0 &&
        !obuf_new(c, q))
        return NULL;
    struct buf *b = queue_buf(c, q);
    if (!b)
        return NULL;
    if (c->ac && q == &c->out) {
        /* the frame is begun AC_OUT_ROOM past its place, so that its
         * header form (frame_to_hdr, from conn_frame_done under this same
         * test) can be written there directly */
        if (!buf_reserve(b, AC_OUT_ROOM + 256))
            return NULL;
        b->len += AC_OUT_ROOM;
    }
    c->frame_start = b->len;
    return b;
}

static void free_queue(struct obuf *o);

/* With the atom cache negotiated the peer reads every frame in the header
 * form: rewrite the pass-through frame at b[start..] in place. */
static bool frame_to_hdr(struct ac *a, struct buf *b, size_t start, size_t room)
{
    size_t at = start - room; /* where the frame goes, length first */
    /* first in its chunk: it may begin later, the chunk's head skipping
     * the bytes before it, so that a big binary at its end is not moved */
    bool head = at == b->off;
    size_t body;
    if (b->len < start + 5 || !ac_frame_rewrite(a, b, at + 4, start + 4, head, &body))
        return false;
    at = body - 4; /* after any compaction inside, and where a head frame begins */
    if (head)
        b->off = at;
    if (b->len - at - 4 > UINT32_MAX)
        return false;
    put_n32(b->data + at, (uint32_t)(b->len - at - 4));
    return true;
}

void conn_frame_done(struct conn *c)
{
    struct oq *q = frame_queue(c);
    if (c->ac && q == &c->out && !frame_to_hdr(c->ac, &q->tail->b, c->frame_start, AC_OUT_ROOM)) {
        conn_close(c, "cannot encode a frame for the atom cache");
        return;
    }
    queue_done(c, q);
}

/* Frames queued before the handshake are in the pass-through form: cut
 * them one by one into to's header form (the atom cache was negotiated). */
static bool pend_to_hdr(struct conn *to, struct oq *pend)
{
    struct obuf *o = pend->head;
    pend->head = pend->tail = NULL;
    pend->bytes = 0;
    bool ok = true;
    for (struct obuf *x = o; x && ok; x = x->next) {
        struct cur k = cur_make(buf_head(&x->b), buf_avail(&x->b));
        while (ok && cur_left(&k) > 0) {
            struct span body;
            long n = dist_cut(cur_ptr(&k), cur_left(&k), UINT64_MAX, &body);
            struct buf *b = n > 0 ? queue_buf(to, pend) : NULL;
            size_t start = b ? b->len : 0;
            ok = b && buf_put(b, cur_ptr(&k), (size_t)n) && frame_to_hdr(to->ac, b, start, 0);
            if (ok)
                queue_done(to, pend);
            cur_skip(&k, n > 0 ? (size_t)n : cur_left(&k));
        }
    }
    free_queue(o);
    return ok;
}

/* Handshake packets and ticks: straight to the live queue. */
static void queue_raw(struct conn *c, const uint8_t *p, size_t len)
{
    if (!len)
        return;
    struct buf *b = queue_buf(c, &c->out);
    if (!b || !buf_put(b, p, len)) {
        conn_close(c, "out of memory");
        return;
    }
    queue_done(c, &c->out);
}

/* 0 done (or blocked, bytes remain), -1 fatal. */
static int flush(struct conn *c)
{
    struct oq *q = &c->out;
    while (q->head) {
        if (c->tls) {
            struct obuf *o = q->head;
            ssize_t w = buf_avail(&o->b) ? tls_write(c, buf_head(&o->b), buf_avail(&o->b)) : 0;
            if (w < 0)
                return -1;
            if (w == 0 && buf_avail(&o->b))
                return 0;
            buf_consume(&o->b, (size_t)w);
            q->bytes -= (size_t)w;
        } else {
            struct iovec iov[MAX_IOV];
            int cnt = 0;
            for (struct obuf *o = q->head; o && cnt < MAX_IOV; o = o->next)
                if (buf_avail(&o->b))
                    iov[cnt++] = (struct iovec){buf_head(&o->b), buf_avail(&o->b)};
            if (cnt == 0) {
                /* only empty chunks remain */
            } else {
                ssize_t w = writev(c->fd, iov, cnt);
                if (w < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK)
                        return 0;
                    if (errno == EINTR)
                        continue;
                    return -1;
                }
                size_t left = (size_t)w;
                q->bytes -= left;
                for (struct obuf *o = q->head; o && left; o = o->next) {
                    size_t k = buf_avail(&o->b) < left ? buf_avail(&o->b) : left;
                    buf_consume(&o->b, k);
                    left -= k;
                }
            }
        }
        while (q->head && buf_avail(&q->head->b) == 0) {
            struct obuf *o = q->head;
            q->head = o->next;
            if (!q->head)
                q->tail = NULL;
            if (!c->spare && o->b.cap <= 4 * CHUNK_SOFT) {
                c->spare = o;
            } else {
                buf_free(&o->b);
                free(o);
            }
        }
    }
    return 0;
}

static void update_write_interest(struct conn *c)
{
    if (c->fd < 0 || c->state == CS_CLOSED || c->state == CS_CONNECT || c->hold.on)
        return;
    bool want = c->out.head != NULL || (c->tls && tls_wants_write(c));
    if (want != c->want_write) {
        c->want_write = want;
        loop_mod_fd(c->host->loop, c->fd, LOOP_READ | (want ? LOOP_WRITE : 0));
    }
}

void conn_flush_dirty(struct conn_host *h)
{
    while (h->dirty) {
        struct conn *c = h->dirty;
        h->dirty = c->dirty_next;
        c->dirty = false;
        if (c->over_cap) {
            LOGW("connection to %s: output queue over %llu bytes (peer not reading), disconnecting",
                 c->name[0] ? c->name : c->addr,
                 (unsigned long long)h->max_out_bytes);
            conn_close(c, NULL);
            continue;
        }
        if (c->state != CS_UP && c->state != CS_HANDSHAKE)
            continue; /* not connected yet: written once it is */
        if (flush(c) < 0) {
            conn_close(c, "write failed");
            continue;
        }
        update_write_interest(c);
    }
}

/* --- input --- */

static ssize_t io_read(struct conn *c, uint8_t *p, size_t n)
{
    if (c->tls)
        return tls_read(c, p, n);
    ssize_t r = read(c->fd, p, n);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return -2;
    if (r < 0 && errno == EINTR)
        return -2;
    return r;
}

static void handle_read(struct conn *c)
{
    /* Past the fairness limit, go on while OpenSSL holds bytes it already
     * took from the socket: no epoll event would come for them. */
    for (int i = 0; i < READS_PER_TURN || (c->tls && tls_pending(c)); i++) {
        if (!buf_reserve(&c->in, READ_CHUNK)) {
            conn_close(c, "out of memory");
            return;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t r = io_read(c, c->in.data + c->in.len, room);
        if (r == -2)
            break;
        if (r == 0) {
            conn_close(c, "connection closed by peer");
            return;
        }
        if (r < 0) {
            conn_close(c, "read error");
            return;
        }
        c->in.len += (size_t)r;
        c->last_recv = loop_now(c->host->loop);
        process_input(c);
        if (c->state == CS_CLOSED || c->over_cap)
            return;
        if ((size_t)r < room)
            break;
    }
}

static void handshake_done(struct conn *c);

static void drain_hs_out(struct conn *c)
{
    queue_raw(c, buf_head(&c->hs.out), buf_avail(&c->hs.out));
    buf_reset(&c->hs.out);
}

/* The names of the mandatory flags in f, as OTP spells them. */
static const char *mandatory_flag_names(uint64_t f, char *out, size_t n)
{
    static const struct {
        uint64_t bit;
        const char *name;
    } t[] = {{DFLAG_EXTENDED_REFERENCES, "EXTENDED_REFERENCES"}, {DFLAG_FUN_TAGS, "FUN_TAGS"},
             {DFLAG_EXTENDED_PIDS_PORTS, "EXTENDED_PIDS_PORTS"}, {DFLAG_UTF8_ATOMS, "UTF8_ATOMS"},
             {DFLAG_NEW_FUN_TAGS, "NEW_FUN_TAGS"}, {DFLAG_BIG_CREATION, "BIG_CREATION"},
             {DFLAG_NEW_FLOATS, "NEW_FLOATS"}, {DFLAG_MAP_TAG, "MAP_TAG"},
             {DFLAG_EXPORT_PTR_TAG, "EXPORT_PTR_TAG"}, {DFLAG_BIT_BINARIES, "BIT_BINARIES"},
             {DFLAG_HANDSHAKE_23, "HANDSHAKE_23"}};
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof t / sizeof t[0] && len < n; i++)
        if (f & t[i].bit) {
            int w = snprintf(out + len, n - len, "%sDFLAG_%s", len ? " " : "", t[i].name);
            len += w > 0 ? (size_t)w : 0;
        }
    return out;
}

static void hs_failed(struct conn *c)
{
    struct hs *h = &c->hs;
    const char *who = h->peer_name[0] ? h->peer_name : "?";
    drain_hs_out(c);
    if (c->state == CS_CLOSED)
        return;
    flush(c); /* best effort: the refusal status goes out before we close */
    switch (h->err) {
    case HS_E_DIGEST:
        LOGW("connection attempt from %s (node %s) refused: wrong cookie", c->addr, who);
        break;
    case HS_E_FLAGS: {
        char names[256];
        LOGW("connection from %s (node %s) refused: missing mandatory distribution flags 0x%llx (%s)",
             c->addr, who, (unsigned long long)h->missing,
             mandatory_flag_names(h->missing, names, sizeof names));
        break;
    }
    case HS_E_STATUS:
        LOGI("connection to %s refused by the peer: %s", c->addr, h->status);
        break;
    default:
        LOGI("handshake with %s (node %s) failed: %s", c->addr, who, hs_strerror(h->err));
    }
    conn_close(c, NULL);
}

/* --- the brake: holding the acceptor's verdict (see brake.h) --- */

static void on_verdict_due(struct loop *l, uint64_t id, void *data);

static struct conn *conn_of_hold(struct brake_hold *h)
{
    return (struct conn *)((char *)h - offsetof(struct conn, hold));
}

/* The acceptor has just judged the peer's digest: HS_DONE with the `a`
 * packet waiting in hs.out, or HS_FAILED with HS_E_DIGEST (the verdict is
 * the close).  While the address is under penalty the verdict waits; the
 * delay is read before this digest counts, so right and wrong wait alike.
 * True when held: nothing is sent and the socket is not read until
 * on_verdict_due. */
static bool hold_verdict(struct conn *c)
{
    struct conn_host *h = c->host;
    uint64_t now = loop_now(h->loop);
    uint32_t d = brake_delay(&h->brake, &c->key, now);
    if (c->hs.state == HS_FAILED && brake_failed(&h->brake, &c->key, now))
        LOGW("%d wrong digests in a few seconds from %s: handshake verdicts from its address "
             "now wait up to %u ms (connections are still accepted)",
             BRAKE_FREE, c->addr, BRAKE_MAX_DELAY_MS);
    if (d == 0)
        return false;
    struct brake_hold *old = brake_hold(&h->brake, &c->hold, &c->key, now);
    if (!c->hold.on)
        return false;
    if (old) {
        /* Over the bound: the oldest held closes without its verdict,
         * whatever its digest, so the close tells its sender nothing. */
        struct conn *o = conn_of_hold(old);
        LOGD("connection from %s: more than %u handshakes held for its address, "
             "closed without a verdict", o->addr, BRAKE_HELD_MAX);
        conn_close(o, NULL);
    }
    c->t_verdict = loop_timer_add(h->loop, d, on_verdict_due, c);
    /* No reading while held (the peer waits for our answer anyway); a
     * hang-up still reports and closes the connection (on_io). */
    loop_mod_fd(h->loop, c->fd, 0);
    return true;
}

static void on_verdict_due(struct loop *l, uint64_t id, void *data)
{
    struct conn *c = data;
    c->t_verdict = 0;
    brake_release(&c->host->brake, &c->hold);
    if (c->state == CS_CLOSED)
        return;
    loop_mod_fd(l, c->fd, LOOP_READ | (c->want_write ? LOOP_WRITE : 0));
    update_write_interest(c);
    if (c->hs.state == HS_FAILED) {
        hs_failed(c);
        return;
    }
    drain_hs_out(c);
    if (c->state == CS_CLOSED)
        return;
    handshake_done(c);
    if (c->state == CS_UP && buf_avail(&c->in))
        process_frames(c);
}

static void process_handshake(struct conn *c)
{
    for (;;) {
        enum hs_state before = c->hs.state;
        long k = hs_feed(&c->hs, buf_head(&c->in), buf_avail(&c->in));
        if (k > 0)
            buf_consume(&c->in, (size_t)k);
        if (before == HS_A_RECV_REPLY &&
            (c->hs.state == HS_DONE || (c->hs.state == HS_FAILED && c->hs.err == HS_E_DIGEST)) &&
            hold_verdict(c))
            return;
        if (c->hs.state == HS_FAILED || k < 0) {
            hs_failed(c);
            return;
        }
        drain_hs_out(c);
        if (c->state == CS_CLOSED)
            return;
        if (c->hs.state == HS_A_NEED_STATUS) {
            c->host->ops->status(c->host->owner, c); /* calls conn_set_status */
            if (c->state == CS_CLOSED)
                return;
            if (c->hs.state == HS_FAILED) {
                hs_failed(c);
                return;
            }
            continue;
        }
        if (c->hs.state == HS_DONE) {
            handshake_done(c);
            return;
        }
        if (k == 0)
            return;
    }
}

void conn_set_status(struct conn *c, const char *status)
{
    hs_accept_status(&c->hs, status);
    drain_hs_out(c);
}

static void send_tick(struct conn *c)
{
    static const uint8_t zero[4] = {0, 0, 0, 0};
    queue_raw(c, zero, 4);
}

/* The receive buffer a connection asks for (wire/rcvwin.h): modest when it
 * comes up over a short path, lifted for good by the first big frame. */
static void rcvwin_set(struct conn *c, int bytes, const char *why)
{
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) < 0) {
        LOGD("connection to %s (%s): SO_RCVBUF %d: %s", c->name, c->addr, bytes, strerror(errno));
        return;
    }
    LOGD("connection to %s (%s): receive buffer %d (%s)", c->name, c->addr, bytes, why);
}

static void rcvwin_up(struct conn *c)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    bool known = getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0;
    int bytes = rcvwin_at_up(known, known ? ti.tcpi_rtt : 0);
    if (bytes) {
        rcvwin_set(c, bytes, "short path");
        c->rcv_small = true;
    }
}

/* While small: a frame of len bytes (its length prefix) is in, or coming. */
static void rcvwin_frame(struct conn *c, uint32_t len)
{
    int bytes = rcvwin_on_frame(len);
    if (bytes) {
        rcvwin_set(c, bytes, "big frame");
        c->rcv_small = false;
    }
}

static void process_frames(struct conn *c)
{
    struct conn_host *h = c->host;
    uint32_t frames = 0; /* the loop's work units (loop_work, coalescing) */
    /* Over the output cap: handle no more of its input this turn (it is
     * closed at the end of the turn), so small requests for big replies
     * cannot pile up more than one reply past the cap. */
    while (c->state == CS_UP && !c->over_cap && buf_avail(&c->in) > 0) {
        struct span body;
        long k = dist_cut(buf_head(&c->in), buf_avail(&c->in), h->max_message_bytes, &body);
        if (k == DIST_NEED_MORE) {
            struct cur in = cur_make(buf_head(&c->in), buf_avail(&c->in));
            uint32_t len;
            if (c->rcv_small && cur_n32(&in, &len))
                rcvwin_frame(c, len); /* its length is in, not all of it */
            break;
        }
        if (k < 0) {
            LOGW("connection to %s (%s): frame larger than --max-message-bytes %llu, disconnecting",
                 c->name, c->addr, (unsigned long long)h->max_message_bytes);
            conn_close(c, NULL);
            return;
        }
        if (c->rcv_small)
            rcvwin_frame(c, (uint32_t)body.n);
        if (body.n == 0) {
            send_tick(c); /* answer at once: the peer's own ticktime may be short */
        } else {
            struct dist_msg m;
            const char *why = NULL;
            /* an atom-cache peer's frames are walked while expanded */
            if (c->ac ? ac_frame_decode(c->ac, body.p, body.n, h->lim, h->max_message_bytes,
                                        NULL, &m, &why) < 0
                      : dist_decode(body.p, body.n, h->lim, &m, &why) < 0) {
                LOGW("connection to %s (%s): bad frame (%s), disconnecting", c->name,
                     c->addr, why);
                conn_close(c, NULL);
                return;
            }
            h->ops->frame(h->owner, c, &m);
        }
        if (c->state == CS_CLOSED)
            return;
        buf_consume(&c->in, (size_t)k);
        frames++;
    }
    loop_work(h->loop, frames);
    /* A big frame may have grown the buffer; give the memory back. */
    if (buf_avail(&c->in) == 0 && c->in.cap > 4 * READ_CHUNK)
        buf_shrink(&c->in, 0);
    else if (c->in.off > 0 && c->in.off >= c->in.cap / 2)
        buf_compact(&c->in);
}

static void process_input(struct conn *c)
{
    if (c->state == CS_HANDSHAKE)
        process_handshake(c);
    if (c->state == CS_UP)
        process_frames(c);
}

static void handshake_done(struct conn *c)
{
    struct conn_host *h = c->host;
    loop_timer_del(h->loop, c->t_setup);
    c->t_setup = 0;
    c->state = CS_UP;
    if (c->hs.peer_flags & DFLAG_DIST_HDR_ATOM_CACHE) {
        c->ac = malloc(sizeof *c->ac); /* fresh caches on every connection */
        if (!c->ac) {
            conn_close(c, "out of memory");
            return;
        }
        ac_init(c->ac);
    }
    if (!c->outgoing)
        snprintf(c->name, sizeof c->name, "%s", c->hs.peer_name);
    h->ops->up(h->owner, c); /* attaches c->peer (incoming) and logs */
    if (c->state != CS_UP)
        return;
    rcvwin_up(c);
    uint64_t tick_ms = (uint64_t)h->ticktime * 1000 / 4;
    c->t_tick = loop_timer_add(h->loop, tick_ms ? tick_ms : 1, on_tick, c);
    conn_move_output(c, c); /* frames queued while connecting go now */
}

static void on_io(struct loop *l, int fd, int ev, void *data)
{
    struct conn *c = data;
    if (c->state == CS_CLOSED)
        return;
    if (c->hold.on) {
        /* Only a hang-up or an error reports while the verdict is held. */
        conn_close(c, NULL);
        return;
    }
    if (c->state == CS_CONNECT) {
        if (!(ev & LOOP_WRITE))
            return;
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            conn_close(c, "connect failed");
            return;
        }
        c->want_write = true;
        if (c->host->tls) {
            c->tls = tls_new(c->host, fd, true);
            if (!c->tls) {
                conn_close(c, "TLS setup failed");
                return;
            }
            c->state = CS_TLS;
            drive_tls(c);
            return;
        }
        start_handshake_connect(c);
        if (flush(c) < 0) {
            conn_close(c, "write failed");
            return;
        }
        update_write_interest(c);
        return;
    }
    if (c->state == CS_TLS) {
        drive_tls(c);
        return;
    }
    if (ev & LOOP_WRITE) {
        if (c->state == CS_HANDSHAKE || c->state == CS_UP) {
            if (flush(c) < 0) {
                conn_close(c, "write failed");
                return;
            }
            update_write_interest(c);
        }
    }
    if (ev & LOOP_READ || (c->tls && tls_wants_write(c)))
        handle_read(c); /* a TLS read that waited for writability, too */
}

/* The TLS handshake has completed. */
static void conn_tls_ready(struct conn *c)
{
    if (c->outgoing) {
        start_handshake_connect(c);
        flush(c);
    } else {
        start_handshake_accept(c);
    }
    update_write_interest(c);
    handle_read(c);
}

/* Advance the TLS handshake; on to the distribution handshake when done. */
static void drive_tls(struct conn *c)
{
    int r = tls_drive(c);
    if (r > 0)
        conn_tls_ready(c);
    else if (r < 0)
        conn_close(c, NULL);
}

/* --- timers --- */

static void on_setup_timeout(struct loop *l, uint64_t id, void *data)
{
    struct conn *c = data;
    c->t_setup = 0;
    if (c->state != CS_UP && c->state != CS_CLOSED) {
        LOGI("connection %s %s: setup not finished within %u ms, dropped",
             c->outgoing ? "to" : "from", c->outgoing ? c->name : c->addr,
             c->host->setuptime_ms);
        conn_close(c, NULL);
    }
}

static void on_tick(struct loop *l, uint64_t id, void *data)
{
    struct conn *c = data;
    struct conn_host *h = c->host;
    c->t_tick = 0;
    if (c->state != CS_UP)
        return;
    uint64_t now = loop_now(l);
    uint64_t T = (uint64_t)h->ticktime * 1000;
    if (now - c->last_recv >= T) {
        LOGW("node %s not responding for %u s (net_ticktime), disconnecting", c->name,
             h->ticktime);
        conn_close(c, NULL);
        return;
    }
    if (now - c->last_send >= T / 4 - T / 16)
        send_tick(c);
    c->t_tick = loop_timer_add(l, T / 4 ? T / 4 : 1, on_tick, c);
}

/* --- test and fuzz seam: a connection without a socket --- */

struct conn *conn_new_up(struct conn_host *h, const char *peer_name, uint64_t flags,
                         uint32_t creation)
{
    size_t nl = strlen(peer_name);
    if (!hs_valid_node_name(peer_name, nl))
        return NULL;
    struct conn *c = conn_new(h, false);
    if (!c)
        return NULL;
    snprintf(c->addr, sizeof c->addr, "test:%llu", (unsigned long long)c->id);
    memcpy(c->hs.peer_name, peer_name, nl + 1);
    c->hs.peer_flags = flags;
    c->hs.peer_creation = creation;
    c->hs.state = HS_DONE;
    c->state = CS_HANDSHAKE;
    handshake_done(c); /* the real path: ops->up interns the peer */
    if (c->state != CS_UP)
        return NULL;
    return c;
}

bool conn_input(struct conn *c, const uint8_t *p, size_t len)
{
    if (c->state == CS_CLOSED)
        return false;
    if (!buf_put(&c->in, p, len)) {
        conn_close(c, "out of memory");
        return false;
    }
    c->last_recv = loop_now(c->host->loop);
    process_input(c);
    return c->state != CS_CLOSED;
}

size_t conn_take_output(struct conn *c, struct buf *to)
{
    size_t total = 0;
    struct oq *q = &c->out;
    while (q->head) {
        struct obuf *o = q->head;
        total += buf_avail(&o->b);
        if (to)
            buf_put(to, buf_head(&o->b), buf_avail(&o->b));
        q->head = o->next;
        buf_free(&o->b);
        free(o);
    }
    q->tail = NULL;
    q->bytes = 0;
    return total;
}

/* --- closing --- */

void conn_close(struct conn *c, const char *why)
{
    struct conn_host *h = c->host;
    if (c->state == CS_CLOSED)
        return;
    enum conn_state was = c->state;
    c->state = CS_CLOSED;
    if (why)
        LOGI("connection %s %s closed: %s", c->outgoing ? "to" : "from",
             c->name[0] ? c->name : c->addr, why);
    loop_timer_del(h->loop, c->t_setup);
    loop_timer_del(h->loop, c->t_tick);
    loop_timer_del(h->loop, c->t_verdict);
    c->t_setup = c->t_tick = c->t_verdict = 0;
    brake_release(&h->brake, &c->hold);
    if (c->epmd_fd >= 0) {
        loop_del_fd(h->loop, c->epmd_fd);
        close(c->epmd_fd);
        c->epmd_fd = -1;
    }
    if (c->fd >= 0) {
        loop_del_fd(h->loop, c->fd);
    }
    if (c->tls)
        tls_free(c);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    /* unlink from the host's list now; free at the end of the turn */
    if (c->prev)
        c->prev->next = c->next;
    else if (h->conns == c)
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    h->nconns--;
    (void)was;
    h->ops->down(h->owner, c);
    c->dead_next = h->dead;
    h->dead = c;
}

static void free_queue(struct obuf *o)
{
    while (o) {
        struct obuf *nx = o->next;
        buf_free(&o->b);
        free(o);
        o = nx;
    }
}

void conn_reap(struct conn_host *h)
{
    while (h->dead) {
        struct conn *c = h->dead;
        h->dead = c->dead_next;
        /* it may still sit on the dirty list: remove it */
        for (struct conn **pp = &h->dirty; *pp; pp = &(*pp)->dirty_next)
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        free_queue(c->out.head);
        free_queue(c->pend.head);
        free_queue(c->spare);
        if (c->ac) {
            ac_free(c->ac);
            free(c->ac);
        }
        buf_free(&c->in);
        buf_free(&c->epmd_buf);
        hs_free(&c->hs);
        free(c);
    }
}

static void oq_append(struct oq *to, struct oq *from)
{
    if (!from->head)
        return;
    if (to->tail)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    to->bytes += from->bytes;
    from->head = from->tail = NULL;
    from->bytes = 0;
}

/* Frames queued on from (not yet connected) move behind to's frames; with
 * from == to, pending frames join the live queue once up. */
void conn_move_output(struct conn *from, struct conn *to)
{
    if (to->ac && from->pend.head && !pend_to_hdr(to, &from->pend)) {
        conn_close(to, "cannot encode a frame for the atom cache");
        return;
    }
    oq_append(frame_queue(to), &from->pend);
    mark_dirty(to);
}
