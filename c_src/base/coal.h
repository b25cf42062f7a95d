/* coal.h - when and how long the event loop should coalesce: a pure
 * controller, no I/O.
 *
 * Coalescing means: after a turn that did work, sleep a short while
 * before polling again, so that requests from many callers arrive and one
 * read, one turn and one reply write serve them all.  Under load that is
 * far cheaper for this process and for the peer (fewer segments to read,
 * and a peer writing to a process that is not blocked in epoll_wait pays no
 * wakeup inside its write).  With one caller it only adds the sleep to
 * every call.  Which side of that line a workload is on, and how long a
 * sleep fills a batch without starving the callers, cannot be read off one
 * turn, so the controller measures: work units (reported by the layers
 * above, e.g. frames) and CPU time with coalescing off, on with the current
 * sleep, and on with a neighbouring sleep (half or double, in turn), in
 * interleaved 5 ms slices, so that drift in the load falls on all three
 * alike (a load that coalescing plainly slows, such as one caller, is
 * judged after the first three).  The better on mode sets the sleep; on
 * is kept where it did clearly more work than off, or as much for clearly
 * less CPU; off otherwise.  It measures again every period (backing off, up to 8 periods,
 * while off wins clearly, so a lone caller rarely meets a sleep), and at
 * once when work starts after an idle spell.  Times come from the caller
 * (milliseconds of any clock, nanoseconds of CPU), so tests drive it with
 * made-up clocks, and the CPU clock is read only at slice edges. */
#ifndef KV_COAL_H
#define KV_COAL_H

#include <stdbool.h>
#include <stdint.h>

#define COAL_SLICE_MS 5     /* measuring: off, on, next in turn, slice by slice */
#define COAL_ROUNDS 8       /* rounds of the three slices per measurement */
#define COAL_EARLY_PCT 75   /* after one round, both on slices < 75% of off's
                               rate: off, without the other rounds */
#define COAL_PERIOD_MS 1000 /* steady time between measurements */
#define COAL_BACKOFF_MAX 8  /* the period grows to 8 x while off wins clearly */
#define COAL_LEVELS 5       /* sleeps: max/16, max/8, max/4, max/2, max */
#define COAL_START_LEVEL 2  /* the first sleep tried: max/4 */
#define COAL_MIN_WORK 64    /* less than this on in a measurement: too idle to judge */
#define COAL_GAIN_PCT 110   /* on wins with >= 110% of off's work rate, */
#define COAL_SAME_PCT 97    /* or with >= 97% of it (as much, within the
                               slices' noise: one caller's latency is not
                               traded for CPU) ... */
#define COAL_CPU_PCT 70     /* ... at <= 70% of off's CPU per unit of work */
#define COAL_CLEAR_PCT 90   /* off wins clearly: on < 90% of its rate */

enum coal_phase { COAL_STEADY, COAL_MEASURE };
enum { COAL_OFF, COAL_ON, COAL_NEXT };

/* One mode's measured slices, summed. */
struct coal_epoch {
    uint64_t work, dur, cpu; /* units, ms, ns */
};

struct coal {
    uint32_t max_us;       /* the longest sleep; 0 = never coalesce */
    uint32_t sleep_us;     /* the sleep in force now; 0 = off */
    bool chosen;           /* the last measurement chose on */
    uint8_t level;         /* the chosen sleep: max_us >> (COAL_LEVELS-1-level) */
    uint8_t next;          /* the neighbour tried in COAL_TRY_NEXT */
    bool up;               /* which neighbour comes next: double (true) or half */
    uint8_t backoff;       /* the period is backoff x COAL_PERIOD_MS */
    enum coal_phase phase;
    uint8_t slice;         /* measuring: slice number; its mode is slice % 3 */
    uint64_t phase_start, phase_end; /* ms (of the slice, when measuring) */
    uint64_t cpu_start;    /* ns of CPU at the start of a slice */
    uint64_t work;         /* units in the current slice */
    struct coal_epoch m[3]; /* this measurement: off, on, next */
    uint64_t last_work;    /* ms of the last turn with work */
};

void coal_init(struct coal *c, uint64_t now_ms, uint32_t max_us);
/* The sleep of a level, in µs (>= 1). */
uint32_t coal_level_us(const struct coal *c, unsigned level);
/* Whether the next coal_turn needs the CPU clock (a slice starts or ends). */
bool coal_wants_cpu(const struct coal *c, uint64_t now_ms, uint64_t work);
/* After a loop turn that did work units of work (0 for an idle turn); cpu_ns
 * is the process's CPU time when coal_wants_cpu said so (else ignored).
 * Returns the sleep before the next poll in µs, 0 for none. */
uint32_t coal_turn(struct coal *c, uint64_t now_ms, uint64_t work, uint64_t cpu_ns);

#endif
