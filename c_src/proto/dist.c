/* dist.c - frame cutting and control-message decoding (see dist.h). */
#include "proto/dist.h"

#include <stddef.h>
#include <string.h>

#include <ei.h>

#include "proto/ext.h"

long dist_cut(const uint8_t *p, size_t n, uint64_t max, struct span *body)
{
    struct cur c = cur_make(p, n);
    uint32_t len;
    if (!cur_n32(&c, &len))
        return DIST_NEED_MORE;
    if (len > max)
        return DIST_E_TOO_BIG;
    if (!cur_span(&c, len, body))
        return DIST_NEED_MORE;
    return (long)c.pos;
}

size_t dist_frame_begin(struct buf *b)
{
    size_t start = b->len;
    buf_put_n32(b, 0);
    buf_put_u8(b, 'p');
    return start;
}

bool dist_frame_end(struct buf *b, size_t start)
{
    size_t n = b->len - start - 4;
    if (n > UINT32_MAX)
        return false;
    put_n32(b->data + start, (uint32_t)n);
    return true;
}

/* What each operation's control tuple holds after the op.  types: P pid,
 * A atom, X pid or atom, R ref, I integer, T any term.  roles: f from, t to,
 * r ref, e exit reason, i unlink id, x ignored (unused or trace token).
 * payload: 0 none, 'M' message, 'R' exit reason. */
struct opshape {
    int op;
    enum dist_kind kind;
    const char *types;
    const char *roles;
    char payload;
};

static const struct opshape shapes[] = {
    {DOP_LINK, DK_LINK, "PP", "ft", 0},
    {DOP_SEND, DK_SEND, "TP", "xt", 'M'},
    {DOP_EXIT, DK_EXIT, "PPT", "fte", 0},
    {DOP_UNLINK, DK_UNLINK, "PP", "ft", 0},
    {DOP_REG_SEND, DK_REG_SEND, "PTA", "fxt", 'M'},
    {DOP_GROUP_LEADER, DK_GROUP_LEADER, "PP", "ft", 0},
    {DOP_EXIT2, DK_EXIT2, "PPT", "fte", 0},
    {DOP_SEND_TT, DK_SEND, "TPT", "xtx", 'M'},
    {DOP_EXIT_TT, DK_EXIT, "PPTT", "ftxe", 0},
    {DOP_REG_SEND_TT, DK_REG_SEND, "PTAT", "fxtx", 'M'},
    {DOP_EXIT2_TT, DK_EXIT2, "PPTT", "ftxe", 0},
    {DOP_MONITOR_P, DK_MONITOR, "PXR", "ftr", 0},
    {DOP_DEMONITOR_P, DK_DEMONITOR, "PXR", "ftr", 0},
    {DOP_MONITOR_P_EXIT, DK_MONITOR_EXIT, "XPRT", "ftre", 0},
    {DOP_SEND_SENDER, DK_SEND, "PP", "ft", 'M'},
    {DOP_SEND_SENDER_TT, DK_SEND, "PPT", "ftx", 'M'},
    {DOP_PAYLOAD_EXIT, DK_EXIT, "PP", "ft", 'R'},
    {DOP_PAYLOAD_EXIT_TT, DK_EXIT, "PPT", "ftx", 'R'},
    {DOP_PAYLOAD_EXIT2, DK_EXIT2, "PP", "ft", 'R'},
    {DOP_PAYLOAD_EXIT2_TT, DK_EXIT2, "PPT", "ftx", 'R'},
    {DOP_PAYLOAD_MONITOR_P_EXIT, DK_MONITOR_EXIT, "XPR", "ftr", 'R'},
    {DOP_UNLINK_ID, DK_UNLINK, "IPP", "ift", 0},
    {DOP_UNLINK_ID_ACK, DK_UNLINK_ACK, "IPP", "ift", 0},
};

/* shapes[] by operation number (1 + index; 0 = unknown), built once. */
static uint8_t shape_index[DOP_UNLINK_ID_ACK + 1];

/* The same shapes compiled for decode_control_marked: per field the tag
 * classes it may have (TC_*) and where its span goes in struct dist_msg
 * (NO_ROLE: ignored); usable false for shapes with an unlink id. */
enum { TC_PID = 1, TC_ATOM = 2, TC_REF = 4, TC_INT = 8, TC_ANY = 0xff, NO_ROLE = 0xff };
struct fast_shape {
    bool usable;
    uint8_t nf;
    uint8_t want[4];
    uint8_t role[4];
};
static struct fast_shape fast_shapes[DOP_UNLINK_ID_ACK + 1];
static const uint8_t tag_class[256] = {
    [ERL_NEW_PID_EXT] = TC_PID, [ERL_PID_EXT] = TC_PID,
    [ERL_SMALL_ATOM_UTF8_EXT] = TC_ATOM, [ERL_ATOM_UTF8_EXT] = TC_ATOM,
    [ERL_SMALL_ATOM_EXT] = TC_ATOM, [ERL_ATOM_EXT] = TC_ATOM,
    [ERL_NEWER_REFERENCE_EXT] = TC_REF, [ERL_NEW_REFERENCE_EXT] = TC_REF,
    [ERL_REFERENCE_EXT] = TC_REF, [ERL_SMALL_INTEGER_EXT] = TC_INT,
    [ERL_INTEGER_EXT] = TC_INT, [ERL_SMALL_BIG_EXT] = TC_INT,
};

/* A field type letter of shapes[] as tag classes (TC_ANY: any term). */
static uint8_t want_mask(char type)
{
    switch (type) {
    case 'P': return TC_PID;
    case 'A': return TC_ATOM;
    case 'X': return TC_PID | TC_ATOM;
    case 'R': return TC_REF;
    case 'I': return TC_INT;
    default: return TC_ANY;
    }
}

/* A term whose first byte is t fits a field of these classes. */
static bool tag_fits(uint8_t want, uint8_t t)
{
    return want == TC_ANY || (tag_class[t] & want);
}

static void compile_shape(const struct opshape *s)
{
    struct fast_shape *f = &fast_shapes[s->op];
    f->nf = (uint8_t)strlen(s->types);
    f->usable = f->nf <= 4;
    for (uint8_t i = 0; i < f->nf && f->usable; i++) {
        f->want[i] = want_mask(s->types[i]);
        switch (s->roles[i]) {
        case 'f': f->role[i] = offsetof(struct dist_msg, from); break;
        case 't': f->role[i] = offsetof(struct dist_msg, to); break;
        case 'r': f->role[i] = offsetof(struct dist_msg, ref); break;
        case 'e': f->role[i] = offsetof(struct dist_msg, reason); break;
        case 'i': f->usable = false; break; /* an unlink id: decoded, not placed */
        default: f->role[i] = NO_ROLE; break;
        }
    }
}

static const struct opshape *shape_of(int64_t op)
{
    if (op < 0 || op > DOP_UNLINK_ID_ACK)
        return NULL;
    if (!shape_index[DOP_LINK]) /* first call: fill the index */
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            shape_index[shapes[i].op] = (uint8_t)(i + 1);
            compile_shape(&shapes[i]);
        }
    uint8_t k = shape_index[op];
    return k ? &shapes[k - 1] : NULL;
}

/* An unlink id: unsigned 64-bit on the wire (the BEAM's Uint64), so a
 * SMALL_BIG_EXT of up to 8 bytes with any top bit, never negative. */
static bool get_u64(struct cur *c, uint64_t *v)
{
    uint8_t tag, n, sign, b;
    if (!cur_peek_u8(c, &tag))
        return false;
    if (tag != ERL_SMALL_BIG_EXT) {
        int64_t s;
        if (!ext_get_int(c, &s) || s < 0)
            return false;
        *v = (uint64_t)s;
        return true;
    }
    if (!cur_u8(c, &tag) || !cur_u8(c, &n) || !cur_u8(c, &sign) || n > 8)
        return false;
    uint64_t m = 0;
    for (int i = 0; i < n; i++) {
        if (!cur_u8(c, &b))
            return false;
        m |= (uint64_t)b << (8 * i);
    }
    if (sign && m != 0)
        return false;
    *v = m;
    return true;
}

/* A control field's type, by its tag (every field is walked or skipped
 * whole as well). */
static bool field_ok(char want, const struct cur *c)
{
    uint8_t t;
    return cur_peek_u8(c, &t) && tag_fits(want_mask(want), t);
}

static void place(struct dist_msg *m, char role, struct span v)
{
    switch (role) {
    case 'f': m->from = v; break;
    case 't': m->to = v; break;
    case 'r': m->ref = v; break;
    case 'e': m->reason = v; break;
    default: break;
    }
}

static int decode_payload(struct cur *c, const struct opshape *s, const struct term_limits *lim,
                          struct dist_msg *m, const char **why);

/* The control tuples a BEAM sends for a call (MONITOR_P, REG_SEND,
 * DEMONITOR_P, SEND...): a SMALL_TUPLE_EXT of leaf fields.  Each field is
 * walked on its own with the same limits (a leaf is one term, the tuple
 * one more, at depth 1), so the tuple is read once instead of walked whole
 * and then skipped field by field.  true: decoded (payload still to do,
 * c after the control).  false: not this shape, or anything wrong: the
 * general path decodes it again and says what. */
static bool decode_control_fast(struct cur *c, const struct term_limits *lim,
                                struct dist_msg *m, const struct opshape **sp)
{
    struct cur t = *c;
    uint8_t ver, tag, ar, optag, op;
    if (!cur_u8(&t, &ver) || ver != 131 || !cur_u8(&t, &tag) || tag != ERL_SMALL_TUPLE_EXT ||
        !cur_u8(&t, &ar) || !cur_u8(&t, &optag) || optag != ERL_SMALL_INTEGER_EXT ||
        !cur_u8(&t, &op))
        return false;
    const struct opshape *s = shape_of(op);
    if (!s)
        return false;
    size_t nf = strlen(s->types);
    if (ar != nf + 1 || lim->max_depth < 1 || lim->max_terms < nf + 2)
        return false;
    for (size_t i = 0; i < nf; i++) {
        char want = s->types[i];
        uint8_t ft;
        if (s->roles[i] == 'i' || !field_ok(want, &t) || !cur_peek_u8(&t, &ft) ||
            ft == ERL_SMALL_TUPLE_EXT || ft == ERL_LARGE_TUPLE_EXT || ft == ERL_LIST_EXT ||
            ft == ERL_MAP_EXT || ft == ERL_NEW_FUN_EXT)
            return false; /* a container: depth and term counts are the walker's */
        long k = term_walk(cur_ptr(&t), cur_left(&t), lim);
        struct span v;
        if (k < 0 || !cur_span(&t, (size_t)k, &v))
            return false;
        place(m, s->roles[i], v);
    }
    m->op = op;
    m->kind = s->kind;
    *sp = s;
    *c = t;
    return true;
}

/* Walked already, with the control tuple's element offsets (from p; the
 * control ends at ctl_end): decode_control_fast's shape checks, and each
 * field is the bytes between two marks. */
static bool decode_control_marked(const uint8_t *p, size_t ctl_end,
                                  const struct term_marks *f, struct dist_msg *m,
                                  const struct opshape **sp)
{
    if (ctl_end < 6 || p[2] != ERL_SMALL_TUPLE_EXT || p[4] != ERL_SMALL_INTEGER_EXT)
        return false;
    uint8_t ar = p[3];
    const struct opshape *s = shape_of(p[5]);
    if (!s)
        return false;
    const struct fast_shape *fs = &fast_shapes[p[5]];
    if (!fs->usable || ar != fs->nf + 1 || f->n != ar || ar > TERM_MARKS)
        return false;
    for (uint32_t i = 0; i < fs->nf; i++) {
        size_t at = f->at[i + 1], end = i + 1 < fs->nf ? f->at[i + 2] : ctl_end;
        /* a walked term: its first byte says its type */
        if (at >= end || end > ctl_end || !tag_fits(fs->want[i], p[at]))
            return false;
        if (fs->role[i] != NO_ROLE) {
            struct span *v = (struct span *)((char *)m + fs->role[i]);
            v->p = p + at;
            v->n = end - at;
        }
    }
    m->op = p[5];
    m->kind = s->kind;
    *sp = s;
    return true;
}

/* lim NULL: walked already, the control term ctl_len bytes long, its
 * fields marked (or fields NULL). */
static int decode(const uint8_t *p, size_t n, const struct term_limits *lim, size_t ctl_len,
                  const struct term_marks *fields, struct dist_msg *m, const char **why)
{
    struct cur c = cur_make(p, n);
    uint8_t tag = 0, hdr = 0;
    memset(m, 0, sizeof *m);
    if (!cur_u8(&c, &tag) || tag != 'p') {
        /* the other headers start 131 68 / 131 69 / 131 70 */
        if (tag == 131)
            cur_peek_u8(&c, &hdr);
        *why = n == 0 ? "empty frame body"
               : hdr == 68 ? "atom-cache header (not negotiated)"
               : (hdr == 69 || hdr == 70) ? "fragment header (not negotiated)"
                                          : "frame does not start with 112";
        return -1;
    }
    const struct opshape *s;
    if (!lim && fields && ctl_len < n && decode_control_marked(p, 1 + ctl_len, fields, m, &s)) {
        cur_skip(&c, ctl_len);
        return decode_payload(&c, s, lim, m, why);
    }
    /* walked: decode_control_marked covered every shape this one takes */
    if (lim && decode_control_fast(&c, lim, m, &s))
        return decode_payload(&c, s, lim, m, why);
    memset(m, 0, sizeof *m);
    long cl = lim ? term_walk_versioned(cur_ptr(&c), cur_left(&c), lim)
                  : ctl_len <= cur_left(&c) ? (long)ctl_len : TERM_E_SHORT;
    if (cl < 0) {
        *why = term_strerror(cl);
        return -1;
    }
    struct cur ctl = cur_make(cur_ptr(&c), (size_t)cl);
    cur_skip(&c, (size_t)cl);
    uint8_t ver;
    uint32_t arity;
    int64_t op;
    cur_u8(&ctl, &ver);
    if (!ext_get_tuple(&ctl, &arity) || arity < 1 || !ext_get_int(&ctl, &op)) {
        *why = "control message is not a tuple starting with an integer";
        return -1;
    }
    s = shape_of(op);
    if (!s) {
        *why = (op == DOP_SPAWN_REQUEST || op == DOP_ALIAS_SEND || op == DOP_ALIAS_SEND_TT)
                   ? "control operation not negotiated"
                   : "unknown control operation";
        return -1;
    }
    m->op = (int)op;
    m->kind = s->kind;
    size_t nf = strlen(s->types);
    if (arity != nf + 1) {
        *why = "control tuple has the wrong arity for its operation";
        return -1;
    }
    for (size_t i = 0; i < nf; i++) {
        if (!field_ok(s->types[i], &ctl)) {
            *why = "control field of the wrong type";
            return -1;
        }
        if (s->roles[i] == 'i') {
            struct cur t = ctl;
            if (!get_u64(&t, &m->id)) {
                *why = "unlink id is not a non-negative 64-bit integer";
                return -1;
            }
            if (m->id == 0 && op == DOP_UNLINK_ID) {
                *why = "unlink id 0"; /* never issued; erts refuses it too */
                return -1;
            }
            m->has_id = true;
        }
        struct span v;
        if (!ext_skip(&ctl, &v)) {
            *why = "control field truncated";
            return -1;
        }
        place(m, s->roles[i], v);
    }
    return decode_payload(&c, s, lim, m, why);
}

static int decode_payload(struct cur *cp, const struct opshape *s, const struct term_limits *lim,
                          struct dist_msg *m, const char **why)
{
    struct cur c = *cp;
    bool has_payload = cur_left(&c) > 0;
    if (has_payload != (s->payload != 0)) {
        *why = s->payload ? "message payload missing" : "unexpected payload after control";
        return -1;
    }
    if (s->payload) {
        /* walked: the rest is exactly the payload, 131 first */
        long pl = lim ? term_walk_versioned(cur_ptr(&c), cur_left(&c), lim)
                      : (long)cur_left(&c);
        if (pl < 0) {
            *why = term_strerror(pl);
            return -1;
        }
        if ((size_t)pl != cur_left(&c)) {
            *why = "trailing bytes after the payload";
            return -1;
        }
        struct span v = {cur_ptr(&c) + 1, (size_t)pl - 1};
        if (s->payload == 'M')
            m->msg = v;
        else
            m->reason = v;
    }
    return 0;
}

int dist_decode(const uint8_t *p, size_t n, const struct term_limits *lim,
                struct dist_msg *m, const char **why)
{
    return decode(p, n, lim, 0, NULL, m, why);
}

int dist_decode_walked(const uint8_t *p, size_t n, size_t ctl_len,
                       const struct term_marks *fields, struct dist_msg *m, const char **why)
{
    return decode(p, n, NULL, ctl_len, fields, m, why);
}
