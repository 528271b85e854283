/*
 * reuse.c — expected time to next use on a cyclic layer walk (see reuse.h).
 */
#include "scheduler/reuse.h"

#include <stdlib.h>
#include <string.h>

#define REUSE_P_MIN 1e-3 /* floor of P: an expert never seen is far, not infinitely far */
#define REUSE_PINNED 1e30

emoe_status reuse_init(reuse_order *r, int n_layers, int n_experts, float alpha, emoe_err *err)
{
    memset(r, 0, sizeof *r);
    if (n_layers <= 0 || n_experts <= 0 || !(alpha > 0.0f && alpha <= 1.0f))
        return emoe_errf(err, EMOE_EINVAL, "reuse order: bad shape (%d layers, %d experts, alpha %g)", n_layers,
                         n_experts, (double)alpha);
    size_t le = (size_t)n_layers * (size_t)n_experts;
    r->L = n_layers;
    r->E = n_experts;
    r->alpha = alpha;
    r->p = calloc(le, sizeof *r->p);
    r->q = calloc(le, sizeof *r->q);
    r->q_visit = calloc(le, sizeof *r->q_visit);
    r->mark = calloc(le, sizeof *r->mark);
    r->visit = calloc((size_t)n_layers, sizeof *r->visit);
    r->cur = n_layers - 1; /* before the first step: layer 0 comes next */
    if (!r->p || !r->q || !r->q_visit || !r->mark || !r->visit) {
        reuse_free(r);
        return emoe_errf(err, EMOE_ENOMEM, "reuse order: out of memory");
    }
    return EMOE_OK;
}

void reuse_free(reuse_order *r)
{
    if (!r) return;
    free(r->p);
    free(r->q);
    free(r->q_visit);
    free(r->mark);
    free(r->visit);
    memset(r, 0, sizeof *r);
}

/* The visit in progress ends: P of its layer moves toward what it used. */
static void fold(reuse_order *r)
{
    if (!r->active) return;
    size_t base = (size_t)r->cur * (size_t)r->E;
    uint64_t v = r->visit[r->cur];
    for (int x = 0; x < r->E; x++) {
        size_t i = base + (size_t)x;
        r->p[i] = r->p[i] * (1.0f - r->alpha) + (r->mark[i] == v ? r->alpha : 0.0f);
    }
    r->active = 0;
}

void reuse_route(reuse_order *r, int layer, const int *experts, int k)
{
    if (!r->p || layer < 0 || layer >= r->L) return;
    if (!r->active || layer != r->cur) {
        fold(r);
        r->cur = layer;
        r->visit[layer]++;
        r->active = 1;
    }
    size_t base = (size_t)layer * (size_t)r->E;
    for (int j = 0; j < k; j++)
        if (experts[j] >= 0 && experts[j] < r->E) r->mark[base + (size_t)experts[j]] = r->visit[layer];
}

void reuse_step_end(reuse_order *r)
{
    if (r->p) fold(r);
}

void reuse_expect(reuse_order *r, int layer, int expert, float q)
{
    if (!r->p || layer < 0 || layer >= r->L || expert < 0 || expert >= r->E) return;
    size_t i = (size_t)layer * (size_t)r->E + (size_t)expert;
    uint64_t v = r->visit[layer] + 1; /* the coming visit */
    if (r->q_visit[i] != v || q > r->q[i]) {
        r->q[i] = q;
        r->q_visit[i] = v;
    }
}

float reuse_prob(const reuse_order *r, int layer, int expert)
{
    size_t i = (size_t)layer * (size_t)r->E + (size_t)expert;
    float p = r->p[i];
    if (r->active && layer == r->cur) /* as folded at the visit's end */
        p = p * (1.0f - r->alpha) + (r->mark[i] == r->visit[layer] ? r->alpha : 0.0f);
    if (r->q_visit[i] == r->visit[layer] + 1 && r->q[i] > p) p = r->q[i];
    return p;
}

/* Layers from the one being served to `layer`, cyclically, in (0, L]. */
static int dist(const reuse_order *r, int layer)
{
    int d = ((layer - r->cur) % r->L + r->L) % r->L;
    return d == 0 ? r->L : d;
}

double reuse_keep_at(const reuse_order *r, int layer, float q)
{
    if (!r->p || layer < 0 || layer >= r->L) return 0.0;
    double p = q;
    if (!(p >= REUSE_P_MIN)) p = REUSE_P_MIN; /* also NaN */
    if (p > 1.0) p = 1.0;
    return -((double)dist(r, layer) + (double)r->L * (1.0 - p) / p);
}

double reuse_keep(const reuse_order *r, int layer, int expert)
{
    if (!r->p || layer < 0 || layer >= r->L || expert < 0 || expert >= r->E) return 0.0;
    size_t i = (size_t)layer * (size_t)r->E + (size_t)expert;
    if (r->active && layer == r->cur && r->mark[i] == r->visit[layer]) return REUSE_PINNED;
    return reuse_keep_at(r, layer, reuse_prob(r, layer, expert));
}
