/* loop.c - epoll readiness, a binary min-heap of timers, a before-sleep
 * hook, a bounded busy wait before sleeping, and coalescing under load
 * (its policy in coal.c; see loop.h).  Single-threaded. */
#include "base/loop.h"

#include "base/coal.h"
#include "base/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

struct fdent {
    loop_fd_cb *cb;
    void *data;
    int mask;
};

/* Timers live in a slab; the heap orders slab indices by deadline, and each
 * slab entry knows its heap position, so cancel is O(log n).  An id is
 * generation << 32 | (index + 1): a stale id never cancels a reused slot. */
struct tmr {
    uint64_t when;
    loop_timer_cb *cb;
    void *data;
    uint32_t gen;
    uint32_t pos; /* heap position, NOPOS when free */
};
#define NOPOS UINT32_MAX

struct loop {
    int ep;
    bool stop;
    uint64_t now;
    struct fdent *fds; /* indexed by fd */
    int nfds;
    struct tmr *slab;
    uint32_t nslab, capslab;
    uint32_t *freel; /* free slab indices */
    uint32_t nfree;
    uint32_t *heap;  /* slab indices, min-heap on when */
    uint32_t nheap;
    loop_hook_cb *hook;
    void *hook_data;
    uint64_t busy_ns; /* loop_set_busy_wait; 0 = off */
    bool active;      /* the last wait returned fd events */
    uint64_t work;    /* loop_work units this turn */
    struct coal coal;
};

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t loop_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct loop *loop_new(void)
{
    struct loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0) {
        free(l);
        return NULL;
    }
    l->now = loop_clock_ms();
    coal_init(&l->coal, l->now, 0);
    return l;
}

void loop_free(struct loop *l)
{
    if (!l)
        return;
    close(l->ep);
    free(l->fds);
    free(l->heap);
    free(l->slab);
    free(l->freel);
    free(l);
}

static uint32_t ep_mask(int mask)
{
    return (mask & LOOP_READ ? EPOLLIN | EPOLLRDHUP : 0) | (mask & LOOP_WRITE ? EPOLLOUT : 0);
}

int loop_add_fd(struct loop *l, int fd, int mask, loop_fd_cb *cb, void *data)
{
    if (fd >= l->nfds) {
        int n = l->nfds ? l->nfds : 64;
        while (n <= fd)
            n *= 2;
        struct fdent *f = realloc(l->fds, (size_t)n * sizeof *f);
        if (!f)
            return -1;
        memset(f + l->nfds, 0, (size_t)(n - l->nfds) * sizeof *f);
        l->fds = f;
        l->nfds = n;
    }
    struct epoll_event ev = {.events = ep_mask(mask), .data.fd = fd};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -1;
    l->fds[fd] = (struct fdent){cb, data, mask};
    return 0;
}

int loop_mod_fd(struct loop *l, int fd, int mask)
{
    if (fd < 0 || fd >= l->nfds || !l->fds[fd].cb)
        return -1;
    if (l->fds[fd].mask == mask)
        return 0;
    struct epoll_event ev = {.events = ep_mask(mask), .data.fd = fd};
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev) < 0)
        return -1;
    l->fds[fd].mask = mask;
    return 0;
}

void loop_del_fd(struct loop *l, int fd)
{
    if (fd < 0 || fd >= l->nfds || !l->fds[fd].cb)
        return;
    epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
    l->fds[fd].cb = NULL;
    l->fds[fd].data = NULL;
}

/* --- timer heap --- */

#define WHEN(i) (l->slab[l->heap[i]].when)

static void heap_set(struct loop *l, uint32_t i, uint32_t t)
{
    l->heap[i] = t;
    l->slab[t].pos = i;
}

static void heap_up(struct loop *l, uint32_t i)
{
    uint32_t t = l->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (WHEN(p) <= l->slab[t].when)
            break;
        heap_set(l, i, l->heap[p]);
        i = p;
    }
    heap_set(l, i, t);
}

static void heap_down(struct loop *l, uint32_t i)
{
    uint32_t t = l->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && WHEN(c + 1) < WHEN(c))
            c++;
        if (l->slab[t].when <= WHEN(c))
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

static void heap_remove(struct loop *l, uint32_t i)
{
    uint32_t t = l->heap[i];
    uint32_t last = --l->nheap;
    if (i != last) {
        uint32_t m = l->heap[last];
        heap_set(l, i, m);
        heap_down(l, i);
        heap_up(l, l->slab[m].pos);
    }
    l->slab[t].pos = NOPOS;
    l->slab[t].gen++;
    l->freel[l->nfree++] = t;
}

static bool slab_grow(struct loop *l)
{
    uint32_t cap = l->capslab ? l->capslab * 2 : 64;
    struct tmr *s = realloc(l->slab, cap * sizeof *s);
    if (!s)
        return false;
    l->slab = s;
    uint32_t *f = realloc(l->freel, cap * sizeof *f);
    if (!f)
        return false;
    l->freel = f;
    uint32_t *h = realloc(l->heap, cap * sizeof *h);
    if (!h)
        return false;
    l->heap = h;
    l->capslab = cap;
    return true;
}

uint64_t loop_timer_add(struct loop *l, uint64_t ms, loop_timer_cb *cb, void *data)
{
    uint32_t t;
    if (l->nfree) {
        t = l->freel[--l->nfree];
    } else {
        if (l->nslab == l->capslab && !slab_grow(l))
            return 0;
        t = l->nslab++;
        l->slab[t].gen = 1;
    }
    l->slab[t].when = l->now + ms;
    l->slab[t].cb = cb;
    l->slab[t].data = data;
    uint32_t i = l->nheap++;
    heap_set(l, i, t);
    heap_up(l, i);
    return ((uint64_t)l->slab[t].gen << 32) | (t + 1);
}

void loop_timer_del(struct loop *l, uint64_t id)
{
    uint32_t t = (uint32_t)id - 1;
    if (!id || t >= l->nslab || l->slab[t].gen != (uint32_t)(id >> 32) ||
        l->slab[t].pos == NOPOS)
        return;
    heap_remove(l, l->slab[t].pos);
}

void loop_set_before_sleep(struct loop *l, loop_hook_cb *cb, void *data)
{
    l->hook = cb;
    l->hook_data = data;
}

void loop_set_busy_wait(struct loop *l, uint32_t us) { l->busy_ns = (uint64_t)us * 1000; }

void loop_set_coalesce(struct loop *l, uint32_t max_us) { coal_init(&l->coal, l->now, max_us); }

void loop_work(struct loop *l, uint32_t units) { l->work += units; }

uint32_t loop_coalescing(struct loop *l) { return l->coal.sleep_us; }

void loop_stop(struct loop *l) { l->stop = true; }

uint64_t loop_now(struct loop *l) { return l->now; }

static void run_timers(struct loop *l)
{
    while (l->nheap && WHEN(0) <= l->now && !l->stop) {
        uint32_t t = l->heap[0];
        uint64_t id = ((uint64_t)l->slab[t].gen << 32) | (t + 1);
        loop_timer_cb *cb = l->slab[t].cb;
        void *data = l->slab[t].data;
        heap_remove(l, 0);
        cb(l, id, data);
    }
}

int loop_run(struct loop *l)
{
    struct epoll_event evs[256];
    while (!l->stop) {
        if (l->hook)
            l->hook(l, l->hook_data);
        if (l->stop)
            break;
        int timeout = -1;
        if (l->nheap) {
            uint64_t now = loop_clock_ms();
            timeout = WHEN(0) <= now ? 0 : (int)(WHEN(0) - now);
        }
        int n = 0;
        uint64_t cpu = 0; /* a syscall: read at slice edges only */
        if (coal_wants_cpu(&l->coal, l->now, l->work)) {
            struct timespec ts;
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
            cpu = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        }
        bool measuring = l->coal.phase == COAL_MEASURE;
        uint8_t level = l->coal.level;
        uint32_t coal_us = coal_turn(&l->coal, l->now, l->work, cpu);
        if (measuring && l->coal.phase == COAL_STEADY) {
            /* the measurement that set the level: its neighbour's, if it moved */
            const struct coal_epoch *best = &l->coal.m[l->coal.level == level ? COAL_ON : COAL_NEXT];
            LOGD("coalescing: %s %u us (measured off %llu units in %llu ms, %u us %llu in %llu ms)",
                 coal_us ? "on," : "off; best sleep", coal_level_us(&l->coal, l->coal.level),
                 (unsigned long long)l->coal.m[COAL_OFF].work,
                 (unsigned long long)l->coal.m[COAL_OFF].dur, coal_level_us(&l->coal, l->coal.level),
                 (unsigned long long)best->work, (unsigned long long)best->dur);
        }
        l->work = 0;
        if (coal_us && l->active && timeout != 0) {
            /* Coalescing (coal.h): sleep, not epoll_wait, so that a peer
             * writing meanwhile wakes nobody; then take all that came. */
            uint64_t ns = (uint64_t)coal_us * 1000;
            if (timeout > 0 && (uint64_t)timeout * 1000000u < ns)
                ns = (uint64_t)timeout * 1000000u;
            struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
            nanosleep(&ts, NULL);
            n = epoll_wait(l->ep, evs, 256, 0);
        } else if (l->busy_ns && l->active && timeout != 0) {
            /* Busy: poll without sleeping for a while first, as the BEAM's
             * schedulers do (+sbwt).  A peer that writes to a sleeping
             * process pays for waking it inside its own write; calls come
             * in bursts, so the next frame usually lands within the spin. */
            uint64_t end = clock_ns() + l->busy_ns;
            if (l->nheap && WHEN(0) * 1000000u < end)
                end = WHEN(0) * 1000000u; /* a timer due sooner ends it */
            do
                n = epoll_wait(l->ep, evs, 256, 0);
            while (n == 0 && clock_ns() < end);
        }
        if (n == 0)
            n = epoll_wait(l->ep, evs, 256, timeout);
        if (n < 0 && errno != EINTR)
            return -1;
        l->active = n > 0;
        l->now = loop_clock_ms();
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd >= l->nfds || !l->fds[fd].cb)
                continue; /* closed by an earlier callback this turn */
            int ev = 0;
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                ev |= LOOP_READ;
            if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                ev |= LOOP_WRITE;
            l->fds[fd].cb(l, fd, ev, l->fds[fd].data);
        }
        run_timers(l);
    }
    return 0;
}
