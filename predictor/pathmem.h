/*
 * pathmem.h — routing-path memory: predicts the experts the current token
 * will use at the layers it has not reached yet from the recent tokens whose
 * routing *path* so far resembles its own.
 *
 * A token's path is its expert set at each layer. While the current token is
 * at layer l, every remembered token h has a match score
 *     s_h(l) = gamma * s_h(l-1) + |experts_cur(l) ∩ experts_h(l)|
 * (recent layers weigh most), and before layer 0
 *     s_h(-1) = ctx * (the full-path score of h's predecessor against the
 *               current token's predecessor)
 * so a token is matched in its context (ctx = 0: alone). The M best-matching tokens vote for their own
 * experts at layer l+d, each with its score to the power `power` (sharper:
 * the closest matches dominate); the votes, normalised to sum to
 * top_k, are a probability-like prediction for layer l+d. Tokens that took the
 * same path so far (often the same or a similar token in a similar context)
 * tend to continue it. The memory is the last H tokens of all traffic, a ring
 * buffer sized at init (nothing grows).
 *
 * The same matches also predict the *next* token: each remembered token links
 * to the token that followed it in its request, and the successors of the best
 * matches vote for the next token's experts at every layer (routing follows
 * the text, and a similar path is often the same token in a similar place).
 *
 * On the shared traces this predicts next-layer experts better than the
 * cross-layer transition table (docs/predictor.md, "forecast").
 */
#ifndef EMOE_PRED_PATHMEM_H
#define EMOE_PRED_PATHMEM_H

#include <stdint.h>

#include "engine/common.h"

typedef struct pred_pathmem {
    int L, E, K, H, M;
    float gamma;
    float power;        /* a voter's weight is its score to this power (default 1) */
    float ctx;          /* weight of the previous tokens' match (0: the token alone) */
    float *init;        /* (H) a slot's score before layer 0: ctx * its predecessor's full match */
    int words;          /* 64-bit words per layer mask */
    uint64_t *mask;     /* (H, L, words) ring of past paths */
    int n, head;        /* tokens held, next ring slot */
    uint64_t *cur;      /* (L, words) the current token's path so far */
    float *score;       /* (H) match scores at the current layer */
    int *top;           /* (M) best matches at the current layer */
    int n_top, layer;   /* the layer the scores are at (-1: none yet) */
    uint64_t count;     /* tokens remembered so far */
    uint64_t *seq;      /* (H) the token number held in each slot */
    int *succ;          /* (H) slot of the token that followed it in its request, -1: none */
    uint64_t *succ_seq; /* (H) the successor's token number (the slot may be reused) */
    int prev;           /* slot of the current request's previous token, -1: none */
    uint64_t prev_seq;
} pred_pathmem;

emoe_status pred_pathmem_init(pred_pathmem *m, int n_layers, int n_experts, int top_k, int history, int matches,
                              float gamma, emoe_err *err);
void pred_pathmem_free(pred_pathmem *m); /* NULL-safe */
/* Sets the context weight, [0, 1] (default 0), and the vote power, [0, 16]
 * (default 1). */
void pred_pathmem_set_ctx(pred_pathmem *m, float ctx, float power);
/* Forgets every remembered token. */
void pred_pathmem_clear(pred_pathmem *m);

/* A new request starts: its first token has no predecessor. */
void pred_pathmem_begin_request(pred_pathmem *m);
/* The current token's experts at layer l (layers in order 0, 1, ...; layer 0
 * starts a new token). Updates the scores and the best matches. */
void pred_pathmem_layer(pred_pathmem *m, int layer, const int *experts, int k);
/* Prediction for layer `target` (> the current layer): E values summing to
 * top_k (all zero when nothing matched). Returns the number of voters. */
int pred_pathmem_predict(const pred_pathmem *m, int target, float *out);
/* Prediction for the next token's layer `layer` from the successors of the
 * current best matches (same form as pred_pathmem_predict). */
int pred_pathmem_predict_next(const pred_pathmem *m, int layer, float *out);
/* The current token is complete: remember its path. */
void pred_pathmem_end_token(pred_pathmem *m);

#endif
