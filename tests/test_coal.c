/* test_coal.c - the coalescing controller (c_src/base/coal.c), driven with
 * made-up clocks: a simulated load does a set amount of work and CPU per
 * millisecond in each mode, and the controller must keep the mode that
 * serves more (or the same for clearly less CPU), prefer off on a tie,
 * stay off when idle, measure at once when load starts after idleness,
 * and follow a load that changes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>

#include "base/coal.h"

/* Per millisecond of the simulated load, in each mode. */
struct load {
    uint64_t work_off, work_on;
    uint64_t cpu_off, cpu_on; /* ns */
};

struct sim {
    struct coal c;
    uint64_t now, cpu;
    unsigned cpu_reads;
    uint64_t ms_on; /* milliseconds spent coalescing */
};

static void sim_init(struct sim *s)
{
    *s = (struct sim){.now = 1000};
    coal_init(&s->c, s->now);
}

/* ms turns of 1 ms each under load l (NULL: idle). */
static void run(struct sim *s, const struct load *l, uint64_t ms)
{
    for (uint64_t i = 0; i < ms; i++) {
        bool on = s->c.on;
        uint64_t work = l ? (on ? l->work_on : l->work_off) : 0;
        s->cpu += l ? (on ? l->cpu_on : l->cpu_off) : 0;
        s->now++;
        s->ms_on += on;
        uint64_t cpu = 0;
        if (coal_wants_cpu(&s->c, s->now, work)) {
            cpu = s->cpu;
            s->cpu_reads++;
        }
        coal_turn(&s->c, s->now, work, cpu);
    }
}

/* Many callers: coalescing serves 40% more. */
static const struct load many = {100, 140, 900000, 300000};
/* One caller: coalescing halves the rate. */
static const struct load one = {100, 50, 900000, 500000};
/* A bound elsewhere: the same rate; coalescing needs a third of the CPU. */
static const struct load bound = {100, 100, 900000, 300000};
/* The same rate and the same CPU: nothing to gain. */
static const struct load same = {100, 100, 500000, 480000};

static void test_many_callers_coalesce(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &many, 2 * COAL_PERIOD_MS);
    assert_true(s.c.chosen);
    assert_true(s.c.on);
    /* after the first measurement it stays on but for the off epochs */
    assert_true(s.ms_on > 2 * COAL_PERIOD_MS - COAL_PERIOD_MS - 3 * COAL_EPOCH_MS);
}

static void test_one_caller_stays_off(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &one, 5 * COAL_PERIOD_MS);
    assert_false(s.c.chosen);
    /* on only during the on epochs: one per period */
    assert_true(s.ms_on <= 6 * (COAL_EPOCH_MS + 1));
    assert_true(s.ms_on >= 4 * COAL_EPOCH_MS);
}

static void test_same_work_less_cpu_coalesces(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &bound, 2 * COAL_PERIOD_MS);
    assert_true(s.c.chosen);
}

static void test_tie_prefers_off(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &same, 3 * COAL_PERIOD_MS);
    assert_false(s.c.chosen);
}

/* Idle: never coalesces, and reads the CPU clock only at period edges. */
static void test_idle(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, NULL, 10 * COAL_PERIOD_MS);
    assert_false(s.c.chosen);
    assert_true(s.cpu_reads <= 10 * 3 + 3);
    /* too little work in the on epoch to judge: off */
    static const struct load trickle = {1, 1, 1000, 10};
    run(&s, &trickle, 3 * COAL_PERIOD_MS);
    assert_false(s.c.chosen);
}

/* Load after an idle spell is measured at once, not a period later. */
static void test_new_load_measured_at_once(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, NULL, 3 * COAL_PERIOD_MS + 500);
    run(&s, &many, 2 * COAL_EPOCH_MS + 2);
    assert_true(s.c.chosen);
    assert_true(s.c.on);
}

/* A load that changes is followed within a period and two epochs. */
static void test_follows_change(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &many, 2 * COAL_PERIOD_MS);
    assert_true(s.c.chosen);
    run(&s, &one, COAL_PERIOD_MS + 2 * COAL_EPOCH_MS + 2);
    assert_false(s.c.chosen);
    assert_false(s.c.on);
    run(&s, &many, COAL_PERIOD_MS + 2 * COAL_EPOCH_MS + 2);
    assert_true(s.c.chosen);
}

/* Epochs that overrun (long turns) are compared as rates: an off epoch
 * twice as long with twice the work is no better than an on epoch. */
static void test_rates_not_totals(void **state)
{
    (void)state;
    struct coal c;
    coal_init(&c, 0);
    uint64_t t = COAL_PERIOD_MS;
    coal_turn(&c, t, 0, 0); /* steady ends: off epoch */
    assert_int_equal(c.phase, COAL_TRY_OFF);
    coal_turn(&c, t + 2 * COAL_EPOCH_MS, 2000, 2000000000); /* off: 2000 units, 40 ms, 2 s CPU */
    assert_int_equal(c.phase, COAL_TRY_ON);
    assert_true(c.on);
    /* on: 1000 units in 20 ms (the same rate) for a quarter of the CPU per unit */
    coal_turn(&c, t + 3 * COAL_EPOCH_MS, 1000, 2000000000ull + 250000000ull);
    assert_int_equal(c.phase, COAL_STEADY);
    assert_true(c.chosen);
    /* the same again, but on did 900 units: 90% of off's rate loses */
    coal_init(&c, 0);
    coal_turn(&c, t, 0, 0);
    coal_turn(&c, t + 2 * COAL_EPOCH_MS, 2000, 2000000000);
    coal_turn(&c, t + 3 * COAL_EPOCH_MS, 900, 2000000000ull + 100000000ull);
    assert_false(c.chosen);
    assert_false(c.on);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_callers_coalesce),
        cmocka_unit_test(test_one_caller_stays_off),
        cmocka_unit_test(test_same_work_less_cpu_coalesces),
        cmocka_unit_test(test_tie_prefers_off),
        cmocka_unit_test(test_idle),
        cmocka_unit_test(test_new_load_measured_at_once),
        cmocka_unit_test(test_follows_change),
        cmocka_unit_test(test_rates_not_totals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
