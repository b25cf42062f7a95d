/* brake.h - the wrong-digest brake: per source address, a penalty that grows
 * with wrong digests and decays once they stop, the delay it puts on the
 * handshake verdict, and a bounded FIFO of the connections whose verdict is
 * being held.  Pure: time is passed in, no sockets, no timers (conn.c holds
 * the verdict with a loop timer).  See HARDENING.md item 3.
 *
 * Why the verdict, not the door: connections are always accepted (many good
 * peers share one address) and the penalty only delays the answer to a
 * digest.  It delays right and wrong digests alike, by the same amount,
 * computed before the digest is looked at: a quick `a` packet would tell a
 * guesser it was right, so holding back only failures bounds nothing.
 * Over the per-address bound the oldest held connection is closed without
 * its verdict, whatever its digest, so the close tells its sender nothing
 * (the guess is wasted, not answered).  A guesser from one address thus
 * learns at most BRAKE_HELD_MAX verdicts per BRAKE_MAX_DELAY_MS.
 *
 * Owns: a fixed table of records (an attacker can only evict records, never
 * grow the table; a record with held connections is never evicted).  No
 * state per stranger beyond that table. */
#ifndef KV_BRAKE_H
#define KV_BRAKE_H

#include <stdbool.h>
#include <stdint.h>

struct sockaddr;

#define BRAKE_SLOTS 256          /* records, in sets of BRAKE_WAYS */
#define BRAKE_WAYS 4
#define BRAKE_FREE 5             /* wrong digests (decayed) before any delay */
#define BRAKE_SCORE_MAX 64       /* the penalty stops growing here */
#define BRAKE_HALF_MS 1000       /* the penalty halves every second */
#define BRAKE_STEP_MS 50         /* delay per failure past BRAKE_FREE */
#define BRAKE_MAX_DELAY_MS 1000  /* well inside the peer's 7 s setup time */
#define BRAKE_HELD_MAX 256       /* connections held per address */

/* An address as the brake sees it: IPv4 (and IPv4-mapped IPv6) as
 * ::ffff:a.b.c.d; other IPv6 by its /64 prefix, the unit one host or one
 * site is given (keying full IPv6 addresses would give an attacker 2^64
 * fresh records). */
struct brake_key {
    uint8_t b[16];
};

/* A connection whose verdict is held; embedded in the connection. */
struct brake_hold {
    struct brake_hold *next, *prev;
    uint16_t slot;
    bool on;
};

struct brake_rec {
    struct brake_key key;
    bool used;
    uint32_t score;     /* wrong digests << 10, decayed at t */
    uint64_t t;         /* ms: when score was last decayed */
    uint32_t held;
    struct brake_hold *head, *tail; /* held connections, oldest first */
};

struct brake {
    uint64_t seed;
    struct brake_rec rec[BRAKE_SLOTS];
};

void brake_init(struct brake *b, uint64_t seed);
/* sa is AF_INET or AF_INET6; any other family gives the all-zero key. */
void brake_key_from_sa(struct brake_key *k, const struct sockaddr *sa);
void brake_key_v4(struct brake_key *k, uint32_t ip_network_order);
/* The delay (ms) the verdict of a handshake from k must wait now; 0 when
 * the address is not under penalty.  Ask before looking at the digest. */
uint32_t brake_delay(struct brake *b, const struct brake_key *k, uint64_t now);
/* A wrong digest from k.  True when it put the address under penalty (the
 * caller logs that once per episode). */
bool brake_failed(struct brake *b, const struct brake_key *k, uint64_t now);
/* Hold h (not held yet) for k.  Returns the oldest hold of k, already
 * released, when k was at BRAKE_HELD_MAX: its connection must close without
 * a verdict.  NULL otherwise; NULL with h not held when no record could be
 * found (every way of the set holds connections): answer h at once. */
struct brake_hold *brake_hold(struct brake *b, struct brake_hold *h, const struct brake_key *k,
                              uint64_t now);
/* Release h (its verdict is due, or its connection closed).  Harmless when
 * h is not held. */
void brake_release(struct brake *b, struct brake_hold *h);
/* The decayed penalty of k in whole wrong digests (for tests and logs). */
uint32_t brake_score(struct brake *b, const struct brake_key *k, uint64_t now);
uint32_t brake_held(const struct brake *b, const struct brake_key *k);

#endif
