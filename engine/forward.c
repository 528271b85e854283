/*
 * forward.c — the CPU float32 reference forward pass (eng_step). All new tokens
 * of all items in a step are stacked into one (T, dim) activation matrix, so
 * every weight row is read once per step whatever the batch; attention runs per
 * item over its own KV cache. Weights stay in their stored dtype; the matmul
 * kernels (engine/matmul.h: SIMD variants chosen at run time, the scalar one
 * the reference) widen them to float32 in registers. Each parallel region
 * covers several matmuls: q/k/v; router + shared expert gate/up; the gate and
 * up projections of every selected expert; all downs. Experts are reached only
 * through the engine's eng_expert_provider: tokens are grouped per expert,
 * each used expert is acquired once per layer (as many at once as the provider
 * allows), computed for its tokens and released.
 *
 * Numerics follow Hugging Face transformers in float32: RMSNorm as
 * x * rsqrt(mean(x^2) + eps) * w, rotate-half rotary embedding with float32
 * frequencies, softmax router over all experts then top-k (then renormalised
 * where the family does it), SwiGLU experts, sigmoid-gated shared expert.
 */
#include "engine/engine_internal.h"
#include "engine/dense_quant.h"
#include "engine/matmul.h"
#include "engine/moe_plan.h"
#include "engine/quant.h"
#include "engine/residency.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- kernels -------------------------------------------------------------- */

/* y (T, N) = x (T, K) @ W^T (+ bias): one parallel region (engine/matmul.c). */
static void matmul(eng_pool *p, const float *x, int T, int K, const eng_tensor *W, const eng_tensor *bias, float *y)
{
    eng_mm(p, x, T, K, W, bias, y);
}

/* A job of a batched region with dense x (ld K) and y (ld N). */
static eng_mm_job mm_job(const float *x, int T, int K, const eng_tensor *W, const eng_tensor *bias, float *y)
{
    return (eng_mm_job){x, (size_t)K, T, K, W, bias, y, (size_t)W->shape[0]};
}

/* out = x * rsqrt(mean(x^2) + eps) * w, over n elements. */
static void rmsnorm(float *out, const float *x, const eng_tensor *w, int n, float eps, float *wbuf)
{
    float ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    eng_tensor_read_f32(w, 0, n, wbuf);
    for (int i = 0; i < n; i++) out[i] = wbuf[i] * (x[i] * r);
}

static void rope(float *v, int hd, int pos, const float *inv_freq)
{
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * inv_freq[i];
        float c = (float)cos((double)ang), s = (float)sin((double)ang);
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c - x2 * s;
        v[i + half] = x2 * c + x1 * s;
    }
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

/* ---- attention ------------------------------------------------------------ */

typedef struct att_ctx {
    const eng_model_desc *d;
    int layer;
    const float *q;      /* (T, n_heads*hd), roped */
    float *out;          /* (T, n_heads*hd) */
    eng_seq **row_seq;   /* per row: its sequence */
    const int *row_pos;  /* per row: its position */
    int max_len;
    eng_dtype kv_dtype;  /* of the sequences' k/v */
} att_ctx;

static void att_task(void *arg, int64_t b, int64_t e)
{
    att_ctx *c = arg;
    const eng_model_desc *d = c->d;
    int hd = d->head_dim, qd = d->n_heads * hd, kvd = d->n_kv_heads * hd, grp = d->n_heads / d->n_kv_heads;
    float *sc = malloc(sizeof(float) * (size_t)c->max_len);
    if (!sc) return;
    float scale = 1.0f / sqrtf((float)hd);
    eng_mm_tile_fn scores = eng_mm_active()->tile[c->kv_dtype];
    size_t es = eng_dtype_size(c->kv_dtype);
    for (int64_t i = b; i < e; i++) {
        int t = (int)(i / d->n_heads), h = (int)(i % d->n_heads), kh = h / grp;
        const eng_seq *s = c->row_seq[t];
        int pos = c->row_pos[t];
        const float *q = c->q + (size_t)t * qd + (size_t)h * hd;
        const char *K = (const char *)s->k[c->layer] + (size_t)kh * hd * es;
        const char *V = (const char *)s->v[c->layer] + (size_t)kh * hd * es;
        /* q against positions 0..pos of this kv head: rows of stride kvd. */
        scores(q, (size_t)hd, 1, K, (size_t)kvd, pos + 1, hd, sc, 1);
        float mx = -INFINITY;
        for (int j = 0; j <= pos; j++) {
            sc[j] *= scale;
            if (sc[j] > mx) mx = sc[j];
        }
        float sum = 0;
        for (int j = 0; j <= pos; j++) { sc[j] = expf(sc[j] - mx); sum += sc[j]; }
        float *o = c->out + (size_t)t * qd + (size_t)h * hd;
        for (int x = 0; x < hd; x++) o[x] = 0;
        for (int j = 0; j <= pos; j++) {
            float p = sc[j] / sum;
            const void *vv = V + (size_t)j * kvd * es;
            if (c->kv_dtype == ENG_DT_F32)
                for (int x = 0; x < hd; x++) o[x] += p * ((const float *)vv)[x];
            else if (c->kv_dtype == ENG_DT_BF16)
                for (int x = 0; x < hd; x++) o[x] += p * eng_bf16_to_f32(((const uint16_t *)vv)[x]);
            else
                for (int x = 0; x < hd; x++) o[x] += p * eng_f16_to_f32(((const uint16_t *)vv)[x]);
        }
    }
    free(sc);
}

/* ---- routing --------------------------------------------------------------- */


/* ---- the step --------------------------------------------------------------- */

typedef struct step_buf {
    float *x, *h, *q, *k, *v, *att, *tmp, *probs, *moe;
    float *xe, *g, *u, *eo, *sg, *su, *sgl, *sho, *wbuf;
    int *ids, *used;
    float *rw;
    eng_seq **row_seq;
    int *row_pos;
    int *ex_rows;   /* rows per expert, grouped */
    int *ex_slot;   /* which of the k picks */
    int *ex_count, *ex_start;
} step_buf;

static void step_buf_free(step_buf *b)
{
    void *ptrs[] = {b->x, b->h, b->q, b->k, b->v, b->att, b->tmp, b->probs, b->moe, b->xe, b->g, b->u, b->eo,
                    b->sg, b->su, b->sgl, b->sho, b->wbuf, b->ids, b->used, b->rw, b->row_seq, b->row_pos, b->ex_rows, b->ex_slot,
                    b->ex_count, b->ex_start};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) free(ptrs[i]);
}

static int step_buf_alloc(step_buf *b, const eng_model_desc *d, int T)
{
    memset(b, 0, sizeof *b);
    size_t t = (size_t)T, qd = (size_t)d->n_heads * d->head_dim, kvd = (size_t)d->n_kv_heads * d->head_dim;
    size_t wmax = qd > (size_t)d->dim ? qd : (size_t)d->dim;
    size_t tk = t * (size_t)d->top_k; /* (token, pick) pairs: every selected expert's rows at once */
    size_t ffn = (size_t)d->expert_ffn, sffn = d->shared_ffn > 0 ? (size_t)d->shared_ffn : 1;
#define A(p, n) (((p) = calloc((size_t)(n) + 1, sizeof *(p))) != NULL)
    int ok = A(b->x, t * d->dim) && A(b->h, t * d->dim) && A(b->q, t * qd) && A(b->k, t * kvd) && A(b->v, t * kvd) &&
             A(b->att, t * qd) && A(b->tmp, t * d->dim) && A(b->probs, t * d->n_experts) && A(b->moe, t * d->dim) &&
             A(b->xe, tk * d->dim) && A(b->g, tk * ffn) && A(b->u, tk * ffn) && A(b->eo, tk * d->dim) &&
             A(b->sg, t * sffn) && A(b->su, t * sffn) && A(b->sgl, t) && A(b->sho, t * d->dim) && A(b->wbuf, wmax) &&
             A(b->ids, t * d->top_k) && A(b->used, (size_t)d->n_experts) &&
             A(b->rw, t * d->top_k) && A(b->row_seq, t) && A(b->row_pos, t) && A(b->ex_rows, t * d->top_k) &&
             A(b->ex_slot, t * d->top_k) && A(b->ex_count, (size_t)d->n_experts) && A(b->ex_start, (size_t)d->n_experts);
#undef A
    return ok ? 0 : -1;
}

/* Routes every row of layer l: fills b->ids / b->rw (the weights applied),
 * honouring the provider's substitute policy. Reports the router's own choice
 * to the routing callback. */
static void route_rows(eng_engine *e, int l, int T, step_buf *b)
{
    const eng_model_desc *d = &e->d;
    const eng_expert_provider *p = e->prov;
    int E = d->n_experts, k = d->top_k;
    int subst = p->substitute && p->substitute(p->ctx);
    unsigned char *allowed = NULL;
    if (subst && p->is_resident) {
        allowed = malloc((size_t)E);
        if (allowed) {
            int any = 0;
            for (int x = 0; x < E; x++) any += (allowed[x] = p->is_resident(p->ctx, l, x) ? 1 : 0);
            if (any < k) { free(allowed); allowed = NULL; } /* too few resident: load exactly */
        }
    }
    for (int t = 0; t < T; t++) {
        float *pr = b->probs + (size_t)t * E;
        float mx = -INFINITY, sum = 0;
        for (int x = 0; x < E; x++) if (pr[x] > mx) mx = pr[x];
        for (int x = 0; x < E; x++) { pr[x] = expf(pr[x] - mx); sum += pr[x]; }
        for (int x = 0; x < E; x++) pr[x] /= sum;
        int *ids = b->ids + (size_t)t * k;
        float *w = b->rw + (size_t)t * k;
        eng_route_topk(pr, E, k, NULL, ids, w);
        float wsum = 0;
        for (int j = 0; j < k; j++) wsum += w[j];
        if (d->norm_topk)
            for (int j = 0; j < k; j++) w[j] /= wsum;
        if (e->cb) e->cb(e->cb_user, b->row_seq[t]->tag, b->row_pos[t], l, ids, w, k);
        if (allowed && (!p->substitute_seq || p->substitute_seq(p->ctx, b->row_seq[t]->tag))) {
            int missing[64], nm = 0;
            for (int j = 0; j < k; j++)
                if (!allowed[ids[j]] && nm < 64) missing[nm++] = ids[j];
            if (nm) {
                /* eMoE-style substitution: the best-ranked resident experts stand
                 * in, weights rescaled to the original top-k mass. */
                if (p->prefetch) p->prefetch(p->ctx, l, missing, nm);
                eng_route_topk(pr, E, k, allowed, ids, w);
                float s2 = 0;
                for (int j = 0; j < k; j++) s2 += w[j];
                float target = d->norm_topk ? 1.0f : wsum;
                for (int j = 0; j < k; j++) w[j] = w[j] / s2 * target;
                b->row_seq[t]->substituted += (uint64_t)nm;
                if (p->substituted) p->substituted(p->ctx, b->row_seq[t]->tag, l, nm);
            }
        }
    }
    free(allowed);
}

/* Speculative gating (eng_expert_provider.predicted): the routers of the next
 * layers applied to layer l's MoE input; b->probs is free once route_rows is
 * done. Only the provider sees the result. */
static void spec_route(eng_engine *e, int l, int T, step_buf *b)
{
    const eng_model_desc *d = &e->d;
    const eng_expert_provider *p = e->prov;
    int E = d->n_experts, k = d->top_k;
    if (!p->predicted || p->lookahead_layers <= 0 || k > 64) return;
    for (int dl = 1; dl <= p->lookahead_layers && l + dl < d->n_layers; dl++) {
        matmul(e->pool, b->h, T, d->dim, &e->w.layers[l + dl].router, NULL, b->probs);
        for (int t = 0; t < T; t++) {
            int ids[64];
            float w[64];
            eng_route_topk(b->probs + (size_t)t * E, E, k, NULL, ids, w);
            p->predicted(p->ctx, b->row_seq[t]->tag, b->row_pos[t], l + dl, ids, k);
        }
    }
}

/* Most experts held at once; fewer when the provider runs out of slots. */
#define MOE_GROUP_MAX 64

static emoe_status moe_layer(eng_engine *e, int l, int T, step_buf *b, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    const eng_layer_weights *L = &e->w.layers[l];
    int E = d->n_experts, k = d->top_k, dim = d->dim, ffn = d->expert_ffn, sf = d->shared_ffn;
    /* Router and the shared expert's gate, up and gate logit all read h: one region. */
    eng_mm_job pre[4];
    int np = 0;
    pre[np++] = mm_job(b->h, T, dim, &L->router, NULL, b->probs);
    if (sf > 0) {
        pre[np++] = mm_job(b->h, T, dim, &L->sh_gate, NULL, b->sg);
        pre[np++] = mm_job(b->h, T, dim, &L->sh_up, NULL, b->su);
        pre[np++] = mm_job(b->h, T, dim, &L->sh_expert_gate, NULL, b->sgl);
    }
    dense_mm_run(e->dq, e->pool, pre, np); /* router stays native; shared gate/up q8 with dense_format q8 */
    if (sf > 0)
        for (size_t i = 0; i < (size_t)T * sf; i++) b->sg[i] = silu(b->sg[i]) * b->su[i];
    route_rows(e, l, T, b);
    spec_route(e, l, T, b);
    /* Group (row, pick) pairs per expert. */
    memset(b->ex_count, 0, sizeof(int) * (size_t)E);
    for (int i = 0; i < T * k; i++) b->ex_count[b->ids[i]]++;
    int acc = 0;
    for (int x = 0; x < E; x++) { b->ex_start[x] = acc; acc += b->ex_count[x]; b->ex_count[x] = 0; }
    for (int i = 0; i < T * k; i++) {
        int x = b->ids[i], at = b->ex_start[x] + b->ex_count[x]++;
        b->ex_rows[at] = i / k;
        b->ex_slot[at] = i;
    }
    /* Each pair's input row, in grouped order: an expert's tokens are contiguous. */
    for (int at = 0; at < T * k; at++)
        memcpy(b->xe + (size_t)at * dim, b->h + (size_t)b->ex_rows[at] * dim, sizeof(float) * (size_t)dim);
    memset(b->moe, 0, sizeof(float) * (size_t)T * dim);
    const eng_expert_provider *p = e->prov;
    int nu = 0;
    for (int x = 0; x < E; x++) if (b->ex_count[x]) b->used[nu++] = x;
    if (p->prefetch) p->prefetch(p->ctx, l, b->used, nu);
    /* Order of computation (exact and lowbit modes, a provider that can tell
     * what is resident): the experts already resident first, then the others,
     * a group closing at the first expert still loading once it holds one, so
     * the resident experts compute while the rest load. Each expert writes
     * only its own rows of g/u/eo and the combine below runs in expert order,
     * so the result is bitwise that of any order. */
    int *ord = b->used, *ord_buf = NULL;
    int reorder = p->is_resident && nu > 1 && !(p->substitute && p->substitute(p->ctx)) &&
                  (ord_buf = malloc(sizeof(int) * 2 * (size_t)nu)) != NULL;
    if (reorder) {
        int *res = ord_buf + nu, nr = 0; /* one answer per expert: a load may complete meanwhile */
        for (int u = 0; u < nu; u++)
            if ((res[u] = p->is_resident(p->ctx, l, b->used[u]) != 0)) ord_buf[nr++] = b->used[u];
        for (int u = 0; u < nu; u++)
            if (!res[u]) ord_buf[nr++] = b->used[u];
        ord = ord_buf;
    }
    /* Groups of experts: acquire them all, every gate and up projection in one
     * region, SwiGLU, every down projection (and the shared expert's) in a
     * second, release. A provider out of slots (ENOMEM with some held) ends the
     * group early; the next group starts with the expert it refused. */
    eng_expert_weights w[MOE_GROUP_MAX];
    eng_mm_job jobs[2 * MOE_GROUP_MAX + 1];
    quant_mm_job qjobs[2 * MOE_GROUP_MAX]; /* quantized expert views (engine/quant.h): their own region */
    int shared_done = 0;
    for (int u0 = 0; u0 < nu;) {
        int ng = 0;
        while (u0 + ng < nu && ng < MOE_GROUP_MAX) {
            int x = ord[u0 + ng];
            if (reorder && ng > 0 && !p->is_resident(p->ctx, l, x)) break; /* compute what is ready first */
            memset(&w[ng], 0, sizeof w[ng]);
            emoe_status rc = p->acquire(p->ctx, l, x, &w[ng], err);
            if (rc == EMOE_OK) { ng++; continue; }
            if (rc == EMOE_ENOMEM && ng > 0) break;
            for (int i = 0; i < ng; i++) if (p->release) p->release(p->ctx, l, ord[u0 + i]);
            free(ord_buf);
            return emoe_err_prefix(err, "layer %d expert %d", l, x);
        }
        int nj = 0, nq = 0;
        for (int i = 0; i < ng; i++) {
            int x = ord[u0 + i], s0 = b->ex_start[x], c = b->ex_count[x];
            if (w[i].qfmt) { /* quantized expert views (engine/quant.h): their own kernels */
                const float *xe = b->xe + (size_t)s0 * dim;
                qjobs[nq++] = (quant_mm_job){xe, (size_t)dim, c, dim, w[i].gate.data, ffn, w[i].qfmt, b->g + (size_t)s0 * ffn, (size_t)ffn};
                qjobs[nq++] = (quant_mm_job){xe, (size_t)dim, c, dim, w[i].up.data, ffn, w[i].qfmt, b->u + (size_t)s0 * ffn, (size_t)ffn};
                continue;
            }
            jobs[nj++] = mm_job(b->xe + (size_t)s0 * dim, c, dim, &w[i].gate, NULL, b->g + (size_t)s0 * ffn);
            jobs[nj++] = mm_job(b->xe + (size_t)s0 * dim, c, dim, &w[i].up, NULL, b->u + (size_t)s0 * ffn);
        }
        if (nq) quant_mm_run(e->pool, qjobs, nq);
        eng_mm_run(e->pool, jobs, nj);
        for (int i = 0; i < ng; i++) {
            int x = ord[u0 + i];
            size_t pa = (size_t)b->ex_start[x], pb = pa + (size_t)b->ex_count[x];
            for (size_t q = pa * ffn; q < pb * ffn; q++) b->g[q] = silu(b->g[q]) * b->u[q];
        }
        nj = nq = 0;
        for (int i = 0; i < ng; i++) {
            int x = ord[u0 + i], s0 = b->ex_start[x], c = b->ex_count[x];
            if (w[i].lowbit) /* served by the low-bit copy (miss_policy lowbit): counted per sequence */
                for (int r = 0; r < c; r++) b->row_seq[b->ex_rows[s0 + r]]->lowbit++;
            if (w[i].qfmt) {
                qjobs[nq++] = (quant_mm_job){b->g + (size_t)s0 * ffn, (size_t)ffn, c, ffn, w[i].down.data, dim, w[i].qfmt,
                                             b->eo + (size_t)s0 * dim, (size_t)dim};
                continue;
            }
            jobs[nj++] = mm_job(b->g + (size_t)s0 * ffn, c, ffn, &w[i].down, NULL, b->eo + (size_t)s0 * dim);
        }
        if (sf > 0 && u0 + ng == nu) { /* the shared expert's down joins the last region */
            jobs[nj++] = mm_job(b->sg, T, sf, &L->sh_down, NULL, b->sho);
            shared_done = 1;
        }
        if (nq) quant_mm_run(e->pool, qjobs, nq);
        dense_mm_run(e->dq, e->pool, jobs, nj); /* the shared expert's down: q8 with dense_format q8 */
        if (p->release)
            for (int i = 0; i < ng; i++) p->release(p->ctx, l, ord[u0 + i]);
        u0 += ng;
    }
    free(ord_buf);
    /* Combine in expert order (the order of the reference). */
    for (int u = 0; u < nu; u++) {
        int x = b->used[u];
        for (int r = 0; r < b->ex_count[x]; r++) {
            int at = b->ex_start[x] + r, row = b->ex_rows[at];
            float wt = b->rw[b->ex_slot[at]];
            float *dst = b->moe + (size_t)row * dim;
            const float *src = b->eo + (size_t)at * dim;
            for (int i = 0; i < dim; i++) dst[i] += wt * src[i];
        }
    }
    if (sf > 0) {
        if (!shared_done) dense_mm(e->dq, e->pool, b->sg, T, sf, &L->sh_down, NULL, b->sho);
        for (int t = 0; t < T; t++) {
            float gate = 1.0f / (1.0f + expf(-b->sgl[t]));
            for (int i = 0; i < dim; i++) b->moe[(size_t)t * dim + i] += gate * b->sho[(size_t)t * dim + i];
        }
    }
    return EMOE_OK;
}

/* The CPU backend's step: inputs were validated and KV capacity reserved by
 * eng_step (engine.c); on success eng_step advances the sequences. */
static emoe_status cpu_step(eng_engine *e, eng_batch_item *items, int n, int T, emoe_err *err)
{
    const eng_model_desc *d = &e->d;
    step_buf b;
    if (step_buf_alloc(&b, d, T) != 0) { step_buf_free(&b); return emoe_errf(err, EMOE_ENOMEM, "out of memory for a step of %d tokens", T); }
    emoe_status rc = EMOE_OK;
    int dim = d->dim, hd = d->head_dim, qd = d->n_heads * hd, kvd = d->n_kv_heads * hd;
    int r = 0, max_len = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < items[i].n_ids; j++, r++) {
            b.row_seq[r] = items[i].seq;
            b.row_pos[r] = items[i].seq->len + j;
            if (b.row_pos[r] + 1 > max_len) max_len = b.row_pos[r] + 1;
            /* the row alone: a fault on a cold page would read 8 MiB of the table around it (engine/residency.h) */
            size_t esz = eng_dtype_size(e->w.embed.dtype);
            eng_mem_populate((const char *)e->w.embed.data + (size_t)items[i].ids[j] * dim * esz, (size_t)dim * esz);
            eng_tensor_read_f32(&e->w.embed, (int64_t)items[i].ids[j] * dim, dim, b.x + (size_t)r * dim);
        }
    for (int l = 0; l < d->n_layers; l++) {
        const eng_layer_weights *L = &e->w.layers[l];
        for (int t = 0; t < T; t++) rmsnorm(b.h + (size_t)t * dim, b.x + (size_t)t * dim, &L->attn_norm, dim, d->eps, b.wbuf);
        eng_mm_job qkv[3] = {mm_job(b.h, T, dim, &L->wq, &L->bq, b.q), mm_job(b.h, T, dim, &L->wk, &L->bk, b.k),
                             mm_job(b.h, T, dim, &L->wv, &L->bv, b.v)};
        dense_mm_run(e->dq, e->pool, qkv, 3); /* engine/dense_quant.h: eng_mm_run unless dense_format q8 */
        for (int t = 0; t < T; t++) {
            float *q = b.q + (size_t)t * qd, *k = b.k + (size_t)t * kvd;
            if (d->qk_norm == ENG_QKNORM_FULL) {
                rmsnorm(q, q, &L->q_norm, qd, d->eps, b.wbuf);
                rmsnorm(k, k, &L->k_norm, kvd, d->eps, b.wbuf);
            } else if (d->qk_norm == ENG_QKNORM_PER_HEAD) {
                for (int h = 0; h < d->n_heads; h++) rmsnorm(q + h * hd, q + h * hd, &L->q_norm, hd, d->eps, b.wbuf);
                for (int h = 0; h < d->n_kv_heads; h++) rmsnorm(k + h * hd, k + h * hd, &L->k_norm, hd, d->eps, b.wbuf);
            }
            for (int h = 0; h < d->n_heads; h++) rope(q + h * hd, hd, b.row_pos[t], e->inv_freq);
            for (int h = 0; h < d->n_kv_heads; h++) rope(k + h * hd, hd, b.row_pos[t], e->inv_freq);
            eng_seq *s = b.row_seq[t];
            size_t at = (size_t)b.row_pos[t] * kvd * eng_dtype_size(e->kv_dtype);
            eng_f32_store(e->kv_dtype, k, kvd, (char *)s->k[l] + at);
            eng_f32_store(e->kv_dtype, b.v + (size_t)t * kvd, kvd, (char *)s->v[l] + at);
        }
        att_ctx ac = {d, l, b.q, b.att, b.row_seq, b.row_pos, max_len, e->kv_dtype};
        eng_pool_run(e->pool, (int64_t)T * d->n_heads, 1, att_task, &ac);
        dense_mm(e->dq, e->pool, b.att, T, qd, &L->wo, NULL, b.tmp);
        for (size_t i = 0; i < (size_t)T * dim; i++) b.x[i] += b.tmp[i];
        for (int t = 0; t < T; t++) rmsnorm(b.h + (size_t)t * dim, b.x + (size_t)t * dim, &L->ffn_norm, dim, d->eps, b.wbuf);
        if ((rc = moe_layer(e, l, T, &b, err)) != EMOE_OK) goto out;
        for (size_t i = 0; i < (size_t)T * dim; i++) b.x[i] += b.moe[i];
    }
    /* Final norm + lm_head for the rows whose logits are wanted. */
    r = 0;
    for (int i = 0; i < n; i++) {
        eng_batch_item *it = &items[i];
        int first = it->all_logits ? 0 : it->n_ids - 1;
        if (it->all_logits || it->logits) {
            int cnt = it->n_ids - first;
            for (int j = 0; j < cnt; j++)
                rmsnorm(b.h + (size_t)j * dim, b.x + (size_t)(r + first + j) * dim, &e->w.final_norm, dim, d->eps, b.wbuf);
            float *dst = it->all_logits ? it->all_logits : it->logits;
            dense_mm(e->dq, e->pool, b.h, cnt, dim, &e->w.lm_head, NULL, dst);
            if (it->all_logits && it->logits)
                memcpy(it->logits, it->all_logits + (size_t)(cnt - 1) * d->vocab, sizeof(float) * (size_t)d->vocab);
        }
        r += it->n_ids;
    }
out:
    step_buf_free(&b);
    return rc;
}

const eng_backend_ops eng_cpu_backend = {.name = "cpu", .step = cpu_step};
