/* term.h - external term format over untrusted bytes.
 * Owns: the bounded, iterative walker that every peer term passes before any
 * ei call sees it; canonical encoding (one byte form per Erlang value, so
 * that =:= equal terms compare equal as bytes); a keyed hash.
 * Terms here carry no leading 131 version byte unless a function says so. */
#ifndef KV_TERM_H
#define KV_TERM_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"

struct term_limits {
    uint32_t max_depth; /* nesting of tuples/lists/maps/funs; e.g. 1000 */
    uint64_t max_terms; /* total sub-terms; e.g. 16M */
};

enum term_err {
    TERM_E_SHORT = -1,   /* a length or arity points past the end */
    TERM_E_TAG = -2,     /* unknown or unsupported tag (incl. ATOM_CACHE_REF) */
    TERM_E_DEPTH = -3,   /* nested deeper than max_depth */
    TERM_E_SIZE = -4,    /* more sub-terms than max_terms */
    TERM_E_ATOM = -5,    /* atom over 255 characters or bad UTF-8 */
    TERM_E_BAD = -6,     /* any other illegal field (ref > 5 words, bits 0/ >8, ...) */
    TERM_E_NOMEM = -7,   /* the walker's stack (24 bytes per open container) */
    TERM_E_BIG = -8,     /* term_walk_expand: the result would pass its max */
    TERM_E_ACREF = -9,   /* term_walk_expand: an ATOM_CACHE_REF past the header's refs */
};

/* Walk exactly one term at p[0..n) without reading outside it, iteratively.
 * Returns the term's length in bytes (> 0) or a negative enum term_err. */
long term_walk(const uint8_t *p, size_t n, const struct term_limits *lim);
/* Same for a term with its 131 version byte first; the result includes it. */
long term_walk_versioned(const uint8_t *p, size_t n, const struct term_limits *lim);
const char *term_strerror(long err);

/* The atoms a header-form frame's ATOM_CACHE_REFs index, in ref order
 * (proto/atomcache.c fills them; every text passed term_atom_text_ok). */
struct term_refs {
    uint32_t n;
    const struct span *atom;
};

/* Where the sub-terms of a term's outermost container start in the
 * expanded copy (offsets from buf_head of out): at[i] for i < TERM_MARKS,
 * n counting them all.  A control tuple's fields, found without a skip. */
#define TERM_MARKS 8
struct term_marks {
    uint32_t n;
    size_t at[TERM_MARKS];
};

/* The bytes of a walked term that no check of the walker reads: pid and
 * reference numbers (not the old one-byte creations), integers of
 * SMALL_INTEGER_EXT and INTEGER_EXT, binary contents.  A term equal to a
 * walked one everywhere else walks the same way and expands to the same
 * bytes but these (proto/atomcache.c's frame templates rely on it).  Runs
 * with input offsets (plus in_base) and offsets in out; n counts them all,
 * past TERM_VARY only counted. */
#define TERM_VARY 16
struct term_vary {
    uint32_t n;
    struct {
        uint32_t in, out, len;
    } run[TERM_VARY];
};

struct term_expand {
    const struct term_refs *refs; /* what ATOM_CACHE_REF indexes */
    size_t max;                   /* out may not hold more (TERM_E_BIG) */
    struct term_marks *marks;     /* may be NULL: the container's elements */
    struct term_vary *vary;       /* may be NULL: appended to, not reset */
    size_t in_base;               /* added to vary's input offsets */
};

/* term_walk for a term in the distribution header form (no 131; an
 * ATOM_CACHE_REF is legal and must index e->refs) that also appends the
 * term to out in the plain form: each ref replaced by its atom as
 * SMALL_ATOM_UTF8_EXT (ATOM_UTF8_EXT past 255 bytes), fun Size fields
 * made to match.  One pass: the checks and the copy.  Returns the input
 * length or a negative enum term_err (out then holds a partial copy). */
long term_walk_expand(const uint8_t *p, size_t n, const struct term_limits *lim,
                      const struct term_expand *e, struct buf *out);
/* An atom text the walker accepts in a UTF-8 atom: valid UTF-8 of at most
 * 255 characters (and 1020 bytes). */
bool term_atom_text_ok(const uint8_t *s, size_t n);
/* The length of the term at p[0..n) (> 0) or a negative enum term_err,
 * for terms term_walk has already checked: every length is checked, but
 * nothing else (no limits, atoms' UTF-8, floats, fun sizes).  O(1) memory. */
long term_skip(const uint8_t *p, size_t n);

/* Append the canonical encoding of the (already walked) term p[0..n) to out,
 * without version byte.  Equal Erlang values give equal bytes:
 * atoms -> SMALL_ATOM_UTF8_EXT / ATOM_UTF8_EXT (Latin-1 atoms converted),
 * integers -> SMALL_INTEGER_EXT 0..255, INTEGER_EXT for other int32, else
 * SMALL_BIG_EXT/LARGE_BIG_EXT without high zero bytes (zero-magnitude bigs
 * become SMALL_INTEGER_EXT 0); STRING_EXT -> LIST_EXT of integers; tuples by
 * arity; map entries sorted by their canonical key bytes; FLOAT_EXT ->
 * NEW_FLOAT_EXT; BIT_BINARY_EXT with 8 bits -> BINARY_EXT, unused bits
 * zeroed; PID_EXT/PORT_EXT/REFERENCE_EXT/NEW_* -> NEW_PID_EXT/V4_PORT_EXT/
 * NEWER_REFERENCE_EXT; funs with canonical sub-terms.
 * Returns false on allocation failure or malformed input. */
bool term_canon(const uint8_t *p, size_t n, struct buf *out);

/* True when p[0..n) is exactly one term already in canonical form (so
 * term_canon would copy it unchanged): a caller may use the bytes as they
 * are.  False means "maybe not": canonicalise. */
bool term_is_canon(const uint8_t *p, size_t n);

/* Keyed 64-bit hash of a byte string (hash of canonical bytes for keys). */
uint64_t term_hash(const uint8_t *p, size_t n, uint64_t seed);
/* SipHash with its full 128-bit key (k0, k1 as in the reference code: key
 * bytes read little-endian); 1-3 is the one under term_hash, 2-4 the
 * reference's; exposed for tests. */
uint64_t term_siphash24(const uint8_t *p, size_t n, uint64_t k0, uint64_t k1);
uint64_t term_siphash13(const uint8_t *p, size_t n, uint64_t k0, uint64_t k1);

#endif
