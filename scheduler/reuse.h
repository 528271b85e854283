/*
 * reuse.h — the serving loop's eviction order for an engine that visits its
 * layers cyclically (layer 0..L-1 of step s, then layer 0 of step s+1, ...):
 * the expected time until each (layer, expert) is needed again, in layer
 * visits, from where the engine is now.
 *
 * An expert of layer m is next needed at m's next visit, d layers from the
 * layer being served (0 < d <= L; the layer being served and the one just
 * finished come back only a full step later), with probability P, and then
 * at each later visit with the same probability: d + L (1 - P) / P. P is an
 * EWMA over the layer's visits of "the expert was used at the visit" (the
 * batch's rows together: the running requests' own recent routing), raised
 * to a prediction for the coming visit when one was made (speculative gating
 * for the next layer, or the next step's expected use). Evict the largest.
 * The experts routed at the visit in progress are never chosen while others
 * are available (the forward pass is about to acquire them). An expert
 * loaded for a lookahead keeps its prediction's probability until its layer
 * has run (d = 1 and q ~ 0.7: about 3 visits, among the last to go).
 *
 * The keep-score (higher = keep longer) is minus that time; it also gates
 * speculative loads (cache_prefetch_gated with reuse_keep_at of the loaded
 * expert, less a margin chosen by the caller).
 *
 * Single-threaded: the scheduler's run-loop thread (the routing callback, the
 * cache's eviction hint during acquire/prefetch, the step-end hook).
 */
#ifndef EMOE_REUSE_H
#define EMOE_REUSE_H

#include <stdint.h>

#include "engine/common.h"

typedef struct reuse_order {
    int L, E;
    float alpha;        /* EWMA rate per visit of a layer */
    float *p;           /* (L*E) use probability at a visit, folded at each visit's end */
    float *q;           /* (L*E) prediction for the layer's coming visit */
    uint64_t *q_visit;  /* (L*E) the visit q applies to */
    uint64_t *mark;     /* (L*E) visit in which the expert was last routed */
    uint64_t *visit;    /* (L) visits of the layer begun (the one in progress included) */
    int cur;            /* layer being served (or the last one served) */
    int active;         /* a visit of cur is in progress */
} reuse_order;

emoe_status reuse_init(reuse_order *r, int n_layers, int n_experts, float alpha, emoe_err *err);
void reuse_free(reuse_order *r); /* NULL-safe */

/* One row of `layer` was routed to experts[0..k): a new visit begins when the
 * layer is not the one in progress (the previous visit is folded first). */
void reuse_route(reuse_order *r, int layer, const int *experts, int k);
/* The step ended: the visit in progress is folded. */
void reuse_step_end(reuse_order *r);
/* A prediction: (layer, expert) used at the layer's coming visit with
 * probability q (the largest prediction of the visit is kept). */
void reuse_expect(reuse_order *r, int layer, int expert, float q);

/* Probability that (layer, expert) is used at the layer's coming visit. */
float reuse_prob(const reuse_order *r, int layer, int expert);
/* Keep-score: minus the expected layer visits until its next use; a huge
 * value for the experts routed at the visit in progress. */
double reuse_keep(const reuse_order *r, int layer, int expert);
/* The keep-score (layer, expert) would have with use probability q. */
double reuse_keep_at(const reuse_order *r, int layer, float q);

#endif
