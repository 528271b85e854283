/*
 * dense_quant.c — q8 copies of the dense matmul weights ([engine]
 * dense_format, dense_quant.h) and the matmul driver that uses them.
 */
#include "engine/dense_quant.h"

#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"

typedef struct dense_qw {
    const eng_tensor *src; /* the checkpoint tensor it replaces (a field of eng_weights) */
    void *q;               /* shape[0] rows of quant_row_bytes(fmt, shape[1]) */
} dense_qw;

struct dense_quant {
    int fmt;
    int n, cap;
    dense_qw *w;
    size_t bytes;
};

int dense_format_parse(const char *s, int *out)
{
    if (!s) return -1;
    if (!strcmp(s, "native") || !strcmp(s, "bf16")) { *out = DENSE_NATIVE; return 0; }
    if (!strcmp(s, "q8")) { *out = DENSE_Q8; return 0; }
    return -1;
}

const char *dense_format_name(int f) { return f == DENSE_NATIVE ? "native" : f == DENSE_Q8 ? "q8" : "?"; }

void dense_quant_free(dense_quant *q)
{
    if (!q) return;
    for (int i = 0; i < q->n; i++) free(q->w[i].q);
    free(q->w);
    free(q);
}

size_t dense_quant_bytes(const dense_quant *q) { return q ? q->bytes : 0; }
int dense_quant_count(const dense_quant *q) { return q ? q->n : 0; }

static emoe_status add(eng_pool *p, dense_quant *q, const eng_tensor *t, const char *what, int layer, emoe_err *err)
{
    if (!t->data) return EMOE_OK; /* optional tensor absent */
    if (t->ndim != 2 || t->shape[0] <= 0 || t->shape[1] <= 0)
        return emoe_errf(err, EMOE_EINVAL, "dense_format q8: layer %d %s is not a 2-D matrix", layer, what);
    if (q->n == q->cap) {
        int nc = q->cap ? 2 * q->cap : 16;
        dense_qw *nw = realloc(q->w, sizeof *nw * (size_t)nc);
        if (!nw) return emoe_errf(err, EMOE_ENOMEM, "dense_format q8: out of memory");
        q->w = nw;
        q->cap = nc;
    }
    size_t sz = quant_row_bytes(q->fmt, t->shape[1]) * (size_t)t->shape[0];
    void *buf = malloc(sz);
    if (!buf) return emoe_errf(err, EMOE_ENOMEM, "dense_format q8: out of memory for %zu bytes (layer %d %s)", sz, layer, what);
    if (quant_tensor_quantize(p, q->fmt, t, buf) != 0) {
        free(buf);
        return emoe_errf(err, EMOE_ENOMEM, "dense_format q8: quantizing layer %d %s failed (out of memory)", layer, what);
    }
    q->w[q->n++] = (dense_qw){t, buf};
    q->bytes += sz;
    return EMOE_OK;
}

emoe_status dense_quant_build(eng_pool *p, const eng_weights *w, const eng_model_desc *d, int fmt, dense_quant **out,
                              emoe_err *err)
{
    *out = NULL;
    if (fmt == DENSE_NATIVE) return EMOE_OK;
    if (fmt != DENSE_Q8)
        return emoe_errf(err, EMOE_EINVAL, "dense_format %d is not native (0) or q8 (1)", fmt);
    dense_quant *q = calloc(1, sizeof *q);
    if (!q) return emoe_errf(err, EMOE_ENOMEM, "dense_format q8: out of memory");
    q->fmt = QUANT_Q8;
    emoe_status rc = EMOE_OK;
    for (int l = 0; l < d->n_layers && rc == EMOE_OK; l++) {
        const eng_layer_weights *L = &w->layers[l];
        /* not the router nor the shared expert's gate logit: routing decisions stay native */
        const struct { const eng_tensor *t; const char *name; } ts[] = {
            {&L->wq, "q_proj"}, {&L->wk, "k_proj"}, {&L->wv, "v_proj"}, {&L->wo, "o_proj"},
            {&L->sh_gate, "shared gate_proj"}, {&L->sh_up, "shared up_proj"}, {&L->sh_down, "shared down_proj"}};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0] && rc == EMOE_OK; i++) rc = add(p, q, ts[i].t, ts[i].name, l, err);
    }
    if (rc == EMOE_OK) rc = add(p, q, &w->lm_head, "lm_head", -1, err);
    if (rc != EMOE_OK) { dense_quant_free(q); return rc; }
    LOG_INFO("dense_format q8: %d dense weights quantized (%.1f MiB)", q->n, (double)q->bytes / (1 << 20));
    *out = q;
    return EMOE_OK;
}

static const void *lookup(const dense_quant *q, const eng_tensor *t)
{
    for (int i = 0; i < q->n; i++)
        if (q->w[i].src == t) return q->w[i].q;
    return NULL;
}

#define DQ_BATCH 16

void dense_mm_run(const dense_quant *q, eng_pool *p, const eng_mm_job *jobs, int n_jobs)
{
    if (!q) { eng_mm_run(p, jobs, n_jobs); return; }
    /* The quantized jobs in batches of DQ_BATCH (one parallel region each);
     * the others, in their given order, as one eng_mm_run region. */
    eng_mm_job *rest = malloc(sizeof *rest * (size_t)(n_jobs > 0 ? n_jobs : 1));
    quant_mm_job qj[DQ_BATCH];
    const eng_mm_job *qsrc[DQ_BATCH];
    int nr = 0, nq = 0;
    for (int i = 0; i <= n_jobs; i++) {
        const eng_mm_job *j = i < n_jobs ? &jobs[i] : NULL;
        const void *wq = j ? lookup(q, j->W) : NULL;
        if (j && !wq) {
            if (rest) rest[nr++] = *j;
            else eng_mm_run(p, j, 1); /* out of memory for the list: one region per job */
            continue;
        }
        if (j) {
            qsrc[nq] = j;
            qj[nq++] = (quant_mm_job){j->x, j->ldx, j->T, j->K, wq, (int)j->W->shape[0], q->fmt, j->y, j->ldy};
        }
        if (nq && (nq == DQ_BATCH || !j)) {
            quant_mm_run(p, qj, nq);
            for (int b = 0; b < nq; b++) {
                const eng_mm_job *s = qsrc[b];
                if (!s->bias || !s->bias->data) continue;
                int N = (int)s->W->shape[0];
                for (int r = 0; r < N; r++) {
                    float bv;
                    eng_tensor_read_f32(s->bias, r, 1, &bv);
                    for (int t = 0; t < s->T; t++) s->y[(size_t)t * s->ldy + (size_t)r] += bv;
                }
            }
            nq = 0;
        }
    }
    if (nr) eng_mm_run(p, rest, nr);
    free(rest);
}

void dense_mm(const dense_quant *q, eng_pool *p, const float *x, int T, int K, const eng_tensor *W,
              const eng_tensor *bias, float *y)
{
    eng_mm_job j = {x, (size_t)K, T, K, W, bias, y, (size_t)W->shape[0]};
    dense_mm_run(q, p, &j, 1);
}
