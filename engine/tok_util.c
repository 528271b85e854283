/*
 * tok_util.c — small building blocks of the tokenizer: hash maps (string -> id,
 * id pair -> merge), UTF-8 helpers and the GPT-2 byte-level table.
 */
#include "engine/tok_internal.h"

#include <stdlib.h>
#include <string.h>

uint64_t tok_hash_bytes(const char *p, size_t n)
{
    /* FNV-1a, then a final avalanche so low bits are usable as an index. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

int tok_strmap_init(tok_strmap *m, size_t expect)
{
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect * 2 + 1);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->klen = calloc(m->cap, sizeof *m->klen);
    m->vals = calloc(m->cap, sizeof *m->vals);
    if (!m->keys || !m->klen || !m->vals) { tok_strmap_free(m); return -1; }
    return 0;
}

void tok_strmap_free(tok_strmap *m)
{
    if (!m) return;
    free(m->keys);
    free(m->klen);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(tok_strmap *m)
{
    tok_strmap nm;
    if (tok_strmap_init(&nm, m->cap) != 0) return -1; /* doubles */
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) tok_strmap_put(&nm, m->keys[i], m->klen[i], m->vals[i]);
    tok_strmap_free(m);
    *m = nm;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const char *k, size_t len, int32_t v)
{
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m) != 0) return -1;
    size_t mask = m->cap - 1, i = tok_hash_bytes(k, len) & mask;
    while (m->keys[i]) {
        if (m->klen[i] == len && memcmp(m->keys[i], k, len) == 0) return 0;
        i = (i + 1) & mask;
    }
    /* Keys of length 0 still need a non-NULL pointer to mark the slot used. */
    m->keys[i] = len ? k : "";
    m->klen[i] = (uint32_t)len;
    m->vals[i] = v;
    m->n++;
    return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *k, size_t len)
{
    if (!m->cap) return -1;
    size_t mask = m->cap - 1, i = tok_hash_bytes(k, len) & mask;
    while (m->keys[i]) {
        if (m->klen[i] == len && memcmp(m->keys[i], k, len) == 0) return m->vals[i];
        i = (i + 1) & mask;
    }
    return -1;
}

static uint64_t pair_hash(uint64_t k)
{
    k ^= k >> 31;
    k *= 0x7fb5d329728ea185ull;
    k ^= k >> 27;
    k *= 0x81dadef4bc2dd44dull;
    k ^= k >> 33;
    return k;
}

int tok_pairmap_init(tok_pairmap *m, size_t expect)
{
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect * 2 + 1);
    m->e = calloc(m->cap, sizeof *m->e);
    if (!m->e) { m->cap = 0; return -1; }
    return 0;
}

void tok_pairmap_free(tok_pairmap *m)
{
    if (!m) return;
    free(m->e);
    memset(m, 0, sizeof *m);
}

int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
    if ((m->n + 1) * 2 > m->cap) {
        tok_pairmap nm;
        if (tok_pairmap_init(&nm, m->cap) != 0) return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->e[i].key) {
                uint64_t k = m->e[i].key - 1;
                tok_pairmap_put(&nm, (int32_t)(k >> 32), (int32_t)(k & 0xffffffffu), m->e[i].rank, m->e[i].merged);
            }
        tok_pairmap_free(m);
        *m = nm;
    }
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t mask = m->cap - 1, i = pair_hash(key) & mask;
    while (m->e[i].key) {
        if (m->e[i].key == key) return 0; /* first (lowest rank) wins */
        i = (i + 1) & mask;
    }
    m->e[i].key = key;
    m->e[i].rank = rank;
    m->e[i].merged = merged;
    m->n++;
    return 0;
}

int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged)
{
    if (!m->cap) return 0;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t mask = m->cap - 1, i = pair_hash(key) & mask;
    while (m->e[i].key) {
        if (m->e[i].key == key) {
            *rank = m->e[i].rank;
            *merged = m->e[i].merged;
            return 1;
        }
        i = (i + 1) & mask;
    }
    return 0;
}

int tok_utf8_len(unsigned char c)
{
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return 2;
    if (c >= 0xe0 && c <= 0xef) return 3;
    if (c >= 0xf0 && c <= 0xf4) return 4;
    return 0;
}

size_t tok_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        int n = tok_utf8_len(c);
        if (!n || i + (size_t)n > len) return i;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c == 0xe0) lo = 0xa0;
        else if (c == 0xed) hi = 0x9f;
        else if (c == 0xf0) lo = 0x90;
        else if (c == 0xf4) hi = 0x8f;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (int k = 2; k < n; k++)
            if ((s[i + (size_t)k] & 0xc0) != 0x80) return i;
        i += (size_t)n;
    }
    return len;
}

int tok_utf8_decode(const char *str, size_t len, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)str;
    int n = tok_utf8_len(s[0]);
    if (n == 0 || (size_t)n > len) { *cp = s[0]; return 1; }
    if (n == 1) { *cp = s[0]; return 1; }
    uint32_t c = s[0] & (0x7f >> n);
    for (int i = 1; i < n; i++) c = (c << 6) | (s[i] & 0x3f);
    *cp = c;
    return n;
}

int tok_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. */
void tok_bytelevel_tables(uint32_t byte_to_cp[256])
{
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        byte_to_cp[b] = keep ? (uint32_t)b : next++;
    }
}

static int16_t bl_inv[324];
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void)
{
    uint32_t t[256];
    tok_bytelevel_tables(t);
    for (int i = 0; i < 324; i++) bl_inv[i] = -1;
    for (int b = 0; b < 256; b++) bl_inv[t[b]] = (int16_t)b;
}

int tok_bytelevel_cp_to_byte(uint32_t cp)
{
    pthread_once(&bl_once, bl_init);
    return cp < 324 ? bl_inv[cp] : -1;
}

int tok_ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t v)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        int32_t *p = realloc(*ids, nc * sizeof *p);
        if (!p) return -1;
        *ids = p;
        *cap = nc;
    }
    (*ids)[(*n)++] = v;
    return 0;
}
