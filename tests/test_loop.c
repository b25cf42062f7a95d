/* test_loop.c - the event loop (c_src/base/loop.c): fd callbacks, timers,
 * the before-sleep hook, and the busy wait: an event that arrives while the
 * loop spins is delivered at once, a timer due during the spin ends it,
 * and an idle loop (a timer only) does not spin at all; coalescing that
 * was never chosen (no work reported) delays nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/loop.h"

struct ctx {
    int rfd;
    int reads;     /* bytes consumed by on_read */
    int stop_at;   /* loop_stop when reads reaches it */
    uint64_t t_event, t_timer;
    int hooks;
    uint64_t timer_ms; /* on_read arms a timer of this many ms once */
    bool armed;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

static void on_timer(struct loop *l, uint64_t id, void *data)
{
    struct ctx *c = data;
    (void)id;
    c->t_timer = now_us();
    loop_stop(l);
}

static void on_read(struct loop *l, int fd, int ev, void *data)
{
    struct ctx *c = data;
    char b[64];
    assert_true(ev & LOOP_READ);
    ssize_t n = read(fd, b, sizeof b);
    assert_true(n > 0);
    c->reads += (int)n;
    c->t_event = now_us();
    if (c->timer_ms && !c->armed) {
        c->armed = true;
        loop_timer_add(l, c->timer_ms, on_timer, c);
    }
    if (c->stop_at && c->reads >= c->stop_at)
        loop_stop(l);
}

static void on_hook(struct loop *l, void *data)
{
    (void)l;
    ((struct ctx *)data)->hooks++;
}

struct writer {
    int fd;
    unsigned delay_us;
};

static void *write_later(void *arg)
{
    struct writer *w = arg;
    usleep(w->delay_us);
    assert_int_equal(write(w->fd, "y", 1), 1);
    return NULL;
}

/* A byte now and one 5 ms later from another thread, through a loop set
 * up by the caller; returns when both are read, with *t0 the start. */
static void two_bytes(struct loop *l, struct ctx *c, uint64_t *t0)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    c->rfd = p[0];
    c->stop_at = 2;
    assert_int_equal(loop_add_fd(l, p[0], LOOP_READ, on_read, c), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    struct writer w = {p[1], 5000};
    pthread_t t;
    *t0 = now_us();
    assert_int_equal(pthread_create(&t, NULL, write_later, &w), 0);
    assert_int_equal(loop_run(l), 0);
    pthread_join(t, NULL);
    assert_int_equal(c->reads, 2);
    loop_del_fd(l, p[0]);
    close(p[0]);
    close(p[1]);
}

/* Two bytes: the first makes the loop busy; the second, written 5 ms later
 * from another thread, lands inside a 2 s spin and must be handled when it
 * arrives, not when the spin ends. */
static void test_event_during_spin(void **state)
{
    (void)state;
    struct loop *l = loop_new();
    assert_non_null(l);
    loop_set_busy_wait(l, 2000000);
    struct ctx c = {0};
    loop_set_before_sleep(l, on_hook, &c);
    uint64_t t0;
    two_bytes(l, &c, &t0);
    assert_true(c.hooks >= 2);
    assert_true(c.t_event - t0 < 1000000); /* far from the 2 s spin */
    loop_free(l);
}

/* A 2 s spin after an event, and a 20 ms timer armed by that event: the
 * timer fires near its time, the spin does not hold it. */
static void test_timer_ends_spin(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct loop *l = loop_new();
    loop_set_busy_wait(l, 2000000);
    struct ctx c = {.rfd = p[0], .timer_ms = 20};
    assert_int_equal(loop_add_fd(l, p[0], LOOP_READ, on_read, &c), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    uint64_t t0 = now_us();
    assert_int_equal(loop_run(l), 0);
    assert_int_equal(c.reads, 1);
    assert_true(c.t_timer - t0 >= 19000);
    assert_true(c.t_timer - t0 < 1000000);
    loop_free(l);
    close(p[0]);
    close(p[1]);
}

/* No fd event yet: the loop sleeps until its timer, using almost no CPU
 * (a spin would burn the whole 200 ms wait on the CPU clock). */
static void test_idle_does_not_spin(void **state)
{
    (void)state;
    struct loop *l = loop_new();
    loop_set_busy_wait(l, 2000000);
    struct ctx c = {0};
    loop_timer_add(l, 200, on_timer, &c);
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    assert_int_equal(loop_run(l), 0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    uint64_t cpu_us = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000u +
                      (uint64_t)((b.tv_nsec - a.tv_nsec) / 1000);
    assert_true(c.t_timer != 0);
    assert_true(cpu_us < 100000);
    loop_free(l);
}

/* Coalescing enabled but no work reported: the controller never turns
 * it on, and an event is handled when it arrives, not a sleep later. */
static void test_coalesce_without_work(void **state)
{
    (void)state;
    struct loop *l = loop_new();
    loop_set_coalesce(l, 200000); /* naps of up to 200 ms, were it on */
    struct ctx c = {0};
    uint64_t t0;
    two_bytes(l, &c, &t0);
    assert_int_equal(loop_coalescing(l), 0);
    assert_true(c.t_event - t0 < 150000); /* not after a long nap */
    loop_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_during_spin),
        cmocka_unit_test(test_timer_ends_spin),
        cmocka_unit_test(test_idle_does_not_spin),
        cmocka_unit_test(test_coalesce_without_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
