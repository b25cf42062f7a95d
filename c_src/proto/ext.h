/* ext.h - the fixed term shapes the node reads and writes: atoms, tuples,
 * small integers, pids, references, lists, binaries.
 * Readers take a cursor over a term that term_walk already bounded and still
 * check every length (they fail, never read past).  Writers append to a
 * struct buf; where ei has the encoder (integers, binaries, headers) it is
 * used through ext_ei(), else the shape is written directly (pids and refs,
 * whose node atom is encoded once per node, not per message). */
#ifndef KV_EXT_H
#define KV_EXT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/buf.h"

#define EXT_ATOM_MAX 1020 /* bytes of a UTF-8 atom of 255 characters */

/* A node-qualified pid/ref as read from the wire.  node is a span into the
 * term (the atom's text, Latin-1 atoms already UTF-8 iff ascii). */
struct ext_pid {
    char node[EXT_ATOM_MAX + 1];
    uint32_t id, serial, creation;
};

struct ext_ref {
    char node[EXT_ATOM_MAX + 1];
    uint32_t creation;
    uint8_t len;
    uint32_t w[5];
};

/* Readers: true and cursor advanced on success; false leaves it undefined. */
bool ext_get_tuple(struct cur *c, uint32_t *arity);
bool ext_get_atom(struct cur *c, char *out, size_t outsz, size_t *len);
bool ext_is_atom(const struct cur *c);
bool ext_is_pid(const struct cur *c);
bool ext_get_pid(struct cur *c, struct ext_pid *p);
bool ext_get_ref(struct cur *c, struct ext_ref *r);
bool ext_get_int(struct cur *c, int64_t *v);
bool ext_get_list_header(struct cur *c, uint32_t *n); /* LIST_EXT or NIL (n = 0) */
/* Skip one (already walked) term; s gets its extent. */
bool ext_skip(struct cur *c, struct span *s);
/* Atom equality against a C string without copying (inline so that the
 * length of a literal is known at compile time). */
bool ext_atom_eqn(const struct cur *c, const char *s, size_t n);
static inline bool ext_atom_eq(const struct cur *c, const char *s)
{
    return ext_atom_eqn(c, s, strlen(s));
}
/* The atom's UTF-8 text as a span into the term, when it needs no
 * conversion (a UTF-8 tag, or a Latin-1 tag with ASCII text); false if
 * not an atom or Latin-1 beyond ASCII. */
bool ext_atom_utf8_any(const struct cur *c, struct span *s);
static inline bool ext_atom_utf8(const struct cur *c, struct span *s)
{
    struct cur t = *c;
    struct span h;
    uint8_t tag;
    /* SMALL_ATOM_UTF8_EXT (119), what every peer sends, inline */
    if (cur_peek_u8(&t, &tag) && tag == 119 && cur_span(&t, 2, &h))
        return cur_span(&t, h.p[1], s);
    return ext_atom_utf8_any(c, s);
}

/* Writers (false only on allocation failure). */
static inline bool ext_put_version(struct buf *b) { return buf_put_u8(b, 131); }
bool ext_put_large_tuple(struct buf *b, uint32_t arity);
static inline bool ext_put_tuple(struct buf *b, uint32_t arity)
{
    if (arity < 256) {
        uint8_t h[2] = {104, (uint8_t)arity}; /* SMALL_TUPLE_EXT */
        return buf_put(b, h, 2);
    }
    return ext_put_large_tuple(b, arity);
}
bool ext_put_atom(struct buf *b, const char *s, size_t n);
static inline bool ext_put_atomz(struct buf *b, const char *s)
{
    return ext_put_atom(b, s, strlen(s)); /* a literal's length is a constant */
}
bool ext_put_int(struct buf *b, int64_t v);
bool ext_put_u64(struct buf *b, uint64_t v); /* unlink ids: up to 2^64-1 */
bool ext_put_nil(struct buf *b);
bool ext_put_list_header(struct buf *b, uint32_t n);
bool ext_put_binary(struct buf *b, const void *p, size_t n);
/* Pid and ref with a pre-encoded node atom (the atom's full bytes). */
bool ext_put_pid(struct buf *b, struct span node_atom, uint32_t id, uint32_t serial,
                 uint32_t creation);
bool ext_put_ref(struct buf *b, struct span node_atom, uint32_t creation, const uint32_t *w,
                 uint8_t len);

#endif
