/*
 * tok_decode.c — ids -> text, one-shot (tok_decode: the decoder chain applied
 * to the whole token list, exactly as Hugging Face tokenizers does) and
 * streaming (tok_detok_*: the same chain applied token by token, with a small
 * UTF-8 assembler that holds the bytes of an unfinished character).
 *
 * Streaming keeps the chain's only cross-token effects explicit: ByteLevel
 * turns tokens into one byte stream decoded lossily; ByteFallback turns <0xNN>
 * tokens into bytes; a Strip after Fuse trims the start/end of the whole text;
 * Metaspace treats the first token specially.
 */
#include "engine/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static const char REPL[] = "\xef\xbf\xbd"; /* U+FFFD */

typedef emoe_buf buf; /* engine/common.h */

static int buf_put(buf *b, const void *s, size_t n) { return emoe_buf_put(b, s, n); }

/* Length of the maximal valid prefix of a UTF-8 sequence at s (Unicode's
 * "maximal subpart"), and whether it is a complete character.
 * Returns the number of bytes examined (>= 1 when n >= 1). *complete = 1 for a
 * full character, 0 for an invalid subpart; *incomplete = 1 when the bytes end
 * before a sequence that is valid so far could finish. */
static size_t utf8_scan(const unsigned char *s, size_t n, int *complete, int *incomplete)
{
    *complete = *incomplete = 0;
    unsigned char c = s[0];
    if (c < 0x80) { *complete = 1; return 1; }
    int len = tok_utf8_len(c);
    if (!len) return 1;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c == 0xe0) lo = 0xa0;
    else if (c == 0xed) hi = 0x9f;
    else if (c == 0xf0) lo = 0x90;
    else if (c == 0xf4) hi = 0x8f;
    size_t k = 1;
    for (; k < (size_t)len; k++) {
        if (k >= n) { *incomplete = 1; return k; }
        unsigned char x = s[k];
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xbf;
        if (x < l || x > h) return k;
    }
    *complete = 1;
    return k;
}

/* String::from_utf8_lossy */
static int lossy(buf *o, const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int c, inc;
        size_t k = utf8_scan(s + i, n - i, &c, &inc);
        if (buf_put(o, c ? (const char *)s + i : REPL, c ? k : 3)) return -1;
        i += k;
    }
    return 0;
}

static int byte_token(const char *s, size_t n, unsigned char *b)
{
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return 0;
        v = v * 16 + d;
    }
    *b = (unsigned char)v;
    return 1;
}

/* Byte-level token -> bytes (a token with a char outside the table keeps its
 * own bytes, as the reference does). */
static int bytelevel_bytes(buf *o, const char *s, size_t n)
{
    size_t start = o->n;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)tok_utf8_decode(s + i, n - i, &cp);
        int b = tok_bytelevel_cp_to_byte(cp);
        if (b < 0) { o->n = start; return buf_put(o, s, n); }
        unsigned char c = (unsigned char)b;
        if (buf_put(o, &c, 1)) return -1;
    }
    return 0;
}

static int replace_all(buf *o, const char *s, size_t n, const char *pat, size_t pl, const char *rep, size_t rl)
{
    size_t i = 0;
    while (i < n) {
        if (i + pl <= n && !memcmp(s + i, pat, pl)) {
            if (buf_put(o, rep, rl)) return -1;
            i += pl;
        } else {
            if (buf_put(o, s + i, 1)) return -1;
            i++;
        }
    }
    return 0;
}

/* Strip: up to `start` leading and `stop` trailing copies of ch. */
static void strip_range(const char *s, size_t n, uint32_t ch, int start, int stop, size_t *a, size_t *b)
{
    char enc[4];
    size_t el = (size_t)tok_utf8_encode(ch, enc);
    *a = 0;
    *b = n;
    for (int k = 0; k < start && *a + el <= n && !memcmp(s + *a, enc, el); k++) *a += el;
    for (int k = 0; k < stop && *b >= *a + el && !memcmp(s + *b - el, enc, el); k++) *b -= el;
}

typedef struct tlist {
    buf *v;
    size_t n;
} tlist;

static void tlist_free(tlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].p);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

emoe_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
                       size_t *out_len, emoe_err *err)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    tlist L = {calloc(n ? n : 1, sizeof(buf)), 0};
    buf res = {0};
    if (!L.v) return emoe_errf(err, EMOE_ENOMEM, "decode: out of memory");
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        /* ids without a token (e.g. the padding rows of a model's larger
         * embedding) are skipped, as tokenizers' decode does */
        if (id < 0 || id >= t->n_vocab || !t->piece[id]) continue;
        if (skip_special && t->is_special[id]) continue;
        if (buf_put(&L.v[L.n++], t->piece[id], t->piece_len[id])) goto oom;
    }
    for (int k = 0; k < t->n_decs; k++) {
        const tok_dec *d = &t->decs[k];
        if (d->type == TOK_DEC_BYTELEVEL || d->type == TOK_DEC_FUSE) {
            buf all = {0}, fused = {0};
            for (size_t i = 0; i < L.n; i++) {
                int r = d->type == TOK_DEC_BYTELEVEL ? bytelevel_bytes(&all, L.v[i].p, L.v[i].n) : buf_put(&all, L.v[i].p, L.v[i].n);
                if (r) { free(all.p); goto oom; }
            }
            if (d->type == TOK_DEC_BYTELEVEL) {
                if (lossy(&fused, (unsigned char *)all.p, all.n) || buf_put(&fused, "", 0)) { free(all.p); free(fused.p); goto oom; }
                free(all.p);
            } else {
                if (buf_put(&all, "", 0)) { free(all.p); goto oom; }
                fused = all;
            }
            tlist_free(&L);
            L.v = calloc(1, sizeof(buf));
            if (!L.v) { free(fused.p); goto oom; }
            L.v[0] = fused;
            L.n = 1;
        } else if (d->type == TOK_DEC_BYTEFALLBACK) {
            tlist N = {calloc(L.n ? L.n : 1, sizeof(buf)), 0};
            buf bytes = {0};
            if (!N.v) goto oom;
            for (size_t i = 0; i <= L.n; i++) {
                unsigned char b;
                if (i < L.n && byte_token(L.v[i].p, L.v[i].n, &b)) {
                    if (buf_put(&bytes, &b, 1)) goto bf_oom;
                    continue;
                }
                if (bytes.n) {
                    buf *dst = &N.v[N.n++];
                    if (tok_utf8_valid(bytes.p, bytes.n) == bytes.n) {
                        if (buf_put(dst, bytes.p, bytes.n)) goto bf_oom;
                    } else {
                        for (size_t r = 0; r < bytes.n; r++)
                            if (buf_put(dst, REPL, 3)) goto bf_oom;
                    }
                    bytes.n = 0;
                }
                if (i < L.n) { N.v[N.n++] = L.v[i]; L.v[i].p = NULL; }
            }
            free(bytes.p);
            tlist_free(&L);
            L = N;
            continue;
        bf_oom:
            free(bytes.p);
            tlist_free(&N);
            goto oom;
        } else {
            for (size_t i = 0; i < L.n; i++) {
                buf nb = {0};
                int r = 0;
                if (d->type == TOK_DEC_REPLACE) {
                    r = replace_all(&nb, L.v[i].p, L.v[i].n, d->pat, d->pat_len, d->content, d->content_len);
                } else if (d->type == TOK_DEC_METASPACE) {
                    if (i == 0 && d->prepend_scheme != TOK_PREPEND_NEVER) r = replace_all(&nb, L.v[i].p, L.v[i].n, d->repl, d->repl_len, "", 0);
                    else r = replace_all(&nb, L.v[i].p, L.v[i].n, d->repl, d->repl_len, " ", 1);
                } else { /* STRIP */
                    size_t a, b;
                    strip_range(L.v[i].p, L.v[i].n, d->strip_char, d->start, d->stop, &a, &b);
                    r = buf_put(&nb, L.v[i].p + a, b - a);
                }
                if (!r) r = buf_put(&nb, "", 0);
                if (r) { free(nb.p); goto oom; }
                free(L.v[i].p);
                L.v[i] = nb;
            }
        }
    }
    for (size_t i = 0; i < L.n; i++) {
        if (!t->n_decs && i && buf_put(&res, " ", 1)) goto oom;
        if (buf_put(&res, L.v[i].p, L.v[i].n)) goto oom;
    }
    if (buf_put(&res, "", 0)) goto oom;
    tlist_free(&L);
    *out = res.p;
    if (out_len) *out_len = res.n;
    return EMOE_OK;
oom:
    tlist_free(&L);
    free(res.p);
    return emoe_errf(err, EMOE_ENOMEM, "decode: out of memory");
}

/* ---- streaming ---- */

typedef struct sink {
    char **out;
    size_t *len, *cap;
} sink;

static int sink_put(sink *k, const char *s, size_t n)
{
    buf b = {*k->out, *k->len, *k->cap};
    int r = buf_put(&b, s, n);
    *k->out = b.p;
    *k->len = b.n;
    *k->cap = b.cap;
    return r;
}

/* Position of the first Fuse in the chain (n_decs if none). */
static int fuse_pos(const tok_tokenizer *t)
{
    for (int k = 0; k < t->n_decs; k++)
        if (t->decs[k].type == TOK_DEC_FUSE || t->decs[k].type == TOK_DEC_BYTELEVEL) return k;
    return t->n_decs;
}

static const tok_dec *whole_strip(const tok_tokenizer *t)
{
    for (int k = fuse_pos(t) + 1; k < t->n_decs; k++)
        if (t->decs[k].type == TOK_DEC_STRIP) return &t->decs[k];
    return NULL;
}

void tok_detok_init(tok_detok *d, const tok_tokenizer *t, int skip_special)
{
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->skip_special = skip_special;
    const tok_dec *ws = whole_strip(t);
    d->strip_left = ws ? ws->start : 0;
}

void tok_detok_free(tok_detok *d)
{
    if (!d) return;
    free(d->held);
    d->held = NULL;
    d->n_held = d->cap_held = 0;
}

/* One final character (or U+FFFD) -> the whole-text Strip stage -> out. */
static int emit_char(tok_detok *d, sink *k, const char *c, size_t n)
{
    const tok_dec *ws = whole_strip(d->tok);
    if (!ws) return sink_put(k, c, n);
    uint32_t cp;
    tok_utf8_decode(c, n, &cp);
    if (!d->started && d->strip_left > 0 && cp == ws->strip_char) { d->strip_left--; return 0; }
    d->started = 1;
    if (ws->stop > 0 && cp == ws->strip_char) { /* hold a trailing run until something follows */
        buf b = {d->held, d->n_held, d->cap_held};
        int r = buf_put(&b, c, n);
        d->held = b.p; d->n_held = b.n; d->cap_held = b.cap;
        return r;
    }
    if (d->n_held) {
        if (sink_put(k, d->held, d->n_held)) return -1;
        d->n_held = 0;
    }
    return sink_put(k, c, n);
}

static int emit_repl(tok_detok *d, sink *k, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (emit_char(d, k, REPL, 3)) return -1;
    return 0;
}

/* Resolves the held incomplete tail: one U+FFFD (lossy) or one per byte. */
static int pend_resolve(tok_detok *d, sink *k)
{
    if (!d->n_pend) return 0;
    int r = emit_repl(d, k, d->pend_from_bytes ? (size_t)d->n_pend : 1);
    d->n_pend = 0;
    return r;
}

/* Feeds bytes through the UTF-8 assembler. */
static int feed_bytes(tok_detok *d, sink *k, const unsigned char *s, size_t n, int per_byte)
{
    if (d->n_pend && d->pend_from_bytes != per_byte && pend_resolve(d, k)) return -1;
    d->pend_from_bytes = per_byte;
    for (size_t i = 0; i < n; i++) {
        d->pend[d->n_pend++] = s[i];
        for (;;) {
            int c, inc;
            size_t m = utf8_scan(d->pend, (size_t)d->n_pend, &c, &inc);
            if (inc) break; /* wait for more bytes */
            if (c) { if (emit_char(d, k, (const char *)d->pend, m)) return -1; }
            else if (emit_repl(d, k, per_byte ? m : 1)) return -1;
            memmove(d->pend, d->pend + m, (size_t)d->n_pend - m);
            d->n_pend -= (int)m;
            if (!d->n_pend) break;
        }
    }
    return 0;
}

/* Feeds a valid UTF-8 text piece (character by character). */
static int feed_text(tok_detok *d, sink *k, const char *s, size_t n)
{
    if (pend_resolve(d, k)) return -1;
    for (size_t i = 0; i < n;) {
        int l = tok_utf8_len((unsigned char)s[i]);
        if (!l || i + (size_t)l > n) l = 1;
        if (emit_char(d, k, s + i, (size_t)l)) return -1;
        i += (size_t)l;
    }
    return 0;
}

emoe_status tok_detok_push(tok_detok *d, int32_t id, char **out, size_t *out_len, size_t *out_cap, emoe_err *err)
{
    const tok_tokenizer *t = d->tok;
    sink k = {out, out_len, out_cap};
    if (!*out && sink_put(&k, "", 0)) return emoe_errf(err, EMOE_ENOMEM, "detokenize: out of memory");
    if (id < 0 || id >= t->n_vocab || !t->piece[id]) return EMOE_OK; /* no token: skipped, as decode does */
    if (d->skip_special && t->is_special[id]) return EMOE_OK;
    buf cur = {0}, nx = {0};
    int r = buf_put(&cur, t->piece[id], t->piece_len[id]);
    int64_t idx = d->n_tokens++;
    int fp = fuse_pos(t), done = 0;
    if (!r && !t->n_decs && idx > 0) r = feed_text(d, &k, " ", 1); /* no decoder: tokens joined by spaces */
    for (int i = 0; i < t->n_decs && !r && !done; i++) {
        const tok_dec *dc = &t->decs[i];
        nx.n = 0;
        switch (dc->type) {
        case TOK_DEC_BYTELEVEL: {
            if (i != t->n_decs - 1) { free(cur.p); free(nx.p); return emoe_errf(err, EMOE_EUNSUP, "detokenize: streaming needs ByteLevel last in the decoder chain"); }
            r = bytelevel_bytes(&nx, cur.p, cur.n);
            if (!r) r = feed_bytes(d, &k, (unsigned char *)nx.p, nx.n, 0);
            done = 1;
            break;
        }
        case TOK_DEC_BYTEFALLBACK: {
            unsigned char b;
            if (byte_token(cur.p, cur.n, &b)) { r = feed_bytes(d, &k, &b, 1, 1); done = 1; }
            break;
        }
        case TOK_DEC_FUSE:
            break;
        case TOK_DEC_REPLACE:
            r = replace_all(&nx, cur.p, cur.n, dc->pat, dc->pat_len, dc->content, dc->content_len);
            break;
        case TOK_DEC_METASPACE:
            r = replace_all(&nx, cur.p, cur.n, dc->repl, dc->repl_len,
                            idx == 0 && dc->prepend_scheme != TOK_PREPEND_NEVER ? "" : " ",
                            idx == 0 && dc->prepend_scheme != TOK_PREPEND_NEVER ? 0 : 1);
            break;
        case TOK_DEC_STRIP:
            if (i > fp) break; /* whole-text strip: done in emit_char */
            {
                size_t a, b2;
                strip_range(cur.p, cur.n, dc->strip_char, dc->start, dc->stop, &a, &b2);
                r = buf_put(&nx, cur.p + a, b2 - a);
            }
            break;
        }
        if (!r && !done && dc->type != TOK_DEC_BYTEFALLBACK && dc->type != TOK_DEC_FUSE &&
            !(dc->type == TOK_DEC_STRIP && i > fp)) {
            buf tmp = cur; cur = nx; nx = tmp;
        }
    }
    if (!r && !done) r = feed_text(d, &k, cur.p ? cur.p : "", cur.n);
    free(cur.p);
    free(nx.p);
    if (r) return emoe_errf(err, EMOE_ENOMEM, "detokenize: out of memory");
    return EMOE_OK;
}

emoe_status tok_detok_flush(tok_detok *d, char **out, size_t *out_len, size_t *out_cap, emoe_err *err)
{
    sink k = {out, out_len, out_cap};
    int r = (!*out && sink_put(&k, "", 0)) || pend_resolve(d, &k);
    const tok_dec *ws = whole_strip(d->tok);
    if (!r && d->n_held) {
        /* drop up to `stop` trailing strip chars, emit the rest */
        size_t a, b;
        strip_range(d->held, d->n_held, ws->strip_char, 0, ws->stop, &a, &b);
        r = sink_put(&k, d->held, b);
        d->n_held = 0;
    }
    if (r) return emoe_errf(err, EMOE_ENOMEM, "detokenize: out of memory");
    return EMOE_OK;
}
