/*
 * jinja_parse.c — lexer and recursive-descent parser for the Jinja subset in
 * jinja.h. The lexer applies the whitespace rules (trim_blocks, lstrip_blocks,
 * {%- -%}, {%+ +%}) while cutting template text, so the parser and evaluator
 * never think about whitespace. Operator precedence follows Jinja's parser:
 * cond-expr < or < and < not < compare < + - < ~ < * / // % < ** < unary,
 * with filters, tests (`is`) and calls binding tightest (postfix).
 */
#include "engine/jinja_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARSE_DEPTH 200

enum ttype { T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct tok {
    int type, line;
    char *s;      /* TEXT/STR: decoded data (owned); NAME/OP: copy */
    size_t n;
    long long i;
    double f;
} tok;

typedef struct lexer {
    const char *src;
    size_t len, pos;
    int line;
    tok *t;
    size_t nt, ct;
    emoe_err *err;
} lexer;

typedef struct parser {
    tok *t;
    size_t nt, p;
    int depth;
    emoe_err *err;
    int failed;
} parser;

static int lex_fail(lexer *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lex_fail(lexer *L, const char *fmt, ...)
{
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    emoe_errf(L->err, EMOE_EINVAL, "template line %d: %s", L->line, m);
    return -1;
}

static int push_tok(lexer *L, int type, char *s, size_t n)
{
    if (L->nt == L->ct) {
        size_t nc = L->ct ? L->ct * 2 : 256;
        tok *q = realloc(L->t, nc * sizeof *q);
        if (!q) { free(s); return lex_fail(L, "out of memory"); }
        L->t = q;
        L->ct = nc;
    }
    tok *t = &L->t[L->nt++];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->line = L->line;
    t->s = s;
    t->n = n;
    return 0;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

/* Text with newlines normalized (\r\n, \r -> \n). */
static char *norm_newlines(const char *s, size_t n, size_t *out_n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            p[k++] = '\n';
            if (i + 1 < n && s[i + 1] == '\n') i++;
        } else {
            p[k++] = s[i];
        }
    }
    p[k] = 0;
    *out_n = k;
    return p;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static int count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

/* Python unicode-escape decoding of a string literal body. */
static char *unescape(const char *s, size_t n, size_t *out_n)
{
    size_t nn;
    char *src = norm_newlines(s, n, &nn);
    if (!src) return NULL;
    char *o = malloc(nn * 4 + 1);
    if (!o) { free(src); return NULL; }
    size_t k = 0;
    for (size_t i = 0; i < nn; i++) {
        if (src[i] != '\\' || i + 1 >= nn) { o[k++] = src[i]; continue; }
        char c = src[++i];
        uint32_t cp;
        int digits = 0;
        switch (c) {
        case 'n': o[k++] = '\n'; continue;
        case 't': o[k++] = '\t'; continue;
        case 'r': o[k++] = '\r'; continue;
        case '\\': o[k++] = '\\'; continue;
        case '\'': o[k++] = '\''; continue;
        case '"': o[k++] = '"'; continue;
        case 'a': o[k++] = '\a'; continue;
        case 'b': o[k++] = '\b'; continue;
        case 'f': o[k++] = '\f'; continue;
        case 'v': o[k++] = '\v'; continue;
        case '\n': continue;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (c >= '0' && c <= '7') {
                cp = 0;
                int d = 0;
                while (d < 3 && i < nn && src[i] >= '0' && src[i] <= '7') { cp = cp * 8 + (uint32_t)(src[i] - '0'); i++; d++; }
                i--;
                goto emit;
            }
            o[k++] = '\\';
            o[k++] = c;
            continue;
        }
        cp = 0;
        if (i + (size_t)digits >= nn) { o[k++] = '\\'; o[k++] = c; continue; }
        for (int d = 0; d < digits; d++) {
            char h = src[i + 1 + (size_t)d];
            int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (v < 0) { cp = 0xfffd; break; }
            cp = cp * 16 + (uint32_t)v;
        }
        i += (size_t)digits;
    emit:
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) cp = 0xfffd;
        if (cp < 0x80) o[k++] = (char)cp;
        else if (cp < 0x800) { o[k++] = (char)(0xc0 | (cp >> 6)); o[k++] = (char)(0x80 | (cp & 0x3f)); }
        else if (cp < 0x10000) { o[k++] = (char)(0xe0 | (cp >> 12)); o[k++] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[k++] = (char)(0x80 | (cp & 0x3f)); }
        else { o[k++] = (char)(0xf0 | (cp >> 18)); o[k++] = (char)(0x80 | ((cp >> 12) & 0x3f)); o[k++] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[k++] = (char)(0x80 | (cp & 0x3f)); }
    }
    o[k] = 0;
    free(src);
    *out_n = k;
    return o;
}

/* Lexes the inside of a tag up to its end marker. kind: 'v' or 'b'.
 * Sets *strip_after (-), *keep_after (+). */
static int lex_tag(lexer *L, char kind, int *strip_after, int *keep_after)
{
    const char *s = L->src;
    int depth = 0;
    *strip_after = *keep_after = 0;
    for (;;) {
        while (L->pos < L->len && is_space(s[L->pos])) { if (s[L->pos] == '\n') L->line++; L->pos++; }
        if (L->pos >= L->len) return lex_fail(L, "unclosed %s tag", kind == 'v' ? "{{" : "{%");
        size_t p = L->pos, rem = L->len - p;
        char c = s[p];
        if (depth == 0) {
            const char *end = kind == 'v' ? "}}" : "%}";
            if ((c == '-' || c == '+') && rem >= 3 && !memcmp(s + p + 1, end, 2)) {
                if (c == '-') *strip_after = 1; else *keep_after = 1;
                L->pos += 3;
                return push_tok(L, kind == 'v' ? T_VEND : T_BEND, NULL, 0);
            }
            if (rem >= 2 && !memcmp(s + p, end, 2)) {
                L->pos += 2;
                return push_tok(L, kind == 'v' ? T_VEND : T_BEND, NULL, 0);
            }
        }
        if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            size_t e = p;
            while (e < L->len && (s[e] == '_' || (s[e] >= 'a' && s[e] <= 'z') || (s[e] >= 'A' && s[e] <= 'Z') || (s[e] >= '0' && s[e] <= '9'))) e++;
            char *nm = dupn(s + p, e - p);
            if (!nm) return lex_fail(L, "out of memory");
            L->pos = e;
            if (push_tok(L, T_NAME, nm, e - p)) return -1;
            continue;
        }
        if (c >= '0' && c <= '9') {
            size_t e = p;
            int isf = 0;
            char num[64];
            size_t k = 0;
            while (e < L->len && ((s[e] >= '0' && s[e] <= '9') || s[e] == '_')) { if (s[e] != '_' && k < 63) num[k++] = s[e]; e++; }
            if (e + 1 < L->len && s[e] == '.' && s[e + 1] >= '0' && s[e + 1] <= '9') {
                isf = 1;
                if (k < 63) num[k++] = s[e];
                e++;
                while (e < L->len && ((s[e] >= '0' && s[e] <= '9') || s[e] == '_')) { if (s[e] != '_' && k < 63) num[k++] = s[e]; e++; }
            }
            if (e < L->len && (s[e] == 'e' || s[e] == 'E')) {
                size_t e2 = e + 1;
                if (e2 < L->len && (s[e2] == '+' || s[e2] == '-')) e2++;
                if (e2 < L->len && s[e2] >= '0' && s[e2] <= '9') {
                    isf = 1;
                    while (e < e2 && k < 63) num[k++] = s[e++];
                    while (e < L->len && s[e] >= '0' && s[e] <= '9') { if (k < 63) num[k++] = s[e]; e++; }
                }
            }
            num[k] = 0;
            L->pos = e;
            if (push_tok(L, isf ? T_FLOAT : T_INT, NULL, 0)) return -1;
            tok *t = &L->t[L->nt - 1];
            errno = 0;
            if (isf) t->f = strtod(num, NULL);
            else {
                t->i = strtoll(num, NULL, 10);
                if (errno == ERANGE) return lex_fail(L, "integer literal too large");
            }
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t e = p + 1;
            int lines = 0;
            while (e < L->len && s[e] != c) {
                if (s[e] == '\\' && e + 1 < L->len) e++;
                if (s[e] == '\n') lines++;
                e++;
            }
            if (e >= L->len) return lex_fail(L, "unterminated string literal");
            size_t on;
            char *v = unescape(s + p + 1, e - p - 1, &on);
            if (!v) return lex_fail(L, "out of memory");
            L->pos = e + 1;
            if (push_tok(L, T_STR, v, on)) return -1;
            L->line += lines;
            continue;
        }
        static const char *ops2[] = {"//", "**", "==", "!=", "<=", ">="};
        size_t ol = 0;
        for (int k = 0; k < 6; k++)
            if (rem >= 2 && !memcmp(s + p, ops2[k], 2)) ol = 2;
        if (!ol && strchr("+-*/%~<>=()[]{},.:|", c)) ol = 1;
        if (!ol) return lex_fail(L, "unexpected character '%c' in tag", c);
        if (c == '(' || c == '[' || c == '{') depth++;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) depth--;
        char *op = dupn(s + p, ol);
        if (!op) return lex_fail(L, "out of memory");
        L->pos += ol;
        if (push_tok(L, T_OP, op, ol)) return -1;
    }
}

static int lex(lexer *L)
{
    const char *s = L->src;
    int strip_next = 0, trim_nl = 0;
    while (L->pos <= L->len) {
        /* find the next tag start */
        size_t q = L->pos;
        char kind = 0;
        while (q + 1 < L->len) {
            if (s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')) { kind = s[q + 1]; break; }
            q++;
        }
        if (!kind) q = L->len;
        size_t a = L->pos, b = q;
        if (strip_next) while (a < b && is_space(s[a])) a++;
        else if (trim_nl && a < b && s[a] == '\n') a++;
        char mod = kind && q + 2 < L->len ? s[q + 2] : 0;
        if (kind && mod == '-') {
            while (b > a && is_space(s[b - 1])) b--;
        } else if (kind && kind != '{' && mod != '+') {
            /* lstrip_blocks: spaces/tabs between the line start and the tag */
            size_t ls = b;
            while (ls > a && (s[ls - 1] == ' ' || s[ls - 1] == '\t')) ls--;
            if ((ls > a && s[ls - 1] == '\n') || (ls == a && (a == 0 || s[a - 1] == '\n'))) b = ls;
        }
        if (b > a) {
            size_t on;
            char *txt = norm_newlines(s + a, b - a, &on);
            if (!txt) return lex_fail(L, "out of memory");
            if (push_tok(L, T_TEXT, txt, on)) return -1;
        }
        L->line += count_lines(s + L->pos, q - L->pos);
        if (!kind) break;
        L->pos = q + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
        strip_next = trim_nl = 0;
        if (kind == '#') {
            const char *e = NULL;
            for (size_t i = L->pos; i + 1 < L->len; i++)
                if (s[i] == '#' && s[i + 1] == '}') { e = s + i; break; }
            if (!e) return lex_fail(L, "unclosed comment");
            size_t ep = (size_t)(e - s);
            L->line += count_lines(s + L->pos, ep - L->pos);
            if (ep > L->pos && s[ep - 1] == '-') strip_next = 1;
            else if (!(ep > L->pos && s[ep - 1] == '+')) trim_nl = 1;
            L->pos = ep + 2;
            continue;
        }
        int sa, ka;
        if (push_tok(L, kind == '{' ? T_VBEGIN : T_BBEGIN, NULL, 0)) return -1;
        if (lex_tag(L, kind == '{' ? 'v' : 'b', &sa, &ka)) return -1;
        strip_next = sa;
        trim_nl = kind == '%' && !sa && !ka;
    }
    return push_tok(L, T_EOF, NULL, 0);
}

/* ---- parser ---- */

static int pfail(parser *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int pfail(parser *P, const char *fmt, ...)
{
    if (P->failed) return -1;
    P->failed = 1;
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    emoe_errf(P->err, EMOE_EINVAL, "template line %d: %s", P->t[P->p].line, m);
    return -1;
}

static tok *cur(parser *P) { return &P->t[P->p]; }
static int is_op(parser *P, const char *op) { tok *t = cur(P); return t->type == T_OP && !strcmp(t->s, op); }
static int is_name(parser *P, const char *nm) { tok *t = cur(P); return t->type == T_NAME && !strcmp(t->s, nm); }
static void adv(parser *P) { if (cur(P)->type != T_EOF) P->p++; }

static int expect_op(parser *P, const char *op)
{
    if (!is_op(P, op)) return pfail(P, "expected '%s'", op);
    adv(P);
    return 0;
}

static jnode *node(parser *P, int kind)
{
    jnode *n = calloc(1, sizeof *n);
    if (!n) { pfail(P, "out of memory"); return NULL; }
    n->kind = kind;
    n->line = cur(P)->line;
    return n;
}

static int add_child(parser *P, jnode *n, jnode *c)
{
    if (n->nv == n->cv) {
        int nc = n->cv ? n->cv * 2 : 4;
        jnode **q = realloc(n->v, (size_t)nc * sizeof *q);
        if (!q) { jn_free(c); return pfail(P, "out of memory"); }
        n->v = q;
        n->cv = nc;
    }
    n->v[n->nv++] = c;
    return 0;
}

static int add_kw(parser *P, jnode *n, const char *name, jnode *val)
{
    if (n->nk == n->ck) {
        int nc = n->ck ? n->ck * 2 : 4;
        char **q = realloc(n->kn, (size_t)nc * sizeof *q);
        if (!q) { jn_free(val); return pfail(P, "out of memory"); }
        n->kn = q;
        jnode **r = realloc(n->kv, (size_t)nc * sizeof *r);
        if (!r) { jn_free(val); return pfail(P, "out of memory"); }
        n->kv = r;
        n->ck = nc;
    }
    n->kn[n->nk] = dupn(name, strlen(name));
    n->kv[n->nk++] = val;
    if (!n->kn[n->nk - 1]) return pfail(P, "out of memory");
    return 0;
}

void jn_free(jnode *n)
{
    if (!n) return;
    free(n->str);
    json_decref(n->lit);
    jn_free(n->a);
    jn_free(n->b);
    jn_free(n->c);
    jn_free(n->d);
    for (int i = 0; i < n->nv; i++) jn_free(n->v[i]);
    free(n->v);
    for (int i = 0; i < n->nk; i++) { free(n->kn[i]); jn_free(n->kv[i]); }
    free(n->kn);
    free(n->kv);
    free(n);
}

static jnode *p_expr(parser *P);
static jnode *p_expr_noif(parser *P);
static jnode *p_unary(parser *P, int with_filter);
static jnode *p_primary(parser *P);

static int enter(parser *P)
{
    if (++P->depth > MAX_PARSE_DEPTH) { pfail(P, "expression nested too deeply"); return -1; }
    return 0;
}

/* call arguments after '(' : positional and name=value */
static int p_args(parser *P, jnode *n)
{
    if (expect_op(P, "(")) return -1;
    while (!is_op(P, ")")) {
        if (cur(P)->type == T_NAME && P->t[P->p + 1].type == T_OP && !strcmp(P->t[P->p + 1].s, "=")) {
            char *nm = cur(P)->s;
            adv(P);
            adv(P);
            jnode *v = p_expr(P);
            if (!v || add_kw(P, n, nm, v)) return -1;
        } else {
            if (n->nk) return pfail(P, "positional argument after keyword argument");
            jnode *v = p_expr(P);
            if (!v || add_child(P, n, v)) return -1;
        }
        if (is_op(P, ",")) adv(P);
        else if (!is_op(P, ")")) return pfail(P, "expected ',' or ')' in argument list");
    }
    adv(P);
    return 0;
}

/* A new node of this kind whose operand is *e, which it replaces; NULL when out of memory. */
static jnode *wrap(parser *P, jnode **e, int kind)
{
    jnode *n = node(P, kind);
    if (n) {
        n->a = *e;
        *e = n;
    }
    return n;
}

static jnode *p_postfix(parser *P, jnode *e)
{
    while (e && !P->failed) {
        if (is_op(P, ".")) {
            adv(P);
            tok *t = cur(P);
            jnode *n = wrap(P, &e, JE_ATTR);
            if (!n) break;
            if (t->type == T_NAME) { n->str = dupn(t->s, t->n); n->str_len = t->n; }
            else if (t->type == T_INT) {
                n->kind = JE_ITEM;
                n->b = node(P, JE_LIT);
                if (n->b) n->b->lit = json_integer(t->i);
            } else { pfail(P, "expected a name after '.'"); break; }
            adv(P);
        } else if (is_op(P, "[")) {
            adv(P);
            jnode *n = wrap(P, &e, JE_ITEM);
            if (!n) break;
            jnode *parts[3] = {NULL, NULL, NULL};
            int k = 0, slice = 0;
            for (;;) {
                if (!is_op(P, ":") && !is_op(P, "]")) {
                    parts[k] = p_expr(P);
                    if (!parts[k]) break;
                }
                if (is_op(P, ":") && k < 2) { slice = 1; k++; adv(P); continue; }
                break;
            }
            if (slice) { n->kind = JE_SLICE; n->b = parts[0]; n->c = parts[1]; n->d = parts[2]; }
            else n->b = parts[0];
            if (!slice && !n->b) { pfail(P, "empty subscript"); break; }
            if (expect_op(P, "]")) break;
        } else if (is_op(P, "(")) {
            jnode *n = wrap(P, &e, JE_CALL);
            if (!n) break;
            if (p_args(P, n)) break;
        } else {
            break;
        }
    }
    if (P->failed) { jn_free(e); return NULL; }
    return e;
}

/* filters and tests after a unary expression */
static jnode *p_filter_test(parser *P, jnode *e)
{
    while (e && !P->failed) {
        if (is_op(P, "|")) {
            adv(P);
            if (cur(P)->type != T_NAME) { pfail(P, "expected a filter name after '|'"); break; }
            jnode *n = wrap(P, &e, JE_FILTER);
            if (!n) break;
            n->str = dupn(cur(P)->s, cur(P)->n);
            adv(P);
            if (is_op(P, "(") && p_args(P, n)) break;
        } else if (is_name(P, "is")) {
            adv(P);
            jnode *n = wrap(P, &e, JE_TEST);
            if (!n) break;
            if (is_name(P, "not")) { n->neg = 1; adv(P); }
            tok *t = cur(P);
            if (t->type != T_NAME) { pfail(P, "expected a test name after 'is'"); break; }
            n->str = dupn(t->s, t->n);
            adv(P);
            if (is_op(P, "(")) { if (p_args(P, n)) break; }
            else {
                tok *u = cur(P);
                int starts = u->type == T_STR || u->type == T_INT || u->type == T_FLOAT ||
                             (u->type == T_NAME && strcmp(u->s, "else") && strcmp(u->s, "or") && strcmp(u->s, "and")) ||
                             (u->type == T_OP && (!strcmp(u->s, "[") || !strcmp(u->s, "{")));
                if (starts) {
                    jnode *arg = p_postfix(P, p_primary(P));
                    if (!arg || add_child(P, n, arg)) break;
                }
            }
        } else if (is_op(P, "(")) {
            jnode *n = wrap(P, &e, JE_CALL);
            if (!n) break;
            if (p_args(P, n)) break;
        } else {
            break;
        }
    }
    if (P->failed) { jn_free(e); return NULL; }
    return e;
}

static jnode *p_primary(parser *P)
{
    if (enter(P)) return NULL;
    tok *t = cur(P);
    jnode *n = NULL;
    if (t->type == T_NAME) {
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "false") || !strcmp(t->s, "False") ||
            !strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            n = node(P, JE_LIT);
            if (n) n->lit = (t->s[0] == 't' || t->s[0] == 'T') ? json_true() : (t->s[0] == 'f' || t->s[0] == 'F') ? json_false() : json_null();
        } else {
            n = node(P, JE_NAME);
            if (n) { n->str = dupn(t->s, t->n); n->str_len = t->n; }
        }
        adv(P);
    } else if (t->type == T_STR) {
        jbuf b = {0};
        while (cur(P)->type == T_STR) { /* adjacent literals concatenate */
            if (jbuf_put(&b, cur(P)->s, cur(P)->n)) { free(b.p); pfail(P, "out of memory"); P->depth--; return NULL; }
            adv(P);
        }
        n = node(P, JE_LIT);
        if (n) n->lit = json_stringn_nocheck(b.p ? b.p : "", b.n);
        free(b.p);
    } else if (t->type == T_INT) {
        n = node(P, JE_LIT);
        if (n) n->lit = json_integer(t->i);
        adv(P);
    } else if (t->type == T_FLOAT) {
        n = node(P, JE_LIT);
        if (n) n->lit = json_real(t->f);
        adv(P);
    } else if (is_op(P, "(")) {
        adv(P);
        if (is_op(P, ")")) { adv(P); n = node(P, JE_LIST); }
        else {
            jnode *e = p_expr(P);
            if (e && is_op(P, ",")) { /* tuple */
                n = node(P, JE_LIST);
                if (!n || add_child(P, n, e)) { jn_free(e); P->depth--; return NULL; }
                while (is_op(P, ",")) {
                    adv(P);
                    if (is_op(P, ")")) break;
                    jnode *x = p_expr(P);
                    if (!x || add_child(P, n, x)) break;
                }
            } else {
                n = e;
            }
            if (!P->failed && expect_op(P, ")")) {}
        }
    } else if (is_op(P, "[")) {
        adv(P);
        n = node(P, JE_LIST);
        while (n && !P->failed && !is_op(P, "]")) {
            jnode *x = p_expr(P);
            if (!x || add_child(P, n, x)) break;
            if (is_op(P, ",")) adv(P);
            else if (!is_op(P, "]")) pfail(P, "expected ',' or ']' in list");
        }
        if (!P->failed) expect_op(P, "]");
    } else if (is_op(P, "{")) {
        adv(P);
        n = node(P, JE_DICT);
        while (n && !P->failed && !is_op(P, "}")) {
            jnode *k = p_expr(P);
            if (!k) break;
            if (expect_op(P, ":")) { jn_free(k); break; }
            jnode *v = p_expr(P);
            if (!v) { jn_free(k); break; }
            if (add_child(P, n, k) || add_child(P, n, v)) break;
            if (is_op(P, ",")) adv(P);
            else if (!is_op(P, "}")) pfail(P, "expected ',' or '}' in dict");
        }
        if (!P->failed) expect_op(P, "}");
    } else {
        pfail(P, t->type == T_EOF ? "unexpected end of template" : "unexpected token in expression");
    }
    P->depth--;
    if (P->failed) { jn_free(n); return NULL; }
    return n;
}

static jnode *p_unary(parser *P, int with_filter)
{
    if (enter(P)) return NULL;
    jnode *n;
    if (is_op(P, "-") || is_op(P, "+")) {
        int neg = is_op(P, "-");
        adv(P);
        n = node(P, neg ? JE_NEG : JE_POS);
        if (n) { n->a = p_unary(P, 0); if (!n->a) { jn_free(n); n = NULL; } }
    } else {
        n = p_postfix(P, p_primary(P));
    }
    if (n && with_filter) n = p_filter_test(P, n);
    P->depth--;
    return n;
}

static jnode *binop(parser *P, int op, jnode *a, jnode *b)
{
    if (!a || !b) { jn_free(a); jn_free(b); return NULL; }
    jnode *n = node(P, JE_BIN);
    if (!n) { jn_free(a); jn_free(b); return NULL; }
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *p_pow(parser *P)
{
    jnode *a = p_unary(P, 1);
    while (a && is_op(P, "**")) { adv(P); a = binop(P, JOP_POW, a, p_unary(P, 1)); }
    return a;
}

static jnode *p_mul(parser *P)
{
    jnode *a = p_pow(P);
    for (;;) {
        int op = is_op(P, "*") ? JOP_MUL : is_op(P, "/") ? JOP_DIV : is_op(P, "//") ? JOP_FLOORDIV : is_op(P, "%") ? JOP_MOD : -1;
        if (!a || op < 0) return a;
        adv(P);
        a = binop(P, op, a, p_pow(P));
    }
}

static jnode *p_concat(parser *P)
{
    jnode *a = p_mul(P);
    while (a && is_op(P, "~")) { adv(P); a = binop(P, JOP_CONCAT, a, p_mul(P)); }
    return a;
}

static jnode *p_add(parser *P)
{
    jnode *a = p_concat(P);
    for (;;) {
        int op = is_op(P, "+") ? JOP_ADD : is_op(P, "-") ? JOP_SUB : -1;
        if (!a || op < 0) return a;
        adv(P);
        a = binop(P, op, a, p_concat(P));
    }
}

static jnode *p_compare(parser *P)
{
    jnode *a = p_add(P);
    for (;;) {
        int op = -1;
        if (is_op(P, "==")) op = JOP_EQ;
        else if (is_op(P, "!=")) op = JOP_NE;
        else if (is_op(P, "<")) op = JOP_LT;
        else if (is_op(P, ">")) op = JOP_GT;
        else if (is_op(P, "<=")) op = JOP_LE;
        else if (is_op(P, ">=")) op = JOP_GE;
        else if (is_name(P, "in")) op = JOP_IN;
        else if (is_name(P, "not") && P->t[P->p + 1].type == T_NAME && !strcmp(P->t[P->p + 1].s, "in")) { op = JOP_NOTIN; adv(P); }
        if (!a || op < 0) return a;
        adv(P);
        a = binop(P, op, a, p_add(P));
    }
}

static jnode *p_not(parser *P)
{
    if (is_name(P, "not")) {
        if (enter(P)) return NULL;
        adv(P);
        jnode *n = node(P, JE_NOT);
        if (n) { n->a = p_not(P); if (!n->a) { jn_free(n); n = NULL; } }
        P->depth--;
        return n;
    }
    return p_compare(P);
}

static jnode *p_and(parser *P)
{
    jnode *a = p_not(P);
    while (a && is_name(P, "and")) {
        adv(P);
        jnode *b = p_not(P);
        jnode *n = b ? node(P, JE_AND) : NULL;
        if (!n) { jn_free(a); jn_free(b); return NULL; }
        n->a = a; n->b = b; a = n;
    }
    return a;
}

static jnode *p_or(parser *P)
{
    jnode *a = p_and(P);
    while (a && is_name(P, "or")) {
        adv(P);
        jnode *b = p_and(P);
        jnode *n = b ? node(P, JE_OR) : NULL;
        if (!n) { jn_free(a); jn_free(b); return NULL; }
        n->a = a; n->b = b; a = n;
    }
    return a;
}

static jnode *p_expr_noif(parser *P) { return p_or(P); }

static jnode *p_expr(parser *P)
{
    if (enter(P)) return NULL;
    jnode *a = p_or(P);
    while (a && is_name(P, "if")) {
        adv(P);
        jnode *n = node(P, JE_COND);
        if (!n) { jn_free(a); a = NULL; break; }
        n->a = a;
        n->b = p_or(P);
        if (!n->b) { jn_free(n); a = NULL; break; }
        if (is_name(P, "else")) {
            adv(P);
            n->c = p_expr(P);
            if (!n->c) { jn_free(n); a = NULL; break; }
        }
        a = n;
    }
    P->depth--;
    return a;
}

/* ---- statements ---- */

static int p_body(parser *P, jnode *body, const char **ends, int nends, const char **which);

static int expect_bend(parser *P)
{
    if (cur(P)->type != T_BEND) return pfail(P, "expected '%%}'");
    adv(P);
    return 0;
}

/* target names of for/set: a or a, b or (a, b) */
static int p_targets(parser *P, jnode *n)
{
    int paren = is_op(P, "(");
    if (paren) adv(P);
    for (;;) {
        if (cur(P)->type != T_NAME) return pfail(P, "expected a variable name");
        if (add_kw(P, n, cur(P)->s, NULL)) return -1;
        adv(P);
        if (!is_op(P, ",")) break;
        adv(P);
    }
    if (paren && expect_op(P, ")")) return -1;
    return 0;
}

static jnode *p_stmt(parser *P)
{
    tok *t = cur(P);
    if (t->type != T_NAME) { pfail(P, "expected a statement name after '{%%'"); return NULL; }
    const char *kw = t->s;
    jnode *n = NULL;
    if (!strcmp(kw, "if")) {
        n = node(P, JN_IF);
        adv(P);
        const char *ends[] = {"elif", "else", "endif"};
        for (;;) {
            jnode *cond = p_expr(P);
            if (!cond || add_child(P, n, cond) || expect_bend(P)) goto fail;
            jnode *body = node(P, JN_BODY);
            if (!body || add_child(P, n, body)) goto fail;
            const char *which = NULL;
            if (p_body(P, body, ends, 3, &which)) goto fail;
            if (!strcmp(which, "elif")) continue;
            if (!strcmp(which, "else")) {
                if (expect_bend(P)) goto fail;
                n->c = node(P, JN_BODY);
                const char *e2[] = {"endif"};
                if (!n->c || p_body(P, n->c, e2, 1, &which)) goto fail;
            }
            break;
        }
        if (expect_bend(P)) goto fail;
        return n;
    }
    if (!strcmp(kw, "for")) {
        n = node(P, JN_FOR);
        adv(P);
        if (!n || p_targets(P, n)) goto fail;
        if (!is_name(P, "in")) { pfail(P, "expected 'in' in for"); goto fail; }
        adv(P);
        n->a = p_expr_noif(P);
        if (!n->a) goto fail;
        if (is_name(P, "if")) { adv(P); n->b = p_expr_noif(P); if (!n->b) goto fail; }
        if (is_name(P, "recursive")) { pfail(P, "recursive loops are not supported"); goto fail; }
        if (expect_bend(P)) goto fail;
        n->c = node(P, JN_BODY);
        const char *ends[] = {"else", "endfor"}, *which = NULL;
        if (!n->c || p_body(P, n->c, ends, 2, &which)) goto fail;
        if (!strcmp(which, "else")) {
            if (expect_bend(P)) goto fail;
            n->d = node(P, JN_BODY);
            const char *e2[] = {"endfor"};
            if (!n->d || p_body(P, n->d, e2, 1, &which)) goto fail;
        }
        if (expect_bend(P)) goto fail;
        return n;
    }
    if (!strcmp(kw, "set")) {
        n = node(P, JN_SET);
        adv(P);
        if (!n) goto fail;
        if (cur(P)->type == T_NAME && P->t[P->p + 1].type == T_OP && !strcmp(P->t[P->p + 1].s, ".")) {
            n->a = node(P, JE_NAME); /* namespace attribute */
            if (!n->a) goto fail;
            n->a->str = dupn(cur(P)->s, cur(P)->n);
            adv(P);
            adv(P);
            if (cur(P)->type != T_NAME) { pfail(P, "expected an attribute name"); goto fail; }
            n->str = dupn(cur(P)->s, cur(P)->n);
            adv(P);
        } else if (p_targets(P, n)) goto fail;
        if (cur(P)->type == T_BEND) { /* block set */
            if (n->a || n->nk != 1) { pfail(P, "block set needs one variable name"); goto fail; }
            n->kind = JN_SETBLOCK;
            adv(P);
            n->c = node(P, JN_BODY);
            const char *ends[] = {"endset"}, *which;
            if (!n->c || p_body(P, n->c, ends, 1, &which) || expect_bend(P)) goto fail;
            return n;
        }
        if (expect_op(P, "=")) goto fail;
        n->b = p_expr(P);
        if (!n->b || expect_bend(P)) goto fail;
        return n;
    }
    if (!strcmp(kw, "macro")) {
        n = node(P, JN_MACRO);
        adv(P);
        if (!n) goto fail;
        if (cur(P)->type != T_NAME) { pfail(P, "expected a macro name"); goto fail; }
        n->str = dupn(cur(P)->s, cur(P)->n);
        adv(P);
        if (expect_op(P, "(")) goto fail;
        while (!is_op(P, ")")) {
            if (cur(P)->type != T_NAME) { pfail(P, "expected a parameter name"); goto fail; }
            char *pn = cur(P)->s;
            adv(P);
            jnode *def = NULL;
            if (is_op(P, "=")) { adv(P); def = p_expr(P); if (!def) goto fail; }
            if (add_kw(P, n, pn, def)) goto fail;
            if (is_op(P, ",")) adv(P);
            else if (!is_op(P, ")")) { pfail(P, "expected ',' or ')' in macro parameters"); goto fail; }
        }
        adv(P);
        if (expect_bend(P)) goto fail;
        n->c = node(P, JN_BODY);
        const char *ends[] = {"endmacro"}, *which;
        if (!n->c || p_body(P, n->c, ends, 1, &which)) goto fail;
        if (cur(P)->type == T_NAME) adv(P); /* {% endmacro name %} */
        if (expect_bend(P)) goto fail;
        return n;
    }
    if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
        n = node(P, kw[0] == 'b' ? JN_BREAK : JN_CONTINUE);
        adv(P);
        if (!n || expect_bend(P)) goto fail;
        return n;
    }
    if (!strcmp(kw, "generation")) { /* transformers' assistant-mask marker: render the body */
        adv(P);
        if (expect_bend(P)) return NULL;
        n = node(P, JN_BODY);
        const char *ends[] = {"endgeneration"}, *which;
        if (!n || p_body(P, n, ends, 1, &which) || expect_bend(P)) goto fail;
        return n;
    }
    if (!strcmp(kw, "include") || !strcmp(kw, "import") || !strcmp(kw, "from") || !strcmp(kw, "extends")) {
        emoe_errf(P->err, EMOE_EUNSUP, "template line %d: '%s' is not allowed (no file access)", t->line, kw);
        P->failed = 1;
        return NULL;
    }
    emoe_errf(P->err, EMOE_EUNSUP, "template line %d: unsupported tag '%s'", t->line, kw);
    P->failed = 1;
    return NULL;
fail:
    jn_free(n);
    if (!P->failed) pfail(P, "out of memory");
    return NULL;
}

/* Parses statements until one of `ends` (consumed, its name in *which) or EOF
 * (an error when ends is non-empty). */
static int p_body(parser *P, jnode *body, const char **ends, int nends, const char **which)
{
    if (enter(P)) return -1;
    int rc = -1;
    for (;;) {
        tok *t = cur(P);
        if (t->type == T_EOF) {
            if (nends) { pfail(P, "missing '{%% %s %%}'", ends[nends - 1]); goto out; }
            rc = 0;
            goto out;
        }
        if (t->type == T_TEXT) {
            jnode *n = node(P, JN_TEXT);
            if (!n) goto out;
            n->str = dupn(t->s, t->n);
            n->str_len = t->n;
            adv(P);
            if (!n->str || add_child(P, body, n)) { jn_free(n); goto out; }
            continue;
        }
        if (t->type == T_VBEGIN) {
            adv(P);
            jnode *n = node(P, JN_OUT);
            if (!n) goto out;
            n->a = p_expr(P);
            if (!n->a) { jn_free(n); goto out; }
            if (cur(P)->type != T_VEND) { jn_free(n); pfail(P, "expected '}}'"); goto out; }
            adv(P);
            if (add_child(P, body, n)) goto out;
            continue;
        }
        if (t->type == T_BBEGIN) {
            tok *kw = &P->t[P->p + 1];
            if (kw->type == T_NAME)
                for (int i = 0; i < nends; i++)
                    if (!strcmp(kw->s, ends[i])) {
                        *which = ends[i];
                        P->p += 2;
                        rc = 0;
                        goto out;
                    }
            adv(P);
            jnode *n = p_stmt(P);
            if (!n || add_child(P, body, n)) goto out;
            continue;
        }
        pfail(P, "unexpected token");
        goto out;
    }
out:
    P->depth--;
    return rc;
}

emoe_status jinja_parse(const char *src, size_t len, jinja_tpl **out, emoe_err *err)
{
    *out = NULL;
    if (len && src[len - 1] == '\n') { /* keep_trailing_newline=False */
        len--;
        if (len && src[len - 1] == '\r') len--;
    }
    lexer L = {src, len, 0, 1, NULL, 0, 0, err};
    emoe_status st = EMOE_OK;
    jnode *root = NULL;
    if (lex(&L)) { st = err ? err->code : EMOE_EINVAL; goto done; }
    parser P = {L.t, L.nt, 0, 0, err, 0};
    root = calloc(1, sizeof *root);
    if (!root) { st = emoe_errf(err, EMOE_ENOMEM, "template: out of memory"); goto done; }
    root->kind = JN_BODY;
    const char *which = NULL;
    if (p_body(&P, root, NULL, 0, &which)) {
        st = err && err->code ? err->code : EMOE_EINVAL;
        jn_free(root);
        root = NULL;
        goto done;
    }
    *out = calloc(1, sizeof **out);
    if (!*out) { jn_free(root); st = emoe_errf(err, EMOE_ENOMEM, "template: out of memory"); goto done; }
    (*out)->root = root;
done:
    for (size_t i = 0; i < L.nt; i++) free(L.t[i].s);
    free(L.t);
    return st;
}

void jinja_free(jinja_tpl *t)
{
    if (!t) return;
    jn_free(t->root);
    free(t);
}
