/*
 * forecast.h — a learned estimate of "will expert e of layer l be used at the
 * next visit of layer l?", for an eviction order that approximates Belady's
 * with predictions instead of the future.
 *
 * A model routes tokens through the layers cyclically: an expert of layer m is
 * next needed when layer m next runs (the next token, or — for a layer after
 * the one being served — this token). Belady evicts the resident whose next use
 * is furthest. The forecast estimates, for every (layer, expert), the
 * probability p1 that it is used at its layer's next visit, and turns it into
 * an expected distance to its next use in layer steps:
 *
 *     reuse = d + (1 - p1) * L / p_long
 *
 * (d: cyclic distance from the layer being served to the expert's layer,
 * 0 < d <= L; p_long: its long-run per-token use probability, for the visits
 * after the next). The cache evicts the largest.
 *
 * p1 is an online logistic regression on features of the request so far —
 * used at the last visit, the one before, a fast and a slow per-token EWMA of
 * use, the task's prior (its plan score), the path memory's vote for the next
 * token (pred_pathmem_predict_next) and a per-layer bias — trained on
 * every visit of every layer as the stream plays (the label is known once the
 * layer has routed, before the next visit needs the next estimate). For the
 * layers the current token has still to reach (up to `depth` ahead), a
 * second ("near") model adds what is known of this token: the transition
 * table's prediction from its routing at the previous layer (pred_next_layer,
 * for the next layer only) and the routing-path memory's vote
 * (predictor/pathmem.h). Nothing reads the future.
 *
 * Plain data in, numbers out; one instance per cache (a batch shares it).
 */
#ifndef EMOE_PRED_FORECAST_H
#define EMOE_PRED_FORECAST_H

#include <stdint.h>

#include "engine/common.h"

#define PRED_FC_NF 12 /* far-model features (incl. the constant) */
#define PRED_FC_NN 20 /* near-model features: the far ones + transitions + path memory + 1/d */

typedef struct pred_forecast_cfg {
    float lr;          /* SGD step of the logistic models, (0, 1] */
    int depth;         /* near estimates for up to this many layers ahead, >= 1 */
    float fast_alpha;  /* fast EWMA rate, (0, 1] */
    float slow_alpha;  /* slow EWMA rate, (0, 1] */
} pred_forecast_cfg;

void pred_forecast_cfg_default(pred_forecast_cfg *c); /* lr 0.05, depth 3, fast 0.3, slow 0.06 */

typedef struct pred_forecast {
    int L, E;
    pred_forecast_cfg cfg;
    float w_far[PRED_FC_NF], w_near[PRED_FC_NN];
    float *lb_far, *lb_near;   /* (L) per-layer bias */
    uint8_t *u1, *u2;          /* (L*E) used at the last visit / the one before */
    float *ef, *es, *prior;    /* (L*E) fast and slow EWMA, the task's prior */
    float *vn;                 /* (L*E) path-memory vote for the next visit */
    uint8_t *has_vn;           /* (L) vn holds a vote */
    float *p1;                 /* (L*E) far estimate of use at the next visit */
    float *pn;                 /* (L*E) near estimate, valid for layer t when pn_tok[t] == tok */
    uint64_t *pn_tok;          /* (L) */
    float *xs;                 /* (L*depth*E*NN) the near features behind each estimate, for training */
    uint64_t *xs_tok;          /* (L*depth) token the snapshot belongs to */
    uint64_t tok;              /* the current token's number (bumped at layer 0) */
    uint64_t trained;          /* labelled examples seen */
    double logloss_far, logloss_near; /* summed, for reports */
    uint64_t n_far, n_near;
} pred_forecast;

emoe_status pred_forecast_init(pred_forecast *f, int n_layers, int n_experts, const pred_forecast_cfg *cfg,
                               emoe_err *err);
void pred_forecast_free(pred_forecast *f); /* NULL-safe */

/* A request starts: its history is cleared and the EWMAs seeded with prior
 * ((L*E) per-token use probabilities, e.g. the task's plan scores; NULL =
 * zeros). The learned weights are kept. */
void pred_forecast_reset(pred_forecast *f, const float *prior);

/* While this token is at layer target - d (1 <= d <= depth): the near
 * estimate of layer `target` from q (E transition scores, NULL when none) and
 * v (E path-memory votes, NULL when none). Call after the observe of the layer
 * the token is at. */
void pred_forecast_near(pred_forecast *f, int target, int d, const float *q, const float *v);

/* The path memory's vote for the next visit of `layer` (E values; NULL: none). */
void pred_forecast_next(pred_forecast *f, int layer, const float *v);

/* Layer l routed `experts` (k ids) for this token: trains both models on the
 * E labels, then advances the layer's history. */
void pred_forecast_observe(pred_forecast *f, int layer, const int *experts, int k);

/* The estimate that (layer, expert) is used at its layer's next visit (the
 * near one when this token has one for the layer). */
float pred_forecast_p(const pred_forecast *f, int layer, int expert);

/* Expected layer steps to the next use of (layer, expert) while cur_layer is
 * being served (see the header comment); larger = evict first. */
double pred_forecast_reuse(const pred_forecast *f, int cur_layer, int layer, int expert);

#endif
