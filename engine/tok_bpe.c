/*
 * tok_bpe.c — the BPE model: one pre-token piece -> ids.
 *
 * Symbols start as one per character (one per byte for byte-level tokenizers,
 * whose 256 byte-chars are looked up in a table). Merges are applied by rank
 * with a binary min-heap of candidate pairs ordered by (rank, position), the
 * same order as Hugging Face's Word::merge_all; stale heap entries are
 * detected and skipped when popped, so a piece of n symbols costs O(n log n)
 * rather than the quadratic rescan of naive BPE.
 *
 * Pieces shorter than TOK_CACHE_MAXLEN are memoised in an open-addressing
 * cache (mutex-guarded; when full it stops inserting, as the reference does).
 */
#include "engine/tok_internal.h"

#include <stdlib.h>
#include <string.h>

#define TOK_CACHE_MAXLEN 256
#define TOK_CACHE_CAP (1u << 17) /* slots; at most half are used */

typedef struct sym {
    int32_t id;
    int32_t prev, next; /* -1 = none */
    uint32_t len;       /* bytes; 0 = merged away */
} sym;

typedef struct cand {
    int32_t rank, pos, merged;
} cand;

static int cand_less(const cand *a, const cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

typedef struct heap {
    cand *v;
    size_t n, cap;
} heap;

static int heap_push(heap *h, cand c)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        cand *p = realloc(h->v, nc * sizeof *p);
        if (!p) return -1;
        h->v = p;
        h->cap = nc;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = c;
    return 0;
}

static cand heap_pop(heap *h)
{
    cand top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < h->n && cand_less(&h->v[l], best)) { m = l; best = &h->v[l]; }
        if (r < h->n && cand_less(&h->v[r], best)) m = r;
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static int add_sym(sym **s, size_t *n, size_t *cap, int32_t id, uint32_t len)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        sym *p = realloc(*s, nc * sizeof *p);
        if (!p) return -1;
        *s = p;
        *cap = nc;
    }
    sym *x = &(*s)[*n];
    x->id = id;
    x->len = len;
    x->prev = (int32_t)*n - 1;
    x->next = -1;
    if (*n) (*s)[*n - 1].next = (int32_t)*n;
    (*n)++;
    return 0;
}

static void try_pair(const tok_tokenizer *t, heap *h, const sym *s, int32_t pos, int *oom)
{
    int32_t nx = s[pos].next, rank, merged;
    if (nx < 0) return;
    if (tok_pairmap_get(&t->merges, s[pos].id, s[nx].id, &rank, &merged)) {
        cand c = {rank, pos, merged};
        if (heap_push(h, c)) *oom = 1;
    }
}

/* Maps raw bytes to their byte-level string (each byte -> one char). */
static char *bytelevel_str(const char *s, size_t len, size_t *out_len)
{
    uint32_t b2c[256];
    char *o = malloc(len * 2 + 1);
    if (!o) return NULL;
    tok_bytelevel_tables(b2c);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) k += (size_t)tok_utf8_encode(b2c[(unsigned char)s[i]], o + k);
    o[k] = 0;
    *out_len = k;
    return o;
}

/* The uncached BPE of one piece. */
static int bpe_word(tok_tokenizer *t, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
    sym *sy = NULL;
    size_t ns = 0, scap = 0;
    heap h = {0};
    int oom = 0;
    if (t->ignore_merges) {
        int32_t whole = -1;
        if (t->bytelevel) {
            size_t bl;
            char *b = bytelevel_str(s, len, &bl);
            if (!b) return -1;
            whole = tok_strmap_get(&t->vocab, b, bl);
            free(b);
        } else {
            whole = tok_strmap_get(&t->vocab, s, len);
        }
        if (whole >= 0) return tok_ids_push(ids, n, cap, whole);
    }
    int32_t unk = -1;
    uint32_t unk_len = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t cl;
        int32_t id;
        char tmp[4];
        const char *cs;
        size_t csl;
        if (t->bytelevel) {
            cl = 1;
            id = t->bl_char_id[(unsigned char)s[i]];
            uint32_t b2c[256];
            if (id < 0) { tok_bytelevel_tables(b2c); csl = (size_t)tok_utf8_encode(b2c[(unsigned char)s[i]], tmp); cs = tmp; }
            else { cs = NULL; csl = 0; }
        } else {
            cl = (uint32_t)tok_utf8_len((unsigned char)s[i]);
            if (cl == 0 || i + cl > len) cl = 1;
            id = tok_strmap_get(&t->vocab, s + i, cl);
            cs = s + i;
            csl = cl;
        }
        if (id >= 0) {
            if (unk >= 0) { if (add_sym(&sy, &ns, &scap, unk, unk_len)) goto oom; unk = -1; }
            if (add_sym(&sy, &ns, &scap, id, cl)) goto oom;
        } else {
            int done = 0;
            if (t->byte_fallback) {
                int ok = 1;
                for (size_t k = 0; k < csl; k++)
                    if (t->byte_tok[(unsigned char)cs[k]] < 0) ok = 0;
                if (ok) {
                    for (size_t k = 0; k < csl; k++)
                        if (add_sym(&sy, &ns, &scap, t->byte_tok[(unsigned char)cs[k]], 1)) goto oom;
                    done = 1;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk >= 0 && t->fuse_unk) unk_len += cl;
                else {
                    if (unk >= 0 && add_sym(&sy, &ns, &scap, unk, unk_len)) goto oom;
                    unk = t->unk_id;
                    unk_len = cl;
                }
            }
        }
        i += cl;
    }
    if (unk >= 0 && add_sym(&sy, &ns, &scap, unk, unk_len)) goto oom;

    for (size_t k = 0; k + 1 < ns; k++) try_pair(t, &h, sy, (int32_t)k, &oom);
    while (h.n && !oom) {
        cand c = heap_pop(&h);
        sym *a = &sy[c.pos];
        if (a->len == 0 || a->next < 0) continue;
        sym *b = &sy[a->next];
        int32_t rank, merged;
        if (!tok_pairmap_get(&t->merges, a->id, b->id, &rank, &merged) || merged != c.merged) continue;
        a->id = merged;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) sy[a->next].prev = c.pos;
        if (a->prev >= 0) try_pair(t, &h, sy, a->prev, &oom);
        try_pair(t, &h, sy, c.pos, &oom);
    }
    if (oom) goto oom;
    for (int32_t k = ns ? 0 : -1; k >= 0; k = sy[k].next)
        if (tok_ids_push(ids, n, cap, sy[k].id)) goto oom;
    free(sy);
    free(h.v);
    return 0;
oom:
    free(sy);
    free(h.v);
    return -1;
}

static void cache_insert(tok_tokenizer *t, const char *s, size_t len, const int32_t *ids, size_t n)
{
    pthread_mutex_lock(&t->cache_mu);
    if (!t->cache) {
        t->cache = calloc(TOK_CACHE_CAP, sizeof *t->cache);
        t->cache_cap = t->cache ? TOK_CACHE_CAP : 0;
    }
    if (!t->cache || t->cache_n * 2 >= t->cache_cap) goto out;
    size_t mask = t->cache_cap - 1, i = tok_hash_bytes(s, len) & mask;
    while (t->cache[i].key) {
        if (t->cache[i].klen == len && !memcmp(t->cache[i].key, s, len)) goto out;
        i = (i + 1) & mask;
    }
    char *k = malloc(len ? len : 1);
    int32_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!k || !v) { free(k); free(v); goto out; }
    memcpy(k, s, len);
    memcpy(v, ids, n * sizeof *v);
    t->cache[i].key = k;
    t->cache[i].klen = (uint32_t)len;
    t->cache[i].ids = v;
    t->cache[i].n = (uint32_t)n;
    t->cache_n++;
out:
    pthread_mutex_unlock(&t->cache_mu);
}

static int cache_lookup(tok_tokenizer *t, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap,
                        int *found)
{
    int rc = 0;
    *found = 0;
    pthread_mutex_lock(&t->cache_mu);
    if (t->cache) {
        size_t mask = t->cache_cap - 1, i = tok_hash_bytes(s, len) & mask;
        while (t->cache[i].key) {
            tok_cache_ent *e = &t->cache[i];
            if (e->klen == len && !memcmp(e->key, s, len)) {
                for (uint32_t k = 0; k < e->n && rc == 0; k++) rc = tok_ids_push(ids, n, cap, e->ids[k]);
                *found = 1;
                break;
            }
            i = (i + 1) & mask;
        }
    }
    pthread_mutex_unlock(&t->cache_mu);
    return rc;
}

int tok_bpe_piece(tok_tokenizer *t, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
    if (len == 0) return 0;
    int cacheable = len < TOK_CACHE_MAXLEN, found = 0;
    if (cacheable) {
        if (cache_lookup(t, s, len, ids, n, cap, &found)) return -1;
        if (found) return 0;
    }
    size_t n0 = *n;
    if (bpe_word(t, s, len, ids, n, cap)) return -1;
    if (cacheable) cache_insert(t, s, len, *ids + n0, *n - n0);
    return 0;
}

void tok_cache_free(tok_tokenizer *t)
{
    if (!t->cache) return;
    for (size_t i = 0; i < t->cache_cap; i++) {
        free(t->cache[i].key);
        free(t->cache[i].ids);
    }
    free(t->cache);
    t->cache = NULL;
    t->cache_n = t->cache_cap = 0;
}
