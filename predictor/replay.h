/*
 * replay.h — the offline policy evaluator: replays routing traces through a
 * simulated device tier of the expert cache and counts hits, misses and the
 * bytes that would be loaded, under LRU, LFU, Belady (the demand-fetch upper
 * bound, which reads the future of the trace), forecast (Belady approximated
 * with a learned estimate of next use, predictor/forecast.h, with confident
 * prefetch within a shadow LRU's loads) or the predictor: at each
 * request start the task's plan is prefetched and seeds a pred_tracker; misses
 * evict the resident with the largest expected reuse distance
 * (pred_tracker_reuse: the tracker's per-token use probability, the layer's
 * cyclic distance, and the next layer's lookahead from the transition table).
 *
 * The cache holds (layer, expert) slots. Budget X means X of all
 * n_layers*n_experts slots: by default one global pool shared by all layers
 * (like the engine's byte budget: an expert of any layer may take any slot);
 * with per_layer each layer owns floor(X*n_experts) slots. Either way a pool
 * holds at least top_k slots, since one token's experts at a layer must be
 * resident together; the experts of the step being served are never evicted.
 *
 * The access stream: requests in the chosen order; for each token, for each
 * layer, its top_k experts. With prefill_step, a request's prefill tokens are
 * one engine step instead (as the engine runs a prompt): at each layer every
 * distinct expert of the prompt is accessed once, in order of first use. Every access is a hit (resident) or a miss (loaded
 * on demand, evicting a victim). Prefetches (predictor only) load experts ahead
 * of use: they are not misses but they are counted in loads and bytes.
 */
#ifndef EMOE_PRED_REPLAY_H
#define EMOE_PRED_REPLAY_H

#include <stdint.h>

#include "engine/common.h"
#include "predictor/predictor.h"
#include "predictor/trace.h"

typedef enum pred_replay_policy {
    PRED_REPLAY_LRU = 0,
    PRED_REPLAY_LFU,        /* evict the fewest accesses so far (counts survive eviction), ties LRU */
    PRED_REPLAY_BELADY,     /* evict the resident used furthest in the future */
    PRED_REPLAY_PREDICTOR,
    PRED_REPLAY_LOOKAHEAD,  /* the predictor plus the transition-based lookahead: at each
                             * layer, prefetch the top-M experts the transitions predict for
                             * the next one (M = lookahead, top_k when 0) */
    PRED_REPLAY_FORECAST,   /* Belady approximated with predictions (predictor/forecast.h): evict
                             * the largest expected distance to the next use, from a learned
                             * estimate of use at the layer's next visit; prefetch the next
                             * layer's experts whose estimate is at least fc_threshold when they
                             * are expected sooner than the victim they displace */
} pred_replay_policy;

typedef enum pred_replay_order {
    PRED_REPLAY_ORDER_FILE = 0,     /* as given (trace after trace, line order) */
    PRED_REPLAY_ORDER_INTERLEAVED,  /* round-robin over tasks: 1st of each task, 2nd of each, ... */
    PRED_REPLAY_ORDER_GROUPED,      /* all requests of the first task, then the next task, ... */
} pred_replay_order;

/* How the predictor policy evicts. SCORE: the largest pred_tracker_reuse
 * distance (from the plan-seeded per-token EWMA of use), ties LRU; the plan is
 * prefetched at request start but not pinned. PIN_LRU: the plan's experts are pinned for the
 * request and the rest evicted LRU (kept for comparison: it loses to LRU). */
typedef enum pred_replay_evict {
    PRED_REPLAY_EVICT_SCORE = 0,
    PRED_REPLAY_EVICT_PIN_LRU,
} pred_replay_evict;

typedef struct pred_replay_opts {
    pred_replay_policy policy;
    pred_replay_order order;
    double budget;          /* fraction of all (layer, expert) slots, (0, 1] */
    int per_layer;          /* 0: one global pool; 1: a pool per layer */
    uint64_t expert_bytes;  /* bytes of one expert (for bytes_loaded) */
    int phases;             /* bit 0: prefill tokens, bit 1: decode tokens (0 = both) */
    int prefill_step;       /* a request's prefill is one step: per layer, each distinct expert once */
    /* predictor policy */
    pred_config pcfg;       /* incl. the tracker's track_alpha / track_prior_w */
    pred_replay_evict evict;
    double pin_frac;        /* share of the capacity the plan selects (prefetched; pinned in PIN_LRU) */
    int no_prior;           /* ablation: ignore the plan (no prefetch, tracker seeded with zeros) */
    int lookahead;          /* prefetch the top-M predicted experts of layer l+1 (0 = off) */
    double la_blend;        /* lookahead ranks by transition P + la_blend * the tracker's keep-score at l+1 */
    int la_new;             /* 1: the M prefetched are the best-ranked experts not already resident */
    /* forecast policy */
    double fc_threshold;    /* prefetch a next-layer expert when its estimate is >= this (> 1: never; default 0.3) */
    int fc_max;             /* at most this many prefetches per layer (0 = top_k) */
    int fc_plan;            /* 1: also prefetch the task's plan (pin_frac) at request start */
    double fc_lr;           /* the logistic models' SGD step */
    int fc_depth;           /* near estimates for up to this many layers ahead (default 3) */
    int fc_history;         /* path memory: tokens remembered (default 4096) */
    int fc_matches;         /* path memory: best matches that vote (default 16) */
    double fc_gamma;        /* path memory: weight of the earlier layers' match (default 0.8) */
    double fc_precision;    /* > 0: adapt the threshold so that this share of the prefetches is used
                             * at their layer's next run (fc_threshold is the start; default 0.6) */
    int fc_lru_budget;      /* 1: prefetch only while the loads so far stay below the misses a shadow
                             * LRU directory of the same size has made (LRU's disk traffic as budget; default 1) */
    int fc_stale;           /* 1: evict prefetched experts whose layer ran without them first */
    double fc_ctx;          /* path memory: weight of the previous tokens' match (default 0.3) */
    double fc_power;        /* path memory: a voter's weight is its match score to this power (default 4) */
} pred_replay_opts;

/* Defaults: LRU, interleaved, budget 0.5, global pool, expert_bytes 1, both
 * phases, predictor defaults, SCORE eviction, pin_frac 0.5, no lookahead. */
void pred_replay_opts_default(pred_replay_opts *o);

typedef struct pred_replay_result {
    int capacity;           /* slots in the cache (sum over pools) */
    int n_layers, n_experts, top_k;
    int n_requests;
    uint64_t tokens;
    uint64_t accesses;      /* tokens * layers * top_k */
    uint64_t hits, misses;
    uint64_t prefetches;    /* experts loaded ahead of use */
    uint64_t prefetch_used; /* prefetched experts that were accessed before eviction */
    uint64_t loads;         /* misses + prefetches */
    uint64_t bytes_loaded;  /* loads * expert_bytes */
    double hit_rate;        /* hits / accesses */
    double misses_per_token;
    /* predictor only: per layer, summed over requests: |plan ∩ used| / |plan|
     * and / |used| (sets of experts per request), and the share of the layer's
     * accesses that fell in the plan (coverage). NULL for other policies. */
    double *precision;      /* (n_layers) */
    double *recall;         /* (n_layers) */
    double *coverage;       /* (n_layers) */
    double precision_all, recall_all, coverage_all;
    uint64_t plans_computed;
    /* lookahead (policy lookahead or lookahead > 0): the top_k experts the
     * transitions predict for layer l+1 against the ones routed there */
    uint64_t lookahead_checked, lookahead_hits;
    double lookahead_accuracy;  /* hits / checked: share of next-layer experts predicted */
    /* forecast: mean log-loss of the far and near estimates (0 otherwise) */
    double fc_logloss_far, fc_logloss_near;
    double fc_threshold_end;    /* the prefetch threshold at the end (moves with fc_precision) */
} pred_replay_result;

void pred_replay_result_free(pred_replay_result *r);  /* NULL-safe */

/* Replays the requests of traces[0..n) (all of one shape) under opts into *res.
 * Fails on an empty input, mixed shapes, or bad options (message names them). */
emoe_status pred_replay_run(const pred_trace *const *traces, int n_traces,
                            const pred_replay_opts *opts, pred_replay_result *res, emoe_err *err);

const char *pred_replay_policy_name(pred_replay_policy p);
int pred_replay_policy_parse(const char *s, pred_replay_policy *out);
int pred_replay_order_parse(const char *s, pred_replay_order *out);
const char *pred_replay_order_name(pred_replay_order o);

#endif
