/*
 * gram_vocab.c — the token side of constrained decoding. The vocabulary's
 * byte strings are sorted once; each step walks them in order with a stack of
 * automaton states, one per prefix length, so tokens sharing a prefix share
 * its work, and once a prefix is rejected every token starting with it is
 * skipped without feeding a byte (the longest-common-prefix array says which).
 */
#include "engine/gram_internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRAM_TOK_MAX 128   /* longer tokens are never allowed */

struct gram_vocab {
    int n;               /* ids 0..n-1 */
    int n_sorted;
    int32_t *order;      /* ids with bytes, sorted by their bytes */
    uint16_t *lcp;       /* lcp[i]: common prefix of order[i] and order[i-1] */
    uint32_t *off;       /* by id: bytes in arena */
    uint16_t *len;       /* by id: 0 = no bytes (never allowed) */
    char *arena;
    uint16_t *chars;     /* by id: characters if the token is plain string content, else 0 */
    int eos[16];
    int n_eos;
};

typedef struct scratch {
    gram_state *st;      /* GRAM_TOK_MAX + 1 states */
    uint8_t *allowed;    /* by id */
    int n;
} scratch;

void gram_scratch_free(void *p)
{
    scratch *sc = p;
    if (!sc) return;
    free(sc->st);
    free(sc->allowed);
    free(sc);
}

static _Thread_local const gram_vocab *sort_v;
static int cmp_tok(const void *a, const void *b)
{
    int x = *(const int32_t *)a, y = *(const int32_t *)b;
    const gram_vocab *v = sort_v;
    int lx = v->len[x], ly = v->len[y];
    int c = memcmp(v->arena + v->off[x], v->arena + v->off[y], (size_t)(lx < ly ? lx : ly));
    if (c) return c;
    if (lx != ly) return lx - ly;
    return x - y;
}

/* Characters in s if it is plain JSON string content (complete UTF-8, no
 * quote, backslash or control byte), else 0. */
static int plain_chars(const unsigned char *s, size_t n)
{
    int chars = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0x20 || c == '"' || c == '\\') return 0;
        if (c < 0x80) k = 1;
        else if (c >= 0xc2 && c <= 0xdf) k = 2;
        else if (c >= 0xe0 && c <= 0xef) { k = 3; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
        else if (c >= 0xf0 && c <= 0xf4) { k = 4; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
        else return 0;
        if (i + k > n) return 0;
        for (size_t j = 1; j < k; j++) {
            unsigned char x = s[i + j];
            if (x < (j == 1 ? lo : 0x80) || x > (j == 1 ? hi : 0xbf)) return 0;
        }
        i += k;
        chars++;
    }
    return chars > 65535 ? 0 : chars;
}

gram_vocab *gram_vocab_new(int vocab, int (*bytes)(void *ctx, int id, emoe_buf *out), void *ctx, const int *eos_ids,
                           int n_eos)
{
    gram_vocab *v = calloc(1, sizeof *v);
    if (!v || vocab <= 0) { free(v); return NULL; }
    v->n = vocab;
    v->off = calloc((size_t)vocab, sizeof *v->off);
    v->len = calloc((size_t)vocab, sizeof *v->len);
    v->order = malloc((size_t)vocab * sizeof *v->order);
    v->lcp = calloc((size_t)vocab, sizeof *v->lcp);
    v->chars = calloc((size_t)vocab, sizeof *v->chars);
    emoe_buf arena = {0}, b = {0};
    if (!v->off || !v->len || !v->order || !v->lcp || !v->chars) goto bad;
    for (int i = 0; i < n_eos && v->n_eos < 16; i++) v->eos[v->n_eos++] = eos_ids[i];
    for (int id = 0; id < vocab; id++) {
        if (bytes(ctx, id, &b) || b.n == 0 || b.n > GRAM_TOK_MAX) continue;
        if (arena.n > UINT32_MAX - b.n) break;
        v->off[id] = (uint32_t)arena.n;
        v->len[id] = (uint16_t)b.n;
        if (emoe_buf_put(&arena, b.p, b.n)) goto bad;
        v->order[v->n_sorted++] = id;
        v->chars[id] = (uint16_t)plain_chars((const unsigned char *)b.p, b.n);
    }
    free(b.p);
    b.p = NULL;
    v->arena = arena.p;
    arena.p = NULL;
    if (!v->arena) v->n_sorted = 0;
    sort_v = v;
    qsort(v->order, (size_t)v->n_sorted, sizeof *v->order, cmp_tok);
    for (int i = 1; i < v->n_sorted; i++) {
        int x = v->order[i - 1], y = v->order[i], k = 0;
        int m = v->len[x] < v->len[y] ? v->len[x] : v->len[y];
        while (k < m && v->arena[v->off[x] + k] == v->arena[v->off[y] + k]) k++;
        v->lcp[i] = (uint16_t)k;
    }
    return v;
bad:
    free(arena.p);
    free(b.p);
    gram_vocab_free(v);
    return NULL;
}

void gram_vocab_free(gram_vocab *v)
{
    if (!v) return;
    free(v->order);
    free(v->lcp);
    free(v->off);
    free(v->len);
    free(v->arena);
    free(v->chars);
    free(v);
}

static int is_eos(const gram_vocab *v, int id)
{
    for (int i = 0; i < v->n_eos; i++)
        if (v->eos[i] == id) return 1;
    return 0;
}

int gram_state_mask(gram_state *s, float *logits, int vocab)
{
    const gram_vocab *v = s->v;
    if (!v) return 0;
    scratch *sc = s->scratch;
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc) return 0;
        sc->st = malloc((GRAM_TOK_MAX + 1) * sizeof *sc->st);
        sc->allowed = malloc((size_t)v->n);
        sc->n = v->n;
        s->scratch = sc;
        if (!sc->st || !sc->allowed) return 0;
    }
    if (!sc->st || !sc->allowed) return 0;
    memset(sc->allowed, 0, (size_t)v->n);
    gram_state *st = sc->st;
    gram_state_copy(&st[0], s);
    int dead = INT_MAX, count = 0;
    const gframe *top = s->depth ? &s->f[s->depth - 1] : NULL;
    if (top && top->kind == GN_STRING && top->ph == 1 && !top->need) {
        /* Inside a string, most tokens are plain content: allowed while the
         * length fits, without feeding their bytes. The others (quotes,
         * escapes, partial characters) are fed one by one. */
        int room = top->n->max_len - top->cnt;
        for (int i = 0; i < v->n_sorted; i++) {
            int id = v->order[i];
            int ok;
            if (v->chars[id]) ok = v->chars[id] <= room;
            else {
                gram_state_copy(&st[1], s);
                ok = gram_state_feed(&st[1], v->arena + v->off[id], v->len[id]) == 0;
            }
            if (ok) { sc->allowed[id] = 1; count++; }
        }
    } else if (!gram_state_done(s)) {
        for (int i = 0; i < v->n_sorted; i++) {
            int id = v->order[i], L = v->lcp[i], len = v->len[id];
            if (L >= dead) continue; /* starts with a rejected prefix */
            dead = INT_MAX;
            const char *b = v->arena + v->off[id];
            int d = L;
            for (; d < len; d++) {
                gram_state_copy(&st[d + 1], &st[d]);
                if (gram_feed_byte(&st[d + 1], (unsigned char)b[d])) { dead = d + 1; break; }
            }
            if (d == len) { sc->allowed[id] = 1; count++; }
        }
    }
    int can_end = gram_state_can_end(s);
    for (int i = 0; i < v->n_eos; i++)
        if (v->eos[i] >= 0 && v->eos[i] < v->n) {
            if (can_end && !sc->allowed[v->eos[i]]) count++;
            if (!can_end && sc->allowed[v->eos[i]]) count--;
            sc->allowed[v->eos[i]] = (uint8_t)can_end;
        }
    (void)count;
    int n_ok = 0; /* only ids the logits have count (a tokenizer may be larger than the model) */
    for (int id = 0; id < vocab; id++)
        if (id >= v->n || !sc->allowed[id]) logits[id] = -INFINITY;
        else n_ok++;
    return n_ok;
}

int gram_state_accept_token(gram_state *s, int id)
{
    const gram_vocab *v = s->v;
    if (!v || id < 0 || id >= v->n) return -1;
    if (is_eos(v, id)) return gram_state_can_end(s) ? 1 : -1;
    if (!v->len[id]) return -1;
    if (gram_state_feed(s, v->arena + v->off[id], v->len[id])) return -1;
    return gram_state_done(s) ? 1 : 0;
}
