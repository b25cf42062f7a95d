/* test_coal.c - the coalescing controller (c_src/base/coal.c), driven with
 * made-up clocks: a simulated load does a set amount of work and CPU per
 * millisecond for each sleep (off, or one of the levels), and the
 * controller must keep the mode that serves more (or about the same for
 * clearly less CPU), find the best sleep, prefer off on a tie, stay off
 * when idle, judge a plainly slower on quickly and measure it ever more
 * rarely, measure at once when load starts after idleness, and follow a
 * load that changes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>

#include "base/coal.h"

#define MAX_US 400 /* levels: 25, 50, 100, 200, 400 µs */

/* Per millisecond of the simulated load: [0] off, [1 + level] on. */
struct load {
    uint64_t work[1 + COAL_LEVELS];
    uint64_t cpu[1 + COAL_LEVELS]; /* ns */
};

struct sim {
    struct coal c;
    uint64_t now, cpu;
    unsigned cpu_reads;
    uint64_t ms_on;        /* milliseconds spent coalescing */
    uint64_t ms_at[1 + COAL_LEVELS];
};

static void sim_init(struct sim *s)
{
    *s = (struct sim){.now = 1000};
    coal_init(&s->c, s->now, MAX_US);
}

static int mode_of(const struct coal *c)
{
    if (!c->sleep_us)
        return 0;
    for (int i = 0; i < COAL_LEVELS; i++)
        if (coal_level_us(c, (unsigned)i) == c->sleep_us)
            return 1 + i;
    fail_msg("sleep %u is no level", c->sleep_us);
    return -1;
}

/* ms turns of 1 ms each under load l (NULL: idle). */
static void run(struct sim *s, const struct load *l, uint64_t ms)
{
    for (uint64_t i = 0; i < ms; i++) {
        int m = mode_of(&s->c);
        uint64_t work = l ? l->work[m] : 0;
        s->cpu += l ? l->cpu[m] : 0;
        s->now++;
        s->ms_on += m != 0;
        s->ms_at[m]++;
        uint64_t cpu = 0;
        if (coal_wants_cpu(&s->c, s->now, work)) {
            cpu = s->cpu;
            s->cpu_reads++;
        }
        coal_turn(&s->c, s->now, work, cpu);
    }
}

/* Many callers: coalescing serves more, best at 200 µs (level 3). */
static const struct load many = {{100, 110, 120, 135, 150, 130},
                                 {900000, 400000, 300000, 250000, 200000, 180000}};
/* One caller: coalescing halves the rate or worse. */
static const struct load one = {{100, 60, 50, 40, 30, 20},
                                {900000, 700000, 600000, 500000, 400000, 300000}};
/* A bound elsewhere: the same rate; coalescing needs a third of the CPU. */
static const struct load bound = {{100, 100, 100, 100, 100, 100},
                                  {900000, 300000, 300000, 300000, 300000, 300000}};
/* The same rate and about the same CPU: nothing to gain. */
static const struct load same = {{100, 100, 100, 100, 100, 100},
                                 {500000, 480000, 480000, 480000, 480000, 480000}};

static void test_many_callers_coalesce_at_best_sleep(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &many, 6 * COAL_PERIOD_MS);
    assert_true(s.c.chosen);
    assert_int_equal(s.c.level, 3);
    assert_int_equal(s.c.sleep_us, 200);
    /* mostly on, mostly at the best sleep */
    assert_true(s.ms_on > 6 * COAL_PERIOD_MS - COAL_PERIOD_MS - 6 * 3 * COAL_ROUNDS * COAL_SLICE_MS);
    assert_true(s.ms_at[1 + 3] > 3 * COAL_PERIOD_MS);
}

static void test_one_caller_stays_off(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &one, 30 * COAL_PERIOD_MS);
    assert_false(s.c.chosen);
    assert_int_equal(s.c.sleep_us, 0);
    /* judged after one round each time, and measured ever more rarely:
     * well under 1% of the time on */
    assert_true(s.ms_on > 0);
    assert_true(s.ms_on * 100 < 30 * COAL_PERIOD_MS);
    assert_int_equal(s.c.backoff, COAL_BACKOFF_MAX);
}

/* One caller again, where a short sleep costs only 5% of the rate for a
 * third of the CPU: still off.  Seen in a full bench run: a one-caller
 * 100 KB bucket put point measured 0.93 of the rate at a 25 µs sleep, which the 90%
 * rule of old turned on. */
static const struct load one_cheap = {{100, 96, 95, 95, 94, 93},
                                      {900000, 300000, 300000, 300000, 300000, 300000}};

static void test_one_caller_no_latency_for_cpu(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &one_cheap, 10 * COAL_PERIOD_MS);
    assert_false(s.c.chosen);
    /* on only in the measuring slices: two of every three, 8 rounds, at
     * most one measurement per period */
    assert_true(s.ms_on <= 10 * 2 * COAL_ROUNDS * COAL_SLICE_MS);
}

static void test_same_work_less_cpu_coalesces(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &bound, 3 * COAL_PERIOD_MS);
    assert_true(s.c.chosen);
}

static void test_tie_prefers_off(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &same, 4 * COAL_PERIOD_MS);
    assert_false(s.c.chosen);
    assert_int_equal(s.c.sleep_us, 0);
}

/* Idle: never coalesces, and reads the CPU clock only at period edges. */
static void test_idle(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, NULL, 10 * COAL_PERIOD_MS);
    assert_false(s.c.chosen);
    assert_int_equal(s.ms_on, 0);
    assert_int_equal(s.cpu_reads, 0);
    /* too little work to judge: off */
    static const struct load trickle = {{1, 1, 1, 1, 1, 1}, {1000, 10, 10, 10, 10, 10}};
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
    run(&s, &many, 3 * COAL_ROUNDS * COAL_SLICE_MS + 2);
    assert_true(s.c.chosen);
    assert_true(s.c.sleep_us > 0);
}

/* A load that changes is followed within a few periods, either way. */
static void test_follows_change(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    run(&s, &many, 3 * COAL_PERIOD_MS);
    assert_true(s.c.chosen);
    run(&s, &one, COAL_PERIOD_MS + 3 * COAL_ROUNDS * COAL_SLICE_MS + 2);
    assert_false(s.c.chosen);
    assert_int_equal(s.c.sleep_us, 0);
    /* off won clearly once (backoff 2): back on within two periods */
    run(&s, &many, 2 * COAL_PERIOD_MS + 3 * COAL_ROUNDS * COAL_SLICE_MS + 2);
    assert_true(s.c.chosen);
}

/* One measurement by hand: each off slice overruns to 10 ms (a long turn)
 * with 100 units and 1 ms of CPU; each on slice takes 5 ms with on_work
 * units and on_cpu ns.  Returns the controller as it ends. */
static struct coal measure_by_hand(uint64_t on_work, uint64_t on_cpu)
{
    struct coal c;
    coal_init(&c, 0, MAX_US);
    uint64_t t = COAL_PERIOD_MS, cpu = 0;
    coal_turn(&c, t, 1, cpu); /* the period is over: a turn with work starts measuring */
    assert_int_equal(c.phase, COAL_MEASURE);
    for (int r = 0; r < COAL_ROUNDS && c.phase == COAL_MEASURE; r++) {
        t += 2 * COAL_SLICE_MS;
        cpu += 1000000;
        coal_turn(&c, t, 100, cpu);
        for (int k = 0; k < 2; k++) {
            t += COAL_SLICE_MS;
            cpu += on_cpu;
            coal_turn(&c, t, on_work, cpu);
        }
    }
    assert_int_equal(c.phase, COAL_STEADY);
    return c;
}

/* Slices that overrun (long turns) are compared as rates, not totals. */
static void test_rates_not_totals(void **state)
{
    (void)state;
    /* on: 50 units in 5 ms, the same rate as off's, for half the CPU per unit */
    struct coal c = measure_by_hand(50, 250000);
    assert_true(c.chosen);
    assert_true(c.sleep_us > 0);
    /* on at 40 units a slice: 80% of off's rate loses, even for less CPU */
    c = measure_by_hand(40, 200000);
    assert_false(c.chosen);
    assert_int_equal(c.sleep_us, 0);
}

/* Off (--coalesce-us 0): never a sleep, never the CPU clock. */
static void test_off(void **state)
{
    (void)state;
    struct coal c;
    coal_init(&c, 0, 0);
    for (uint64_t t = 1; t < 5000; t++) {
        assert_false(coal_wants_cpu(&c, t, 100));
        assert_int_equal(coal_turn(&c, t, 100, 0), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_callers_coalesce_at_best_sleep),
        cmocka_unit_test(test_one_caller_stays_off),
        cmocka_unit_test(test_same_work_less_cpu_coalesces),
        cmocka_unit_test(test_one_caller_no_latency_for_cpu),
        cmocka_unit_test(test_tie_prefers_off),
        cmocka_unit_test(test_idle),
        cmocka_unit_test(test_new_load_measured_at_once),
        cmocka_unit_test(test_follows_change),
        cmocka_unit_test(test_rates_not_totals),
        cmocka_unit_test(test_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
