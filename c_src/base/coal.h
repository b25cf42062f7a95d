/* coal.h - when the event loop should coalesce: a pure controller, no I/O.
 *
 * Coalescing means: after a turn that did work, sleep a short while
 * before polling again, so that requests from many callers arrive and one
 * read, one turn and one reply write serve them all.  Under load that is
 * far cheaper for this process and for the peer (fewer segments to read,
 * and a peer writing to a process that is not blocked in epoll_wait pays no
 * wakeup inside its write).  With one caller it only adds the sleep to
 * every call.  Which side of that line a workload is on cannot be read off
 * one turn, so the controller measures: work units (reported by the layers
 * above, e.g. frames) and CPU time in two adjacent epochs, coalescing off
 * then on, and keeps on where it did clearly more work, or as much work
 * for clearly less CPU; off otherwise.  It measures again every period,
 * and at once when work starts after an idle spell.  Times come from the
 * caller (milliseconds of any clock, nanoseconds of CPU), so tests drive it
 * with made-up clocks, and the CPU clock is read only at epoch edges. */
#ifndef KV_COAL_H
#define KV_COAL_H

#include <stdbool.h>
#include <stdint.h>

#define COAL_EPOCH_MS 20    /* one measured epoch per mode */
#define COAL_PERIOD_MS 1000 /* steady time between measurements */
#define COAL_MIN_WORK 64    /* less than this in the on epoch: too idle to judge */
#define COAL_GAIN_PCT 110   /* on wins with >= 110% of off's work rate, */
#define COAL_SAME_PCT 97    /* or with >= 97% of it ... */
#define COAL_CPU_PCT 70     /* ... at <= 70% of off's CPU per unit of work */

enum coal_phase { COAL_STEADY, COAL_TRY_OFF, COAL_TRY_ON };

struct coal {
    bool on;               /* the mode in force now */
    bool chosen;           /* the mode the last measurement chose */
    enum coal_phase phase;
    uint64_t phase_start, phase_end; /* ms */
    uint64_t cpu_start;    /* ns of CPU at the start of a measured epoch */
    uint64_t work;         /* units in the current epoch */
    uint64_t work_off, dur_off, cpu_off; /* the last off epoch */
    uint64_t last_work;    /* ms of the last turn with work */
};

void coal_init(struct coal *c, uint64_t now_ms);
/* Whether the next coal_turn needs the CPU clock (an epoch starts or ends). */
bool coal_wants_cpu(const struct coal *c, uint64_t now_ms, uint64_t work);
/* After a loop turn that did work units of work (0 for an idle turn); cpu_ns
 * is the process's CPU time when coal_wants_cpu said so (else ignored).
 * Returns whether the next wait coalesces. */
bool coal_turn(struct coal *c, uint64_t now_ms, uint64_t work, uint64_t cpu_ns);

#endif
