/*
 * predictor.h — the expert predictor: learns, online and in bounded memory, which
 * experts the requests of each task route to, and answers "which (layer, expert)
 * pairs should be on the device for the next request of task T" (a plan) and
 * "which experts will layer l+1 use, given layer l's" (lookahead).
 *
 * Plain data in, plans out: the predictor knows nothing of the engine or the
 * cache, so it is tested on traces alone (tests/unit/test_predictor.c) and
 * evaluated offline by replaying traces (predictor/replay.h, `emoe replay`).
 *
 * What it keeps (all sized at pred_init, nothing grows with traffic):
 *  - per task (at most cfg.max_tasks slots; the least recently used slot is
 *    recycled) and per layer: the decayed activation frequency of every expert
 *    across the task's recent requests. A request's own histogram (fraction of
 *    its tokens that used expert e at layer l; each layer sums to top_k) is
 *    folded in at pred_end_request: f = decay*f + (1-decay)*h. This is the
 *    recurrent pattern across consecutive prompts of one task.
 *  - the same statistics over all tasks (the global popular set), used for
 *    tasks never seen (cold start) and for tasks marked insensitive.
 *  - cross-layer transitions: a decayed count of "expert a at layer l and expert
 *    b at layer l+1 in the same token", over all traffic, for lookahead.
 *
 * Plans are recomputed only every cfg.replan_every requests of a task and reused
 * in between; a plan made while the task was unknown (from global statistics) is
 * replaced as soon as the task has statistics of its own.
 *
 * Thread-safety: none; the scheduler's run loop is the only caller.
 */
#ifndef EMOE_PREDICTOR_H
#define EMOE_PREDICTOR_H

#include <stdint.h>

#include "engine/common.h"
#include "predictor/trace.h"

typedef struct pred_config {
    float decay;          /* weight kept by a task's history when a request is folded in, [0,1) */
    float global_decay;   /* the same for the global statistics, [0,1) */
    float trans_decay;    /* transition counts are scaled by this at each request end, (0,1] */
    int replan_every;     /* N: recompute a task's plan every N requests of that task (>= 1) */
    int max_tasks;        /* task slots (bounded memory); >= 1 */
    float global_blend;   /* weight of the global frequency mixed into a known task's scores */
    float min_score;      /* pairs scoring below this are never planned (0 = any observed) */
    float track_alpha;    /* tracker: per-token EWMA rate of an expert's use, (0, 1] */
    float track_prior_w;  /* tracker: weight of the plan's score kept in the keep-score, >= 0 */
} pred_config;

/* Fills c with the defaults (decay 0.5, global_decay 0.8, trans_decay 0.98,
 * replan_every 4, max_tasks 64, global_blend 0.05, min_score 0, track_alpha
 * 0.06, track_prior_w 0.1). */
void pred_config_default(pred_config *c);
/* Checks ranges; the message names the field. */
emoe_status pred_config_check(const pred_config *c, emoe_err *err);

typedef enum pred_plan_source {
    PRED_PLAN_EMPTY = 0,   /* nothing observed yet: the plan selects nothing */
    PRED_PLAN_GLOBAL,      /* cold start: the task is unknown, global popular set */
    PRED_PLAN_INSENSITIVE, /* the task is marked insensitive: global popular set */
    PRED_PLAN_TASK,        /* the task's own statistics */
} pred_plan_source;

/* A plan: per layer, every expert ordered by score (highest first) with its
 * score (the predicted probability that a token of the task uses it, in [0,1];
 * each layer's scores sum to about top_k), and how many of the first entries
 * are selected (to prefetch and to keep resident). */
typedef struct pred_plan {
    int n_layers, n_experts;
    int16_t *order;       /* (n_layers, n_experts) expert ids by descending score */
    float *score;         /* (n_layers, n_experts) indexed by expert id, not by rank */
    int *n_sel;           /* (n_layers) selected count: order[l][0..n_sel[l]) */
    int total_sel;        /* sum of n_sel */
    pred_plan_source source;
    uint64_t version;     /* bumped each time the plan is recomputed */
} pred_plan;

emoe_status pred_plan_init(pred_plan *pl, int n_layers, int n_experts, emoe_err *err);
void pred_plan_free(pred_plan *pl);  /* NULL-safe */
/* 1 if expert e of layer l is selected in the plan. */
int pred_plan_selected(const pred_plan *pl, int layer, int expert);

/* What the scheduler knows of a request before it runs (used to weigh the
 * plan; may be NULL). */
typedef struct pred_prompt_info {
    int n_prompt_tokens;
    int max_new_tokens;
} pred_prompt_info;

typedef struct pred_t pred_t;

/* Creates a predictor for a model of n_layers x n_experts, top_k routing.
 * cfg NULL = defaults. */
emoe_status pred_init(const pred_config *cfg, int n_layers, int n_experts, int top_k,
                      pred_t **out, emoe_err *err);
void pred_free(pred_t *p);  /* NULL-safe */

/* Marks a task insensitive to routing accuracy (its plans use the global
 * popular set, and the planner is not run for it). The mark lives in the task's
 * slot: if the slot is recycled (more than max_tasks tasks), mark it again. */
emoe_status pred_set_insensitive(pred_t *p, const char *task, int insensitive, emoe_err *err);

/* Observes one token's routing for a request of `task`: experts is
 * (n_layers, top_k), entries < 0 or >= n_experts are ignored. The token counts
 * toward the task's current request histogram and the transition table. */
emoe_status pred_observe(pred_t *p, const char *task, const int *experts, emoe_err *err);
/* Same, for one layer only (the engine's routing callback gives layers one by
 * one); call pred_observe_token_end after the token's last layer. */
emoe_status pred_observe_layer(pred_t *p, const char *task, int layer, const int *experts, int k,
                               emoe_err *err);
void pred_observe_token_end(pred_t *p, const char *task);
/* Folds the task's observed tokens since the last call into its decayed
 * statistics (and the global ones). A request with no tokens changes nothing. */
void pred_end_request(pred_t *p, const char *task);

/* Computes (or reuses, see replan_every) the plan for the next request of
 * `task` with `budget` (layer, expert) slots: globally, the highest-scoring
 * pairs over all layers; per_layer != 0, budget/n_layers (rounded down, at least
 * top_k) per layer. The plan is copied into *out (initialised with
 * pred_plan_init for this shape). *replanned says whether it was recomputed. */
emoe_status pred_plan_get(pred_t *p, const char *task, const pred_prompt_info *info, int budget,
                          int per_layer, pred_plan *out, int *replanned, emoe_err *err);

/* Lookahead: scores (n_experts floats, probability-like) for layer+1 given the
 * experts chosen at `layer` for the current token, mixing the transition table
 * with the task's prior. Returns EMOE_EINVAL for the last layer. */
emoe_status pred_next_layer(pred_t *p, const char *task, int layer, const int *experts, int k,
                            float *scores, emoe_err *err);

/* Current score table for a task (n_layers*n_experts): task frequency blended
 * with global (the plan's scores without selection); global if unknown. */
emoe_status pred_scores(pred_t *p, const char *task, float *out, emoe_err *err);

/* The tracker: the keep-score of every (layer, expert) while a request (or a
 * batch) runs, for the cache's eviction order — evict the lowest score. It is
 * seeded with the plan's scores (the task's prior) and follows the request:
 * at each token, layer l's scores decay by (1 - alpha) and its used experts
 * gain alpha (an exponentially weighted per-token use frequency, which mixes
 * recency and frequency); the keep-score adds prior_w * the plan's score.
 * pred_tracker_reuse turns it into an eviction order. Replaying the real
 * traces, that order beats LRU and LFU where pinning the plan and evicting the
 * rest by LRU does not (docs/predictor.md). */
typedef struct pred_tracker {
    int n_layers, n_experts;
    float alpha, prior_w;
    float *ewma;          /* (n_layers, n_experts) */
    float *prior;         /* (n_layers, n_experts) the plan's scores */
} pred_tracker;

emoe_status pred_tracker_init(pred_tracker *t, const pred_t *p, emoe_err *err);
void pred_tracker_free(pred_tracker *t);  /* NULL-safe */
/* Seeds from a plan (NULL: zeros, i.e. no prior). */
void pred_tracker_reset(pred_tracker *t, const pred_plan *plan);
/* One token's experts at one layer (ids out of range are ignored). */
void pred_tracker_observe(pred_tracker *t, int layer, const int *experts, int k);
/* Keep-score (higher = keep longer). */
static inline float pred_tracker_score(const pred_tracker *t, int layer, int expert)
{
    size_t i = (size_t)layer * (size_t)t->n_experts + (size_t)expert;
    return t->ewma[i] + t->prior_w * t->prior[i];
}

/* The eviction order built on the tracker: the expected number of layer steps
 * until (layer, expert) is used again while layer cur_layer is being served.
 * With p its keep-score taken as a per-token use probability, its layer comes
 * up in d steps (d = layers from cur_layer to it, cyclically, 0 < d <= L) and
 * then in each later token with probability p: d + L (1 - p) / p. For the next
 * layer, q_next (NULL or n_experts probabilities from pred_next_layer) sharpens
 * "used by this very token": 1 + (1 - q) L / p. Evict the largest. */
double pred_tracker_reuse(const pred_tracker *t, int cur_layer, int layer, int expert, const float *q_next);

/* Introspection for tests and reports. */
int pred_n_layers(const pred_t *p);
int pred_n_experts(const pred_t *p);
int pred_top_k(const pred_t *p);
/* Requests folded for a task (0 if unknown). */
int pred_task_requests(const pred_t *p, const char *task);
/* Number of task slots in use. */
int pred_n_tasks(const pred_t *p);
/* Times the planner actually ran (for replan_every accounting). */
uint64_t pred_plans_computed(const pred_t *p);

#endif
