/*
 * forecast.c — the learned next-visit use estimate behind the forecast
 * eviction order (see forecast.h).
 */
#include "predictor/forecast.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void pred_forecast_cfg_default(pred_forecast_cfg *c)
{
    c->lr = 0.05f;
    c->depth = 3;
    c->fast_alpha = 0.3f;
    c->slow_alpha = 0.06f;
}

emoe_status pred_forecast_init(pred_forecast *f, int n_layers, int n_experts, const pred_forecast_cfg *cfg,
                               emoe_err *err)
{
    memset(f, 0, sizeof *f);
    if (n_layers < 1 || n_experts < 1)
        return emoe_errf(err, EMOE_EINVAL, "forecast: shape %dx%d", n_layers, n_experts);
    if (cfg) f->cfg = *cfg;
    else pred_forecast_cfg_default(&f->cfg);
    if (!(f->cfg.lr > 0.0f && f->cfg.lr <= 1.0f) || !(f->cfg.fast_alpha > 0.0f && f->cfg.fast_alpha <= 1.0f) ||
        !(f->cfg.slow_alpha > 0.0f && f->cfg.slow_alpha <= 1.0f) || f->cfg.depth < 1 || f->cfg.depth > 64)
        return emoe_errf(err, EMOE_EINVAL,
                         "forecast: lr %g, fast_alpha %g, slow_alpha %g must be in (0, 1], depth %d in [1, 64]",
                         (double)f->cfg.lr, (double)f->cfg.fast_alpha, (double)f->cfg.slow_alpha, f->cfg.depth);
    f->L = n_layers;
    f->E = n_experts;
    size_t le = (size_t)n_layers * (size_t)n_experts;
    f->lb_far = calloc((size_t)n_layers, sizeof *f->lb_far);
    f->lb_near = calloc((size_t)n_layers, sizeof *f->lb_near);
    f->u1 = calloc(le, 1);
    f->u2 = calloc(le, 1);
    f->ef = calloc(le, sizeof *f->ef);
    f->es = calloc(le, sizeof *f->es);
    f->prior = calloc(le, sizeof *f->prior);
    f->vn = calloc(le, sizeof *f->vn);
    f->has_vn = calloc((size_t)n_layers, 1);
    f->p1 = calloc(le, sizeof *f->p1);
    size_t nd = (size_t)n_layers * (size_t)f->cfg.depth;
    f->pn = calloc(le, sizeof *f->pn);
    f->pn_tok = calloc((size_t)n_layers, sizeof *f->pn_tok);
    f->xs = calloc(nd * (size_t)n_experts * PRED_FC_NN, sizeof *f->xs);
    f->xs_tok = calloc(nd, sizeof *f->xs_tok);
    if (!f->lb_far || !f->lb_near || !f->u1 || !f->u2 || !f->ef || !f->es || !f->prior || !f->p1 || !f->pn ||
        !f->pn_tok || !f->xs || !f->xs_tok || !f->vn || !f->has_vn) {
        pred_forecast_free(f);
        return emoe_errf(err, EMOE_ENOMEM, "forecast: out of memory");
    }
    /* A start that already means "recent use predicts use"; the SGD refines it. */
    static const float w0[PRED_FC_NF] = {-2.0f, 1.5f, 0.5f, 1.0f, 2.0f, 1.0f, 0.0f, 0.0f, 0.0f, 2.0f, 0.0f, 0.0f};
    memcpy(f->w_far, w0, sizeof w0);
    memcpy(f->w_near, w0, sizeof w0);
    f->w_near[PRED_FC_NF + 1] = 2.0f; /* q */
    f->w_near[PRED_FC_NF + 4] = 2.0f; /* v */
    f->tok = 1;
    pred_forecast_reset(f, NULL);
    return EMOE_OK;
}

void pred_forecast_free(pred_forecast *f)
{
    if (!f) return;
    free(f->lb_far), free(f->lb_near), free(f->u1), free(f->u2), free(f->ef), free(f->es);
    free(f->prior), free(f->vn), free(f->has_vn), free(f->p1), free(f->pn), free(f->pn_tok), free(f->xs), free(f->xs_tok);
    f->lb_far = f->lb_near = f->ef = f->es = f->prior = f->vn = f->p1 = f->pn = f->xs = NULL;
    f->u1 = f->u2 = f->has_vn = NULL;
    f->pn_tok = f->xs_tok = NULL;
}

static float sigm(float z)
{
    if (z > 30.0f) z = 30.0f;
    if (z < -30.0f) z = -30.0f;
    return 1.0f / (1.0f + expf(-z));
}

static float clamp01(float v) { return !(v >= 0.0f) ? 0.0f : v > 1.0f ? 1.0f : v; }

/* The far features of slot i. */
static void far_x(const pred_forecast *f, size_t i, float *x)
{
    float es = clamp01(f->es[i]);
    x[0] = 1.0f;
    x[1] = (float)f->u1[i];
    x[2] = (float)f->u2[i];
    x[3] = clamp01(f->ef[i]);
    x[4] = es;
    x[5] = clamp01(f->prior[i]);
    x[6] = (float)(f->u1[i] & f->u2[i]);
    x[7] = logf(es + 0.01f) * 0.2f;
    int has = f->has_vn[i / (size_t)f->E];
    float v = has ? clamp01(f->vn[i]) : 0.0f;
    x[8] = (float)has;
    x[9] = v;
    x[10] = v * (float)f->u1[i];
    x[11] = has ? logf(v + 0.01f) * 0.2f : 0.0f;
}

/* The near features of slot i: q, v NULL when absent, d layers ahead. */
static void near_x(const pred_forecast *f, size_t i, const float *q, const float *v, int e, int d, float *x)
{
    far_x(f, i, x);
    float u = (float)f->u1[i], *y = x + PRED_FC_NF;
    float qe = q ? clamp01(q[e]) : 0.0f, ve = v ? clamp01(v[e]) : 0.0f;
    y[0] = q ? 1.0f : 0.0f;
    y[1] = qe;
    y[2] = qe * u;
    y[3] = q ? logf(qe + 0.01f) * 0.2f : 0.0f;
    y[4] = ve;
    y[5] = ve * u;
    y[6] = v ? logf(ve + 0.01f) * 0.2f : 0.0f;
    y[7] = 1.0f / (float)d;
}

static float dot(const float *w, const float *x, int n)
{
    float z = 0.0f;
    for (int j = 0; j < n; j++) z += w[j] * x[j];
    return z;
}

static void far_update(pred_forecast *f, int l)
{
    for (int e = 0; e < f->E; e++) {
        size_t i = (size_t)l * (size_t)f->E + (size_t)e;
        float x[PRED_FC_NF];
        far_x(f, i, x);
        f->p1[i] = sigm(dot(f->w_far, x, PRED_FC_NF) + f->lb_far[l]);
    }
}

void pred_forecast_reset(pred_forecast *f, const float *prior)
{
    size_t le = (size_t)f->L * (size_t)f->E;
    memset(f->u1, 0, le);
    memset(f->u2, 0, le);
    memset(f->vn, 0, le * sizeof *f->vn);
    memset(f->has_vn, 0, (size_t)f->L);
    for (size_t i = 0; i < le; i++) {
        float p = prior ? clamp01(prior[i]) : 0.0f;
        f->prior[i] = p;
        f->ef[i] = p;
        f->es[i] = p;
    }
    for (int l = 0; l < f->L; l++) far_update(f, l);
    f->tok++; /* drops the near estimates */
}

void pred_forecast_near(pred_forecast *f, int target, int d, const float *q, const float *v)
{
    if (target < 0 || target >= f->L || d < 1 || d > f->cfg.depth) return;
    size_t snap = (size_t)target * (size_t)f->cfg.depth + (size_t)(d - 1);
    float *xs = f->xs + snap * (size_t)f->E * PRED_FC_NN;
    for (int e = 0; e < f->E; e++) {
        size_t i = (size_t)target * (size_t)f->E + (size_t)e;
        float *x = xs + (size_t)e * PRED_FC_NN;
        near_x(f, i, q, v, e, d, x);
        f->pn[i] = sigm(dot(f->w_near, x, PRED_FC_NN) + f->lb_near[target]);
    }
    f->xs_tok[snap] = f->tok;
    f->pn_tok[target] = f->tok;
}

void pred_forecast_next(pred_forecast *f, int layer, const float *v)
{
    if (layer < 0 || layer >= f->L) return;
    float *row = f->vn + (size_t)layer * (size_t)f->E;
    if (v) memcpy(row, v, (size_t)f->E * sizeof *row);
    else memset(row, 0, (size_t)f->E * sizeof *row);
    f->has_vn[layer] = v != NULL;
    far_update(f, layer);
}

static double xent(float p, int y)
{
    double pp = p < 1e-6f ? 1e-6 : p > 1.0f - 1e-6f ? 1.0 - 1e-6 : (double)p;
    return y ? -log(pp) : -log(1.0 - pp);
}

void pred_forecast_observe(pred_forecast *f, int layer, const int *experts, int k)
{
    if (layer < 0 || layer >= f->L) return;
    if (layer == 0) f->tok++;
    int E = f->E, D = f->cfg.depth;
    float lr = f->cfg.lr;
    uint8_t y[4096];
    int Ec = E < 4096 ? E : 4096;
    memset(y, 0, (size_t)Ec);
    for (int j = 0; j < k; j++)
        if (experts[j] >= 0 && experts[j] < Ec) y[experts[j]] = 1;
    for (int e = 0; e < Ec; e++) {
        size_t i = (size_t)layer * (size_t)E + (size_t)e;
        float x[PRED_FC_NN];
        /* far model: the estimate made at the last visit */
        far_x(f, i, x);
        float pf = sigm(dot(f->w_far, x, PRED_FC_NF) + f->lb_far[layer]);
        f->logloss_far += xent(pf, y[e]);
        f->n_far++;
        float g = (float)y[e] - pf;
        for (int j = 0; j < PRED_FC_NF; j++) f->w_far[j] += lr * g * x[j];
        f->lb_far[layer] += lr * g;
        f->trained++;
    }
    /* near model: every estimate this token made for this layer */
    for (int d = 1; d <= D; d++) {
        size_t snap = (size_t)layer * (size_t)D + (size_t)(d - 1);
        if (f->xs_tok[snap] != f->tok) continue;
        const float *xs = f->xs + snap * (size_t)E * PRED_FC_NN;
        for (int e = 0; e < Ec; e++) {
            const float *x = xs + (size_t)e * PRED_FC_NN;
            float pn = sigm(dot(f->w_near, x, PRED_FC_NN) + f->lb_near[layer]);
            if (d == 1) {
                f->logloss_near += xent(pn, y[e]);
                f->n_near++;
            }
            float gn = (float)y[e] - pn;
            for (int j = 0; j < PRED_FC_NN; j++) f->w_near[j] += lr * gn * x[j];
            f->lb_near[layer] += lr * gn;
        }
        f->xs_tok[snap] = 0;
    }
    float af = f->cfg.fast_alpha, as = f->cfg.slow_alpha;
    for (int e = 0; e < Ec; e++) {
        size_t i = (size_t)layer * (size_t)E + (size_t)e;
        f->u2[i] = f->u1[i];
        f->u1[i] = y[e];
        f->ef[i] = (1.0f - af) * f->ef[i] + af * (float)y[e];
        f->es[i] = (1.0f - as) * f->es[i] + as * (float)y[e];
    }
    far_update(f, layer);
    f->pn_tok[layer] = 0; /* its next visit is the next token's */
}

float pred_forecast_p(const pred_forecast *f, int layer, int expert)
{
    size_t i = (size_t)layer * (size_t)f->E + (size_t)expert;
    return f->pn_tok[layer] == f->tok ? f->pn[i] : f->p1[i];
}

double pred_forecast_reuse(const pred_forecast *f, int cur_layer, int layer, int expert)
{
    int L = f->L;
    size_t i = (size_t)layer * (size_t)f->E + (size_t)expert;
    double p1 = pred_forecast_p(f, layer, expert);
    double pl = 0.5 * (double)f->es[i] + 0.5 * (double)f->p1[i];
    if (!(p1 >= 1e-4)) p1 = 1e-4;
    if (!(pl >= 1e-3)) pl = 1e-3;
    if (pl > 1.0) pl = 1.0;
    int d = ((layer - cur_layer) % L + L) % L;
    if (d == 0) d = L;
    return d + (1.0 - p1) * (double)L / pl;
}
