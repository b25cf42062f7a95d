/* brake.c - the wrong-digest brake (see brake.h): penalty records, their
 * decay, the verdict delay and the held-connection FIFO per address. */
#include "wire/brake.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define ONE (1u << 10) /* one wrong digest in score units */
#define NSETS (BRAKE_SLOTS / BRAKE_WAYS)

void brake_init(struct brake *b, uint64_t seed)
{
    memset(b, 0, sizeof *b);
    b->seed = seed;
}

void brake_key_v4(struct brake_key *k, uint32_t ip)
{
    memset(k, 0, sizeof *k);
    k->b[10] = k->b[11] = 0xff;
    memcpy(k->b + 12, &ip, 4);
}

void brake_key_from_sa(struct brake_key *k, const struct sockaddr *sa)
{
    memset(k, 0, sizeof *k);
    if (sa->sa_family == AF_INET) {
        brake_key_v4(k, ((const struct sockaddr_in *)sa)->sin_addr.s_addr);
    } else if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0)
            memcpy(k->b, a, 16); /* already the IPv4 form */
        else
            memcpy(k->b, a, 8);  /* the /64 */
    }
}

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Keyed by the node's random seed, so nobody can aim at a set. */
static unsigned set_of(const struct brake *b, const struct brake_key *k)
{
    uint64_t w0, w1;
    memcpy(&w0, k->b, 8);
    memcpy(&w1, k->b + 8, 8);
    return (unsigned)(mix(mix(b->seed ^ w0) ^ w1) % NSETS);
}

/* Whole halvings are applied to the record; the part of a half-life since
 * is applied on reading, linearly (2^-x ~ 1 - x/2 on [0,1)). */
static uint32_t score_now(struct brake_rec *r, uint64_t now)
{
    if (now > r->t) {
        uint64_t h = (now - r->t) / BRAKE_HALF_MS;
        if (h >= 32) {
            r->score = 0;
            r->t = now;
        } else if (h > 0) {
            r->score >>= h;
            r->t += h * BRAKE_HALF_MS;
        }
    } else {
        r->t = now; /* a clock that never goes back; be safe anyway */
    }
    uint64_t rem = now - r->t;
    return r->score - (uint32_t)((uint64_t)r->score * rem / (2 * BRAKE_HALF_MS));
}

static bool rec_live(struct brake_rec *r, uint64_t now)
{
    return r->used && (r->held > 0 || score_now(r, now) > 0);
}

static struct brake_rec *find(struct brake *b, const struct brake_key *k, uint64_t now)
{
    struct brake_rec *set = &b->rec[set_of(b, k) * BRAKE_WAYS];
    for (int i = 0; i < BRAKE_WAYS; i++)
        if (set[i].used && memcmp(&set[i].key, k, sizeof *k) == 0) {
            if (rec_live(&set[i], now))
                return &set[i];
            set[i].used = false; /* decayed and idle: the way is free again */
            return NULL;
        }
    return NULL;
}

uint32_t brake_score(struct brake *b, const struct brake_key *k, uint64_t now)
{
    struct brake_rec *r = find(b, k, now);
    return r ? score_now(r, now) / ONE : 0;
}

uint32_t brake_held(const struct brake *b, const struct brake_key *k)
{
    const struct brake_rec *set = &b->rec[set_of(b, k) * BRAKE_WAYS];
    for (int i = 0; i < BRAKE_WAYS; i++)
        if (set[i].used && memcmp(&set[i].key, k, sizeof *k) == 0)
            return set[i].held;
    return 0;
}

static uint32_t delay_of(uint32_t s)
{
    if (s < BRAKE_FREE * ONE)
        return 0;
    uint64_t d = (uint64_t)(s - (BRAKE_FREE - 1) * ONE) * BRAKE_STEP_MS / ONE;
    return d > BRAKE_MAX_DELAY_MS ? BRAKE_MAX_DELAY_MS : (uint32_t)d;
}

uint32_t brake_delay(struct brake *b, const struct brake_key *k, uint64_t now)
{
    struct brake_rec *r = find(b, k, now);
    return r ? delay_of(score_now(r, now)) : 0;
}

bool brake_failed(struct brake *b, const struct brake_key *k, uint64_t now)
{
    struct brake_rec *r = find(b, k, now);
    if (!r) {
        /* A free way, else the idle one with the least penalty.  Records
         * with held connections stay (their FIFO lives there). */
        struct brake_rec *set = &b->rec[set_of(b, k) * BRAKE_WAYS];
        uint32_t best = UINT32_MAX;
        for (int i = 0; i < BRAKE_WAYS; i++) {
            struct brake_rec *w = &set[i];
            if (!rec_live(w, now)) {
                r = w;
                break;
            }
            uint32_t s = score_now(w, now);
            if (w->held == 0 && s < best) {
                best = s;
                r = w;
            }
        }
        if (!r)
            return false; /* every way holds connections: nothing to evict */
        memset(r, 0, sizeof *r);
        r->used = true;
        r->key = *k;
        r->t = now;
    }
    uint32_t before = score_now(r, now);
    uint32_t after = before + ONE;
    if (after > BRAKE_SCORE_MAX * ONE)
        after = BRAKE_SCORE_MAX * ONE;
    r->score = after;
    r->t = now;
    return before < BRAKE_FREE * ONE && after >= BRAKE_FREE * ONE;
}

static void unlink_hold(struct brake_rec *r, struct brake_hold *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        r->head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        r->tail = h->prev;
    h->next = h->prev = NULL;
    h->on = false;
    r->held--;
}

struct brake_hold *brake_hold(struct brake *b, struct brake_hold *h, const struct brake_key *k,
                              uint64_t now)
{
    h->on = false;
    h->next = h->prev = NULL;
    struct brake_rec *r = find(b, k, now);
    if (!r)
        return NULL;
    struct brake_hold *evicted = NULL;
    if (r->held >= BRAKE_HELD_MAX) {
        evicted = r->head;
        unlink_hold(r, evicted);
    }
    h->slot = (uint16_t)(r - b->rec);
    h->on = true;
    h->prev = r->tail;
    if (r->tail)
        r->tail->next = h;
    else
        r->head = h;
    r->tail = h;
    r->held++;
    return evicted;
}

void brake_release(struct brake *b, struct brake_hold *h)
{
    if (!h->on)
        return;
    unlink_hold(&b->rec[h->slot], h);
}
