/* bucket.h - the bucket service: canonical key -> value bytes.
 * Owns: struct bucket (allocated on the first put; an empty bucket costs
 * nothing beyond its process slot) and every key/value record in it.
 * Values are kept byte-exact as received; keys by canonical encoding. */
#ifndef KV_BUCKET_H
#define KV_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "runtime/gen.h"

struct bucket;

/* Pure table. */
const uint8_t *bucket_get(const struct bucket *b, const uint8_t *key, size_t klen,
                          uint64_t seed, size_t *vlen);
/* Insert or replace; false on allocation failure.  *bp may be NULL. */
bool bucket_put(struct bucket **bp, const uint8_t *key, size_t klen, const uint8_t *val,
                size_t vlen, uint64_t seed);
/* Remove; returns the record to free with bucket_rec_free (NULL if absent),
 * its value at *val. */
void *bucket_take(struct bucket *b, const uint8_t *key, size_t klen, uint64_t seed,
                  const uint8_t **val, size_t *vlen);
void bucket_rec_free(void *rec);
uint32_t bucket_count(const struct bucket *b);
void bucket_free(void *b);

/* A bucket process (the registry spawns them; state: struct bucket). */
extern const struct behaviour bucket_behaviour;

#endif
