/* moe_plan.c — see moe_plan.h. */
#include "engine/moe_plan.h"

#include <stdlib.h>
#include <string.h>

static int grow(int **a, int *cap, int n)
{
    (void)cap;
    int *b = realloc(*a, sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!b) return -1;
    *a = b;
    return 0;
}

void eng_route_topk(const float *probs, int n, int k, const unsigned char *allowed, int *ids, float *w)
{
    for (int j = 0; j < k; j++) { ids[j] = -1; w[j] = -1; }
    for (int x = 0; x < n; x++) {
        if (allowed && !allowed[x]) continue;
        float p = probs[x];
        int j = k;
        while (j > 0 && (ids[j - 1] < 0 || p > w[j - 1])) j--;
        if (j >= k) continue;
        for (int m = k - 1; m > j; m--) { ids[m] = ids[m - 1]; w[m] = w[m - 1]; }
        ids[j] = x;
        w[j] = p;
    }
}

int eng_moe_plan_build(eng_moe_plan *p, const int *ids, int T, int k, int n_experts)
{
    if (T < 0 || k <= 0 || n_experts <= 0 || (T > 0 && k > INT32_MAX / T)) return -1;
    int P = T * k;
    if (P > p->cap_pairs) {
        int c = P;
        if (grow(&p->pair_row, &c, P) || grow(&p->pair_src, &c, P) || grow(&p->pair_of, &c, P)) return -1;
        p->cap_pairs = P;
    }
    if (n_experts > p->cap_experts) {
        int c = n_experts;
        if (grow(&p->used, &c, n_experts) || grow(&p->start, &c, n_experts) || grow(&p->count, &c, n_experts)) return -1;
        p->cap_experts = n_experts;
    }
    for (int i = 0; i < P; i++)
        if (ids[i] < 0 || ids[i] >= n_experts) return -1;
    p->T = T;
    p->k = k;
    p->n_experts = n_experts;
    p->n_pairs = P;
    /* count[x] and start[x] indexed by expert first, then compacted to used. */
    int *cnt = p->count, *st = p->start;
    memset(cnt, 0, sizeof(int) * (size_t)n_experts);
    for (int i = 0; i < P; i++) cnt[ids[i]]++;
    int acc = 0;
    for (int x = 0; x < n_experts; x++) { st[x] = acc; acc += cnt[x]; }
    /* Stable within an expert: pairs keep token order. */
    int *fill = p->used; /* scratch: next position per expert */
    memcpy(fill, st, sizeof(int) * (size_t)n_experts);
    for (int i = 0; i < P; i++) {
        int at = fill[ids[i]]++;
        p->pair_row[at] = i / k;
        p->pair_src[at] = i;
        p->pair_of[i] = at;
    }
    int nu = 0;
    for (int x = 0; x < n_experts; x++)
        if (cnt[x]) {
            p->used[nu] = x;
            p->start[nu] = st[x];
            p->count[nu] = cnt[x];
            nu++;
        }
    p->n_used = nu;
    return 0;
}

void eng_moe_plan_free(eng_moe_plan *p)
{
    if (!p) return;
    free(p->used);
    free(p->start);
    free(p->count);
    free(p->pair_row);
    free(p->pair_src);
    free(p->pair_of);
    memset(p, 0, sizeof *p);
}

int eng_slot_table_init(eng_slot_table *t, int n_slots, int n_keys)
{
    memset(t, 0, sizeof *t);
    if (n_slots < 1 || n_keys < 1) return -1;
    t->n_slots = n_slots;
    t->n_keys = n_keys;
    t->key_slot = malloc(sizeof(int) * (size_t)n_keys);
    t->slot_key = malloc(sizeof(int) * (size_t)n_slots);
    t->slot_tick = calloc((size_t)n_slots, sizeof(uint64_t));
    t->slot_pinned = calloc((size_t)n_slots, 1);
    if (!t->key_slot || !t->slot_key || !t->slot_tick || !t->slot_pinned) { eng_slot_table_free(t); return -1; }
    for (int i = 0; i < n_keys; i++) t->key_slot[i] = -1;
    for (int i = 0; i < n_slots; i++) t->slot_key[i] = -1;
    return 0;
}

void eng_slot_table_free(eng_slot_table *t)
{
    if (!t) return;
    free(t->key_slot);
    free(t->slot_key);
    free(t->slot_tick);
    free(t->slot_pinned);
    memset(t, 0, sizeof *t);
}

static void pin(eng_slot_table *t, int s)
{
    if (!t->slot_pinned[s]) { t->slot_pinned[s] = 1; t->n_pinned++; }
    t->slot_tick[s] = ++t->tick;
}

int eng_slot_table_get(eng_slot_table *t, int key, int *miss, int *evicted)
{
    *miss = 0;
    *evicted = -1;
    if (key < 0 || key >= t->n_keys) return -1;
    int s = t->key_slot[key];
    if (s >= 0) {
        t->hits++;
        pin(t, s);
        return s;
    }
    /* Empty slots first (tick 0 and key -1), else the least recently used unpinned one. */
    int best = -1;
    for (int i = 0; i < t->n_slots; i++) {
        if (t->slot_pinned[i]) continue;
        if (t->slot_key[i] < 0) { best = i; break; }
        if (best < 0 || t->slot_tick[i] < t->slot_tick[best]) best = i;
    }
    if (best < 0) return -1;
    if (t->slot_key[best] >= 0) {
        *evicted = t->slot_key[best];
        t->key_slot[t->slot_key[best]] = -1;
        t->evictions++;
    }
    t->slot_key[best] = key;
    t->key_slot[key] = best;
    t->misses++;
    *miss = 1;
    pin(t, best);
    return best;
}

void eng_slot_table_drop(eng_slot_table *t, int slot)
{
    if (slot < 0 || slot >= t->n_slots) return;
    if (t->slot_key[slot] >= 0) t->key_slot[t->slot_key[slot]] = -1;
    t->slot_key[slot] = -1;
    t->slot_tick[slot] = 0;
}

void eng_slot_table_unpin_all(eng_slot_table *t)
{
    memset(t->slot_pinned, 0, (size_t)t->n_slots);
    t->n_pinned = 0;
}

int eng_slot_table_peek(const eng_slot_table *t, int key)
{
    return key >= 0 && key < t->n_keys ? t->key_slot[key] : -1;
}
