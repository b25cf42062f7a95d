/* coal.c - the coalescing controller (see coal.h): per measurement,
 * interleaved slices of off, on at the chosen sleep and on at a
 * neighbouring sleep; the better on mode sets the sleep, and on is kept
 * where it did more work than off, or about the same work for less CPU.
 * Pure: no clock of its own, no I/O. */
#include "base/coal.h"

uint32_t coal_level_us(const struct coal *c, unsigned level)
{
    uint32_t us = c->max_us >> (COAL_LEVELS - 1 - level);
    return us ? us : 1;
}

static void begin(struct coal *c, enum coal_phase p, uint32_t sleep_us, uint64_t now,
                  uint64_t len, uint64_t cpu)
{
    c->phase = p;
    c->sleep_us = sleep_us;
    c->work = 0;
    c->phase_start = now;
    c->phase_end = now + len;
    c->cpu_start = cpu;
}

void coal_init(struct coal *c, uint64_t now_ms, uint32_t max_us)
{
    *c = (struct coal){.max_us = max_us, .level = COAL_START_LEVEL, .backoff = 1};
    begin(c, COAL_STEADY, 0, now_ms, COAL_PERIOD_MS, 0);
    c->last_work = now_ms;
}

/* Steady: measure at a turn with work once the period is over, or at
 * once when work comes after an idle spell (the load is new).  An idle
 * loop is never measured. */
static bool start_due(const struct coal *c, uint64_t now, uint64_t work)
{
    return work && c->phase == COAL_STEADY &&
           (now >= c->phase_end || now - c->last_work >= COAL_PERIOD_MS);
}

bool coal_wants_cpu(const struct coal *c, uint64_t now, uint64_t work)
{
    return c->max_us && (c->phase == COAL_MEASURE ? now >= c->phase_end : start_due(c, now, work));
}

/* a's work rate >= pct% of b's (work/dur, without division) */
static bool rate_ge(const struct coal_epoch *a, const struct coal_epoch *b, uint64_t pct)
{
    return a->work * b->dur * 100 >= b->work * a->dur * pct;
}

/* a's CPU per unit of work <= pct% of b's (CPU in µs keeps products small) */
static bool cpu_le(const struct coal_epoch *a, const struct coal_epoch *b, uint64_t pct)
{
    return (a->cpu / 1000) * b->work * 100 <= (b->cpu / 1000) * a->work * pct;
}

/* On (measured as e) against off. */
static bool on_wins(const struct coal *c, const struct coal_epoch *e)
{
    const struct coal_epoch *off = &c->m[COAL_OFF];
    if (e->work < COAL_MIN_WORK)
        return false;
    return rate_ge(e, off, COAL_GAIN_PCT) ||
           (rate_ge(e, off, COAL_SAME_PCT) && cpu_le(e, off, COAL_CPU_PCT));
}

/* The neighbouring level to try, alternating up and down. */
static uint8_t neighbour(struct coal *c)
{
    c->up = !c->up;
    if (c->up ? c->level + 1 >= COAL_LEVELS : c->level == 0)
        c->up = !c->up;
    return (uint8_t)(c->up ? c->level + 1 : c->level - 1);
}

static void start_measuring(struct coal *c, uint64_t now, uint64_t cpu)
{
    c->next = neighbour(c);
    c->slice = 0;
    for (int i = 0; i < 3; i++)
        c->m[i] = (struct coal_epoch){0};
    begin(c, COAL_MEASURE, 0, now, COAL_SLICE_MS, cpu);
}

static void decide(struct coal *c, uint64_t now, uint64_t cpu)
{
    /* the neighbour replaces the current sleep if it did more work, or
     * about as much for less CPU */
    const struct coal_epoch *on = &c->m[COAL_ON], *next = &c->m[COAL_NEXT], *best = on;
    if (rate_ge(next, on, 103) || (rate_ge(next, on, 97) && cpu_le(next, on, 85))) {
        best = next;
        c->level = c->next;
    }
    c->chosen = on_wins(c, best);
    if (c->chosen || rate_ge(best, &c->m[COAL_OFF], COAL_CLEAR_PCT))
        c->backoff = 1;
    else if (c->backoff < COAL_BACKOFF_MAX)
        c->backoff *= 2;
    begin(c, COAL_STEADY, c->chosen ? coal_level_us(c, c->level) : 0, now,
          (uint64_t)COAL_PERIOD_MS * c->backoff, cpu);
}

uint32_t coal_turn(struct coal *c, uint64_t now, uint64_t work, uint64_t cpu)
{
    if (!c->max_us)
        return 0;
    if (start_due(c, now, work)) {
        if (now - c->last_work >= COAL_PERIOD_MS)
            c->backoff = 1; /* new load: judge it afresh */
        c->last_work = now;
        start_measuring(c, now, cpu);
        c->work = work; /* this turn's work counts to the first slice */
        return c->sleep_us;
    }
    if (work)
        c->last_work = now;
    c->work += work;
    if (c->phase == COAL_STEADY || now < c->phase_end)
        return c->sleep_us;
    struct coal_epoch *e = &c->m[c->slice % 3];
    e->work += c->work;
    e->dur += now - c->phase_start; /* >= the slice: turns can overrun it */
    e->cpu += cpu - c->cpu_start;
    ++c->slice;
    if (c->slice == 3 && !rate_ge(&c->m[COAL_ON], &c->m[COAL_OFF], COAL_EARLY_PCT) &&
        !rate_ge(&c->m[COAL_NEXT], &c->m[COAL_OFF], COAL_EARLY_PCT))
        c->slice = 3 * COAL_ROUNDS; /* plainly slower: off, no more slow slices */
    if (c->slice == 3 * COAL_ROUNDS) {
        decide(c, now, cpu);
        return c->sleep_us;
    }
    unsigned mode = c->slice % 3;
    begin(c, COAL_MEASURE,
          mode == COAL_OFF ? 0 : coal_level_us(c, mode == COAL_ON ? c->level : c->next), now,
          COAL_SLICE_MS, cpu);
    return c->sleep_us;
}
