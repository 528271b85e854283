/*
 * sampler.c — see sampler.h. Order of operations, as vLLM applies them:
 * penalties on the raw logits, then greedy argmax if temperature is 0, else
 * temperature, softmax, top-k, top-p, min-p, and a draw from a xoshiro256**
 * stream seeded by splitmix64(seed), so a seed reproduces a completion.
 */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct eng_sampler {
    eng_sampling p;
    int vocab;
    uint64_t s[4];
    uint32_t *counts;   /* per token: times emitted (for penalties) */
    int *idx;           /* scratch: candidate indices */
    float *prob;        /* scratch */
    int32_t *bias_ids;  /* logit_bias */
    float *bias;
    int n_bias;
};

void eng_sampling_default(eng_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->top_p = 1.0f;
}

emoe_status eng_sampling_check(const eng_sampling *s, emoe_err *err)
{
    if (!(s->temperature >= 0 && s->temperature <= 100)) return emoe_errf(err, EMOE_EINVAL, "temperature must be in [0, 100]");
    if (!(s->top_p > 0 && s->top_p <= 1)) return emoe_errf(err, EMOE_EINVAL, "top_p must be in (0, 1]");
    if (s->top_k < 0) return emoe_errf(err, EMOE_EINVAL, "top_k must be >= 0");
    if (!(s->min_p >= 0 && s->min_p <= 1)) return emoe_errf(err, EMOE_EINVAL, "min_p must be in [0, 1]");
    if (!(s->presence_penalty >= -2 && s->presence_penalty <= 2)) return emoe_errf(err, EMOE_EINVAL, "presence_penalty must be in [-2, 2]");
    if (!(s->frequency_penalty >= -2 && s->frequency_penalty <= 2)) return emoe_errf(err, EMOE_EINVAL, "frequency_penalty must be in [-2, 2]");
    return EMOE_OK;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(eng_sampler *s)
{
    uint64_t r = rotl(s->s[1] * 5, 7) * 9, t = s->s[1] << 17;
    s->s[2] ^= s->s[0];
    s->s[3] ^= s->s[1];
    s->s[1] ^= s->s[2];
    s->s[0] ^= s->s[3];
    s->s[2] ^= t;
    s->s[3] = rotl(s->s[3], 45);
    return r;
}

eng_sampler *eng_sampler_new(const eng_sampling *p, int vocab)
{
    eng_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->vocab = vocab;
    s->counts = calloc((size_t)vocab, sizeof *s->counts);
    s->idx = malloc(sizeof(int) * (size_t)vocab);
    s->prob = malloc(sizeof(float) * (size_t)vocab);
    if (!s->counts || !s->idx || !s->prob) { eng_sampler_free(s); return NULL; }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->s[i] = splitmix64(&x);
    return s;
}

void eng_sampler_free(eng_sampler *s)
{
    if (!s) return;
    free(s->counts);
    free(s->idx);
    free(s->prob);
    free(s->bias_ids);
    free(s->bias);
    free(s);
}

void eng_sampler_accept(eng_sampler *s, int token)
{
    if (token >= 0 && token < s->vocab && s->counts[token] < UINT32_MAX) s->counts[token]++;
}

/* qsort has no context argument: the key is thread-local. */
static _Thread_local const float *sort_key;
static int cmp_desc(const void *a, const void *b)
{
    float x = sort_key[*(const int *)a], y = sort_key[*(const int *)b];
    if (x > y) return -1;
    if (x < y) return 1;
    return *(const int *)a - *(const int *)b;
}

emoe_status eng_sampler_set_bias(eng_sampler *s, const int32_t *ids, const float *bias, int n, emoe_err *err)
{
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->vocab)
            return emoe_errf(err, EMOE_EINVAL, "logit_bias: token id %d is outside the vocabulary [0, %d)", (int)ids[i],
                             s->vocab);
    free(s->bias_ids);
    free(s->bias);
    s->bias_ids = NULL;
    s->bias = NULL;
    s->n_bias = 0;
    if (n <= 0) return EMOE_OK;
    s->bias_ids = malloc((size_t)n * sizeof *s->bias_ids);
    s->bias = malloc((size_t)n * sizeof *s->bias);
    if (!s->bias_ids || !s->bias) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    memcpy(s->bias_ids, ids, (size_t)n * sizeof *ids);
    memcpy(s->bias, bias, (size_t)n * sizeof *bias);
    s->n_bias = n;
    return EMOE_OK;
}

void eng_sampler_prepare(eng_sampler *s, float *logits)
{
    int V = s->vocab;
    if (s->p.presence_penalty != 0 || s->p.frequency_penalty != 0)
        for (int i = 0; i < V; i++)
            if (s->counts[i]) logits[i] -= s->p.presence_penalty + s->p.frequency_penalty * (float)s->counts[i];
    for (int i = 0; i < s->n_bias; i++) logits[s->bias_ids[i]] += s->bias[i];
}

int eng_sampler_sample(eng_sampler *s, float *logits)
{
    eng_sampler_prepare(s, logits);
    return eng_sampler_pick(s, logits);
}

float eng_logprobs(const float *logits, int vocab, int token, int top_n, int32_t *top_ids, float *top_lp)
{
    float mx = -INFINITY;
    for (int i = 0; i < vocab; i++) if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < vocab; i++) sum += exp((double)logits[i] - mx);
    double lse = mx + log(sum);
    if (top_n > vocab) top_n = vocab;
    /* Partial insertion sort: top_n is small (<= 20 from the API). */
    int k = 0;
    for (int i = 0; i < vocab && top_n > 0; i++) {
        float v = logits[i];
        if (k == top_n && !(v > logits[top_ids[k - 1]])) continue;
        int j = k < top_n ? k++ : k - 1;
        while (j > 0 && v > logits[top_ids[j - 1]]) { top_ids[j] = top_ids[j - 1]; j--; }
        top_ids[j] = i;
    }
    for (int j = 0; j < k; j++) top_lp[j] = (float)((double)logits[top_ids[j]] - lse);
    if (token < 0 || token >= vocab) return -INFINITY;
    return (float)((double)logits[token] - lse);
}

int eng_sampler_pick(eng_sampler *s, const float *logits)
{
    int V = s->vocab;
    if (s->p.temperature == 0) {
        int best = 0;
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < V; i++) { s->prob[i] = expf((logits[i] - mx) / s->p.temperature); sum += s->prob[i]; }
    for (int i = 0; i < V; i++) { s->prob[i] = (float)(s->prob[i] / sum); s->idx[i] = i; }
    int n = V;
    int need_sort = s->p.top_k > 0 || s->p.top_p < 1.0f;
    if (need_sort) {
        sort_key = s->prob;
        qsort(s->idx, (size_t)V, sizeof(int), cmp_desc);
        if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;
        if (s->p.top_p < 1.0f) {
            double c = 0;
            int m = 0;
            while (m < n) { c += s->prob[s->idx[m]]; m++; if (c >= s->p.top_p) break; }
            n = m;
        }
    }
    if (s->p.min_p > 0) {
        float pmax = 0;
        for (int i = 0; i < n; i++) if (s->prob[s->idx[i]] > pmax) pmax = s->prob[s->idx[i]];
        float thr = s->p.min_p * pmax;
        int m = 0;
        for (int i = 0; i < n; i++) if (s->prob[s->idx[i]] >= thr) s->idx[m++] = s->idx[i];
        n = m;
    }
    double tot = 0;
    for (int i = 0; i < n; i++) tot += s->prob[s->idx[i]];
    double u = (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0) * tot;
    double c = 0;
    for (int i = 0; i < n; i++) {
        c += s->prob[s->idx[i]];
        if (u < c) return s->idx[i];
    }
    return s->idx[n > 0 ? n - 1 : 0];
}
