/* loop.h - a small epoll event loop with a timer heap and a before-sleep
 * hook.  Knows nothing of Erlang: fds with a callback and a pointer, timers
 * with a callback and a pointer, and one hook that runs each time the loop is
 * about to wait (where connections flush their output). */
#ifndef KV_LOOP_H
#define KV_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#define LOOP_READ 1
#define LOOP_WRITE 2

struct loop;
typedef void loop_fd_cb(struct loop *l, int fd, int events, void *data);
typedef void loop_timer_cb(struct loop *l, uint64_t id, void *data);
typedef void loop_hook_cb(struct loop *l, void *data);

struct loop *loop_new(void);
void loop_free(struct loop *l);
/* Register fd for mask (LOOP_READ|LOOP_WRITE); one callback per fd. */
int loop_add_fd(struct loop *l, int fd, int mask, loop_fd_cb *cb, void *data);
int loop_mod_fd(struct loop *l, int fd, int mask);
void loop_del_fd(struct loop *l, int fd);
/* One-shot timer after ms milliseconds.  Returns an id (never 0). */
uint64_t loop_timer_add(struct loop *l, uint64_t ms, loop_timer_cb *cb, void *data);
/* Cancelling an unknown or fired id is harmless.  O(log n). */
void loop_timer_del(struct loop *l, uint64_t id);
void loop_set_before_sleep(struct loop *l, loop_hook_cb *cb, void *data);
/* After a wait that returned fd events, poll for up to us microseconds
 * (epoll_wait with no timeout) before the next sleeping wait; 0 = never. */
void loop_set_busy_wait(struct loop *l, uint32_t us);
/* Coalescing under load (base/coal.h): when the controller finds that it
 * gets more work done, each wait after a busy turn first sleeps (then
 * polls) instead of waking at the first event; the sleep is measured too,
 * up to max_us; 0 = never.  Work is counted in the units the layers above
 * report with loop_work. */
void loop_set_coalesce(struct loop *l, uint32_t max_us);
void loop_work(struct loop *l, uint32_t units);
/* The sleep in force now in µs, 0 when not coalescing (tests, logs). */
uint32_t loop_coalescing(struct loop *l);
/* Run until loop_stop.  Returns 0. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);
/* Monotonic milliseconds, read once per loop turn. */
uint64_t loop_now(struct loop *l);
uint64_t loop_clock_ms(void);

#endif
