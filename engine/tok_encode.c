/*
 * tok_encode.c — text -> ids, in the order Hugging Face tokenizers applies:
 *   1. added tokens with normalized=false are matched on the raw text
 *      (leftmost-longest, lstrip/rstrip absorb neighbouring whitespace) and are
 *      never split further;
 *   2. each remaining segment is normalized, then added tokens with
 *      normalized=true are matched on the normalized text;
 *   3. the pre-tokenizers split each segment into pieces (regex splits with the
 *      Split behaviours, Metaspace, ByteLevel prefix space);
 *   4. the BPE model encodes each piece (tok_bpe.c).
 * Pieces live as (offset, length) in one growable arena per call, so splits
 * cost no allocation per piece.
 */
#include "engine/tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct piece {
    size_t off, len;
    int first; /* begins at offset 0 of the original input (Metaspace "first") */
} piece;

typedef struct enc {
    tok_tokenizer *t;
    char *arena;
    size_t alen, acap;
    piece *pc, *pc2;
    size_t npc, cpc, npc2, cpc2;
    int32_t *ids;
    size_t nids, cids;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    emoe_err *err;
    size_t max_ids;     /* 0 = no limit; else stop once the text has more ids */
    int over;           /* set when max_ids was passed */
} enc;

/* Stops encoding: the text has more than max_ids tokens (issue 14: a 3.9 MB
 * prompt took 7.5 s of CPU before the context check refused it). */
static emoe_status too_many(enc *e)
{
    e->over = 1;
    return emoe_errf(e->err, EMOE_EINVAL, "the text is longer than %zu tokens", e->max_ids);
}

static int is_ws_cp(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

static emoe_status oom(enc *e) { return emoe_errf(e->err, EMOE_ENOMEM, "tokenizer: out of memory"); }

/* Appends bytes to the arena; returns the offset, or (size_t)-1 on OOM. */
static size_t arena_put(enc *e, const char *s, size_t n)
{
    if (e->alen + n + 1 > e->acap) {
        size_t nc = e->acap ? e->acap : 4096;
        while (nc < e->alen + n + 1) nc *= 2;
        char *p = realloc(e->arena, nc);
        if (!p) return (size_t)-1;
        e->arena = p;
        e->acap = nc;
    }
    size_t off = e->alen;
    if (n) memcpy(e->arena + off, s, n);
    e->alen += n;
    return off;
}

static int push_piece(piece **v, size_t *n, size_t *cap, size_t off, size_t len, int first)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        piece *p = realloc(*v, nc * sizeof *p);
        if (!p) return -1;
        *v = p;
        *cap = nc;
    }
    (*v)[(*n)++] = (piece){off, len, first};
    return 0;
}

/* Finds the next non-empty match of re in s[from..len). Returns 1 and the
 * span, 0 if none, -1 on a matching error. */
static int re_next(enc *e, const pcre2_code *re, const char *s, size_t len, size_t from, size_t *ms, size_t *me)
{
    while (from <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, len, from, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !e->jstack) {
            e->jstack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, NULL);
            e->mctx = pcre2_match_context_create(NULL);
            if (!e->jstack || !e->mctx) return -1;
            pcre2_jit_stack_assign(e->mctx, NULL, e->jstack);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof msg);
            emoe_errf(e->err, EMOE_EINVAL, "tokenizer: regex match failed: %s", (char *)msg);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        if (ov[1] > ov[0]) { *ms = ov[0]; *me = ov[1]; return 1; }
        /* empty match: step one character and retry */
        if (from >= len) return 0;
        int cl = tok_utf8_len((unsigned char)s[from]);
        from += cl ? (size_t)cl : 1;
    }
    return 0;
}

/* ---- normalization ---- */

static int all_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 0;
    return 1;
}

/* Unicode normalization of s, passing ASCII stretches through untouched:
 * ASCII characters are starters that never compose with what precedes them
 * and block reordering, so only the runs around non-ASCII text (plus the one
 * ASCII character before a run, which may compose with a following mark) go
 * through utf8proc. Equivalent to normalizing the whole string, much faster
 * on mostly-ASCII text. */
static emoe_status unicode_norm(enc *e, const char *s, size_t n, int opt, char **out, size_t *out_len)
{
    char *o = malloc(n + 16);
    size_t cap = n + 16, k = 0, i = 0;
    if (!o) return oom(e);
    while (i < n) {
        size_t a = i;
        while (i < n && (unsigned char)s[i] < 0x80) i++;
        if (i == n) { /* trailing ASCII */
            memcpy(o + k, s + a, n - a);
            k += n - a;
            break;
        }
        size_t rs = i > a ? i - 1 : i; /* include the ASCII char before the run */
        memcpy(o + k, s + a, rs - a);
        k += rs - a;
        size_t re = i;
        while (re < n && !((unsigned char)s[re] < 0x80 && (re + 1 == n || (unsigned char)s[re + 1] < 0x80))) re++;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s + rs, (utf8proc_ssize_t)(re - rs), &dst,
                                          (utf8proc_option_t)opt);
        if (r < 0) {
            free(o);
            return emoe_errf(e->err, EMOE_EINVAL, "tokenizer: normalization failed: %s", utf8proc_errmsg(r));
        }
        if (k + (size_t)r + (n - re) + 1 > cap) {
            cap = k + (size_t)r + (n - re) + 16;
            char *q = realloc(o, cap);
            if (!q) { free(dst); free(o); return oom(e); }
            o = q;
        }
        memcpy(o + k, dst, (size_t)r);
        k += (size_t)r;
        free(dst);
        i = re;
    }
    o[k] = 0;
    *out = o;
    *out_len = k;
    return EMOE_OK;
}

/* The most a normalizer chain may grow a text to (issue 14: a Replace that
 * grows its input 1000x per pass reached 2.9 GB): 16x the input plus 1 MiB,
 * well above what real normalizers do (Metaspace-style Replace: 3x; NFKD of the
 * worst code point: 11x). Past it, encoding fails with a clear error. */
static size_t norm_limit(size_t n) { return n > ((size_t)1 << 58) ? (size_t)-1 : 16 * n + ((size_t)1 << 20); }

static emoe_status norm_too_big(enc *e, size_t n)
{
    return emoe_errf(e->err, EMOE_EINVAL,
                     "tokenizer: normalization would grow the %zu-byte text past %zu bytes (16x + 1 MiB); refused",
                     n, norm_limit(n));
}

/* Applies the normalizer chain to s; *out is malloc'd. */
static emoe_status normalize(enc *e, const char *s, size_t n, char **out, size_t *out_len)
{
    tok_tokenizer *t = e->t;
    const size_t lim = norm_limit(n);
    char *cur = malloc(n + 1);
    if (!cur) return oom(e);
    memcpy(cur, s, n);
    cur[n] = 0;
    size_t cl = n;
    for (int k = 0; k < t->n_norms; k++) {
        tok_norm *nm = &t->norms[k];
        char *nx = NULL;
        size_t nl = 0;
        switch (nm->type) {
        case TOK_NORM_NFC: case TOK_NORM_NFD: case TOK_NORM_NFKC: case TOK_NORM_NFKD: {
            if (all_ascii(cur, cl)) continue;
            int opt = UTF8PROC_STABLE;
            if (nm->type == TOK_NORM_NFC) opt |= UTF8PROC_COMPOSE;
            else if (nm->type == TOK_NORM_NFD) opt |= UTF8PROC_DECOMPOSE;
            else if (nm->type == TOK_NORM_NFKC) opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
            else opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
            emoe_status st = unicode_norm(e, cur, cl, opt, &nx, &nl);
            if (st) { free(cur); return st; }
            break;
        }
        case TOK_NORM_LOWER: {
            nx = malloc(cl * 2 + 4);
            if (!nx) break;
            for (size_t i = 0; i < cl;) {
                uint32_t cp;
                i += (size_t)tok_utf8_decode(cur + i, cl - i, &cp);
                nl += (size_t)tok_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), nx + nl);
            }
            break;
        }
        case TOK_NORM_PREPEND:
            if (cl == 0) continue;
            nx = malloc(cl + nm->str_len + 1);
            if (!nx) break;
            memcpy(nx, nm->str, nm->str_len);
            memcpy(nx + nm->str_len, cur, cl);
            nl = cl + nm->str_len;
            break;
        case TOK_NORM_STRIP: {
            size_t a = 0, b = cl;
            while (nm->left && a < b) {
                uint32_t cp;
                int l = tok_utf8_decode(cur + a, b - a, &cp);
                if (!is_ws_cp(cp)) break;
                a += (size_t)l;
            }
            while (nm->right && b > a) {
                size_t p = b - 1;
                while (p > a && ((unsigned char)cur[p] & 0xc0) == 0x80) p--;
                uint32_t cp;
                tok_utf8_decode(cur + p, b - p, &cp);
                if (!is_ws_cp(cp)) break;
                b = p;
            }
            nx = malloc(b - a + 1);
            if (!nx) break;
            memcpy(nx, cur + a, b - a);
            nl = b - a;
            break;
        }
        case TOK_NORM_REPLACE: {
            size_t cap = cl + 16, pos = 0, ms, me;
            nx = malloc(cap);
            if (!nx) break;
            int r;
            while ((r = re_next(e, nm->re, cur, cl, pos, &ms, &me)) == 1) {
                size_t need = nl + (ms - pos) + nm->str_len + (cl - me) + 1;
                if (need > lim) { free(nx); free(cur); return norm_too_big(e, n); }
                if (need > cap) {
                    while (cap < need) cap *= 2;
                    char *p = realloc(nx, cap);
                    if (!p) { free(nx); nx = NULL; break; }
                    nx = p;
                }
                memcpy(nx + nl, cur + pos, ms - pos);
                nl += ms - pos;
                memcpy(nx + nl, nm->str, nm->str_len);
                nl += nm->str_len;
                pos = me;
            }
            if (!nx) break;
            if (r < 0) { free(nx); free(cur); return e->err && e->err->code ? e->err->code : oom(e); }
            if (nl + (cl - pos) + 1 > cap) {
                char *p = realloc(nx, nl + (cl - pos) + 1);
                if (!p) { free(nx); nx = NULL; break; }
                nx = p;
            }
            memcpy(nx + nl, cur + pos, cl - pos);
            nl += cl - pos;
            break;
        }
        }
        if (!nx) { free(cur); return oom(e); }
        free(cur);
        cur = nx;
        cl = nl;
        if (cl > lim) { free(cur); return norm_too_big(e, n); }
    }
    *out = cur;
    *out_len = cl;
    return EMOE_OK;
}

emoe_status tok_normalize_str(const tok_tokenizer *t, const char *s, size_t n, char **out, size_t *out_len, emoe_err *err)
{
    enc e;
    memset(&e, 0, sizeof e);
    e.t = (tok_tokenizer *)t;
    e.err = err;
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md) return emoe_errf(err, EMOE_ENOMEM, "tokenizer: out of memory");
    emoe_status st = normalize(&e, s, n, out, out_len);
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mctx);
    pcre2_jit_stack_free(e.jstack);
    return st;
}

/* ---- pre-tokenization ---- */

typedef struct span {
    size_t s, e;
    int m;
} span;

/* Splits piece p with re and the behaviour, appending results to pc2. */
static emoe_status split_piece(enc *e, const tok_pre *pre, piece p, span **sp, size_t *csp)
{
    const char *s = e->arena + p.off;
    size_t n = 0, pos = 0, ms, me;
    int r;
#define SPAN_PUSH(a, b, mm)                                                   \
    do {                                                                      \
        if (n == *csp) {                                                      \
            size_t nc_ = *csp ? *csp * 2 : 64;                                \
            span *q_ = realloc(*sp, nc_ * sizeof *q_);                        \
            if (!q_) return oom(e);                                           \
            *sp = q_;                                                         \
            *csp = nc_;                                                       \
        }                                                                     \
        (*sp)[n++] = (span){(a), (b), (mm)};                                  \
    } while (0)
    while ((r = re_next(e, pre->re, s, p.len, pos, &ms, &me)) == 1) {
        if (ms > pos) SPAN_PUSH(pos, ms, 0);
        SPAN_PUSH(ms, me, 1);
        pos = me;
    }
    if (r < 0) return e->err && e->err->code ? e->err->code : oom(e);
    if (pos < p.len) SPAN_PUSH(pos, p.len, 0);
#undef SPAN_PUSH
    span *v = *sp;
    if (pre->invert)
        for (size_t i = 0; i < n; i++) v[i].m = !v[i].m;
    /* Fold the spans by behaviour (mirrors tokenizers' NormalizedString::split).
     * After folding, m = 1 means "remove". */
    size_t k = 0;
    int prev = 0;
    switch (pre->behavior) {
    case TOK_SPLIT_ISOLATED:
        for (size_t i = 0; i < n; i++) v[i].m = 0;
        k = n;
        break;
    case TOK_SPLIT_REMOVED:
        k = n;
        break;
    case TOK_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            int m = v[i].m;
            if (m && !prev && k) v[k - 1].e = v[i].e;
            else v[k++] = (span){v[i].s, v[i].e, 0};
            prev = m;
        }
        break;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            int m = v[i].m;
            if (m == prev && k) v[k - 1].e = v[i].e;
            else v[k++] = (span){v[i].s, v[i].e, 0};
            prev = m;
        }
        break;
    case TOK_SPLIT_MERGED_NEXT: {
        /* walk backwards, then restore order */
        size_t w = n;
        for (size_t ii = n; ii-- > 0;) {
            span x = v[ii];
            int m = x.m;
            if (m && !prev && w < n) v[w].s = x.s;
            else v[--w] = (span){x.s, x.e, 0};
            prev = m;
        }
        memmove(v, v + w, (n - w) * sizeof *v);
        k = n - w;
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        if (v[i].m || v[i].e == v[i].s) continue;
        if (push_piece(&e->pc2, &e->npc2, &e->cpc2, p.off + v[i].s, v[i].e - v[i].s, p.first && v[i].s == 0))
            return oom(e);
    }
    return EMOE_OK;
}

/* Metaspace: ' ' -> replacement, optional prepend, optional split (MergedWithNext). */
static emoe_status metaspace_piece(enc *e, const tok_pre *pre, piece p)
{
    size_t base = e->alen;
    int prepend = 0;
    const char *s0 = e->arena + p.off;
    int starts_with_repl = 0;
    if (p.len > 0 && s0[0] == ' ') starts_with_repl = 1; /* becomes the replacement */
    else if (p.len >= pre->repl_len && !memcmp(s0, pre->repl, pre->repl_len)) starts_with_repl = 1;
    if (!starts_with_repl) {
        if (pre->prepend_scheme == TOK_PREPEND_ALWAYS) prepend = 1;
        else if (pre->prepend_scheme == TOK_PREPEND_FIRST && p.first) prepend = 1;
    }
    if (prepend && arena_put(e, pre->repl, pre->repl_len) == (size_t)-1) return oom(e);
    for (size_t i = 0; i < p.len; i++) {
        char c = e->arena[p.off + i]; /* re-read: arena may move */
        size_t r = c == ' ' ? arena_put(e, pre->repl, pre->repl_len) : arena_put(e, &c, 1);
        if (r == (size_t)-1) return oom(e);
    }
    size_t len = e->alen - base;
    if (!pre->split) {
        if (len && push_piece(&e->pc2, &e->npc2, &e->cpc2, base, len, p.first)) return oom(e);
        return EMOE_OK;
    }
    /* each replacement char starts a new piece */
    size_t start = 0;
    for (size_t i = pre->repl_len <= len ? 1 : len; i < len; i++) {
        if (i + pre->repl_len <= len && !memcmp(e->arena + base + i, pre->repl, pre->repl_len)) {
            if (push_piece(&e->pc2, &e->npc2, &e->cpc2, base + start, i - start, p.first && start == 0)) return oom(e);
            start = i;
        }
    }
    if (len > start && push_piece(&e->pc2, &e->npc2, &e->cpc2, base + start, len - start, p.first && start == 0))
        return oom(e);
    return EMOE_OK;
}

/* Pre-tokenizes arena[off, off+len) and BPE-encodes every piece. */
static emoe_status encode_segment(enc *e, size_t off, size_t len, int first)
{
    tok_tokenizer *t = e->t;
    span *sp = NULL;
    size_t csp = 0;
    emoe_status st = EMOE_OK;
    e->npc = 0;
    if (len == 0) return EMOE_OK;
    if (push_piece(&e->pc, &e->npc, &e->cpc, off, len, first)) return oom(e);
    for (int k = 0; k < t->n_pres && !st; k++) {
        const tok_pre *pre = &t->pres[k];
        e->npc2 = 0;
        for (size_t i = 0; i < e->npc && !st; i++) {
            piece p = e->pc[i];
            if (pre->type == TOK_PRE_METASPACE) { st = metaspace_piece(e, pre, p); continue; }
            if (pre->type == TOK_PRE_BYTELEVEL && pre->add_prefix_space && e->arena[p.off] != ' ') {
                size_t no = arena_put(e, " ", 1);
                if (no == (size_t)-1) { st = oom(e); break; }
                /* copy the piece after the space (re-read after a possible move) */
                for (size_t b = 0; b < p.len; b++) {
                    char c = e->arena[p.off + b];
                    if (arena_put(e, &c, 1) == (size_t)-1) { st = oom(e); break; }
                }
                p.off = no;
                p.len += 1;
            }
            if (pre->re) st = split_piece(e, pre, p, &sp, &csp);
            else if (push_piece(&e->pc2, &e->npc2, &e->cpc2, p.off, p.len, p.first)) st = oom(e);
        }
        piece *tmp = e->pc; e->pc = e->pc2; e->pc2 = tmp;
        size_t tn = e->cpc; e->cpc = e->cpc2; e->cpc2 = tn;
        e->npc = e->npc2;
    }
    free(sp);
    if (st) return st;
    /* A piece of L bytes is at least ceil(L / longest token) tokens (no token
     * covers more input bytes than its string has; a fused unk can, so not
     * then): no BPE work for a text already too long. */
    if (e->max_ids) {
        size_t lower = e->nids, mp = t->max_piece_len ? t->max_piece_len : 1;
        int fused = t->unk_id >= 0 && t->fuse_unk;
        for (size_t i = 0; i < e->npc && lower <= e->max_ids; i++)
            lower += fused ? 1 : (e->pc[i].len + mp - 1) / mp;
        if (lower > e->max_ids) return too_many(e);
    }
    for (size_t i = 0; i < e->npc; i++) {
        if (tok_bpe_piece(t, e->arena + e->pc[i].off, e->pc[i].len, &e->ids, &e->nids, &e->cids)) return oom(e);
        if (e->max_ids && e->nids > e->max_ids) return too_many(e);
    }
    return EMOE_OK;
}

static int is_word_byte(unsigned char c) { return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'); }
static int is_ascii_ws(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); }

/* Leftmost-longest match of an added token at or after `from`. Returns the
 * added index or -1; *ms and *me are the span including lstrip or rstrip whitespace
 * (never reaching before `lo`). */
static int find_added(const tok_tokenizer *t, const tok_matcher *m, const char *s, size_t len, size_t from,
                      size_t lo, size_t *ms, size_t *me)
{
    if (!m->any) return -1;
    for (size_t i = from; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        for (int k = 0; k < m->n_by_byte[c]; k++) {
            const tok_added *a = &t->added[m->by_byte[c][k]];
            if (a->pat_len > len - i || memcmp(s + i, a->pat, a->pat_len)) continue;
            size_t a0 = i, a1 = i + a->pat_len;
            if (a->single_word && ((a0 > 0 && is_word_byte((unsigned char)s[a0 - 1])) ||
                                   (a1 < len && is_word_byte((unsigned char)s[a1]))))
                continue;
            if (a->lstrip) while (a0 > lo && is_ascii_ws((unsigned char)s[a0 - 1])) a0--;
            if (a->rstrip) while (a1 < len && is_ascii_ws((unsigned char)s[a1])) a1++;
            *ms = a0;
            *me = a1;
            return m->by_byte[c][k];
        }
    }
    return -1;
}

/* Normalizes raw[a,b) and encodes it, splitting on normalized added tokens. */
static emoe_status encode_text(enc *e, const char *raw, size_t a, size_t b)
{
    tok_tokenizer *t = e->t;
    char *nrm = NULL;
    size_t nl = 0;
    emoe_status st = normalize(e, raw + a, b - a, &nrm, &nl);
    if (st) return st;
    size_t base = arena_put(e, nrm, nl);
    if (base == (size_t)-1) { free(nrm); return oom(e); }
    size_t pos = 0, ms, me;
    int k;
    while (pos < nl && (k = find_added(t, &t->match_norm, nrm, nl, pos, pos, &ms, &me)) >= 0) {
        if (ms > pos && (st = encode_segment(e, base + pos, ms - pos, a == 0 && pos == 0))) break;
        if (tok_ids_push(&e->ids, &e->nids, &e->cids, t->added[k].id)) { st = oom(e); break; }
        pos = me;
    }
    if (!st && pos < nl) st = encode_segment(e, base + pos, nl - pos, a == 0 && pos == 0);
    free(nrm);
    return st;
}

emoe_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids_out,
                       size_t *n_out, emoe_err *err)
{
    return tok_encode_limited(t, text, len, add_special, 0, ids_out, n_out, NULL, err);
}

emoe_status tok_encode_limited(const tok_tokenizer *t, const char *text, size_t len, int add_special, size_t max_ids,
                               int32_t **ids_out, size_t *n_out, int *over, emoe_err *err)
{
    *ids_out = NULL;
    *n_out = 0;
    if (over) *over = 0;
    size_t bad = tok_utf8_valid(text, len);
    if (bad != len) return emoe_errf(err, EMOE_EINVAL, "text is not valid UTF-8 at byte %zu", bad);
    enc e;
    memset(&e, 0, sizeof e);
    e.t = (tok_tokenizer *)t; /* only the mutex-guarded piece cache is written */
    e.err = err;
    e.max_ids = max_ids;
    if (err) err->code = EMOE_OK;
    emoe_status st = EMOE_OK;
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md) return emoe_errf(err, EMOE_ENOMEM, "tokenizer: out of memory");
    if (add_special)
        for (int i = 0; i < t->n_post_pre && !st; i++)
            if (tok_ids_push(&e.ids, &e.nids, &e.cids, t->post_pre[i])) st = oom(&e);
    size_t pos = 0, ms, me;
    int k;
    while (!st && pos < len && (k = find_added(t, &t->match_raw, text, len, pos, pos, &ms, &me)) >= 0) {
        if (ms > pos) st = encode_text(&e, text, pos, ms);
        if (!st && tok_ids_push(&e.ids, &e.nids, &e.cids, t->added[k].id)) st = oom(&e);
        pos = me;
        e.alen = 0; /* nothing in the arena outlives a segment */
    }
    if (!st && pos < len) st = encode_text(&e, text, pos, len);
    if (add_special)
        for (int i = 0; i < t->n_post_post && !st; i++)
            if (tok_ids_push(&e.ids, &e.nids, &e.cids, t->post_post[i])) st = oom(&e);
    if (!st && !e.ids) {
        e.ids = malloc(sizeof *e.ids);
        if (!e.ids) st = oom(&e);
    }
    free(e.arena);
    free(e.pc);
    free(e.pc2);
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mctx);
    pcre2_jit_stack_free(e.jstack);
    if (!st && max_ids && e.nids > max_ids) st = too_many(&e); /* added tokens alone */
    if (over) *over = e.over;
    if (st) { free(e.ids); return st; }
    *ids_out = e.ids;
    *n_out = e.nids;
    return EMOE_OK;
}
