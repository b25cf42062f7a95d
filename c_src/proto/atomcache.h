/* atomcache.h - the distribution header's atom cache (DFLAG_DIST_HDR_ATOM_CACHE), pure.
 * Owns: one connection's two caches of 2048 atoms (what the peer told us,
 * what we told the peer), decoding a `131 68` header into the table its
 * ATOM_CACHE_REFs index, and the rewriting of frame bodies between the
 * header form (header, terms without 131) and the pass-through form
 * ('p', 131 control, 131 payload) that dist_decode and the encoders speak.
 * In, the rewrite is the walk: term_walk_expand checks each term and
 * copies it with its refs expanded, in one pass.  Out, our own frames are
 * rewritten into a buffer reserved for their size.
 * Why a rewrite and not cache refs inside ei and the getters: ei cannot
 * decode ATOM_CACHE_REF, and one copy of a ~100-byte frame costs less than
 * teaching every decoder a second atom form.  No sockets; peer bytes only
 * through the base/buf.h cursor getters; fragments (131 69/70) refused. */
#ifndef KV_ATOMCACHE_H
#define KV_ATOMCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "proto/dist.h"
#include "proto/term.h"

#define AC_SIZE 2048      /* ERTS_ATOM_CACHE_SIZE: 8 segments of 256 */
#define AC_MAX_REFS 255   /* NumberOfAtomCacheRefs is one byte */
#define AC_MAX_ATOM 1020  /* 255 characters of up to 4 UTF-8 bytes */
#define AC_FUN_NEST 64    /* funs inside funs' free variables, one frame each */

struct ac_atom {
    uint16_t len;
    uint8_t *txt; /* malloc'd, len bytes (NULL: empty slot) */
};

/* The atoms one header names, in ref order; texts point into the cache. */
struct ac_refs {
    uint32_t n;
    bool any_new;                 /* the header filled a slot */
    uint16_t cix[AC_MAX_REFS];    /* cache index of each ref */
    struct span atom[AC_MAX_REFS];
};

/* A header seen before that filled no slot: its bytes decide its refs
 * (filled slots are only ever replaced by a header that says so), so the
 * same bytes again are looked up, not decoded.  A client sends few shapes
 * (monitor, call, demonitor) over and over. */
#define AC_MEMO 4
#define AC_MEMO_HDR 40  /* 131 68 N flags + N indexes: N <= 23 */
struct ac_memo {
    uint8_t len;  /* 0: unused */
    uint8_t hdr[AC_MEMO_HDR];
};

/* A frame accepted before, as a template: a frame body equal to it in
 * every byte but the ones term_walk_expand's vary list names (pid and
 * reference numbers, small integers, binary contents) walks the same way
 * and expands to the template's output with those bytes copied over, so
 * it is copied, not walked.  Only frames of up to AC_TPL_IN bytes whose
 * header filled no slot; every template is dropped (gen) when any header
 * fills a slot, as its output holds the atoms' texts.  Out, the same for
 * our own pass-through frames and their header form. */
#define AC_TPL 4
#define AC_TPL_IN 256
#define AC_TPL_HDR 64
#define AC_TPL_OUT 512
struct ac_tpl {
    uint16_t n;        /* the body's length; 0: unused */
    uint16_t outlen;
    uint32_t gen;      /* a->in_gen when made */
    uint32_t depth;    /* the limits it was walked with */
    uint64_t terms;
    uint32_t nrun;
    struct {
        uint16_t in, out, len;
    } run[TERM_VARY];
    size_t ctl_len;
    struct term_marks fields;
    /* in: what dist_decode_walked made of the output, per operation byte
     * (monitor and demonitor frames share a template), its spans pointing
     * into out (a hit's body is out itself, patched in place) */
    uint8_t ndec;
    struct dist_msg dec[2];
    uint8_t in[AC_TPL_IN];   /* the body */
    uint8_t mask[AC_TPL_IN]; /* 0xff where a body must equal it, 0 in a run */
    uint8_t out[AC_TPL_OUT];
};

/* One connection's state (about 70 KB, only for peers with the flag):
 * ac_init, ac_free on close; a new connection starts from empty caches. */
struct ac {
    struct ac_atom in[AC_SIZE];   /* slots the peer filled */
    struct ac_atom out[AC_SIZE];  /* slots we filled at the peer */
    struct buf scratch;           /* in: the peer's frame expanded (owned) */
    struct buf oscratch;          /* out: our frame's terms rewritten (owned);
                                     not scratch: a reply or monitor sent to
                                     the same peer while its frame is being
                                     delivered must not overwrite that frame */
    struct buf hdr;               /* out: the header built (owned) */
    /* per-frame working state, kept here so a frame allocates nothing */
    struct ac_refs refs;          /* in: the current header's refs */
    uint32_t nrefs;               /* out: refs of the frame being built */
    uint16_t ref_slot[AC_MAX_REFS];
    bool ref_new[AC_MAX_REFS];
    int16_t slot_ref[AC_SIZE];    /* out: ref index of a slot, -1 none */
    struct ac_memo memo[AC_MEMO]; /* in: recent headers without new entries */
    uint16_t memo_cix[AC_MEMO][AC_MEMO_HDR];
    uint8_t memo_next;
    bool memo_off;                /* tests: decode every header */
    uint32_t in_gen;              /* in: bumped whenever a slot is filled */
    struct ac_tpl tpl[AC_TPL];    /* in: recent frames, see struct ac_tpl */
    uint8_t tpl_next;
    int8_t tpl_cur;               /* in: the template the last frame used or made, -1 */
    bool tpl_off;                 /* tests: walk every frame, rewrite every frame */
    size_t lazy;                  /* out: ac_frame_rewrite leaves verbatim frame ends
                                     of this many bytes in place (AC_LAZY; tests less) */
    /* out: the same for our own frames that filled no slot, their header
     * kept too; out_gen is bumped whenever an out slot changes */
    uint32_t out_gen;
    struct ac_tpl otpl[AC_TPL];
    uint8_t otpl_hdr[AC_TPL][AC_TPL_HDR];
    uint8_t otpl_hdrlen[AC_TPL];
    uint8_t otpl_next;
};

void ac_init(struct ac *a);
void ac_free(struct ac *a);

/* Decode the header at p[0..n) (p[0] = 131, p[1] = 68) into r, storing new
 * entries in a->in.  Returns the header's length, or -1 with *why set. */
long ac_decode_header(struct ac *a, const uint8_t *p, size_t n, struct ac_refs *r,
                      const char **why);

/* A header-form frame body -> the pass-through form in a->scratch ('p',
 * 131 control, 131 payload if any), every ATOM_CACHE_REF replaced by its
 * atom, and every term walked with lim on the way (term_walk_expand: the
 * checks dist_decode would make, in the same pass as the copy).  max bounds
 * the result.  0 with *out filled for dist_decode_walked (the body valid
 * until the next call), or -1 with *why. */
struct ac_in {
    struct span body;         /* into a: scratch, or a template's output */
    size_t ctl_len;           /* the control term's length, its 131 included */
    struct term_marks fields; /* where the control tuple's elements start in body */
};
int ac_frame_in(struct ac *a, const uint8_t *p, size_t n, const struct term_limits *lim,
                uint64_t max, struct ac_in *out, const char **why);

/* ac_frame_in, then dist_decode_walked on its output into *m; a frame
 * copied from a template whose output was decoded before for the same
 * operation byte takes that decoding (it depends on nothing the frames
 * may differ in).  in (may be NULL) gets what ac_frame_in made (body.p
 * NULL when it refused the frame).  0, or -1 with *why. */
int ac_frame_decode(struct ac *a, const uint8_t *p, size_t n, const struct term_limits *lim,
                    uint64_t max, struct ac_in *in, struct dist_msg *m, const char **why);

/* A pass-through body we built (p[0] = 'p', 131 control, 131 payload) ->
 * the header form: *hdr (131 68 ...) then *terms (no 131), both pointing
 * into a (valid until the next call; the body is the two one after the
 * other, and a template hit gives it whole in *hdr with *terms empty),
 * using and filling a->out: atoms
 * become ATOM_CACHE_REFs (up to 255 per frame).  false on no memory or a
 * body that is not ours to rewrite (nothing in a->out then relies on it). */
bool ac_frame_out(struct ac *a, const uint8_t *p, size_t n, struct span *hdr,
                  struct span *terms);
/* ac_frame_out for the pass-through body at b->data[in..len), the result
 * written at b->data[out] (out <= in; b->len moved to its end).  A
 * template hit writes the header form there directly, and copies only the
 * varying runs when in - out >= AC_OUT_ROOM (the frame was begun that far
 * past out); a miss is walked and copied back, except a verbatim end of
 * a->lazy (AC_LAZY) bytes or more (a big binary): it stays where it is, and only
 * what precedes it is written before it.  *body is where the result
 * begins: out, moved down by b->off if growing b compacted it
 * (buf_reserve); or, if may_move, later than out, the caller's bytes
 * between out and *body dead, so that the big end is not moved at all.
 * false as above. */
#define AC_OUT_ROOM (AC_TPL_HDR + AC_TPL_OUT)
#define AC_LAZY 4096
bool ac_frame_rewrite(struct ac *a, struct buf *b, size_t out, size_t in, bool may_move,
                      size_t *body);

#endif
