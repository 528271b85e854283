/*
 * moe_plan.h — host-side bookkeeping of the grouped MoE computation, shared by
 * device backends and kept in plain C so it is unit-tested on any machine:
 *
 *  - eng_moe_plan: the (token, pick) pairs of one layer grouped per expert
 *    (a counting sort, experts ascending), the inverse map used to combine the
 *    expert outputs per token, and the list of used experts;
 *  - eng_slot_table: fixed-size slots (the GPU tier of the expert cache) keyed
 *    by (layer, expert), least-recently-used eviction, and pinning: a slot
 *    handed out since the last eng_slot_table_unpin_all() is never evicted, so
 *    all experts of one kernel launch stay in place until it has run.
 */
#ifndef EMOE_MOE_PLAN_H
#define EMOE_MOE_PLAN_H

#include <stdint.h>

/* Top-k of probs (n) in descending order into ids/w (k each); ties go to the
 * lower index (as torch.topk returns on CPU for distinct values). `allowed`
 * (n flags, or NULL) restricts the candidates: the substitute miss policy
 * picks among resident experts only. Shared by every backend so that routing
 * decisions are identical. Unfilled picks (fewer than k allowed) get id -1. */
void eng_route_topk(const float *probs, int n, int k, const unsigned char *allowed, int *ids, float *w);

typedef struct eng_moe_plan {
    int T, k, n_experts;
    int n_pairs;        /* T*k */
    int n_used;         /* experts with at least one pair */
    int *used;          /* (n_used) expert ids, ascending */
    int *start, *count; /* (n_used) pairs [start, start+count) of used[i] */
    int *pair_row;      /* (n_pairs) token row of each pair, grouped by expert */
    int *pair_src;      /* (n_pairs) index t*k+j into the routing arrays */
    int *pair_of;       /* (n_pairs) inverse: position of pair t*k+j in the grouped order */
    int cap_pairs, cap_experts;
} eng_moe_plan;

/* Groups ids (T, k) (each in [0, n_experts)). Reuses the plan's arrays when
 * large enough. 0 on success, -1 on allocation failure or an id out of range. */
int eng_moe_plan_build(eng_moe_plan *p, const int *ids, int T, int k, int n_experts);
void eng_moe_plan_free(eng_moe_plan *p);

typedef struct eng_slot_table {
    int n_slots, n_keys;
    int *key_slot;        /* (n_keys) slot holding the key, -1 if none */
    int *slot_key;        /* (n_slots) key held, -1 if empty */
    uint64_t *slot_tick;  /* (n_slots) last use, for LRU */
    unsigned char *slot_pinned; /* (n_slots) */
    int n_pinned;
    uint64_t tick;
    uint64_t hits, misses, evictions;
} eng_slot_table;

/* n_slots >= 1 slots for keys in [0, n_keys). 0 or -1 (allocation). */
int eng_slot_table_init(eng_slot_table *t, int n_slots, int n_keys);
void eng_slot_table_free(eng_slot_table *t);
/* Returns the slot for key and pins it; *miss = 1 when the key was not
 * resident (the caller must fill the slot; on failure eng_slot_table_drop).
 * On a miss the least recently used unpinned slot is taken (its old key is
 * reported in *evicted, else -1). Returns -1 when every slot is pinned or the
 * key is out of range. */
int eng_slot_table_get(eng_slot_table *t, int key, int *miss, int *evicted);
/* Forgets the key held by slot (e.g. its upload failed). */
void eng_slot_table_drop(eng_slot_table *t, int slot);
/* Unpins every slot (after the kernels that read them have completed). */
void eng_slot_table_unpin_all(eng_slot_table *t);
/* Slot of key or -1; no pinning, no statistics. */
int eng_slot_table_peek(const eng_slot_table *t, int key);

#endif
