/* floor.c - the physical floor for a lookup: a ping-pong of frames of the
 * same sizes as a lookup request and reply, between two plain C processes
 * over TCP loopback (blocking sockets, TCP_NODELAY, 4-byte length prefix).
 *
 *   floor REQ_BYTES REP_BYTES ITERS [epoll3]
 *
 * Sizes are whole frames on the wire, prefix included (what the bench
 * measures from kv_cnode's /proc/PID/io).  Each side knows both sizes, so a
 * frame is normally one read() and one write(): the fewest syscalls a
 * server can spend on a call.
 *
 * epoll3: the server is a non-blocking epoll loop (as kv_cnode is) and the
 * client writes each request in three pieces, as a BEAM client's
 * gen_server:call sends three distribution messages (MONITOR_P, REG_SEND,
 * the previous call's DEMONITOR_P): the floor for that traffic pattern.
 *
 * Prints one line:
 *   floor req=R rep=P iters=N p50_us=.. p99_us=.. p999_us=.. calls_per_s=..
 *         server_cpu_us=.. server_user_us=.. server_sys_us=..
 * (the server's utime+stime per round trip, and its split, measured over
 * the timed iterations only)
 * Both processes arm alarm(60): nothing outlives a stuck run. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int rd(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static int wr(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t r = write(fd, b, n);
        if (r < 0 && errno == EAGAIN)
            continue; /* epoll3 server, full socket buffer: small frames, rare */
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One frame of total bytes (>= 4): length prefix then body. */
static int send_frame(int fd, uint8_t *buf, size_t total)
{
    uint32_t len = htonl((uint32_t)(total - 4));
    memcpy(buf, &len, 4);
    return wr(fd, buf, total);
}

/* A frame of known total size: one read() unless the stack splits it. */
static int recv_frame(int fd, uint8_t *buf, size_t total)
{
    if (rd(fd, buf, total))
        return -1;
    uint32_t len;
    memcpy(&len, buf, 4);
    return ntohl(len) == total - 4 ? 0 : -1;
}

/* A frame of known size on a non-blocking socket, waiting in epoll. */
static int recv_frame_epoll(int ep, int fd, uint8_t *b, size_t n)
{
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EAGAIN) {
            struct epoll_event ev;
            if (epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR)
                return -1;
            continue;
        }
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* A request frame written in three pieces. */
static int send_frame3(int fd, uint8_t *buf, size_t total)
{
    uint32_t len = htonl((uint32_t)(total - 4));
    memcpy(buf, &len, 4);
    size_t a = total / 3, b = 2 * total / 3;
    return wr(fd, buf, a) || wr(fd, buf + a, b - a) || wr(fd, buf + b, total - b);
}

/* user and system CPU of this process, microseconds */
static void cpu_us(double *usr, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *usr = (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec;
    *sys = (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int main(int argc, char **argv)
{
    int epoll3 = argc == 5 && strcmp(argv[4], "epoll3") == 0;
    if (argc != 4 && !epoll3) {
        fprintf(stderr, "usage: floor REQ_BYTES REP_BYTES ITERS [epoll3]\n");
        return 2;
    }
    size_t req = strtoul(argv[1], NULL, 10), rep = strtoul(argv[2], NULL, 10);
    long iters = strtol(argv[3], NULL, 10);
    if (req < 12 || rep < 4 || req > (1u << 24) || rep > (1u << 24) || iters < 1 || iters > 10000000) {
        fprintf(stderr, "floor: bad arguments\n");
        return 2;
    }
    long warm = iters / 10 + 10;
    alarm(60);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 1) ||
        getsockname(ls, (struct sockaddr *)&sa, &sl)) {
        perror("floor: listen");
        return 1;
    }
    size_t cap = (req > rep ? req : rep);
    uint8_t *buf = calloc(1, cap);
    if (!buf)
        return 1;

    int pfd[2];
    if (pipe(pfd)) {
        perror("floor: pipe");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("floor: fork");
        return 1;
    }
    if (child == 0) { /* the server: echo a reply frame per request frame */
        alarm(60);
        int fd = accept(ls, NULL, NULL);
        close(ls);
        if (fd < 0)
            _exit(1);
        nodelay(fd);
        close(pfd[0]);
        int ep = -1;
        if (epoll3) {
            struct epoll_event ev = {.events = EPOLLIN};
            ep = epoll_create1(0);
            if (ep < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
                _exit(1);
        }
#define SERVE() ((epoll3 ? recv_frame_epoll(ep, fd, buf, req) : recv_frame(fd, buf, req)) || \
                 send_frame(fd, buf, rep))
        for (long i = 0; i < warm; i++)
            if (SERVE())
                _exit(1);
        double u0, s0, u1, s1;
        cpu_us(&u0, &s0);
        for (long i = 0; i < iters; i++)
            if (SERVE())
                _exit(1);
        cpu_us(&u1, &s1);
        double st[2] = {(u1 - u0) / (double)iters, (s1 - s0) / (double)iters};
        if (write(pfd[1], st, sizeof st) != (ssize_t)sizeof st)
            _exit(1);
        _exit(0);
    }
    close(ls);
    close(pfd[1]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        perror("floor: connect");
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        return 1;
    }
    nodelay(fd);
    uint64_t *lat = malloc((size_t)iters * sizeof *lat);
    if (!lat)
        return 1;
    int bad = 0;
#define CALL() ((epoll3 ? send_frame3(fd, buf, req) : send_frame(fd, buf, req)) || \
                recv_frame(fd, buf, rep))
    for (long i = 0; i < warm && !bad; i++)
        bad = CALL();
    uint64_t t0 = now_ns();
    for (long i = 0; i < iters && !bad; i++) {
        uint64_t a = now_ns();
        bad = CALL();
        lat[i] = now_ns() - a;
    }
    uint64_t t1 = now_ns();
    double sst[2] = {-1, -1};
    if (!bad && rd(pfd[0], sst, sizeof sst))
        bad = 1;
    close(fd);
    int st = 0;
    waitpid(child, &st, 0);
    if (bad) {
        fprintf(stderr, "floor: connection failed\n");
        return 1;
    }
    qsort(lat, (size_t)iters, sizeof *lat, cmp_u64);
#define PCT(p) (lat[(size_t)((double)(iters - 1) * (p))] / 1000.0)
    printf("floor req=%zu rep=%zu iters=%ld p50_us=%.1f p99_us=%.1f p999_us=%.1f calls_per_s=%.0f"
           " server_cpu_us=%.2f server_user_us=%.2f server_sys_us=%.2f\n",
           req, rep, iters, PCT(0.50), PCT(0.99), PCT(0.999),
           (double)iters * 1e9 / (double)(t1 - t0), sst[0] + sst[1], sst[0], sst[1]);
    free(lat);
    free(buf);
    return 0;
}
