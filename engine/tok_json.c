/*
 * tok_json.c — a fast path for the two big members of tokenizer.json,
 * model.vocab (~150k entries) and model.merges (~150k pairs), which make up
 * almost all of the file: building a jansson tree for them costs ~0.6 s per
 * load, decoding them straight into flat lists ~0.1 s.
 *
 * tok_json_fast_model only succeeds on input it fully understands (well-formed
 * JSON, valid UTF-8, no NUL in keys, no duplicate vocab keys, integer ids,
 * merges all strings or all pairs); anything else returns 0 and the loader
 * parses the whole file with jansson, which then reports errors in the usual
 * way. So the fast path never changes what is accepted or what it means.
 */
#include "engine/tok_internal.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

int tok_strlist_push(tok_strlist *l, const char *s, size_t n)
{
    if (l->n + n + 1 > l->cap) {
        size_t nc = l->cap ? l->cap : 1 << 16;
        while (nc < l->n + n + 1) nc *= 2;
        char *p = realloc(l->buf, nc);
        if (!p) return -1;
        l->buf = p;
        l->cap = nc;
    }
    if (l->count == l->ccap) {
        size_t nc = l->ccap ? l->ccap * 2 : 1024;
        size_t *o = realloc(l->off, nc * sizeof *o);
        if (!o) return -1;
        l->off = o;
        uint32_t *q = realloc(l->len, nc * sizeof *q);
        if (!q) return -1;
        l->len = q;
        l->ccap = nc;
    }
    memcpy(l->buf + l->n, s, n);
    l->buf[l->n + n] = 0;
    l->off[l->count] = l->n;
    l->len[l->count] = (uint32_t)n;
    l->count++;
    l->n += n + 1;
    return 0;
}

void tok_strlist_free(tok_strlist *l)
{
    if (!l) return;
    free(l->buf);
    free(l->off);
    free(l->len);
    memset(l, 0, sizeof *l);
}

typedef struct sc {
    const char *p, *e;
} sc;

static void ws(sc *s)
{
    while (s->p < s->e && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexv(p[i]);
        if (h < 0) return -1;
        *v = *v * 16 + (uint32_t)h;
    }
    return 0;
}

/* Decodes the string at s->p (a '"') into *tmp; -1 if malformed. */
static int str(sc *s, char **tmp, size_t *tcap, size_t *n)
{
    if (s->p >= s->e || *s->p != '"') return -1;
    s->p++;
    size_t k = 0;
    for (;;) {
        if (s->p >= s->e) return -1;
        if (k + 8 > *tcap) {
            size_t nc = *tcap ? *tcap * 2 : 256;
            char *q = realloc(*tmp, nc);
            if (!q) return -1;
            *tmp = q;
            *tcap = nc;
        }
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') { s->p++; break; }
        if (c < 0x20) return -1;
        if (c != '\\') { (*tmp)[k++] = (char)c; s->p++; continue; }
        if (s->e - s->p < 2) return -1;
        char x = s->p[1];
        s->p += 2;
        switch (x) {
        case '"': (*tmp)[k++] = '"'; break;
        case '\\': (*tmp)[k++] = '\\'; break;
        case '/': (*tmp)[k++] = '/'; break;
        case 'b': (*tmp)[k++] = '\b'; break;
        case 'f': (*tmp)[k++] = '\f'; break;
        case 'n': (*tmp)[k++] = '\n'; break;
        case 'r': (*tmp)[k++] = '\r'; break;
        case 't': (*tmp)[k++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (s->e - s->p < 4 || hex4(s->p, &cp)) return -1;
            s->p += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff) return -1;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (s->e - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' || hex4(s->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                s->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            k += (size_t)tok_utf8_encode(cp, *tmp + k);
            break;
        }
        default: return -1;
        }
    }
    if (tok_utf8_valid(*tmp, k) != k) return -1;
    *n = k;
    return 0;
}

/* Skips any JSON value. */
static int skip(sc *s, int depth)
{
    if (depth > MAX_DEPTH) return -1;
    ws(s);
    if (s->p >= s->e) return -1;
    char c = *s->p;
    if (c == '"') {
        s->p++;
        while (s->p < s->e && *s->p != '"') {
            if (*s->p == '\\' && s->e - s->p < 2) return -1;
            s->p += (*s->p == '\\') ? 2 : 1;
        }
        if (s->p >= s->e) return -1;
        s->p++;
        return 0;
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        s->p++;
        ws(s);
        if (s->p < s->e && *s->p == close) { s->p++; return 0; }
        for (;;) {
            if (c == '{') {
                ws(s);
                if (skip(s, depth + 1)) return -1; /* key */
                ws(s);
                if (s->p >= s->e || *s->p != ':') return -1;
                s->p++;
            }
            if (skip(s, depth + 1)) return -1;
            ws(s);
            if (s->p >= s->e) return -1;
            if (*s->p == ',') { s->p++; continue; }
            if (*s->p == close) { s->p++; return 0; }
            return -1;
        }
    }
    /* number or literal */
    const char *st = s->p;
    while (s->p < s->e && (strchr("+-.0123456789eE", *s->p) || (*s->p >= 'a' && *s->p <= 'z'))) s->p++;
    return s->p > st ? 0 : -1;
}

/* Integer id in [0, 2^24). */
static int int_id(sc *s, int32_t *v)
{
    ws(s);
    long long x = 0;
    const char *st = s->p;
    while (s->p < s->e && *s->p >= '0' && *s->p <= '9' && s->p - st < 9) x = x * 10 + (*s->p++ - '0');
    if (s->p == st || (s->p < s->e && strchr("0123456789.eE", *s->p)) || (s->p - st > 1 && *st == '0') || x >= (1 << 24))
        return -1;
    *v = (int32_t)x;
    return 0;
}

static int parse_vocab(sc *s, tok_strlist *keys, int32_t **ids, size_t *idcap, char **tmp, size_t *tcap)
{
    ws(s);
    if (s->p >= s->e || *s->p != '{') return -1;
    s->p++;
    ws(s);
    if (s->p < s->e && *s->p == '}') { s->p++; return 0; }
    for (;;) {
        size_t n;
        ws(s);
        if (str(s, tmp, tcap, &n) || memchr(*tmp, 0, n)) return -1;
        ws(s);
        if (s->p >= s->e || *s->p != ':') return -1;
        s->p++;
        int32_t id;
        if (int_id(s, &id)) return -1;
        if (keys->count == *idcap) {
            size_t nc = *idcap ? *idcap * 2 : 1024;
            int32_t *q = realloc(*ids, nc * sizeof *q);
            if (!q) return -1;
            *ids = q;
            *idcap = nc;
        }
        (*ids)[keys->count] = id;
        if (tok_strlist_push(keys, *tmp, n)) return -1;
        ws(s);
        if (s->p >= s->e) return -1;
        if (*s->p == ',') { s->p++; continue; }
        if (*s->p == '}') { s->p++; return 0; }
        return -1;
    }
}

/* merges: ["a b", ...] or [["a","b"], ...]; pushed as a, b pairs. */
static int parse_merges(sc *s, tok_strlist *m, char **tmp, size_t *tcap)
{
    ws(s);
    if (s->p >= s->e || *s->p != '[') return -1;
    s->p++;
    ws(s);
    if (s->p < s->e && *s->p == ']') { s->p++; return 0; }
    int form = 0; /* 1 = strings, 2 = pairs */
    for (;;) {
        ws(s);
        if (s->p >= s->e) return -1;
        size_t n;
        if (*s->p == '"') {
            if (form == 2 || str(s, tmp, tcap, &n)) return -1;
            form = 1;
            char *sp = memchr(*tmp, ' ', n);
            if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - *tmp))) return -1;
            size_t al = (size_t)(sp - *tmp);
            if (tok_strlist_push(m, *tmp, al) || tok_strlist_push(m, sp + 1, n - al - 1)) return -1;
        } else if (*s->p == '[') {
            if (form == 1) return -1;
            form = 2;
            s->p++;
            for (int k = 0; k < 2; k++) {
                ws(s);
                if (str(s, tmp, tcap, &n) || tok_strlist_push(m, *tmp, n)) return -1;
                ws(s);
                if (s->p >= s->e || *s->p != (k == 0 ? ',' : ']')) return -1;
                s->p++;
            }
        } else {
            return -1;
        }
        ws(s);
        if (s->p >= s->e) return -1;
        if (*s->p == ',') { s->p++; continue; }
        if (*s->p == ']') { s->p++; return 0; }
        return -1;
    }
}

int tok_json_fast_model(const char *text, size_t len, tok_strlist *vkeys, int32_t **vids, tok_strlist *merges,
                        char **rest, size_t *rest_len)
{
    sc s = {text, text + len};
    const char *vs = NULL, *ve = NULL, *ms = NULL, *me = NULL;
    char *tmp = NULL;
    size_t tcap = 0, idcap = 0;
    int ok = 0;
    memset(vkeys, 0, sizeof *vkeys);
    memset(merges, 0, sizeof *merges);
    *vids = NULL;
    *rest = NULL;
    ws(&s);
    if (s.p >= s.e || *s.p != '{') goto out;
    s.p++;
    for (;;) { /* top-level members */
        size_t n;
        ws(&s);
        if (str(&s, &tmp, &tcap, &n)) goto out;
        int is_model = n == 5 && !memcmp(tmp, "model", 5);
        ws(&s);
        if (s.p >= s.e || *s.p != ':') goto out;
        s.p++;
        ws(&s);
        if (is_model) {
            if (vs || s.p >= s.e || *s.p != '{') goto out; /* duplicate or odd model: slow path */
            s.p++;
            ws(&s);
            while (s.p < s.e && *s.p != '}') {
                ws(&s);
                if (str(&s, &tmp, &tcap, &n)) goto out;
                int is_v = n == 5 && !memcmp(tmp, "vocab", 5), is_m = n == 6 && !memcmp(tmp, "merges", 6);
                ws(&s);
                if (s.p >= s.e || *s.p != ':') goto out;
                s.p++;
                ws(&s);
                if (is_v) {
                    if (vs) goto out;
                    vs = s.p;
                    if (parse_vocab(&s, vkeys, vids, &idcap, &tmp, &tcap)) goto out;
                    ve = s.p;
                } else if (is_m) {
                    if (ms) goto out;
                    ms = s.p;
                    if (parse_merges(&s, merges, &tmp, &tcap)) goto out;
                    me = s.p;
                } else if (skip(&s, 1)) goto out;
                ws(&s);
                if (s.p < s.e && *s.p == ',') s.p++;
                else if (s.p >= s.e || *s.p != '}') goto out;
            }
            if (s.p >= s.e) goto out;
            s.p++;
        } else if (skip(&s, 1)) goto out;
        ws(&s);
        if (s.p >= s.e) goto out;
        if (*s.p == ',') { s.p++; continue; }
        if (*s.p == '}') break;
        goto out;
    }
    if (!vs || !ms) goto out;
    /* no duplicate vocab keys (jansson would keep the last value) */
    {
        tok_strmap seen;
        if (tok_strmap_init(&seen, vkeys->count)) goto out;
        int dup = 0;
        for (size_t i = 0; i < vkeys->count && !dup; i++) {
            const char *k = vkeys->buf + vkeys->off[i];
            if (tok_strmap_get(&seen, k, vkeys->len[i]) >= 0) dup = 1;
            else if (tok_strmap_put(&seen, k, vkeys->len[i], 0)) dup = 1;
        }
        tok_strmap_free(&seen);
        if (dup) goto out;
    }
    /* the rest of the file, with the two values emptied, for jansson */
    {
        const char *a0 = vs < ms ? vs : ms, *a1 = vs < ms ? ve : me, *b0 = vs < ms ? ms : vs, *b1 = vs < ms ? me : ve;
        const char *ea = vs < ms ? "{}" : "[]", *eb = vs < ms ? "[]" : "{}";
        size_t rl = (size_t)(a0 - text) + 2 + (size_t)(b0 - a1) + 2 + (size_t)(text + len - b1);
        char *r = malloc(rl + 1);
        if (!r) goto out;
        size_t k = 0;
        memcpy(r + k, text, (size_t)(a0 - text)); k += (size_t)(a0 - text);
        memcpy(r + k, ea, 2); k += 2;
        memcpy(r + k, a1, (size_t)(b0 - a1)); k += (size_t)(b0 - a1);
        memcpy(r + k, eb, 2); k += 2;
        memcpy(r + k, b1, (size_t)(text + len - b1)); k += (size_t)(text + len - b1);
        r[k] = 0;
        *rest = r;
        *rest_len = k;
    }
    ok = 1;
out:
    free(tmp);
    if (!ok) {
        tok_strlist_free(vkeys);
        tok_strlist_free(merges);
        free(*vids);
        *vids = NULL;
    }
    return ok;
}
