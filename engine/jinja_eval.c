/*
 * jinja_eval.c — renders a parsed template: statements write to the current
 * output buffer (a macro call redirects it), expressions evaluate to json_t
 * values with Python semantics. Scopes are a stack of JSON objects: a for-loop
 * body and a macro call push a frame (so `set` inside them does not leak, as
 * in Jinja; namespace() objects are the way out). Every loop iteration, call
 * and output append is checked against the limits.
 */
#include "engine/jinja_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int jx_fail(jctx *c, int line, emoe_status code, const char *fmt, ...)
{
    if (c->err && c->err->code) return -1; /* keep the first (innermost) error */
    char m[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    emoe_errf(c->err, code ? code : EMOE_EINVAL, "template line %d: %s", line, m);
    return -1;
}

int jx_tick(jctx *c, int line, long n)
{
    c->iters += n;
    if (n < 0 || c->iters > c->lim.max_iterations)
        return jx_fail(c, line, EMOE_EINVAL, "too many loop iterations (limit %ld)", c->lim.max_iterations);
    return 0;
}

static int out_put(jctx *c, int line, const char *s, size_t n)
{
    if (c->out->n + n > c->lim.max_output)
        return jx_fail(c, line, EMOE_EINVAL, "output exceeds %zu bytes", c->lim.max_output);
    if (jbuf_put(c->out, s, n)) return jx_fail(c, line, EMOE_ENOMEM, "out of memory");
    return 0;
}

static json_t *lookup(jctx *c, const char *name)
{
    for (int i = c->nframes - 1; i >= c->base && i > 0; i--) {
        json_t *v = json_object_get(c->frames[i], name);
        if (v) return v;
    }
    return json_object_get(c->frames[0], name);
}

static int push_frame(jctx *c, int line)
{
    if (c->nframes >= (int)(sizeof c->frames / sizeof c->frames[0]))
        return jx_fail(c, line, EMOE_EINVAL, "scopes nested too deeply");
    c->frames[c->nframes] = json_object();
    if (!c->frames[c->nframes]) return jx_fail(c, line, EMOE_ENOMEM, "out of memory");
    c->nframes++;
    return 0;
}

static void pop_frame(jctx *c)
{
    json_decref(c->frames[--c->nframes]);
}

/* Sets a variable in the innermost frame; undefined removes it there. */
static int set_var(jctx *c, int line, const char *name, json_t *v)
{
    json_t *f = c->frames[c->nframes - 1];
    if (!v) { json_object_del(f, name); return 0; }
    if (json_object_set(f, name, v)) return jx_fail(c, line, EMOE_ENOMEM, "out of memory");
    return 0;
}

static int eval(jctx *c, const jnode *n, json_t **out);
static int exec_body(jctx *c, const jnode *n);

static int eval_args(jctx *c, const jnode *n, json_t ***args, json_t ***kv)
{
    *args = calloc((size_t)n->nv + 1, sizeof **args);
    *kv = calloc((size_t)n->nk + 1, sizeof **kv);
    if (!*args || !*kv) return jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
    for (int i = 0; i < n->nv; i++)
        if (eval(c, n->v[i], &(*args)[i])) return -1;
    for (int i = 0; i < n->nk; i++)
        if (eval(c, n->kv[i], &(*kv)[i])) return -1;
    return 0;
}

static void free_args(const jnode *n, json_t **args, json_t **kv)
{
    if (args) for (int i = 0; i < n->nv; i++) json_decref(args[i]);
    if (kv) for (int i = 0; i < n->nk; i++) json_decref(kv[i]);
    free(args);
    free(kv);
}

static int call_macro(jctx *c, const jnode *call, const jnode *m, json_t **args, json_t **kv, json_t **out)
{
    if (c->depth + 1 > c->lim.max_depth) return jx_fail(c, call->line, EMOE_EINVAL, "macro calls nested too deeply");
    if (call->nv > m->nk) return jx_fail(c, call->line, EMOE_EINVAL, "macro '%s' takes %d arguments, %d given", m->str, m->nk, call->nv);
    int saved_base = c->base;
    if (push_frame(c, call->line)) return -1;
    c->base = c->nframes - 1;
    int rc = 0;
    for (int i = 0; i < m->nk && !rc; i++) {
        json_t *v = NULL;
        int owned = 0;
        if (i < call->nv) v = args[i];
        for (int k = 0; k < call->nk; k++)
            if (!strcmp(call->kn[k], m->kn[i])) v = kv[k];
        if (!v && m->kv[i]) { rc = eval(c, m->kv[i], &v); owned = 1; }
        if (!rc) rc = set_var(c, call->line, m->kn[i], v);
        if (owned) json_decref(v);
    }
    for (int k = 0; k < call->nk && !rc; k++) {
        int found = 0;
        for (int i = 0; i < m->nk; i++) found |= !strcmp(call->kn[k], m->kn[i]);
        if (!found) rc = jx_fail(c, call->line, EMOE_EINVAL, "macro '%s' has no parameter '%s'", m->str, call->kn[k]);
    }
    jbuf b = {0}, *saved_out = c->out;
    if (!rc) {
        c->depth++;
        c->out = &b;
        rc = exec_body(c, m->c);
        c->out = saved_out;
        c->depth--;
        c->brk = c->cont = 0;
    }
    pop_frame(c);
    c->base = saved_base;
    if (!rc) {
        *out = jv_strn(b.p ? b.p : "", b.n);
        if (!*out) rc = jx_fail(c, call->line, EMOE_ENOMEM, "out of memory");
    }
    free(b.p);
    return rc;
}

static int eval_call(jctx *c, const jnode *n, json_t **out)
{
    json_t **args = NULL, **kv = NULL;
    int rc = 0;
    if (eval_args(c, n, &args, &kv)) { free_args(n, args, kv); return -1; }
    const jnode *callee = n->a;
    if (callee->kind == JE_ATTR) {
        json_t *obj = NULL;
        if (eval(c, callee->a, &obj)) { free_args(n, args, kv); return -1; }
        if (!obj) {
            free_args(n, args, kv);
            return jx_fail(c, n->line, EMOE_EINVAL, "cannot call '%s' on an undefined value", callee->str);
        }
        int called = jb_method(c, n, obj, callee->str, args, n->nv, n->kn, kv, n->nk, out, &rc);
        if (!called) rc = jx_fail(c, n->line, EMOE_EUNSUP, "'%s' object has no method '%s'", jv_type(obj), callee->str);
        json_decref(obj);
        free_args(n, args, kv);
        return rc;
    }
    if (callee->kind == JE_NAME) {
        for (int i = c->nmacros - 1; i >= 0; i--)
            if (!strcmp(c->macros[i].name, callee->str)) {
                rc = call_macro(c, n, c->macros[i].node, args, kv, out);
                free_args(n, args, kv);
                return rc;
            }
        if (jb_global(c, n, callee->str, args, n->nv, n->kn, kv, n->nk, out, &rc)) {
            free_args(n, args, kv);
            return rc;
        }
        free_args(n, args, kv);
        return jx_fail(c, n->line, lookup(c, callee->str) ? EMOE_EINVAL : EMOE_EUNSUP, "'%s' is not callable", callee->str);
    }
    free_args(n, args, kv);
    return jx_fail(c, n->line, EMOE_EUNSUP, "unsupported call expression");
}

/* Python-style index normalisation; returns 0 and sets *i when in range. */
static int norm_index(long long idx, size_t len, size_t *i)
{
    if (idx < 0) idx += (long long)len;
    if (idx < 0 || (unsigned long long)idx >= len) return -1;
    *i = (size_t)idx;
    return 0;
}

/* Byte offsets of code points in a UTF-8 string: off[k] for k in [0, ncp]. */
static size_t *cp_offsets(const char *s, size_t n, size_t *ncp)
{
    size_t *off = malloc((n + 1) * sizeof *off), k = 0;
    if (!off) return NULL;
    for (size_t i = 0; i < n;) {
        off[k++] = i;
        unsigned char ch = (unsigned char)s[i];
        i += ch < 0x80 ? 1 : ch < 0xe0 ? 2 : ch < 0xf0 ? 3 : 4;
        if (i > n) i = n;
    }
    off[k] = n;
    *ncp = k;
    return off;
}

static int get_item(jctx *c, int line, json_t *obj, json_t *key, json_t **out)
{
    *out = NULL;
    if (!obj) return jx_fail(c, line, EMOE_EINVAL, "cannot index an undefined value");
    if (json_is_object(obj)) {
        if (json_is_string(key)) *out = json_incref(json_object_get(obj, json_string_value(key)));
        return 0;
    }
    if (!json_is_integer(key) && !json_is_boolean(key)) return 0;
    long long idx = json_is_integer(key) ? json_integer_value(key) : json_is_true(key);
    size_t i;
    if (json_is_array(obj)) {
        if (norm_index(idx, json_array_size(obj), &i) == 0) *out = json_incref(json_array_get(obj, i));
        return 0;
    }
    if (json_is_string(obj)) {
        size_t ncp, *off = cp_offsets(json_string_value(obj), json_string_length(obj), &ncp);
        if (!off) return jx_fail(c, line, EMOE_ENOMEM, "out of memory");
        if (norm_index(idx, ncp, &i) == 0) *out = jv_strn(json_string_value(obj) + off[i], off[i + 1] - off[i]);
        free(off);
    }
    return 0;
}

static int slice_bound(jctx *c, int line, json_t *v, long long *out, int *given)
{
    *given = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return jx_fail(c, line, EMOE_EINVAL, "slice indices must be integers");
    *out = json_integer_value(v);
    *given = 1;
    return 0;
}

/* Python slice semantics over len items; fills the selected indices. */
static long long slice_indices(long long len, long long start, int hs, long long stop, int he, long long step, size_t *idx)
{
    long long k = 0;
    if (step > 0) {
        long long a = hs ? (start < 0 ? (start + len < 0 ? 0 : start + len) : (start > len ? len : start)) : 0;
        long long b = he ? (stop < 0 ? (stop + len < 0 ? 0 : stop + len) : (stop > len ? len : stop)) : len;
        for (long long i = a; i < b; i += step) idx[k++] = (size_t)i;
    } else {
        long long a = hs ? (start < 0 ? (start + len < 0 ? -1 : start + len) : (start >= len ? len - 1 : start)) : len - 1;
        long long b = he ? (stop < 0 ? (stop + len < 0 ? -1 : stop + len) : (stop >= len ? len - 1 : stop)) : -1;
        for (long long i = a; i > b; i += step) idx[k++] = (size_t)i;
    }
    return k;
}

static int eval_slice(jctx *c, const jnode *n, json_t *obj, json_t **out)
{
    json_t *vs = NULL, *ve = NULL, *vt = NULL;
    int rc = 0, hs = 0, he = 0, ht = 0;
    long long s = 0, e = 0, st = 1;
    if ((n->b && eval(c, n->b, &vs)) || (n->c && eval(c, n->c, &ve)) || (n->d && eval(c, n->d, &vt))) rc = -1;
    if (!rc) rc = slice_bound(c, n->line, vs, &s, &hs) || slice_bound(c, n->line, ve, &e, &he) || slice_bound(c, n->line, vt, &st, &ht);
    json_decref(vs);
    json_decref(ve);
    json_decref(vt);
    if (rc) return -1;
    if (st == 0) return jx_fail(c, n->line, EMOE_EINVAL, "slice step cannot be zero");
    if (!obj) return jx_fail(c, n->line, EMOE_EINVAL, "cannot slice an undefined value");
    if (json_is_array(obj)) {
        size_t len = json_array_size(obj);
        size_t *idx = malloc((len + 1) * sizeof *idx);
        json_t *r = json_array();
        if (!idx || !r) { free(idx); json_decref(r); return jx_fail(c, n->line, EMOE_ENOMEM, "out of memory"); }
        long long k = slice_indices((long long)len, s, hs, e, he, st, idx);
        for (long long i = 0; i < k; i++) json_array_append(r, json_array_get(obj, idx[i]));
        free(idx);
        *out = r;
        return 0;
    }
    if (json_is_string(obj)) {
        const char *str = json_string_value(obj);
        size_t ncp, *off = cp_offsets(str, json_string_length(obj), &ncp);
        size_t *idx = off ? malloc((ncp + 1) * sizeof *idx) : NULL;
        jbuf b = {0};
        if (!idx) { free(off); return jx_fail(c, n->line, EMOE_ENOMEM, "out of memory"); }
        long long k = slice_indices((long long)ncp, s, hs, e, he, st, idx);
        for (long long i = 0; i < k && !rc; i++)
            if (jbuf_put(&b, str + off[idx[i]], off[idx[i] + 1] - off[idx[i]])) rc = -1;
        free(off);
        free(idx);
        if (!rc) *out = jv_strn(b.p ? b.p : "", b.n);
        free(b.p);
        if (rc || !*out) return jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
        return 0;
    }
    return jx_fail(c, n->line, EMOE_EINVAL, "'%s' object cannot be sliced", jv_type(obj));
}

static json_t *num_result(double d, int as_int, long long i)
{
    return as_int ? json_integer(i) : json_real(d);
}

static int is_int(json_t *v) { return json_is_integer(v) || json_is_boolean(v); }
static long long ival(json_t *v) { return json_is_integer(v) ? json_integer_value(v) : json_is_true(v); }

static int compare(jctx *c, int line, json_t *a, json_t *b, int *cmp)
{
    if (jv_is_num(a) && jv_is_num(b)) {
        if (is_int(a) && is_int(b)) { long long x = ival(a), y = ival(b); *cmp = x < y ? -1 : x > y; }
        else { double x = jv_num(a), y = jv_num(b); *cmp = x < y ? -1 : x > y; }
        return 0;
    }
    if (json_is_string(a) && json_is_string(b)) {
        size_t la = json_string_length(a), lb = json_string_length(b);
        int r = memcmp(json_string_value(a), json_string_value(b), la < lb ? la : lb);
        *cmp = r ? (r < 0 ? -1 : 1) : (la < lb ? -1 : la > lb);
        return 0;
    }
    return jx_fail(c, line, EMOE_EINVAL, "cannot compare '%s' with '%s'", jv_type(a), jv_type(b));
}

static int contains(jctx *c, int line, json_t *item, json_t *coll, int *res)
{
    *res = 0;
    if (!coll) return 0;
    if (json_is_string(coll)) {
        if (!json_is_string(item)) return jx_fail(c, line, EMOE_EINVAL, "'in <string>' requires a string on the left");
        *res = memmem(json_string_value(coll), json_string_length(coll), json_string_value(item), json_string_length(item)) != NULL;
        return 0;
    }
    if (json_is_array(coll)) {
        for (size_t i = 0; i < json_array_size(coll); i++)
            if (jv_equal(item, json_array_get(coll, i))) { *res = 1; break; }
        return 0;
    }
    if (json_is_object(coll)) {
        *res = json_is_string(item) && json_object_get(coll, json_string_value(item)) != NULL;
        return 0;
    }
    return jx_fail(c, line, EMOE_EINVAL, "argument of type '%s' is not iterable", jv_type(coll));
}

static int binary(jctx *c, const jnode *n, json_t *a, json_t *b, json_t **out)
{
    int op = n->op, cmp = 0, r;
    *out = NULL;
    switch (op) {
    case JOP_EQ: *out = json_boolean(jv_equal(a, b)); return 0;
    case JOP_NE: *out = json_boolean(!jv_equal(a, b)); return 0;
    case JOP_IN: case JOP_NOTIN:
        if (contains(c, n->line, a, b, &r)) return -1;
        *out = json_boolean(op == JOP_IN ? r : !r);
        return 0;
    case JOP_CONCAT: {
        jbuf s = {0};
        if (jv_str(c, &s, a) || jv_str(c, &s, b)) { free(s.p); return -1; }
        if (s.n > c->lim.max_output) { free(s.p); return jx_fail(c, n->line, EMOE_EINVAL, "string too long"); }
        *out = jv_strn(s.p ? s.p : "", s.n);
        free(s.p);
        return *out ? 0 : jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
    }
    default: break;
    }
    if (!a || !b) return jx_fail(c, n->line, EMOE_EINVAL, "undefined value in arithmetic or comparison");
    if (op == JOP_LT || op == JOP_GT || op == JOP_LE || op == JOP_GE) {
        if (compare(c, n->line, a, b, &cmp)) return -1;
        r = op == JOP_LT ? cmp < 0 : op == JOP_GT ? cmp > 0 : op == JOP_LE ? cmp <= 0 : cmp >= 0;
        *out = json_boolean(r);
        return 0;
    }
    if (op == JOP_ADD && json_is_string(a) && json_is_string(b)) {
        size_t la = json_string_length(a), lb = json_string_length(b);
        if (la + lb > c->lim.max_output) return jx_fail(c, n->line, EMOE_EINVAL, "string too long");
        char *p = malloc(la + lb + 1);
        if (!p) return jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
        memcpy(p, json_string_value(a), la);
        memcpy(p + la, json_string_value(b), lb);
        *out = json_stringn_nocheck(p, la + lb);
        free(p);
        return *out ? 0 : jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
    }
    if (op == JOP_ADD && json_is_array(a) && json_is_array(b)) {
        if (jx_tick(c, n->line, (long)(json_array_size(a) + json_array_size(b)))) return -1;
        *out = json_array();
        if (!*out) return jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
        json_array_extend(*out, a);
        json_array_extend(*out, b);
        return 0;
    }
    if (op == JOP_MUL && ((json_is_string(a) && is_int(b)) || (is_int(a) && json_is_string(b)))) {
        json_t *s = json_is_string(a) ? a : b;
        long long k = is_int(a) ? ival(a) : ival(b);
        size_t sl = json_string_length(s);
        if (k < 0) k = 0;
        if (sl && (unsigned long long)k > c->lim.max_output / sl) return jx_fail(c, n->line, EMOE_EINVAL, "string too long");
        jbuf bb = {0};
        for (long long i = 0; i < k; i++)
            if (jbuf_put(&bb, json_string_value(s), sl)) { free(bb.p); return jx_fail(c, n->line, EMOE_ENOMEM, "out of memory"); }
        *out = jv_strn(bb.p ? bb.p : "", bb.n);
        free(bb.p);
        return *out ? 0 : jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
    }
    if (!jv_is_num(a) || !jv_is_num(b))
        return jx_fail(c, n->line, EMOE_EINVAL, "unsupported operand types for arithmetic: '%s' and '%s'", jv_type(a), jv_type(b));
    int both_int = is_int(a) && is_int(b);
    long long x = ival(a), y = ival(b);
    double fx = jv_num(a), fy = jv_num(b);
    switch (op) {
    case JOP_ADD:
        if (both_int && __builtin_add_overflow(x, y, &x)) return jx_fail(c, n->line, EMOE_EINVAL, "integer overflow");
        *out = num_result(fx + fy, both_int, x);
        break;
    case JOP_SUB:
        if (both_int && __builtin_sub_overflow(x, y, &x)) return jx_fail(c, n->line, EMOE_EINVAL, "integer overflow");
        *out = num_result(fx - fy, both_int, x);
        break;
    case JOP_MUL:
        if (both_int && __builtin_mul_overflow(x, y, &x)) return jx_fail(c, n->line, EMOE_EINVAL, "integer overflow");
        *out = num_result(fx * fy, both_int, x);
        break;
    case JOP_DIV:
        if (fy == 0) return jx_fail(c, n->line, EMOE_EINVAL, "division by zero");
        *out = json_real(fx / fy);
        break;
    case JOP_FLOORDIV: case JOP_MOD:
        if (both_int ? y == 0 : fy == 0) return jx_fail(c, n->line, EMOE_EINVAL, "division by zero");
        if (both_int) {
            if (x == INT64_MIN && y == -1) return jx_fail(c, n->line, EMOE_EINVAL, "integer overflow");
            long long q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) { q--; m += y; }
            *out = json_integer(op == JOP_FLOORDIV ? q : m);
        } else {
            double q = floor(fx / fy), m = fx - q * fy;
            *out = json_real(op == JOP_FLOORDIV ? q : m);
        }
        break;
    case JOP_POW:
        if (both_int && y >= 0) {
            long long r2 = 1;
            for (long long i = 0; i < y; i++) {
                if (__builtin_mul_overflow(r2, x, &r2)) return jx_fail(c, n->line, EMOE_EINVAL, "integer overflow");
                if (r2 == 0 || r2 == 1) break;
            }
            *out = json_integer(r2);
        } else {
            *out = json_real(pow(fx, fy));
        }
        break;
    default:
        return jx_fail(c, n->line, EMOE_EUNSUP, "unsupported operator");
    }
    return *out ? 0 : jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
}

static int eval(jctx *c, const jnode *n, json_t **out)
{
    *out = NULL;
    if (++c->depth > c->lim.max_depth + 200) { c->depth--; return jx_fail(c, n->line, EMOE_EINVAL, "expression nested too deeply"); }
    int rc = 0;
    json_t *a = NULL, *b = NULL;
    switch (n->kind) {
    case JE_LIT: *out = json_incref(n->lit); break;
    case JE_NAME: *out = json_incref(lookup(c, n->str)); break;
    case JE_ATTR:
        if ((rc = eval(c, n->a, &a))) break;
        if (!a) { rc = jx_fail(c, n->line, EMOE_EINVAL, "undefined value has no attribute '%s'", n->str); break; }
        if (json_is_object(a)) *out = json_incref(json_object_get(a, n->str));
        break;
    case JE_ITEM:
        if ((rc = eval(c, n->a, &a)) || (rc = eval(c, n->b, &b))) break;
        rc = get_item(c, n->line, a, b, out);
        break;
    case JE_SLICE:
        if ((rc = eval(c, n->a, &a))) break;
        rc = eval_slice(c, n, a, out);
        break;
    case JE_CALL: rc = eval_call(c, n, out); break;
    case JE_FILTER: {
        json_t **args = NULL, **kv = NULL;
        if (!(rc = eval(c, n->a, &a)) && !(rc = eval_args(c, n, &args, &kv)))
            rc = jb_filter(c, n, a, args, n->nv, n->kn, kv, n->nk, out);
        free_args(n, args, kv);
        break;
    }
    case JE_TEST: {
        json_t **args = NULL, **kv = NULL;
        int r = 0;
        if (!(rc = eval(c, n->a, &a)) && !(rc = eval_args(c, n, &args, &kv))) rc = jb_test(c, n, a, args, n->nv, &r);
        free_args(n, args, kv);
        if (!rc) *out = json_boolean(n->neg ? !r : r);
        break;
    }
    case JE_BIN:
        if ((rc = eval(c, n->a, &a)) || (rc = eval(c, n->b, &b))) break;
        rc = binary(c, n, a, b, out);
        break;
    case JE_AND: case JE_OR:
        if ((rc = eval(c, n->a, &a))) break;
        if ((n->kind == JE_AND) != jv_truthy(a)) { *out = a; a = NULL; break; }
        rc = eval(c, n->b, out);
        break;
    case JE_NOT:
        if (!(rc = eval(c, n->a, &a))) *out = json_boolean(!jv_truthy(a));
        break;
    case JE_NEG: case JE_POS:
        if ((rc = eval(c, n->a, &a))) break;
        if (!jv_is_num(a)) { rc = jx_fail(c, n->line, EMOE_EINVAL, "bad operand type for unary %c: '%s'", n->kind == JE_NEG ? '-' : '+', jv_type(a)); break; }
        if (n->kind == JE_POS) *out = is_int(a) ? json_integer(ival(a)) : json_incref(a);
        else if (is_int(a)) {
            if (ival(a) == INT64_MIN) { rc = jx_fail(c, n->line, EMOE_EINVAL, "integer overflow"); break; }
            *out = json_integer(-ival(a));
        } else *out = json_real(-json_real_value(a));
        break;
    case JE_COND:
        if ((rc = eval(c, n->b, &a))) break;
        if (jv_truthy(a)) rc = eval(c, n->a, out);
        else if (n->c) rc = eval(c, n->c, out);
        break;
    case JE_LIST:
        *out = json_array();
        for (int i = 0; i < n->nv && !rc && *out; i++) {
            json_t *x = NULL;
            if (!(rc = eval(c, n->v[i], &x))) {
                if (!x) rc = jx_fail(c, n->line, EMOE_EINVAL, "undefined value in a list literal");
                else json_array_append_new(*out, x);
            }
        }
        if (!*out) rc = jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
        break;
    case JE_DICT:
        *out = json_object();
        for (int i = 0; i + 1 < n->nv && !rc && *out; i += 2) {
            json_t *k = NULL, *v = NULL;
            if (!(rc = eval(c, n->v[i], &k)) && !(rc = eval(c, n->v[i + 1], &v))) {
                if (!json_is_string(k)) rc = jx_fail(c, n->line, EMOE_EUNSUP, "dict keys must be strings");
                else if (!v) rc = jx_fail(c, n->line, EMOE_EINVAL, "undefined value in a dict literal");
                else json_object_set(*out, json_string_value(k), v);
            }
            json_decref(k);
            json_decref(v);
        }
        if (!*out) rc = jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
        break;
    default:
        rc = jx_fail(c, n->line, EMOE_EUNSUP, "unsupported expression");
    }
    json_decref(a);
    json_decref(b);
    c->depth--;
    if (rc) { json_decref(*out); *out = NULL; }
    return rc;
}

/* ---- statements ---- */

static int exec_for(jctx *c, const jnode *n)
{
    json_t *seq = NULL, *items = NULL, *sel = NULL;
    int rc = eval(c, n->a, &seq);
    if (!rc) rc = jv_iter_list(c, n->line, seq, &items);
    json_decref(seq);
    if (rc) return -1;
    if (push_frame(c, n->line)) { json_decref(items); return -1; }
    /* the inline `if` filters before loop.length is known */
    sel = json_array();
    if (!sel) rc = jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < json_array_size(items); i++) {
        json_t *it = json_array_get(items, i);
        if (n->b) {
            if (n->nk == 1) rc = set_var(c, n->line, n->kn[0], it);
            json_t *cv = NULL;
            if (!rc) rc = eval(c, n->b, &cv);
            int keep = jv_truthy(cv);
            json_decref(cv);
            if (rc || !keep) continue;
        }
        json_array_append(sel, it);
    }
    size_t len = json_array_size(sel);
    for (size_t i = 0; !rc && i < len; i++) {
        if ((rc = jx_tick(c, n->line, 1))) break;
        json_t *it = json_array_get(sel, i);
        if (n->nk == 1) rc = set_var(c, n->line, n->kn[0], it);
        else {
            if (!json_is_array(it) || (int)json_array_size(it) != n->nk) {
                rc = jx_fail(c, n->line, EMOE_EINVAL, "cannot unpack into %d loop variables", n->nk);
                break;
            }
            for (int k = 0; k < n->nk && !rc; k++) rc = set_var(c, n->line, n->kn[k], json_array_get(it, (size_t)k));
        }
        json_t *loop = json_pack("{s:I,s:I,s:I,s:I,s:b,s:b,s:I,s:I,s:I}", "index", (json_int_t)i + 1, "index0", (json_int_t)i,
                                 "revindex", (json_int_t)(len - i), "revindex0", (json_int_t)(len - i - 1), "first", i == 0,
                                 "last", i + 1 == len, "length", (json_int_t)len, "depth", (json_int_t)1, "depth0", (json_int_t)0);
        if (!loop) { rc = jx_fail(c, n->line, EMOE_ENOMEM, "out of memory"); break; }
        if (i > 0) json_object_set(loop, "previtem", json_array_get(sel, i - 1));
        if (i + 1 < len) json_object_set(loop, "nextitem", json_array_get(sel, i + 1));
        if (!rc) rc = set_var(c, n->line, "loop", loop);
        json_decref(loop);
        if (!rc) rc = exec_body(c, n->c);
        c->cont = 0;
        if (c->brk) { c->brk = 0; break; }
    }
    pop_frame(c);
    if (!rc && len == 0 && n->d) rc = exec_body(c, n->d);
    json_decref(items);
    json_decref(sel);
    return rc;
}

static int is_namespace(jctx *c, json_t *v)
{
    for (int i = 0; i < c->nns; i++)
        if (c->ns[i] == v) return 1;
    return 0;
}

static int exec_set(jctx *c, const jnode *n)
{
    json_t *v = NULL;
    int rc = 0;
    if (n->kind == JN_SETBLOCK) {
        jbuf b = {0}, *saved = c->out;
        c->out = &b;
        rc = exec_body(c, n->c);
        c->out = saved;
        if (!rc) { v = jv_strn(b.p ? b.p : "", b.n); if (!v) rc = jx_fail(c, n->line, EMOE_ENOMEM, "out of memory"); }
        free(b.p);
        if (!rc) rc = set_var(c, n->line, n->kn[0], v);
        json_decref(v);
        return rc;
    }
    if (eval(c, n->b, &v)) return -1;
    if (n->a) { /* ns.attr = v */
        json_t *obj = lookup(c, n->a->str);
        if (!obj || !is_namespace(c, obj)) rc = jx_fail(c, n->line, EMOE_EINVAL, "cannot assign attribute '%s' on '%s': not a namespace", n->str, n->a->str);
        else if (!v) json_object_del(obj, n->str);
        else if (json_object_set(obj, n->str, v)) rc = jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
    } else if (n->nk == 1) {
        rc = set_var(c, n->line, n->kn[0], v);
    } else {
        if (!json_is_array(v) || (int)json_array_size(v) != n->nk) rc = jx_fail(c, n->line, EMOE_EINVAL, "cannot unpack into %d variables", n->nk);
        for (int k = 0; k < n->nk && !rc; k++) rc = set_var(c, n->line, n->kn[k], json_array_get(v, (size_t)k));
    }
    json_decref(v);
    return rc;
}

static int exec_body(jctx *c, const jnode *body)
{
    for (int i = 0; i < body->nv; i++) {
        const jnode *n = body->v[i];
        int rc = 0;
        switch (n->kind) {
        case JN_TEXT: rc = out_put(c, n->line, n->str, n->str_len); break;
        case JN_OUT: {
            json_t *v = NULL;
            jbuf s = {0};
            if (!(rc = eval(c, n->a, &v)) && !(rc = jv_str(c, &s, v))) rc = out_put(c, n->line, s.p ? s.p : "", s.n);
            free(s.p);
            json_decref(v);
            break;
        }
        case JN_IF: {
            int done = 0;
            for (int k = 0; k + 1 < n->nv && !done && !rc; k += 2) {
                json_t *cv = NULL;
                if ((rc = eval(c, n->v[k], &cv))) break;
                if (jv_truthy(cv)) { done = 1; rc = exec_body(c, n->v[k + 1]); }
                json_decref(cv);
            }
            if (!done && !rc && n->c) rc = exec_body(c, n->c);
            break;
        }
        case JN_FOR: rc = exec_for(c, n); break;
        case JN_SET: case JN_SETBLOCK: rc = exec_set(c, n); break;
        case JN_MACRO:
            if (c->nmacros >= (int)(sizeof c->macros / sizeof c->macros[0])) rc = jx_fail(c, n->line, EMOE_EINVAL, "too many macros");
            else c->macros[c->nmacros++] = (jmacro){n->str, n};
            break;
        case JN_BREAK: case JN_CONTINUE:
            if (c->nframes <= 1 && c->base == 0) { rc = jx_fail(c, n->line, EMOE_EINVAL, "'%s' outside a loop", n->kind == JN_BREAK ? "break" : "continue"); break; }
            if (n->kind == JN_BREAK) c->brk = 1; else c->cont = 1;
            return 0;
        case JN_BODY: rc = exec_body(c, n); break;
        default: rc = jx_fail(c, n->line, EMOE_EUNSUP, "unsupported statement");
        }
        if (rc) return -1;
        if (c->brk || c->cont) return 0;
    }
    return 0;
}

void jinja_limits_default(jinja_limits *l)
{
    l->max_output = 16u << 20;
    l->max_iterations = 1000000;
    l->max_depth = 64;
}

emoe_status jinja_render(const jinja_tpl *t, json_t *vars, const jinja_limits *lim, char **out, size_t *out_len,
                         emoe_err *err)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    jctx *c = calloc(1, sizeof *c);
    if (!c) return emoe_errf(err, EMOE_ENOMEM, "template: out of memory");
    if (lim) c->lim = *lim;
    else jinja_limits_default(&c->lim);
    if (err) err->code = EMOE_OK;
    c->err = err;
    jbuf b = {0};
    c->out = &b;
    /* frame 0: a copy of vars (so `set` at top level never touches the caller's object) */
    c->frames[0] = vars && json_is_object(vars) ? json_copy(vars) : json_object();
    c->nframes = 1;
    int rc = c->frames[0] ? exec_body(c, t->root) : jx_fail(c, 0, EMOE_ENOMEM, "out of memory");
    while (c->nframes > 0) json_decref(c->frames[--c->nframes]);
    for (int i = 0; i < c->nns; i++) json_decref(c->ns[i]);
    emoe_status st = rc ? (err && err->code ? err->code : EMOE_EINVAL) : EMOE_OK;
    free(c);
    if (st) { free(b.p); return st; }
    if (!b.p && jbuf_put(&b, "", 0)) return emoe_errf(err, EMOE_ENOMEM, "template: out of memory");
    *out = b.p;
    if (out_len) *out_len = b.n;
    return EMOE_OK;
}
