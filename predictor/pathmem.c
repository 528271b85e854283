/*
 * pathmem.c — routing-path memory (see pathmem.h).
 */
#include "predictor/pathmem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

emoe_status pred_pathmem_init(pred_pathmem *m, int n_layers, int n_experts, int top_k, int history, int matches,
                              float gamma, emoe_err *err)
{
    memset(m, 0, sizeof *m);
    if (n_layers < 1 || n_experts < 1 || top_k < 1 || history < 1 || matches < 1 || !(gamma >= 0.0f && gamma <= 1.0f))
        return emoe_errf(err, EMOE_EINVAL,
                         "pathmem: shape %dx%d top-%d, history %d, matches %d must be >= 1 and gamma %g in [0, 1]",
                         n_layers, n_experts, top_k, history, matches, (double)gamma);
    m->L = n_layers, m->E = n_experts, m->K = top_k, m->H = history;
    m->M = matches < history ? matches : history;
    m->gamma = gamma;
    m->power = 1.0f;
    m->words = (n_experts + 63) / 64;
    m->mask = calloc((size_t)history * (size_t)n_layers * (size_t)m->words, sizeof *m->mask);
    m->cur = calloc((size_t)n_layers * (size_t)m->words, sizeof *m->cur);
    m->score = calloc((size_t)history, sizeof *m->score);
    m->top = calloc((size_t)m->M, sizeof *m->top);
    m->seq = calloc((size_t)history, sizeof *m->seq);
    m->succ = calloc((size_t)history, sizeof *m->succ);
    m->succ_seq = calloc((size_t)history, sizeof *m->succ_seq);
    m->init = calloc((size_t)history, sizeof *m->init);
    if (!m->init || !m->mask || !m->cur || !m->score || !m->top || !m->seq || !m->succ || !m->succ_seq) {
        pred_pathmem_free(m);
        return emoe_errf(err, EMOE_ENOMEM, "pathmem: out of memory for %d tokens of history", history);
    }
    pred_pathmem_clear(m);
    return EMOE_OK;
}

void pred_pathmem_free(pred_pathmem *m)
{
    if (!m) return;
    free(m->mask), free(m->cur), free(m->score), free(m->top), free(m->seq), free(m->succ), free(m->succ_seq), free(m->init);
    m->init = NULL;
    m->mask = m->cur = m->seq = m->succ_seq = NULL;
    m->succ = NULL;
    m->score = NULL;
    m->top = NULL;
}

void pred_pathmem_clear(pred_pathmem *m)
{
    m->n = m->head = 0;
    m->n_top = 0;
    m->layer = -1;
    m->count = 0;
    m->prev = -1;
    for (int h = 0; h < m->H; h++) m->seq[h] = 0, m->succ[h] = -1, m->init[h] = 0.0f;
}

void pred_pathmem_set_ctx(pred_pathmem *m, float ctx, float power)
{
    m->ctx = !(ctx >= 0.0f) ? 0.0f : ctx > 1.0f ? 1.0f : ctx;
    m->power = !(power >= 0.0f) ? 0.0f : power > 16.0f ? 16.0f : power;
}

void pred_pathmem_begin_request(pred_pathmem *m)
{
    m->prev = -1;
    for (int h = 0; h < m->n; h++) m->init[h] = 0.0f;
}

static const uint64_t *past(const pred_pathmem *m, int h, int l)
{
    return m->mask + ((size_t)h * (size_t)m->L + (size_t)l) * (size_t)m->words;
}

void pred_pathmem_layer(pred_pathmem *m, int layer, const int *experts, int k)
{
    if (layer < 0 || layer >= m->L) return;
    int W = m->words;
    uint64_t *c = m->cur + (size_t)layer * (size_t)W;
    memset(c, 0, (size_t)W * sizeof *c);
    for (int j = 0; j < k; j++)
        if (experts[j] >= 0 && experts[j] < m->E) c[experts[j] >> 6] |= 1ull << (experts[j] & 63);
    for (int h = 0; h < m->n; h++) {
        const uint64_t *p = past(m, h, layer);
        int ov = 0;
        for (int w = 0; w < W; w++) ov += __builtin_popcountll(p[w] & c[w]);
        m->score[h] = m->gamma * (layer == 0 ? m->init[h] : m->score[h]) + (float)ov;
    }
    /* the M best (ties: the most recent first), by insertion */
    int nt = 0;
    for (int i = 0; i < m->n; i++) {
        int h = ((m->head - 1 - i) % m->H + m->H) % m->H; /* newest first */
        float s = m->score[h];
        if (!(s > 0.0f)) continue;
        if (nt == m->M && !(s > m->score[m->top[nt - 1]])) continue;
        int pos = nt < m->M ? nt++ : nt - 1;
        while (pos > 0 && m->score[m->top[pos - 1]] < s) {
            m->top[pos] = m->top[pos - 1];
            pos--;
        }
        m->top[pos] = h;
    }
    m->n_top = nt;
    m->layer = layer;
}

int pred_pathmem_predict(const pred_pathmem *m, int target, float *out)
{
    for (int e = 0; e < m->E; e++) out[e] = 0.0f;
    if (target <= m->layer || target >= m->L || m->n_top == 0) return 0;
    double tot = 0.0;
    for (int i = 0; i < m->n_top; i++) {
        int h = m->top[i];
        float s = m->score[h];
        s = powf(s, m->power);
        const uint64_t *p = past(m, h, target);
        for (int e = 0; e < m->E; e++)
            if (p[e >> 6] >> (e & 63) & 1) out[e] += s, tot += s;
    }
    if (tot > 0.0)
        for (int e = 0; e < m->E; e++) out[e] = (float)(out[e] / tot * (double)m->K);
    return m->n_top;
}

int pred_pathmem_predict_next(const pred_pathmem *m, int layer, float *out)
{
    for (int e = 0; e < m->E; e++) out[e] = 0.0f;
    if (layer < 0 || layer >= m->L) return 0;
    double tot = 0.0;
    int nv = 0;
    for (int i = 0; i < m->n_top; i++) {
        int h = m->top[i], sx = m->succ[h];
        if (sx < 0 || m->seq[sx] != m->succ_seq[h]) continue;
        float s = m->score[h];
        s = powf(s, m->power);
        const uint64_t *p = past(m, sx, layer);
        for (int e = 0; e < m->E; e++)
            if (p[e >> 6] >> (e & 63) & 1) out[e] += s, tot += s;
        nv++;
    }
    if (tot > 0.0)
        for (int e = 0; e < m->E; e++) out[e] = (float)(out[e] / tot * (double)m->K);
    return nv;
}

void pred_pathmem_end_token(pred_pathmem *m)
{
    int slot = m->head;
    /* the context of the next token: each successor inherits its predecessor's full match */
    for (int h = 0; h < m->n; h++) m->init[h] = 0.0f;
    if (m->ctx > 0.0f && m->layer >= 0)
        for (int h = 0; h < m->n; h++) {
            int sx = m->succ[h];
            if (sx >= 0 && m->seq[sx] == m->succ_seq[h]) m->init[sx] = m->ctx * m->score[h];
        }
    m->seq[slot] = ++m->count;
    m->succ[slot] = -1;
    if (m->prev >= 0 && m->seq[m->prev] == m->prev_seq) {
        m->succ[m->prev] = slot;
        m->succ_seq[m->prev] = m->count;
    }
    m->prev = slot;
    m->prev_seq = m->count;
    memcpy(m->mask + (size_t)m->head * (size_t)m->L * (size_t)m->words, m->cur,
           (size_t)m->L * (size_t)m->words * sizeof *m->cur);
    m->score[m->head] = 0.0f;
    m->init[m->head] = 0.0f;
    m->head = (m->head + 1) % m->H;
    if (m->n < m->H) m->n++;
    m->layer = -1;
    m->n_top = 0;
}
