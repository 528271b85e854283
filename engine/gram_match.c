/*
 * gram_match.c — the byte-level pushdown automaton of grammar.h: a stack of
 * frames, one per open JSON value; each byte goes to the top frame, which
 * consumes it, rejects it, or hands it on (a finished number pops and the
 * byte goes to its parent; a container pushes a child that takes the byte).
 *
 * Numbers are checked against their bounds on every digit: a prefix is
 * allowed only if some number it can still become (within the digit limits)
 * lies in [minimum, maximum], so a bounded number never reaches a dead end.
 */
#include "engine/gram_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { R_OK = 0, R_REJECT, R_REFEED };

static char *any_kw[3] = {"true", "false", "null"};
static size_t any_kw_len[3] = {4, 5, 4};
static gnode any_node = {.k = GN_ANY};
static gnode any_str = {.k = GN_STRING, .max_len = GRAM_MAX_STRING};
static gnode any_arr = {.k = GN_ARRAY, .items = &any_node, .max_items = GRAM_MAX_ITEMS};
static gnode any_obj = {.k = GN_OBJECT, .free_members = 1};
static gnode any_num = {.k = GN_NUMBER};
static gnode any_lit = {.k = GN_LITERALS, .n_lit = 3, .lit = any_kw, .lit_len = any_kw_len};

gnode *gram_any_object_node(void) { return &any_obj; }
gnode *gram_any_node(void) { return &any_node; }

static uint64_t all_bits(int n) { return n >= 64 ? ~0ull : (1ull << n) - 1; }

static void frame_set(gframe *f, const gnode *n)
{
    memset(f, 0, sizeof *f);
    f->n = n;
    f->kind = (uint8_t)n->k;
    if (n->k == GN_LITERALS || n->k == GN_CHOICE) f->mask = all_bits(n->n_lit);
}

static int push(gram_state *s, const gnode *n)
{
    if (s->depth >= GRAM_MAX_DEPTH) return -1;
    frame_set(&s->f[s->depth++], n);
    return 0;
}

static double p10(int k)
{
    double r = 1;
    for (int i = 0; i < k; i++) r *= 10;
    for (int i = 0; i > k; i--) r /= 10;
    return r;
}

/* Do magnitudes [a, b] with sign neg meet the node's bounds? A negative
 * number is never -0 (its magnitude is at least one unit). */
static int mag_ok_u(const gnode *n, int neg, double a, double b, double unit)
{
    if (neg && a < unit) a = unit;
    if (a > b) return 0;
    double lo = neg ? -b : a, hi = neg ? -a : b;
    if (n->has_lo && hi < n->lo) return 0;
    if (n->has_hi && lo > n->hi) return 0;
    return 1;
}

#define mag_ok(n, neg, a, b) mag_ok_u(n, neg, a, b, unit)

static double frac_value(const gframe *f) { return f->fd ? (double)f->pos / p10(f->fd) : 0; }

/* Number phases: 0 start, 1 after '-', 2 integer digits, 3 a lone 0,
 * 4 after '.', 5 fraction digits. The fraction's digits live in pos. */
static int num_feasible(const gframe *f)
{
    const gnode *n = f->n;
    int integer = f->kind == GN_INTEGER;
    double unit = integer ? 1 : p10(-GRAM_MAX_FRAC);
    switch (f->ph) {
    case 1:
        return mag_ok(n, 1, 0, p10(GRAM_MAX_INT_DIGITS) - 1);
    case 2:
        for (int k = 0; f->nd + k <= GRAM_MAX_INT_DIGITS; k++) {
            double a = f->ip * p10(k), b = (f->ip + 1) * p10(k) - unit;
            if (mag_ok(n, f->neg, a, b)) return 1;
            if (n->has_lo && n->has_hi && a > fmax(fabs(n->lo), fabs(n->hi))) break;
        }
        return 0;
    case 3:
        return mag_ok(n, f->neg, 0, integer ? 0 : 1 - unit);
    case 4:
        return mag_ok(n, f->neg, f->ip, f->ip + 1 - unit);
    case 5: {
        double x = f->ip + frac_value(f);
        if (f->fd >= GRAM_MAX_FRAC) return mag_ok(n, f->neg, x, x);
        return mag_ok(n, f->neg, x, x + p10(-f->fd) - unit);
    }
    }
    return 1;
}

static int num_can_end(const gframe *f)
{
    if (f->ph != 2 && f->ph != 3 && f->ph != 5) return 0;
    double x = f->ip + frac_value(f);
    if (f->neg && x == 0) return 0; /* no -0 */
    return mag_ok_u(f->n, f->neg, x, x, 0);
}

static int lit_complete(const gframe *f)
{
    for (int i = 0; i < f->n->n_lit; i++)
        if ((f->mask >> i & 1) && f->n->lit_len[i] == f->pos) return 1;
    return 0;
}

static int frame_can_end(const gframe *f)
{
    if (f->kind == GN_INTEGER || f->kind == GN_NUMBER) return num_can_end(f);
    if (f->kind == GN_LITERALS) return f->pos > 0 && lit_complete(f);
    return 0;
}

static int step_number(gram_state *s, gframe *f, unsigned char b)
{
    int d = b >= '0' && b <= '9' ? b - '0' : -1;
    int num = f->kind == GN_NUMBER;
    gframe t = *f;
    switch (f->ph) {
    case 0:
        if (b == '-') { t.neg = 1; t.ph = 1; break; }
        /* fall through */
    case 1:
        if (d < 0 || (d == 0 && f->neg && !num)) return R_REJECT; /* no "-0" integers */
        t.ph = d ? 2 : 3;
        t.ip = d;
        t.nd = 1;
        break;
    case 2:
        if (d >= 0 && t.nd < GRAM_MAX_INT_DIGITS) { t.ip = t.ip * 10 + d; t.nd++; break; }
        if (b == '.' && num) { t.ph = 4; break; }
        goto end;
    case 3:
        if (b == '.' && num) { t.ph = 4; break; }
        goto end;
    case 4:
        if (d < 0) return R_REJECT;
        t.pos = (uint32_t)d;
        t.fd = 1;
        t.ph = 5;
        break;
    case 5:
        if (d >= 0 && t.fd < GRAM_MAX_FRAC) { t.pos = t.pos * 10 + (uint32_t)d; t.fd++; break; }
        goto end;
    default:
        return R_REJECT;
    }
    if (!num_feasible(&t)) return R_REJECT;
    *f = t;
    return R_OK;
end:
    if (!num_can_end(f)) return R_REJECT;
    s->depth--;
    return R_REFEED;
}

static int step_string(gram_state *s, gframe *f, unsigned char b)
{
    const gnode *n = f->n;
    if (f->ph == 0) {
        if (b != '"') return R_REJECT;
        f->ph = 1;
        return R_OK;
    }
    if (f->ph == 2) {
        if (!b || !strchr("\"\\/bfnrt", b)) return R_REJECT;
        f->ph = 1;
        return R_OK;
    }
    if (f->need) {
        if (b < f->ulo || b > f->uhi) return R_REJECT;
        f->need--;
        f->ulo = 0x80;
        f->uhi = 0xbf;
        return R_OK;
    }
    if (b == '"') {
        if (f->cnt < n->min_len) return R_REJECT;
        s->depth--;
        return R_OK;
    }
    if (f->cnt >= n->max_len || b < 0x20) return R_REJECT;
    if (b == '\\') { f->ph = 2; f->cnt++; return R_OK; }
    if (b < 0x80) { f->cnt++; return R_OK; }
    uint8_t lo = 0x80, hi = 0xbf, need;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) { need = 2; if (b == 0xe0) lo = 0xa0; if (b == 0xed) hi = 0x9f; }
    else if (b >= 0xf0 && b <= 0xf4) { need = 3; if (b == 0xf0) lo = 0x90; if (b == 0xf4) hi = 0x8f; }
    else return R_REJECT;
    f->need = need;
    f->ulo = lo;
    f->uhi = hi;
    f->cnt++;
    return R_OK;
}

static int step_literals(gram_state *s, gframe *f, unsigned char b)
{
    const gnode *n = f->n;
    uint64_t m = 0;
    for (int i = 0; i < n->n_lit; i++)
        if ((f->mask >> i & 1) && n->lit_len[i] > f->pos && (unsigned char)n->lit[i][f->pos] == b) m |= 1ull << i;
    if (!m) {
        if (f->pos > 0 && lit_complete(f)) { s->depth--; return R_REFEED; }
        return R_REJECT;
    }
    f->mask = m;
    f->pos++;
    int longer = 0;
    for (int i = 0; i < n->n_lit; i++)
        if ((m >> i & 1) && n->lit_len[i] > f->pos) longer = 1;
    if (!longer) s->depth--; /* every candidate is complete: the value is done */
    return R_OK;
}

/* Properties that may come next: from `from` up to and including the first
 * required one. */
static uint64_t prop_candidates(const gnode *n, int from)
{
    uint64_t m = 0;
    for (int j = from; j < n->n_props; j++) {
        m |= 1ull << j;
        if (n->required >> j & 1) break;
    }
    return m;
}

static int required_left(const gnode *n, int from)
{
    for (int j = from; j < n->n_props; j++)
        if (n->required >> j & 1) return 1;
    return 0;
}

static int step_object(gram_state *s, gframe *f, unsigned char b)
{
    const gnode *n = f->n;
    if (f->ph == 0) {
        if (b != '{') return R_REJECT;
        f->ph = 1;
        f->cnt = 0;
        return R_OK;
    }
    if (n->free_members) {
        switch (f->ph) {
        case 1:
        case 8:
            if (b == '}' && f->ph == 1) { s->depth--; return R_OK; }
            if (b == ' ' && f->ph == 8 && !f->sp) { f->sp = 1; return R_OK; }
            if (b != '"') return R_REJECT;
            f->ph = 7;
            f->cnt++;
            if (push(s, &any_str)) return R_REJECT;
            s->f[s->depth - 1].ph = 1; /* the opening quote is consumed */
            return R_OK;
        case 7:
            if (b != ':') return R_REJECT;
            f->ph = 9;
            f->sp = 0;
            return R_OK;
        case 9: /* after ':': one optional space, then the value */
            if (b == ' ' && !f->sp) { f->sp = 1; return R_OK; }
            f->ph = 2;
            return push(s, &any_node) ? R_REJECT : R_REFEED;
        case 2:
            if (b == '}') { s->depth--; return R_OK; }
            if (b == ',' && f->cnt < GRAM_MAX_ITEMS && s->depth < GRAM_MAX_DEPTH - 1) { f->ph = 8; f->sp = 0; return R_OK; }
            return R_REJECT;
        }
        return R_REJECT;
    }
    switch (f->ph) {
    case 1:
    case 4:
        if (b == '}' && f->ph == 1) {
            if (required_left(n, f->cnt)) return R_REJECT;
            s->depth--;
            return R_OK;
        }
        if (b == ' ' && f->ph == 4 && !f->sp) { f->sp = 1; return R_OK; }
        if (b != '"') return R_REJECT;
        f->mask = prop_candidates(n, f->cnt);
        if (!f->mask) return R_REJECT;
        f->pos = 0;
        f->ph = 3;
        return R_OK;
    case 2:
        if (b == '}') {
            if (required_left(n, f->cnt)) return R_REJECT;
            s->depth--;
            return R_OK;
        }
        if (b == ',' && prop_candidates(n, f->cnt)) { f->ph = 4; f->sp = 0; return R_OK; }
        return R_REJECT;
    case 3: {
        if (b == '"') {
            for (int j = 0; j < n->n_props; j++)
                if ((f->mask >> j & 1) && strlen(n->names[j]) == f->pos) {
                    f->cnt = (uint16_t)j;
                    f->ph = 5;
                    return R_OK;
                }
            return R_REJECT;
        }
        uint64_t m = 0;
        for (int j = 0; j < n->n_props; j++)
            if ((f->mask >> j & 1) && strlen(n->names[j]) > f->pos && (unsigned char)n->names[j][f->pos] == b)
                m |= 1ull << j;
        if (!m) return R_REJECT;
        f->mask = m;
        f->pos++;
        return R_OK;
    }
    case 5:
        if (b != ':') return R_REJECT;
        f->ph = 6;
        f->sp = 0;
        return R_OK;
    case 6: { /* after ':': one optional space, then the value */
        if (b == ' ' && !f->sp) { f->sp = 1; return R_OK; }
        int j = f->cnt;
        f->cnt = (uint16_t)(j + 1);
        f->ph = 2;
        return push(s, n->props[j]) ? R_REJECT : R_REFEED;
    }
    }
    return R_REJECT;
}

static int step_array(gram_state *s, gframe *f, unsigned char b)
{
    const gnode *n = f->n;
    switch (f->ph) {
    case 0:
        if (b != '[') return R_REJECT;
        f->ph = 1;
        return R_OK;
    case 1:
        if (b == ']') {
            if (n->min_items > 0) return R_REJECT;
            s->depth--;
            return R_OK;
        }
        if (n->max_items < 1) return R_REJECT;
        f->cnt = 1;
        f->ph = 2;
        return push(s, n->items) ? R_REJECT : R_REFEED;
    case 2:
        if (b == ']') {
            if (f->cnt < n->min_items) return R_REJECT;
            s->depth--;
            return R_OK;
        }
        if (b == ',' && f->cnt < n->max_items) { f->ph = 3; f->sp = 0; return R_OK; }
        return R_REJECT;
    case 3:
        if (b == ' ' && !f->sp) { f->sp = 1; return R_OK; }
        f->cnt++;
        f->ph = 2;
        return push(s, n->items) ? R_REJECT : R_REFEED;
    }
    return R_REJECT;
}

static int step_choice(gram_state *s, gframe *f, unsigned char b)
{
    const gnode *n = f->n;
    if (f->ph == 0) {
        /* one optional space after each ':' and ',' of the prefix, as models write it */
        if (b == ' ' && !f->sp && f->pos > 0) {
            int all = 1;
            for (int i = 0; i < n->n_lit; i++)
                if ((f->mask >> i & 1) && n->lit[i][f->pos - 1] != ':' && n->lit[i][f->pos - 1] != ',') all = 0;
            if (all) { f->sp = 1; return R_OK; }
        }
        uint64_t m = 0;
        for (int i = 0; i < n->n_lit; i++)
            if ((f->mask >> i & 1) && n->lit_len[i] > f->pos && (unsigned char)n->lit[i][f->pos] == b) m |= 1ull << i;
        if (!m) return R_REJECT;
        f->mask = m;
        f->sp = 0;
        f->pos++;
        for (int i = 0; i < n->n_lit; i++)
            if ((m >> i & 1) && n->lit_len[i] == f->pos) {
                f->cnt = (uint16_t)i;
                f->ph = 2;
                f->pos = 0;
                f->sp = 0;
                return R_OK;
            }
        return R_OK;
    }
    if (f->ph == 2) { /* prefix done: one optional space, then the value */
        if (b == ' ' && !f->sp) { f->sp = 1; return R_OK; }
        f->ph = 1;
        return push(s, n->alt[f->cnt]) ? R_REJECT : R_REFEED;
    }
    const char *suf = n->suffix[f->cnt];
    if ((unsigned char)suf[f->pos] != b) return R_REJECT;
    f->pos++;
    if (!suf[f->pos]) s->depth--;
    return R_OK;
}

/* Can a value of node n start with byte b? */
int gram_node_first_byte(const gnode *n, unsigned char b)
{
    switch (n->k) {
    case GN_ANY: return b == '{' || b == '[' || b == '"' || b == '-' || (b >= '0' && b <= '9') || b == 't' || b == 'f' || b == 'n';
    case GN_OBJECT: return b == '{';
    case GN_ARRAY: return b == '[';
    case GN_STRING: return b == '"';
    case GN_INTEGER:
    case GN_NUMBER: return b == '-' || (b >= '0' && b <= '9');
    case GN_LITERALS:
    case GN_CHOICE:
        for (int i = 0; i < n->n_lit; i++)
            if (n->lit_len[i] && (unsigned char)n->lit[i][0] == b) return 1;
        return 0;
    case GN_UNION:
        for (int i = 0; i < n->n_alt; i++)
            if (gram_node_first_byte(n->alt[i], b)) return 1;
        return 0;
    }
    return 0;
}

/* GN_UNION: the first byte picks the alternative (compiled to be unique). */
static int resolve_union(gframe *f, unsigned char b)
{
    const gnode *n = f->n;
    for (int i = 0; i < n->n_alt; i++)
        if (gram_node_first_byte(n->alt[i], b)) {
            frame_set(f, n->alt[i]);
            return R_REFEED;
        }
    return R_REJECT;
}

/* GN_ANY: the first byte picks the kind. */
static int resolve_any(gram_state *s, gframe *f, unsigned char b)
{
    int room = s->depth < GRAM_MAX_DEPTH - 2;
    const gnode *n;
    if (b == '{' && room) n = &any_obj;
    else if (b == '[' && room) n = &any_arr;
    else if (b == '"') n = &any_str;
    else if (b == '-' || (b >= '0' && b <= '9')) n = &any_num;
    else if (b == 't' || b == 'f' || b == 'n') n = &any_lit;
    else return R_REJECT;
    frame_set(f, n);
    return R_REFEED;
}

int gram_feed_byte(gram_state *s, unsigned char b)
{
    for (int guard = 0; guard < 4 * GRAM_MAX_DEPTH; guard++) {
        if (s->depth == 0) return -1;
        gframe *f = &s->f[s->depth - 1];
        int r;
        switch (f->kind) {
        case GN_ANY: r = resolve_any(s, f, b); break;
        case GN_OBJECT: r = step_object(s, f, b); break;
        case GN_ARRAY: r = step_array(s, f, b); break;
        case GN_STRING: r = step_string(s, f, b); break;
        case GN_INTEGER:
        case GN_NUMBER: r = step_number(s, f, b); break;
        case GN_LITERALS: r = step_literals(s, f, b); break;
        case GN_CHOICE: r = step_choice(s, f, b); break;
        case GN_UNION: r = resolve_union(f, b); break;
        default: r = R_REJECT;
        }
        if (r == R_OK) return 0;
        if (r == R_REJECT) return -1;
    }
    return -1;
}

void gram_state_copy(gram_state *dst, const gram_state *src)
{
    dst->g = src->g;
    dst->v = src->v;
    dst->depth = src->depth;
    dst->started = src->started;
    memcpy(dst->f, src->f, (size_t)src->depth * sizeof *src->f);
}

gram_state *gram_state_new(gram *g, const gram_vocab *v)
{
    gram_state *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    atomic_fetch_add(&g->refs, 1);
    s->g = g;
    s->v = v;
    push(s, g->root);
    return s;
}

void gram_state_free(gram_state *s)
{
    if (!s) return;
    gram_scratch_free(s->scratch);
    gram_release(s->g);
    free(s);
}

int gram_state_feed(gram_state *s, const char *bytes, size_t n)
{
    gram_state t;
    gram_state_copy(&t, s);
    for (size_t i = 0; i < n; i++)
        if (gram_feed_byte(&t, (unsigned char)bytes[i])) return -1;
    gram_state_copy(s, &t);
    if (n) s->started = 1;
    return 0;
}

int gram_state_can_end(const gram_state *s)
{
    if (s->depth == 0) return 1;
    return s->depth == 1 && frame_can_end(&s->f[0]);
}

int gram_state_done(const gram_state *s) { return s->depth == 0; }
