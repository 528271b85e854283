/*
 * jinja_builtins.c — the value model (Python str()/repr(), truthiness,
 * equality, json.dumps) and the built-in filters, tests, methods and globals.
 *
 * Filters: abs capitalize count d default dictsort e escape first float indent
 *   int items join last length list lower map max min replace reject rejectattr
 *   reverse round safe select selectattr sort string sum title tojson trim
 *   unique upper wordcount
 * Tests: boolean callable defined divisibleby eq equalto even false float ge gt
 *   in integer iterable le lower lt mapping ne none number odd sameas sequence
 *   string true undefined upper
 * str methods: capitalize count endswith find isalnum isalpha isdigit islower
 *   isspace isupper join lower lstrip replace rfind rstrip split splitlines
 *   startswith strip title upper
 * dict methods: get items keys values
 * Globals: dict namespace range raise_exception strftime_now
 */
#include "engine/jinja_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

json_t *jv_strn(const char *s, size_t n) { return json_stringn_nocheck(s, n); }

int jv_is_num(json_t *v) { return json_is_integer(v) || json_is_real(v) || json_is_boolean(v); }

double jv_num(json_t *v)
{
    if (json_is_integer(v)) return (double)json_integer_value(v);
    if (json_is_real(v)) return json_real_value(v);
    return json_is_true(v) ? 1.0 : 0.0;
}

const char *jv_type(json_t *v)
{
    if (!v) return "undefined";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "dict";
    case JSON_ARRAY: return "list";
    case JSON_STRING: return "str";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_TRUE: case JSON_FALSE: return "bool";
    default: return "NoneType";
    }
}

int jv_truthy(json_t *v)
{
    if (!v) return 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT: return json_object_size(v) > 0;
    case JSON_ARRAY: return json_array_size(v) > 0;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0;
    case JSON_TRUE: return 1;
    default: return 0;
    }
}

int jv_equal(json_t *a, json_t *b)
{
    if (!a || !b) return !a && !b;
    if (jv_is_num(a) && jv_is_num(b)) {
        if (!json_is_real(a) && !json_is_real(b)) {
            long long x = json_is_integer(a) ? json_integer_value(a) : json_is_true(a);
            long long y = json_is_integer(b) ? json_integer_value(b) : json_is_true(b);
            return x == y;
        }
        return jv_num(a) == jv_num(b);
    }
    if (json_typeof(a) != json_typeof(b)) return 0;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!jv_equal(json_array_get(a, i), json_array_get(b, i))) return 0;
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return 0;
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) if (!jv_equal(v, json_object_get(b, k))) return 0;
        return 1;
    }
    return json_equal(a, b);
}

size_t jv_strlen_cp(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

/* Python float repr: shortest round-trip digits, fixed for 1e-4 <= |x| < 1e16. */
static int float_repr(jbuf *b, double x)
{
    char t[64];
    if (isnan(x)) return jbuf_put(b, "nan", 3);
    if (isinf(x)) return x < 0 ? jbuf_put(b, "-inf", 4) : jbuf_put(b, "inf", 3);
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(t, sizeof t, "%.*e", p - 1, x);
        if (strtod(t, NULL) == x) break;
    }
    /* t = [-]d.ddde[+-]XX */
    char digits[32];
    int nd = 0, neg = t[0] == '-';
    const char *q = t + neg;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9') digits[nd++] = *q;
    int e = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    char o[96];
    int k = 0;
    if (neg) o[k++] = '-';
    if (e >= -5 + 1 && e < 16) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++) o[k++] = i < nd ? digits[i] : '0';
            o[k++] = '.';
            if (nd > e + 1) for (int i = e + 1; i < nd; i++) o[k++] = digits[i];
            else o[k++] = '0';
        } else {
            o[k++] = '0';
            o[k++] = '.';
            for (int i = 0; i < -e - 1; i++) o[k++] = '0';
            for (int i = 0; i < nd; i++) o[k++] = digits[i];
        }
    } else {
        o[k++] = digits[0];
        if (nd > 1) {
            o[k++] = '.';
            for (int i = 1; i < nd; i++) o[k++] = digits[i];
        }
        k += snprintf(o + k, sizeof o - (size_t)k, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    return jbuf_put(b, o, (size_t)k);
}

static int str_repr(jbuf *b, const char *s, size_t n)
{
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    if (jbuf_put(b, &q, 1)) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        int r;
        if (c == '\\') r = jbuf_put(b, "\\\\", 2);
        else if (c == (unsigned char)q) { e[0] = '\\'; e[1] = q; r = jbuf_put(b, e, 2); }
        else if (c == '\n') r = jbuf_put(b, "\\n", 2);
        else if (c == '\r') r = jbuf_put(b, "\\r", 2);
        else if (c == '\t') r = jbuf_put(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) { snprintf(e, sizeof e, "\\x%02x", c); r = jbuf_put(b, e, 4); }
        else r = jbuf_put(b, (const char *)&s[i], 1);
        if (r) return -1;
    }
    return jbuf_put(b, &q, 1);
}

static int repr_rec(jctx *c, jbuf *b, json_t *v, int top, int depth)
{
    char t[32];
    if (depth > 100) return jx_fail(c, 0, EMOE_EINVAL, "value nested too deeply");
    if (!v) return 0;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return top ? jbuf_put(b, json_string_value(v), json_string_length(v)) : str_repr(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(t, sizeof t, "%lld", (long long)json_integer_value(v));
        return jbuf_put(b, t, strlen(t));
    case JSON_REAL: return float_repr(b, json_real_value(v));
    case JSON_TRUE: return jbuf_put(b, "True", 4);
    case JSON_FALSE: return jbuf_put(b, "False", 5);
    case JSON_NULL: return jbuf_put(b, "None", 4);
    case JSON_ARRAY:
        if (jbuf_put(b, "[", 1)) return -1;
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i && jbuf_put(b, ", ", 2)) return -1;
            if (repr_rec(c, b, json_array_get(v, i), 0, depth + 1)) return -1;
        }
        return jbuf_put(b, "]", 1);
    case JSON_OBJECT: {
        if (jbuf_put(b, "{", 1)) return -1;
        const char *k;
        json_t *x;
        int first = 1;
        json_object_foreach(v, k, x) {
            if (!first && jbuf_put(b, ", ", 2)) return -1;
            first = 0;
            if (str_repr(b, k, strlen(k)) || jbuf_put(b, ": ", 2) || repr_rec(c, b, x, 0, depth + 1)) return -1;
        }
        return jbuf_put(b, "}", 1);
    }
    }
    return 0;
}

int jv_str(jctx *c, jbuf *b, json_t *v)
{
    if (repr_rec(c, b, v, 1, 0)) return jx_fail(c, 0, EMOE_ENOMEM, "out of memory");
    if (b->n > c->lim.max_output) return jx_fail(c, 0, EMOE_EINVAL, "string exceeds %zu bytes", c->lim.max_output);
    return 0;
}

int jv_repr(jctx *c, jbuf *b, json_t *v)
{
    if (repr_rec(c, b, v, 0, 0)) return jx_fail(c, 0, EMOE_ENOMEM, "out of memory");
    return 0;
}

static int json_str(jbuf *b, const char *s, size_t n, int ensure_ascii)
{
    if (jbuf_put(b, "\"", 1)) return -1;
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        char e[16];
        int r = 0;
        if (ch == '"') r = jbuf_put(b, "\\\"", 2);
        else if (ch == '\\') r = jbuf_put(b, "\\\\", 2);
        else if (ch == '\n') r = jbuf_put(b, "\\n", 2);
        else if (ch == '\r') r = jbuf_put(b, "\\r", 2);
        else if (ch == '\t') r = jbuf_put(b, "\\t", 2);
        else if (ch == '\b') r = jbuf_put(b, "\\b", 2);
        else if (ch == '\f') r = jbuf_put(b, "\\f", 2);
        else if (ch < 0x20 || (ensure_ascii && ch == 0x7f)) { snprintf(e, sizeof e, "\\u%04x", ch); r = jbuf_put(b, e, 6); }
        else if (ch >= 0x80 && ensure_ascii) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
            if (l <= 0) { l = 1; cp = 0xfffd; }
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(e, sizeof e, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
                r = jbuf_put(b, e, 12);
            } else {
                snprintf(e, sizeof e, "\\u%04x", cp);
                r = jbuf_put(b, e, 6);
            }
            i += (size_t)l;
            if (r) return -1;
            continue;
        } else r = jbuf_put(b, s + i, 1);
        if (r) return -1;
        i++;
    }
    return jbuf_put(b, "\"", 1);
}

static int newline_indent(jbuf *b, int indent, int level)
{
    if (jbuf_put(b, "\n", 1)) return -1;
    for (int i = 0; i < indent * level; i++)
        if (jbuf_put(b, " ", 1)) return -1;
    return 0;
}

static int key_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int jv_tojson(jctx *c, jbuf *b, json_t *v, int indent, int sort_keys, int ensure_ascii, int level)
{
    if (level > 100) return jx_fail(c, 0, EMOE_EINVAL, "tojson: value nested too deeply");
    if (!v) return jx_fail(c, 0, EMOE_EINVAL, "tojson: Object of type Undefined is not JSON serializable");
    char t[32];
    const char *item_sep = indent >= 0 ? "," : ", ";
    int r = 0;
    switch (json_typeof(v)) {
    case JSON_STRING: r = json_str(b, json_string_value(v), json_string_length(v), ensure_ascii); break;
    case JSON_INTEGER:
        snprintf(t, sizeof t, "%lld", (long long)json_integer_value(v));
        r = jbuf_put(b, t, strlen(t));
        break;
    case JSON_REAL: {
        double x = json_real_value(v);
        if (isnan(x)) r = jbuf_put(b, "NaN", 3);
        else if (isinf(x)) r = x < 0 ? jbuf_put(b, "-Infinity", 9) : jbuf_put(b, "Infinity", 8);
        else r = float_repr(b, x);
        break;
    }
    case JSON_TRUE: r = jbuf_put(b, "true", 4); break;
    case JSON_FALSE: r = jbuf_put(b, "false", 5); break;
    case JSON_NULL: r = jbuf_put(b, "null", 4); break;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (!n) { r = jbuf_put(b, "[]", 2); break; }
        r = jbuf_put(b, "[", 1);
        for (size_t i = 0; i < n && !r; i++) {
            if (i) r = jbuf_put(b, item_sep, strlen(item_sep));
            if (!r && indent >= 0) r = newline_indent(b, indent, level + 1);
            if (!r) r = jv_tojson(c, b, json_array_get(v, i), indent, sort_keys, ensure_ascii, level + 1);
        }
        if (!r && indent >= 0) r = newline_indent(b, indent, level);
        if (!r) r = jbuf_put(b, "]", 1);
        break;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v), k = 0;
        if (!n) { r = jbuf_put(b, "{}", 2); break; }
        const char **keys = malloc(n * sizeof *keys);
        if (!keys) return jx_fail(c, 0, EMOE_ENOMEM, "out of memory");
        const char *key;
        json_t *x;
        json_object_foreach(v, key, x) keys[k++] = key;
        if (sort_keys) qsort(keys, n, sizeof *keys, key_cmp);
        r = jbuf_put(b, "{", 1);
        for (size_t i = 0; i < n && !r; i++) {
            if (i) r = jbuf_put(b, item_sep, strlen(item_sep));
            if (!r && indent >= 0) r = newline_indent(b, indent, level + 1);
            if (!r) r = json_str(b, keys[i], strlen(keys[i]), ensure_ascii);
            if (!r) r = jbuf_put(b, ": ", 2);
            if (!r) r = jv_tojson(c, b, json_object_get(v, keys[i]), indent, sort_keys, ensure_ascii, level + 1);
        }
        free(keys);
        if (!r && indent >= 0) r = newline_indent(b, indent, level);
        if (!r) r = jbuf_put(b, "}", 1);
        break;
    }
    }
    if (r && !(c->err && c->err->code)) return jx_fail(c, 0, EMOE_ENOMEM, "out of memory");
    if (b->n > c->lim.max_output) return jx_fail(c, 0, EMOE_EINVAL, "tojson output exceeds %zu bytes", c->lim.max_output);
    return r;
}

int jv_iter_list(jctx *c, int line, json_t *v, json_t **out)
{
    *out = NULL;
    if (!v) { *out = json_array(); return *out ? 0 : jx_fail(c, line, EMOE_ENOMEM, "out of memory"); }
    if (json_is_array(v)) { *out = json_incref(v); return 0; }
    json_t *a = json_array();
    if (!a) return jx_fail(c, line, EMOE_ENOMEM, "out of memory");
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) json_array_append_new(a, json_string_nocheck(k));
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        for (size_t i = 0; i < n;) {
            size_t l = 1;
            while (i + l < n && ((unsigned char)s[i + l] & 0xc0) == 0x80) l++;
            json_array_append_new(a, jv_strn(s + i, l));
            i += l;
        }
    } else {
        json_decref(a);
        return jx_fail(c, line, EMOE_EINVAL, "'%s' object is not iterable", jv_type(v));
    }
    *out = a;
    return 0;
}

/* ---- string helpers ---- */

static int is_pyspace(uint32_t cp)
{
    return (cp >= 9 && cp <= 13) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

static int next_cp(const char *s, size_t n, size_t i, uint32_t *cp)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    if (l <= 0) { *cp = (unsigned char)s[i]; return 1; }
    *cp = (uint32_t)c;
    return (int)l;
}

static int in_chars(uint32_t cp, json_t *chars)
{
    if (!chars || json_is_null(chars)) return is_pyspace(cp);
    const char *s = json_string_value(chars);
    size_t n = json_string_length(chars);
    for (size_t i = 0; i < n;) {
        uint32_t x;
        i += (size_t)next_cp(s, n, i, &x);
        if (x == cp) return 1;
    }
    return 0;
}

/* strip: which 1 = left, 2 = right, 3 = both */
static json_t *strip(json_t *s, json_t *chars, int which)
{
    const char *p = json_string_value(s);
    size_t n = json_string_length(s), a = 0, b = n;
    if (which & 1)
        while (a < b) {
            uint32_t cp;
            int l = next_cp(p, b, a, &cp);
            if (!in_chars(cp, chars)) break;
            a += (size_t)l;
        }
    if (which & 2)
        while (b > a) {
            size_t q = b - 1;
            while (q > a && ((unsigned char)p[q] & 0xc0) == 0x80) q--;
            uint32_t cp;
            next_cp(p, b, q, &cp);
            if (!in_chars(cp, chars)) break;
            b = q;
        }
    return jv_strn(p + a, b - a);
}

/* mode: 0 lower, 1 upper, 2 title, 3 capitalize */
static json_t *recase(json_t *s, int mode)
{
    const char *p = json_string_value(s);
    size_t n = json_string_length(s);
    jbuf b = {0};
    int prev_cased = 0, first = 1;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)next_cp(p, n, i, &cp);
        utf8proc_int32_t o;
        if (mode == 0) o = utf8proc_tolower((utf8proc_int32_t)cp);
        else if (mode == 1) o = utf8proc_toupper((utf8proc_int32_t)cp);
        else if (mode == 2) o = prev_cased ? utf8proc_tolower((utf8proc_int32_t)cp) : utf8proc_totitle((utf8proc_int32_t)cp);
        else o = first ? utf8proc_totitle((utf8proc_int32_t)cp) : utf8proc_tolower((utf8proc_int32_t)cp);
        utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)cp);
        prev_cased = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
        first = 0;
        utf8proc_uint8_t e[4];
        utf8proc_ssize_t l = utf8proc_encode_char(o, e);
        if (jbuf_put(&b, (const char *)e, (size_t)l)) { free(b.p); return NULL; }
    }
    json_t *r = jv_strn(b.p ? b.p : "", b.n);
    free(b.p);
    return r;
}

static json_t *replace_str(jctx *c, json_t *s, json_t *old, json_t *nw, long long count)
{
    const char *p = json_string_value(s), *o = json_string_value(old), *w = json_string_value(nw);
    size_t n = json_string_length(s), on = json_string_length(old), wn = json_string_length(nw);
    jbuf b = {0};
    size_t i = 0;
    long long done = 0;
    int bad = 0;
    if (on == 0) { /* Python inserts between every character */
        for (size_t k = 0; k <= n && !bad;) {
            if (count < 0 || done < count) { bad |= jbuf_put(&b, w, wn); done++; }
            if (k == n) break;
            size_t l = 1;
            while (k + l < n && ((unsigned char)p[k + l] & 0xc0) == 0x80) l++;
            bad |= jbuf_put(&b, p + k, l);
            k += l;
        }
    } else {
        while (i < n && !bad) {
            const char *f = (count < 0 || done < count) ? memmem(p + i, n - i, o, on) : NULL;
            if (!f) { bad |= jbuf_put(&b, p + i, n - i); break; }
            bad |= jbuf_put(&b, p + i, (size_t)(f - (p + i)));
            bad |= jbuf_put(&b, w, wn);
            i = (size_t)(f - p) + on;
            done++;
            if (b.n > c->lim.max_output) bad = 1;
        }
    }
    json_t *r = bad || b.n > c->lim.max_output ? NULL : jv_strn(b.p ? b.p : "", b.n);
    free(b.p);
    return r;
}

static json_t *split_str(json_t *s, json_t *sep, long long maxsplit, int from_right)
{
    const char *p = json_string_value(s);
    size_t n = json_string_length(s);
    json_t *a = json_array();
    if (!a) return NULL;
    if (!sep || json_is_null(sep)) {
        size_t i = 0;
        long long splits = 0;
        (void)from_right;
        while (i < n) {
            uint32_t cp;
            while (i < n) { int l = next_cp(p, n, i, &cp); if (!is_pyspace(cp)) break; i += (size_t)l; }
            if (i >= n) break;
            size_t st = i;
            if (maxsplit >= 0 && splits >= maxsplit) {
                size_t e = n;
                while (e > st) { size_t q = e - 1; while (q > st && ((unsigned char)p[q] & 0xc0) == 0x80) q--; next_cp(p, e, q, &cp); if (!is_pyspace(cp)) break; e = q; }
                json_array_append_new(a, jv_strn(p + st, e - st));
                break;
            }
            while (i < n) { int l = next_cp(p, n, i, &cp); if (is_pyspace(cp)) break; i += (size_t)l; }
            json_array_append_new(a, jv_strn(p + st, i - st));
            splits++;
        }
        return a;
    }
    const char *sp = json_string_value(sep);
    size_t sn = json_string_length(sep), i = 0;
    long long splits = 0;
    for (;;) {
        const char *f = (maxsplit < 0 || splits < maxsplit) ? memmem(p + i, n - i, sp, sn) : NULL;
        if (!f) { json_array_append_new(a, jv_strn(p + i, n - i)); break; }
        json_array_append_new(a, jv_strn(p + i, (size_t)(f - (p + i))));
        i = (size_t)(f - p) + sn;
        splits++;
    }
    return a;
}

static const char *kwarg_name(char **kn, int nk, int i) { return i < nk ? kn[i] : NULL; }

/* Fetches an argument by position or keyword; NULL when absent. */
static json_t *arg(json_t **args, int nargs, char **kn, json_t **kv, int nk, int pos, const char *name)
{
    if (pos >= 0 && pos < nargs) return args[pos];
    for (int i = 0; i < nk; i++)
        if (name && !strcmp(kwarg_name(kn, nk, i), name)) return kv[i];
    return NULL;
}

static int need_str(jctx *c, const jnode *n, json_t *v, const char *what)
{
    if (!json_is_string(v)) return jx_fail(c, n->line, EMOE_EINVAL, "%s expects a string, got '%s'", what, jv_type(v));
    return 0;
}

static int set_out(jctx *c, const jnode *n, json_t *r, json_t **out)
{
    if (!r) return jx_fail(c, n->line, EMOE_ENOMEM, "out of memory or result too long");
    *out = r;
    return 0;
}

static int tojson_value(jctx *c, const jnode *n, json_t *v, json_t *indent, json_t *sortk, json_t *ascii, json_t **out)
{
    jbuf b = {0};
    int ind = json_is_integer(indent) ? (int)json_integer_value(indent) : -1;
    if (ind > 64) ind = 64;
    if (jv_tojson(c, &b, v, ind, jv_truthy(sortk), jv_truthy(ascii), 0)) { free(b.p); return -1; }
    int rc = set_out(c, n, jv_strn(b.p ? b.p : "", b.n), out);
    free(b.p);
    return rc;
}

/* Applies a test by name (used by select/reject and `is`). */
static int run_test(jctx *c, const jnode *n, const char *name, json_t *v, json_t **args, int nargs, int *res);

/* attribute path "a.b" lookup for map/selectattr/sort */
static json_t *get_attr_path(json_t *v, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = v;
    for (char *save = NULL, *part = strtok_r(buf, ".", &save); part && cur; part = strtok_r(NULL, ".", &save)) {
        if (json_is_object(cur)) cur = json_object_get(cur, part);
        else if (json_is_array(cur) && part[0] >= '0' && part[0] <= '9') cur = json_array_get(cur, (size_t)atoi(part));
        else cur = NULL;
    }
    return cur;
}

static int sort_cmp_ci;
static const char *sort_attr;
static int sort_failed;

static int value_cmp(json_t *a, json_t *b)
{
    if (jv_is_num(a) && jv_is_num(b)) { double x = jv_num(a), y = jv_num(b); return x < y ? -1 : x > y; }
    if (json_is_string(a) && json_is_string(b)) {
        if (sort_cmp_ci) return strcasecmp(json_string_value(a), json_string_value(b));
        return strcmp(json_string_value(a), json_string_value(b));
    }
    sort_failed = 1;
    return 0;
}

static int sort_cmp(const void *x, const void *y)
{
    json_t *a = *(json_t *const *)x, *b = *(json_t *const *)y;
    if (sort_attr) { a = get_attr_path(a, sort_attr); b = get_attr_path(b, sort_attr); }
    return value_cmp(a, b);
}

static int pair_cmp(const void *x, const void *y)
{
    json_t *a = json_array_get(*(json_t *const *)x, 0), *b = json_array_get(*(json_t *const *)y, 0);
    return value_cmp(a, b);
}

static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER;

static json_t *sorted(json_t *list, int reverse, int ci, const char *attr, int pairs, int *bad)
{
    size_t n = json_array_size(list);
    json_t **v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) v[i] = json_array_get(list, i);
    pthread_mutex_lock(&sort_mu); /* qsort has no context argument in C11 */
    sort_cmp_ci = ci;
    sort_attr = attr;
    sort_failed = 0;
    qsort(v, n, sizeof *v, pairs ? pair_cmp : sort_cmp);
    *bad = sort_failed;
    pthread_mutex_unlock(&sort_mu);
    json_t *r = json_array();
    for (size_t i = 0; r && i < n; i++) json_array_append(r, v[reverse ? n - 1 - i : i]);
    free(v);
    return r;
}

int jb_filter(jctx *c, const jnode *n, json_t *v, json_t **args, int nargs, char **kn, json_t **kv, int nk, json_t **out)
{
    const char *f = n->str;
    *out = NULL;
#define A(pos, name) arg(args, nargs, kn, kv, nk, (pos), (name))
    if (!strcmp(f, "safe")) { *out = json_incref(v); return 0; }
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        json_t *dv = A(0, "default_value");
        int use_default = !v || (jv_truthy(A(1, "boolean")) && !jv_truthy(v));
        if (!use_default) *out = json_incref(v);
        else *out = dv ? json_incref(dv) : json_string("");
        return 0;
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        if (!v) { *out = json_integer(0); return 0; }
        if (json_is_string(v)) *out = json_integer((json_int_t)jv_strlen_cp(json_string_value(v), json_string_length(v)));
        else if (json_is_array(v)) *out = json_integer((json_int_t)json_array_size(v));
        else if (json_is_object(v)) *out = json_integer((json_int_t)json_object_size(v));
        else return jx_fail(c, n->line, EMOE_EINVAL, "object of type '%s' has no len()", jv_type(v));
        return 0;
    }
    if (!strcmp(f, "string")) {
        jbuf b = {0};
        if (jv_str(c, &b, v)) { free(b.p); return -1; }
        int rc = set_out(c, n, jv_strn(b.p ? b.p : "", b.n), out);
        free(b.p);
        return rc;
    }
    if (!strcmp(f, "tojson")) return tojson_value(c, n, v, A(0, "indent"), A(-1, "sort_keys"), A(-1, "ensure_ascii"), out);
    if (!strcmp(f, "list")) return jv_iter_list(c, n->line, v, out);
    if (!strcmp(f, "items")) {
        if (!v) { *out = json_array(); return 0; }
        if (!json_is_object(v)) return jx_fail(c, n->line, EMOE_EINVAL, "items expects a mapping");
        json_t *r = json_array();
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) json_array_append_new(r, json_pack("[sO]", k, x));
        return set_out(c, n, r, out);
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        json_t *l = NULL;
        if (jv_iter_list(c, n->line, v, &l)) return -1;
        size_t sz = json_array_size(l);
        if (sz) *out = json_incref(json_array_get(l, f[0] == 'f' ? 0 : sz - 1));
        json_decref(l);
        return 0;
    }
    if (!strcmp(f, "reverse")) {
        if (json_is_string(v)) {
            json_t *l = NULL;
            if (jv_iter_list(c, n->line, v, &l)) return -1;
            jbuf b = {0};
            for (size_t i = json_array_size(l); i-- > 0;) jbuf_put(&b, json_string_value(json_array_get(l, i)), json_string_length(json_array_get(l, i)));
            json_decref(l);
            int rc = set_out(c, n, jv_strn(b.p ? b.p : "", b.n), out);
            free(b.p);
            return rc;
        }
        json_t *l = NULL;
        if (jv_iter_list(c, n->line, v, &l)) return -1;
        json_t *r = json_array();
        for (size_t i = json_array_size(l); r && i-- > 0;) json_array_append(r, json_array_get(l, i));
        json_decref(l);
        return set_out(c, n, r, out);
    }
    if (!strcmp(f, "join")) {
        json_t *l = NULL, *sep = A(0, "d"), *attr = A(1, "attribute");
        if (sep && !json_is_string(sep)) return jx_fail(c, n->line, EMOE_EINVAL, "join separator must be a string");
        if (jv_iter_list(c, n->line, v, &l)) return -1;
        jbuf b = {0};
        int rc = 0;
        for (size_t i = 0; i < json_array_size(l) && !rc; i++) {
            if (i && sep) rc = jbuf_put(&b, json_string_value(sep), json_string_length(sep));
            json_t *it = json_array_get(l, i);
            if (json_is_string(attr)) it = get_attr_path(it, json_string_value(attr));
            if (!rc) rc = jv_str(c, &b, it);
        }
        json_decref(l);
        if (!rc) rc = set_out(c, n, jv_strn(b.p ? b.p : "", b.n), out);
        free(b.p);
        return rc;
    }
    if (!strcmp(f, "int")) {
        json_t *dflt = A(0, "default");
        long long d = json_is_integer(dflt) ? json_integer_value(dflt) : 0;
        if (json_is_integer(v)) *out = json_incref(v);
        else if (json_is_real(v)) *out = isfinite(json_real_value(v)) && fabs(json_real_value(v)) < 9.2e18 ? json_integer((json_int_t)json_real_value(v)) : json_integer(d);
        else if (json_is_boolean(v)) *out = json_integer(json_is_true(v));
        else if (json_is_string(v)) {
            char *e;
            const char *s = json_string_value(v);
            long long x = strtoll(s, &e, 10);
            if (e == s || *e) { double dd = strtod(s, &e); x = (e != s && !*e && fabs(dd) < 9.2e18) ? (long long)dd : d; }
            *out = json_integer(x);
        } else *out = json_integer(d);
        return 0;
    }
    if (!strcmp(f, "float")) {
        if (jv_is_num(v)) *out = json_real(jv_num(v));
        else if (json_is_string(v)) { char *e; double x = strtod(json_string_value(v), &e); *out = json_real(*e ? 0.0 : x); }
        else *out = json_real(0.0);
        return 0;
    }
    if (!strcmp(f, "abs")) {
        if (!jv_is_num(v)) return jx_fail(c, n->line, EMOE_EINVAL, "abs expects a number");
        *out = json_is_real(v) ? json_real(fabs(json_real_value(v))) : json_integer(llabs(json_is_integer(v) ? json_integer_value(v) : json_is_true(v)));
        return 0;
    }
    if (!strcmp(f, "round")) {
        if (!jv_is_num(v)) return jx_fail(c, n->line, EMOE_EINVAL, "round expects a number");
        json_t *pr = A(0, "precision");
        int p = json_is_integer(pr) ? (int)json_integer_value(pr) : 0;
        if (p > 15) p = 15;
        if (p < -15) p = -15;
        double m = pow(10, p);
        *out = json_real(nearbyint(jv_num(v) * m) / m); /* Python round(): half to even */
        return 0;
    }
    if (!strcmp(f, "sum") || !strcmp(f, "min") || !strcmp(f, "max")) {
        json_t *l = NULL, *attr = A(-1, "attribute");
        if (jv_iter_list(c, n->line, v, &l)) return -1;
        json_t *best = NULL;
        double sum = 0;
        int all_int = 1;
        long long isum = 0;
        for (size_t i = 0; i < json_array_size(l); i++) {
            json_t *it = json_array_get(l, i);
            if (json_is_string(attr)) it = get_attr_path(it, json_string_value(attr));
            if (f[1] == 'u') {
                if (!jv_is_num(it)) { json_decref(l); return jx_fail(c, n->line, EMOE_EINVAL, "sum expects numbers"); }
                sum += jv_num(it);
                if (json_is_real(it)) all_int = 0;
                else isum += (long long)jv_num(it);
            } else {
                int cmp;
                if (!best) { best = it; continue; }
                int bad = 0;
                sort_failed = 0;
                cmp = jv_is_num(it) && jv_is_num(best) ? (jv_num(it) > jv_num(best)) - (jv_num(it) < jv_num(best))
                      : json_is_string(it) && json_is_string(best) ? strcasecmp(json_string_value(it), json_string_value(best)) : (bad = 1, 0);
                if (bad) { json_decref(l); return jx_fail(c, n->line, EMOE_EINVAL, "%s: values are not comparable", f); }
                if ((f[1] == 'i' && cmp < 0) || (f[1] == 'a' && cmp > 0)) best = it;
            }
        }
        if (f[1] == 'u') *out = all_int ? json_integer(isum) : json_real(sum);
        else *out = json_incref(best);
        json_decref(l);
        return 0;
    }
    if (!strcmp(f, "unique")) {
        json_t *l = NULL;
        if (jv_iter_list(c, n->line, v, &l)) return -1;
        json_t *r = json_array();
        for (size_t i = 0; r && i < json_array_size(l); i++) {
            int dup = 0;
            for (size_t k = 0; k < json_array_size(r) && !dup; k++) dup = jv_equal(json_array_get(r, k), json_array_get(l, i));
            if (!dup) json_array_append(r, json_array_get(l, i));
            if (jx_tick(c, n->line, (long)json_array_size(r))) { json_decref(r); json_decref(l); return -1; }
        }
        json_decref(l);
        return set_out(c, n, r, out);
    }
    if (!strcmp(f, "sort") || !strcmp(f, "dictsort")) {
        int pairs = f[0] == 'd';
        json_t *l = NULL;
        if (pairs) {
            if (!json_is_object(v)) return jx_fail(c, n->line, EMOE_EINVAL, "dictsort expects a mapping");
            l = json_array();
            const char *k;
            json_t *x;
            json_object_foreach(v, k, x) json_array_append_new(l, json_pack("[sO]", k, x));
        } else if (jv_iter_list(c, n->line, v, &l)) return -1;
        json_t *rev = A(pairs ? 2 : 0, "reverse"), *cs = A(pairs ? 0 : 1, "case_sensitive"), *attr = A(pairs ? -1 : 2, "attribute");
        int bad = 0;
        json_t *r = l ? sorted(l, jv_truthy(rev), !jv_truthy(cs), json_is_string(attr) ? json_string_value(attr) : NULL, pairs, &bad) : NULL;
        json_decref(l);
        if (bad) { json_decref(r); return jx_fail(c, n->line, EMOE_EINVAL, "%s: values are not comparable", f); }
        return set_out(c, n, r, out);
    }
    if (!strcmp(f, "map") || !strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr")) {
        json_t *l = NULL;
        if (jv_iter_list(c, n->line, v, &l)) return -1;
        json_t *r = json_array();
        int rc = r ? 0 : jx_fail(c, n->line, EMOE_ENOMEM, "out of memory");
        int is_map = f[0] == 'm', is_attr = strstr(f, "attr") != NULL, want = f[0] == 's';
        json_t *attr = is_map ? A(-1, "attribute") : NULL;
        for (size_t i = 0; !rc && i < json_array_size(l); i++) {
            json_t *it = json_array_get(l, i);
            if (is_map) {
                if (json_is_string(attr)) { json_t *x = get_attr_path(it, json_string_value(attr)); json_array_append(r, x ? x : json_null()); continue; }
                if (nargs < 1 || !json_is_string(args[0])) { rc = jx_fail(c, n->line, EMOE_EINVAL, "map needs a filter name or attribute="); break; }
                jnode fake = *n;
                fake.str = (char *)json_string_value(args[0]);
                json_t *x = NULL;
                rc = jb_filter(c, &fake, it, args + 1, nargs - 1, NULL, NULL, 0, &x);
                if (!rc) json_array_append_new(r, x ? x : json_null());
                continue;
            }
            json_t *subject = it;
            int ai = 0;
            if (is_attr) {
                if (nargs < 1 || !json_is_string(args[0])) { rc = jx_fail(c, n->line, EMOE_EINVAL, "%s needs an attribute name", f); break; }
                subject = get_attr_path(it, json_string_value(args[0]));
                ai = 1;
            }
            int res;
            if (nargs > ai) {
                if (!json_is_string(args[ai])) { rc = jx_fail(c, n->line, EMOE_EINVAL, "%s: test name must be a string", f); break; }
                rc = run_test(c, n, json_string_value(args[ai]), subject, args + ai + 1, nargs - ai - 1, &res);
            } else res = jv_truthy(subject);
            if (!rc && res == want) json_array_append(r, it);
        }
        json_decref(l);
        if (rc) { json_decref(r); return -1; }
        *out = r;
        return 0;
    }
    if (!strcmp(f, "indent")) {
        if (need_str(c, n, v, "indent")) return -1;
        json_t *w = A(0, "width"), *first = A(1, "first"), *blank = A(2, "blank");
        jbuf pad = {0}, b = {0};
        if (json_is_string(w)) jbuf_put(&pad, json_string_value(w), json_string_length(w));
        else for (long long i = 0, k = json_is_integer(w) ? json_integer_value(w) : 4; i < k && i < 256; i++) jbuf_put(&pad, " ", 1);
        const char *s = json_string_value(v);
        size_t sl = json_string_length(v), i = 0;
        int line_no = 0;
        while (i <= sl) {
            const char *nl = memchr(s + i, '\n', sl - i);
            size_t e = nl ? (size_t)(nl - s) : sl;
            int empty = e == i;
            if ((line_no > 0 || jv_truthy(first)) && (!empty || jv_truthy(blank))) jbuf_put(&b, pad.p ? pad.p : "", pad.n);
            jbuf_put(&b, s + i, e - i);
            if (!nl) break;
            jbuf_put(&b, "\n", 1);
            i = e + 1;
            line_no++;
        }
        int rc = set_out(c, n, jv_strn(b.p ? b.p : "", b.n), out);
        free(pad.p);
        free(b.p);
        return rc;
    }
    if (!strcmp(f, "escape") || !strcmp(f, "e")) {
        jbuf s = {0}, b = {0};
        if (jv_str(c, &s, v)) { free(s.p); return -1; }
        for (size_t i = 0; i < s.n; i++) {
            const char *r = s.p[i] == '&' ? "&amp;" : s.p[i] == '<' ? "&lt;" : s.p[i] == '>' ? "&gt;" : s.p[i] == '"' ? "&#34;" : s.p[i] == '\'' ? "&#39;" : NULL;
            if (r) jbuf_put(&b, r, strlen(r));
            else jbuf_put(&b, s.p + i, 1);
        }
        int rc = set_out(c, n, jv_strn(b.p ? b.p : "", b.n), out);
        free(s.p);
        free(b.p);
        return rc;
    }
    if (!strcmp(f, "wordcount")) {
        if (need_str(c, n, v, "wordcount")) return -1;
        json_t *l = split_str(v, NULL, -1, 0);
        *out = json_integer(l ? (json_int_t)json_array_size(l) : 0);
        json_decref(l);
        return 0;
    }
    /* string filters */
    if (!strcmp(f, "trim") || !strcmp(f, "lower") || !strcmp(f, "upper") || !strcmp(f, "title") || !strcmp(f, "capitalize") ||
        !strcmp(f, "replace")) {
        if (need_str(c, n, v, f)) return -1;
        if (!strcmp(f, "trim")) return set_out(c, n, strip(v, A(0, "chars"), 3), out);
        if (!strcmp(f, "lower")) return set_out(c, n, recase(v, 0), out);
        if (!strcmp(f, "upper")) return set_out(c, n, recase(v, 1), out);
        if (!strcmp(f, "title")) return set_out(c, n, recase(v, 2), out);
        if (!strcmp(f, "capitalize")) return set_out(c, n, recase(v, 3), out);
        json_t *o = A(0, "old"), *w = A(1, "new"), *cnt = A(2, "count");
        if (!json_is_string(o) || !json_is_string(w)) return jx_fail(c, n->line, EMOE_EINVAL, "replace expects two strings");
        return set_out(c, n, replace_str(c, v, o, w, json_is_integer(cnt) ? json_integer_value(cnt) : -1), out);
    }
#undef A
    return jx_fail(c, n->line, EMOE_EUNSUP, "unsupported filter '%s'", f);
}

static int run_test(jctx *c, const jnode *n, const char *t, json_t *v, json_t **args, int nargs, int *res)
{
    json_t *a0 = nargs > 0 ? args[0] : NULL;
    if (!strcmp(t, "defined")) *res = v != NULL;
    else if (!strcmp(t, "undefined")) *res = v == NULL;
    else if (!strcmp(t, "none")) *res = v && json_is_null(v);
    else if (!strcmp(t, "boolean")) *res = v && json_is_boolean(v);
    else if (!strcmp(t, "true")) *res = v && json_is_true(v);
    else if (!strcmp(t, "false")) *res = v && json_is_false(v);
    else if (!strcmp(t, "integer")) *res = v && json_is_integer(v);
    else if (!strcmp(t, "float")) *res = v && json_is_real(v);
    else if (!strcmp(t, "number")) *res = v && jv_is_num(v);
    else if (!strcmp(t, "string")) *res = v && json_is_string(v);
    else if (!strcmp(t, "mapping")) *res = v && json_is_object(v);
    else if (!strcmp(t, "iterable")) *res = v && (json_is_array(v) || json_is_object(v) || json_is_string(v));
    else if (!strcmp(t, "sequence")) *res = v && (json_is_array(v) || json_is_object(v) || json_is_string(v));
    else if (!strcmp(t, "callable")) *res = 0;
    else if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "==") || !strcmp(t, "sameas")) *res = jv_equal(v, a0);
    else if (!strcmp(t, "ne") || !strcmp(t, "!=")) *res = !jv_equal(v, a0);
    else if (!strcmp(t, "lt") || !strcmp(t, "gt") || !strcmp(t, "le") || !strcmp(t, "ge")) {
        if (!jv_is_num(v) || !jv_is_num(a0)) return jx_fail(c, n->line, EMOE_EINVAL, "test '%s' expects numbers", t);
        double x = jv_num(v), y = jv_num(a0);
        *res = t[0] == 'l' ? (t[1] == 't' ? x < y : x <= y) : (t[1] == 't' ? x > y : x >= y);
    } else if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        if (!json_is_integer(v)) return jx_fail(c, n->line, EMOE_EINVAL, "test '%s' expects an integer", t);
        *res = (json_integer_value(v) % 2 != 0) == (t[0] == 'o');
    } else if (!strcmp(t, "divisibleby")) {
        if (!json_is_integer(v) || !json_is_integer(a0) || json_integer_value(a0) == 0) return jx_fail(c, n->line, EMOE_EINVAL, "divisibleby expects non-zero integers");
        *res = json_integer_value(v) % json_integer_value(a0) == 0;
    } else if (!strcmp(t, "in")) {
        *res = 0;
        if (json_is_array(a0)) for (size_t i = 0; i < json_array_size(a0) && !*res; i++) *res = jv_equal(v, json_array_get(a0, i));
        else if (json_is_object(a0)) *res = json_is_string(v) && json_object_get(a0, json_string_value(v));
        else if (json_is_string(a0) && json_is_string(v)) *res = memmem(json_string_value(a0), json_string_length(a0), json_string_value(v), json_string_length(v)) != NULL;
    } else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        if (!json_is_string(v)) { *res = 0; return 0; }
        json_t *r = recase(v, t[0] == 'l' ? 0 : 1);
        *res = r && jv_equal(r, v);
        json_decref(r);
    } else return jx_fail(c, n->line, EMOE_EUNSUP, "unsupported test '%s'", t);
    return 0;
}

int jb_test(jctx *c, const jnode *n, json_t *v, json_t **args, int nargs, int *result)
{
    return run_test(c, n, n->str, v, args, nargs, result);
}

static int starts_ends(json_t *s, json_t *p, int ends)
{
    if (json_is_array(p)) {
        for (size_t i = 0; i < json_array_size(p); i++)
            if (starts_ends(s, json_array_get(p, i), ends)) return 1;
        return 0;
    }
    if (!json_is_string(p)) return 0;
    size_t n = json_string_length(s), m = json_string_length(p);
    if (m > n) return 0;
    return !memcmp(json_string_value(s) + (ends ? n - m : 0), json_string_value(p), m);
}

static int str_pred(json_t *s, int kind)
{
    const char *p = json_string_value(s);
    size_t n = json_string_length(s);
    int any_cased = 0;
    if (!n) return 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)next_cp(p, n, i, &cp);
        utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)cp);
        int alpha = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        int digit = cat == UTF8PROC_CATEGORY_ND;
        switch (kind) {
        case 0: if (!is_pyspace(cp)) return 0; break;
        case 1: if (!digit) return 0; break;
        case 2: if (!alpha) return 0; break;
        case 3: if (!alpha && !digit && cat != UTF8PROC_CATEGORY_NL && cat != UTF8PROC_CATEGORY_NO) return 0; break;
        case 4: if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT) return 0; any_cased |= cat == UTF8PROC_CATEGORY_LL; break;
        case 5: if (cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT) return 0; any_cased |= cat == UTF8PROC_CATEGORY_LU; break;
        }
    }
    return kind >= 4 ? any_cased : 1;
}

int jb_method(jctx *c, const jnode *n, json_t *v, const char *m, json_t **args, int nargs, char **kn, json_t **kv, int nk,
              json_t **out, int *rc)
{
    *rc = 0;
    *out = NULL;
#define A(pos, name) arg(args, nargs, kn, kv, nk, (pos), (name))
    if (json_is_object(v)) {
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            json_t *r = json_array();
            const char *k;
            json_t *x;
            json_object_foreach(v, k, x) {
                if (m[0] == 'i') json_array_append_new(r, json_pack("[sO]", k, x));
                else if (m[0] == 'k') json_array_append_new(r, json_string_nocheck(k));
                else json_array_append(r, x);
            }
            *rc = set_out(c, n, r, out);
            return 1;
        }
        if (!strcmp(m, "get")) {
            json_t *k = A(0, "key"), *d = A(1, "default");
            json_t *x = json_is_string(k) ? json_object_get(v, json_string_value(k)) : NULL;
            *out = json_incref(x ? x : d ? d : json_null());
            return 1;
        }
        return 0;
    }
    if (!json_is_string(v)) return 0;
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        *out = json_boolean(starts_ends(v, A(0, "prefix"), m[0] == 'e'));
        return 1;
    }
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        json_t *ch = A(0, "chars");
        if (ch && !json_is_string(ch) && !json_is_null(ch)) { *rc = jx_fail(c, n->line, EMOE_EINVAL, "%s arg must be None or str", m); return 1; }
        *rc = set_out(c, n, strip(v, ch, m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3), out);
        return 1;
    }
    if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        json_t *sep = A(0, "sep"), *mx = A(1, "maxsplit");
        if (sep && !json_is_null(sep) && (!json_is_string(sep) || json_string_length(sep) == 0)) {
            *rc = jx_fail(c, n->line, EMOE_EINVAL, "split: empty or non-string separator");
            return 1;
        }
        if (m[0] == 'r' && json_is_integer(mx) && json_integer_value(mx) >= 0) { *rc = jx_fail(c, n->line, EMOE_EUNSUP, "rsplit with maxsplit is not supported"); return 1; }
        *rc = set_out(c, n, split_str(v, sep, json_is_integer(mx) ? json_integer_value(mx) : -1, 0), out);
        return 1;
    }
    if (!strcmp(m, "splitlines")) {
        json_t *r = json_array();
        const char *s = json_string_value(v);
        size_t sl = json_string_length(v), i = 0;
        while (r && i < sl) {
            size_t e = i;
            while (e < sl && s[e] != '\n' && s[e] != '\r') e++;
            json_array_append_new(r, jv_strn(s + i, e - i));
            if (e < sl && s[e] == '\r' && e + 1 < sl && s[e + 1] == '\n') e++;
            i = e + 1;
        }
        *rc = set_out(c, n, r, out);
        return 1;
    }
    if (!strcmp(m, "replace")) {
        json_t *o = A(0, "old"), *w = A(1, "new"), *cnt = A(2, "count");
        if (!json_is_string(o) || !json_is_string(w)) { *rc = jx_fail(c, n->line, EMOE_EINVAL, "replace expects two strings"); return 1; }
        *rc = set_out(c, n, replace_str(c, v, o, w, json_is_integer(cnt) ? json_integer_value(cnt) : -1), out);
        return 1;
    }
    if (!strcmp(m, "lower") || !strcmp(m, "upper") || !strcmp(m, "title") || !strcmp(m, "capitalize")) {
        int mode = m[0] == 'l' ? 0 : m[0] == 'u' ? 1 : m[0] == 't' ? 2 : 3;
        *rc = set_out(c, n, recase(v, mode), out);
        return 1;
    }
    if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "count")) {
        json_t *sub = A(0, "sub");
        if (!json_is_string(sub)) { *rc = jx_fail(c, n->line, EMOE_EINVAL, "%s expects a string", m); return 1; }
        const char *s = json_string_value(v), *p = json_string_value(sub);
        size_t sl = json_string_length(v), pl = json_string_length(sub);
        long long res = -1, cnt = 0;
        for (size_t i = 0; i + pl <= sl;) {
            if (!memcmp(s + i, p, pl)) {
                if (m[0] == 'f') { res = (long long)jv_strlen_cp(s, i); break; }
                res = (long long)jv_strlen_cp(s, i);
                cnt++;
                i += pl ? pl : 1;
            } else i++;
        }
        *out = json_integer(m[0] == 'c' ? cnt : res);
        return 1;
    }
    if (!strcmp(m, "join")) {
        json_t *l = NULL;
        if (jv_iter_list(c, n->line, A(0, "iterable"), &l)) { *rc = -1; return 1; }
        jbuf b = {0};
        for (size_t i = 0; i < json_array_size(l) && !*rc; i++) {
            json_t *it = json_array_get(l, i);
            if (!json_is_string(it)) { *rc = jx_fail(c, n->line, EMOE_EINVAL, "join: sequence item %zu is not a string", i); break; }
            if (i) jbuf_put(&b, json_string_value(v), json_string_length(v));
            jbuf_put(&b, json_string_value(it), json_string_length(it));
            if (b.n > c->lim.max_output) *rc = jx_fail(c, n->line, EMOE_EINVAL, "string too long");
        }
        json_decref(l);
        if (!*rc) *rc = set_out(c, n, jv_strn(b.p ? b.p : "", b.n), out);
        free(b.p);
        return 1;
    }
    static const char *preds[] = {"isspace", "isdigit", "isalpha", "isalnum", "islower", "isupper"};
    for (int k = 0; k < 6; k++)
        if (!strcmp(m, preds[k])) { *out = json_boolean(str_pred(v, k)); return 1; }
#undef A
    return 0;
}

int jb_global(jctx *c, const jnode *n, const char *name, json_t **args, int nargs, char **kn, json_t **kv, int nk,
              json_t **out, int *rc)
{
    *rc = 0;
    *out = NULL;
    if (!strcmp(name, "raise_exception")) {
        jbuf b = {0};
        if (nargs > 0) jv_str(c, &b, args[0]);
        *rc = jx_fail(c, n->line, EMOE_EINVAL, "raise_exception: %s", b.p ? b.p : "");
        free(b.p);
        return 1;
    }
    if (!strcmp(name, "range")) {
        long long a = 0, b = 0, s = 1;
        for (int i = 0; i < nargs; i++)
            if (!json_is_integer(args[i])) { *rc = jx_fail(c, n->line, EMOE_EINVAL, "range expects integers"); return 1; }
        if (nargs == 1) b = json_integer_value(args[0]);
        else if (nargs >= 2) { a = json_integer_value(args[0]); b = json_integer_value(args[1]); }
        if (nargs >= 3) s = json_integer_value(args[2]);
        if (nargs < 1 || nargs > 3 || s == 0) { *rc = jx_fail(c, n->line, EMOE_EINVAL, "bad range() arguments"); return 1; }
        long double cnt = s > 0 ? ((long double)b - a) / s : ((long double)a - b) / -s;
        if (cnt > (long double)c->lim.max_iterations) { *rc = jx_fail(c, n->line, EMOE_EINVAL, "range too large"); return 1; }
        if (cnt > 0 && jx_tick(c, n->line, (long)cnt)) { *rc = -1; return 1; }
        json_t *r = json_array();
        for (long long i = a; r && (s > 0 ? i < b : i > b); i += s) json_array_append_new(r, json_integer(i));
        *rc = set_out(c, n, r, out);
        return 1;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        json_t *o = nargs > 0 && json_is_object(args[0]) ? json_copy(args[0]) : json_object();
        if (!o) { *rc = jx_fail(c, n->line, EMOE_ENOMEM, "out of memory"); return 1; }
        for (int i = 0; i < nk; i++)
            if (kv[i]) json_object_set(o, kn[i], kv[i]);
        if (name[0] == 'n') {
            if (c->nns >= (int)(sizeof c->ns / sizeof c->ns[0])) { json_decref(o); *rc = jx_fail(c, n->line, EMOE_EINVAL, "too many namespaces"); return 1; }
            c->ns[c->nns++] = json_incref(o);
        }
        *out = o;
        return 1;
    }
    if (!strcmp(name, "strftime_now")) {
        if (nargs < 1 || !json_is_string(args[0])) { *rc = jx_fail(c, n->line, EMOE_EINVAL, "strftime_now expects a format string"); return 1; }
        char buf[256];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t l = strftime(buf, sizeof buf, json_string_value(args[0]), &tm);
        *rc = set_out(c, n, jv_strn(buf, l), out);
        return 1;
    }
    return 0;
}
