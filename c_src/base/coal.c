/* coal.c - the coalescing controller (see coal.h): two measured epochs,
 * off then on, every period; on is kept where it did more work, or the
 * same work for less CPU.  Pure: no clock of its own, no I/O. */
#include "base/coal.h"

static void begin(struct coal *c, enum coal_phase p, bool on, uint64_t now, uint64_t len,
                  uint64_t cpu)
{
    c->phase = p;
    c->on = on;
    c->work = 0;
    c->phase_start = now;
    c->phase_end = now + len;
    c->cpu_start = cpu;
}

void coal_init(struct coal *c, uint64_t now_ms)
{
    *c = (struct coal){0};
    begin(c, COAL_STEADY, false, now_ms, COAL_PERIOD_MS, 0);
    c->last_work = now_ms;
}

/* Work after an idle spell: the load is new, measure it now. */
static bool restart(const struct coal *c, uint64_t now, uint64_t work)
{
    return work && c->phase == COAL_STEADY && now - c->last_work >= COAL_PERIOD_MS;
}

bool coal_wants_cpu(const struct coal *c, uint64_t now, uint64_t work)
{
    return now >= c->phase_end || restart(c, now, work);
}

/* On against off, as rates: work/dur, and CPU per unit of work. */
static bool on_wins(const struct coal *c, uint64_t work, uint64_t dur, uint64_t cpu)
{
    if (work < COAL_MIN_WORK)
        return false;
    /* work/dur >= pct% of work_off/dur_off, without division */
    uint64_t on_rate = work * c->dur_off * 100, off_rate = c->work_off * dur;
    if (on_rate >= off_rate * COAL_GAIN_PCT)
        return true;
    /* cpu/work <= pct% of cpu_off/work_off; CPU in µs keeps the products small */
    return on_rate >= off_rate * COAL_SAME_PCT &&
           (cpu / 1000) * c->work_off * 100 <= (c->cpu_off / 1000) * work * COAL_CPU_PCT;
}

bool coal_turn(struct coal *c, uint64_t now, uint64_t work, uint64_t cpu)
{
    if (restart(c, now, work))
        begin(c, COAL_TRY_OFF, false, now, COAL_EPOCH_MS, cpu);
    if (work)
        c->last_work = now;
    c->work += work;
    if (now < c->phase_end)
        return c->on;
    uint64_t dur = now - c->phase_start; /* >= the epoch: turns can overrun it */
    switch (c->phase) {
    case COAL_STEADY:
        begin(c, COAL_TRY_OFF, false, now, COAL_EPOCH_MS, cpu);
        break;
    case COAL_TRY_OFF:
        c->work_off = c->work;
        c->dur_off = dur;
        c->cpu_off = cpu - c->cpu_start;
        begin(c, COAL_TRY_ON, true, now, COAL_EPOCH_MS, cpu);
        break;
    case COAL_TRY_ON:
        c->chosen = on_wins(c, c->work, dur, cpu - c->cpu_start);
        begin(c, COAL_STEADY, c->chosen, now, COAL_PERIOD_MS, cpu);
        break;
    }
    return c->on;
}
