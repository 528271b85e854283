/*
 * predictor.c — per-task decayed expert statistics, global statistics,
 * cross-layer transitions, and the planner (see predictor.h for the model).
 *
 * Memory is fixed at pred_init: max_tasks slots of 3 (layers x experts) float
 * tables plus one (layers-1) x experts x experts transition table. Task lookup
 * is a linear scan: the slot count is small (tens) and planning is rare.
 */
#include "predictor/predictor.h"

#include <stdlib.h>
#include <string.h>

typedef struct plan_cache {
    pred_plan plan;
    int valid;
    int budget, per_layer;
    int req_at_plan;      /* owner's folded-request count when computed */
} plan_cache;

typedef struct task_slot {
    char name[PRED_TASK_NAME_MAX];
    int used;
    int insensitive;
    uint64_t last_use;
    int n_req;            /* requests folded */
    float *freq;          /* (L, E) decayed per-token activation frequency */
    float *acc;           /* (L, E) counts of the request(s) in flight */
    int64_t acc_tokens;
    int *cur;             /* (L, k) the token being observed layer by layer */
    uint8_t *cur_set;     /* (L) which layers of cur are filled */
    plan_cache pc;
} task_slot;

struct pred_t {
    pred_config cfg;
    int L, E, K;
    uint64_t clock;
    uint64_t plans_computed;
    task_slot *tasks;     /* (max_tasks) */
    float *gfreq;         /* (L, E) global decayed frequency */
    int g_req;            /* requests folded globally */
    float *trans;         /* (L-1, E, E) decayed co-occurrence layer l -> l+1 */
    plan_cache gpc;       /* the global plan (cold start / insensitive) */
    /* scratch */
    float *tmp_score;     /* (L, E) */
    int32_t *tmp_idx;     /* (L, E) */
};

void pred_config_default(pred_config *c)
{
    c->decay = 0.5f;
    c->global_decay = 0.8f;
    c->trans_decay = 0.98f;
    c->replan_every = 4;
    c->max_tasks = 64;
    c->global_blend = 0.05f;
    c->min_score = 0.0f;
    c->track_alpha = 0.06f;
    c->track_prior_w = 0.1f;
}

emoe_status pred_config_check(const pred_config *c, emoe_err *err)
{
    if (!(c->decay >= 0.0f && c->decay < 1.0f))
        return emoe_errf(err, EMOE_EINVAL, "predictor: decay %g must be in [0, 1)", (double)c->decay);
    if (!(c->global_decay >= 0.0f && c->global_decay < 1.0f))
        return emoe_errf(err, EMOE_EINVAL, "predictor: global_decay %g must be in [0, 1)",
                         (double)c->global_decay);
    if (!(c->trans_decay > 0.0f && c->trans_decay <= 1.0f))
        return emoe_errf(err, EMOE_EINVAL, "predictor: trans_decay %g must be in (0, 1]",
                         (double)c->trans_decay);
    if (c->replan_every < 1 || c->replan_every > 1000000)
        return emoe_errf(err, EMOE_EINVAL, "predictor: replan_every %d must be in [1, 1000000]",
                         c->replan_every);
    if (c->max_tasks < 1 || c->max_tasks > 65536)
        return emoe_errf(err, EMOE_EINVAL, "predictor: max_tasks %d must be in [1, 65536]",
                         c->max_tasks);
    if (!(c->global_blend >= 0.0f && c->global_blend <= 1.0f))
        return emoe_errf(err, EMOE_EINVAL, "predictor: global_blend %g must be in [0, 1]",
                         (double)c->global_blend);
    if (!(c->min_score >= 0.0f && c->min_score <= 1.0f))
        return emoe_errf(err, EMOE_EINVAL, "predictor: min_score %g must be in [0, 1]",
                         (double)c->min_score);
    if (!(c->track_alpha > 0.0f && c->track_alpha <= 1.0f))
        return emoe_errf(err, EMOE_EINVAL, "predictor: track_alpha %g must be in (0, 1]",
                         (double)c->track_alpha);
    if (!(c->track_prior_w >= 0.0f && c->track_prior_w <= 100.0f))
        return emoe_errf(err, EMOE_EINVAL, "predictor: track_prior_w %g must be in [0, 100]",
                         (double)c->track_prior_w);
    return EMOE_OK;
}

emoe_status pred_plan_init(pred_plan *pl, int n_layers, int n_experts, emoe_err *err)
{
    memset(pl, 0, sizeof *pl);
    size_t n = (size_t)n_layers * (size_t)n_experts;
    pl->n_layers = n_layers;
    pl->n_experts = n_experts;
    pl->order = calloc(n, sizeof *pl->order);
    pl->score = calloc(n, sizeof *pl->score);
    pl->n_sel = calloc((size_t)n_layers, sizeof *pl->n_sel);
    if (!pl->order || !pl->score || !pl->n_sel) {
        pred_plan_free(pl);
        return emoe_errf(err, EMOE_ENOMEM, "predictor: out of memory for a plan");
    }
    for (int l = 0; l < n_layers; l++)
        for (int e = 0; e < n_experts; e++) pl->order[(size_t)l * (size_t)n_experts + (size_t)e] = (int16_t)e;
    return EMOE_OK;
}

void pred_plan_free(pred_plan *pl)
{
    if (!pl) return;
    free(pl->order);
    free(pl->score);
    free(pl->n_sel);
    memset(pl, 0, sizeof *pl);
}

int pred_plan_selected(const pred_plan *pl, int layer, int expert)
{
    if (layer < 0 || layer >= pl->n_layers || expert < 0 || expert >= pl->n_experts) return 0;
    const int16_t *o = pl->order + (size_t)layer * (size_t)pl->n_experts;
    for (int i = 0; i < pl->n_sel[layer]; i++)
        if (o[i] == expert) return 1;
    return 0;
}

static void plan_copy(pred_plan *dst, const pred_plan *src)
{
    size_t n = (size_t)src->n_layers * (size_t)src->n_experts;
    memcpy(dst->order, src->order, n * sizeof *dst->order);
    memcpy(dst->score, src->score, n * sizeof *dst->score);
    memcpy(dst->n_sel, src->n_sel, (size_t)src->n_layers * sizeof *dst->n_sel);
    dst->total_sel = src->total_sel;
    dst->source = src->source;
    dst->version = src->version;
}

static void slot_free(task_slot *s)
{
    free(s->freq);
    free(s->acc);
    free(s->cur);
    free(s->cur_set);
    pred_plan_free(&s->pc.plan);
}

void pred_free(pred_t *p)
{
    if (!p) return;
    if (p->tasks)
        for (int i = 0; i < p->cfg.max_tasks; i++) slot_free(&p->tasks[i]);
    free(p->tasks);
    free(p->gfreq);
    free(p->trans);
    pred_plan_free(&p->gpc.plan);
    free(p->tmp_score);
    free(p->tmp_idx);
    free(p);
}

emoe_status pred_init(const pred_config *cfg, int n_layers, int n_experts, int top_k, pred_t **out,
                      emoe_err *err)
{
    *out = NULL;
    pred_config c;
    if (cfg) c = *cfg;
    else pred_config_default(&c);
    emoe_status st = pred_config_check(&c, err);
    if (st) return st;
    if (n_layers < 1 || n_layers > PRED_TRACE_MAX_LAYERS || n_experts < 1 ||
        n_experts > PRED_TRACE_MAX_EXPERTS || top_k < 1 || top_k > n_experts ||
        top_k > PRED_TRACE_MAX_TOPK)
        return emoe_errf(err, EMOE_EINVAL, "predictor: bad model shape %d layers x %d experts, top-%d",
                         n_layers, n_experts, top_k);
    pred_t *p = calloc(1, sizeof *p);
    if (!p) return emoe_errf(err, EMOE_ENOMEM, "predictor: out of memory");
    p->cfg = c;
    p->L = n_layers;
    p->E = n_experts;
    p->K = top_k;
    size_t le = (size_t)n_layers * (size_t)n_experts;
    p->tasks = calloc((size_t)c.max_tasks, sizeof *p->tasks);
    p->gfreq = calloc(le, sizeof *p->gfreq);
    p->trans = calloc((size_t)(n_layers > 1 ? n_layers - 1 : 1) * (size_t)n_experts * (size_t)n_experts,
                      sizeof *p->trans);
    p->tmp_score = calloc(le, sizeof *p->tmp_score);
    p->tmp_idx = calloc(le, sizeof *p->tmp_idx);
    if (!p->tasks || !p->gfreq || !p->trans || !p->tmp_score || !p->tmp_idx) goto oom;
    for (int i = 0; i < c.max_tasks; i++) {
        task_slot *s = &p->tasks[i];
        s->freq = calloc(le, sizeof *s->freq);
        s->acc = calloc(le, sizeof *s->acc);
        s->cur = calloc((size_t)n_layers * (size_t)top_k, sizeof *s->cur);
        s->cur_set = calloc((size_t)n_layers, 1);
        if (!s->freq || !s->acc || !s->cur || !s->cur_set) goto oom;
        if ((st = pred_plan_init(&s->pc.plan, n_layers, n_experts, err))) goto fail;
    }
    if ((st = pred_plan_init(&p->gpc.plan, n_layers, n_experts, err))) goto fail;
    *out = p;
    return EMOE_OK;
oom:
    st = emoe_errf(err, EMOE_ENOMEM, "predictor: out of memory for %d task slots", c.max_tasks);
fail:
    pred_free(p);
    return st;
}

int pred_n_layers(const pred_t *p) { return p->L; }
int pred_n_experts(const pred_t *p) { return p->E; }
int pred_top_k(const pred_t *p) { return p->K; }
uint64_t pred_plans_computed(const pred_t *p) { return p->plans_computed; }

static task_slot *find_task(const pred_t *p, const char *task)
{
    if (!task) return NULL;
    for (int i = 0; i < p->cfg.max_tasks; i++)
        if (p->tasks[i].used && !strcmp(p->tasks[i].name, task)) return &p->tasks[i];
    return NULL;
}

/* Finds or creates the slot of `task`, recycling the least recently used one. */
static task_slot *get_task(pred_t *p, const char *task, emoe_err *err)
{
    if (!task || !*task || strlen(task) >= PRED_TASK_NAME_MAX) {
        emoe_errf(err, EMOE_EINVAL, "predictor: task name empty or longer than %d bytes",
                  PRED_TASK_NAME_MAX - 1);
        return NULL;
    }
    task_slot *s = find_task(p, task);
    if (!s) {
        task_slot *victim = NULL;
        for (int i = 0; i < p->cfg.max_tasks; i++) {
            task_slot *c = &p->tasks[i];
            if (!c->used) { victim = c; break; }
            if (!victim || c->last_use < victim->last_use) victim = c;
        }
        s = victim;
        size_t le = (size_t)p->L * (size_t)p->E;
        memset(s->freq, 0, le * sizeof *s->freq);
        memset(s->acc, 0, le * sizeof *s->acc);
        memset(s->cur_set, 0, (size_t)p->L);
        s->acc_tokens = 0;
        s->n_req = 0;
        s->insensitive = 0;
        s->pc.valid = 0;
        snprintf(s->name, sizeof s->name, "%s", task);
        s->used = 1;
    }
    s->last_use = ++p->clock;
    return s;
}

int pred_task_requests(const pred_t *p, const char *task)
{
    const task_slot *s = find_task(p, task);
    return s ? s->n_req : 0;
}

int pred_n_tasks(const pred_t *p)
{
    int n = 0;
    for (int i = 0; i < p->cfg.max_tasks; i++) n += p->tasks[i].used;
    return n;
}

emoe_status pred_set_insensitive(pred_t *p, const char *task, int insensitive, emoe_err *err)
{
    task_slot *s = get_task(p, task, err);
    if (!s) return EMOE_EINVAL;
    s->insensitive = insensitive != 0;
    s->pc.valid = 0;
    return EMOE_OK;
}

/* Counts the completed token in s->cur into the histogram and transitions. */
static void token_commit(pred_t *p, task_slot *s)
{
    int any = 0;
    for (int l = 0; l < p->L; l++) {
        if (!s->cur_set[l]) continue;
        any = 1;
        const int *ex = s->cur + (size_t)l * (size_t)p->K;
        for (int j = 0; j < p->K; j++)
            if (ex[j] >= 0) s->acc[(size_t)l * (size_t)p->E + (size_t)ex[j]] += 1.0f;
        if (l + 1 < p->L && s->cur_set[l + 1]) {
            const int *nx = s->cur + (size_t)(l + 1) * (size_t)p->K;
            float *T = p->trans + (size_t)l * (size_t)p->E * (size_t)p->E;
            for (int a = 0; a < p->K; a++) {
                if (ex[a] < 0) continue;
                for (int b = 0; b < p->K; b++)
                    if (nx[b] >= 0) T[(size_t)ex[a] * (size_t)p->E + (size_t)nx[b]] += 1.0f;
            }
        }
    }
    if (any) s->acc_tokens++;
    memset(s->cur_set, 0, (size_t)p->L);
}

emoe_status pred_observe_layer(pred_t *p, const char *task, int layer, const int *experts, int k,
                               emoe_err *err)
{
    if (layer < 0 || layer >= p->L || k != p->K)
        return emoe_errf(err, EMOE_EINVAL, "predictor: observe layer %d k %d (model %d layers, top-%d)",
                         layer, k, p->L, p->K);
    task_slot *s = get_task(p, task, err);
    if (!s) return EMOE_EINVAL;
    /* A layer seen twice without token_end starts a new token. */
    if (s->cur_set[layer]) token_commit(p, s);
    int *dst = s->cur + (size_t)layer * (size_t)p->K;
    for (int j = 0; j < k; j++) {
        int e = experts[j];
        int ok = e >= 0 && e < p->E;
        for (int q = 0; ok && q < j; q++)
            if (dst[q] == e) ok = 0; /* a repeated id counts once */
        dst[j] = ok ? e : -1;
    }
    s->cur_set[layer] = 1;
    return EMOE_OK;
}

void pred_observe_token_end(pred_t *p, const char *task)
{
    task_slot *s = find_task(p, task);
    if (s) token_commit(p, s);
}

emoe_status pred_observe(pred_t *p, const char *task, const int *experts, emoe_err *err)
{
    for (int l = 0; l < p->L; l++) {
        emoe_status st = pred_observe_layer(p, task, l, experts + (size_t)l * (size_t)p->K, p->K, err);
        if (st) return st;
    }
    pred_observe_token_end(p, task);
    return EMOE_OK;
}

void pred_end_request(pred_t *p, const char *task)
{
    task_slot *s = find_task(p, task);
    if (!s) return;
    token_commit(p, s);
    if (s->acc_tokens == 0) return;
    size_t le = (size_t)p->L * (size_t)p->E;
    float inv = 1.0f / (float)s->acc_tokens;
    float d = s->n_req ? p->cfg.decay : 0.0f;
    float gd = p->g_req ? p->cfg.global_decay : 0.0f;
    for (size_t i = 0; i < le; i++) {
        float h = s->acc[i] * inv;
        s->freq[i] = d * s->freq[i] + (1.0f - d) * h;
        p->gfreq[i] = gd * p->gfreq[i] + (1.0f - gd) * h;
    }
    memset(s->acc, 0, le * sizeof *s->acc);
    s->acc_tokens = 0;
    s->n_req++;
    p->g_req++;
    if (p->cfg.trans_decay < 1.0f) {
        size_t nt = (size_t)(p->L > 1 ? p->L - 1 : 0) * (size_t)p->E * (size_t)p->E;
        for (size_t i = 0; i < nt; i++) p->trans[i] *= p->cfg.trans_decay;
    }
}

/* Score table of a slot (NULL: global). */
static void fill_scores(const pred_t *p, const task_slot *s, float *out)
{
    size_t le = (size_t)p->L * (size_t)p->E;
    if (!s || s->n_req == 0 || s->insensitive) {
        memcpy(out, p->gfreq, le * sizeof *out);
        return;
    }
    float b = p->g_req ? p->cfg.global_blend : 0.0f;
    for (size_t i = 0; i < le; i++) out[i] = (1.0f - b) * s->freq[i] + b * p->gfreq[i];
}

emoe_status pred_scores(pred_t *p, const char *task, float *out, emoe_err *err)
{
    (void)err;
    fill_scores(p, find_task(p, task), out);
    return EMOE_OK;
}

static const float *g_sort_score; /* qsort has no context argument in C11 */

static int cmp_pair(const void *a, const void *b)
{
    int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    float sa = g_sort_score[ia], sb = g_sort_score[ib];
    if (sa > sb) return -1;
    if (sa < sb) return 1;
    return ia < ib ? -1 : ia > ib;
}

/* Builds pl from scores: per-layer order, then the selection. */
static void build_plan(pred_t *p, const float *score, int budget, int per_layer, pred_plan *pl)
{
    int L = p->L, E = p->E;
    size_t le = (size_t)L * (size_t)E;
    memcpy(pl->score, score, le * sizeof *score);
    g_sort_score = score;
    for (int l = 0; l < L; l++) {
        int32_t *idx = p->tmp_idx + (size_t)l * (size_t)E;
        for (int e = 0; e < E; e++) idx[e] = l * E + e;
        qsort(idx, (size_t)E, sizeof *idx, cmp_pair);
        for (int e = 0; e < E; e++) pl->order[(size_t)l * (size_t)E + (size_t)e] = (int16_t)(idx[e] - l * E);
        pl->n_sel[l] = 0;
    }
    float thr = p->cfg.min_score;
    if (budget < 0) budget = 0;
    if (per_layer) {
        int q = budget / L;
        if (q < p->K && budget > 0) q = p->K;
        if (q > E) q = E;
        for (int l = 0; l < L; l++) {
            int n = 0;
            while (n < q && score[(size_t)l * (size_t)E + (size_t)pl->order[(size_t)l * (size_t)E + (size_t)n]] > thr)
                n++;
            pl->n_sel[l] = n;
        }
    } else {
        /* Highest-scoring pairs over all layers; ties by (layer, expert), which is
         * also the within-layer tie order, so each layer's pick is a prefix. */
        int32_t *idx = p->tmp_idx;
        for (size_t i = 0; i < le; i++) idx[i] = (int32_t)i;
        qsort(idx, le, sizeof *idx, cmp_pair);
        int n = budget < (int)le ? budget : (int)le;
        for (int i = 0; i < n; i++) {
            if (!(score[idx[i]] > thr)) break;
            pl->n_sel[idx[i] / E]++;
        }
    }
    pl->total_sel = 0;
    for (int l = 0; l < L; l++) pl->total_sel += pl->n_sel[l];
    pl->version++;
    p->plans_computed++;
}

emoe_status pred_plan_get(pred_t *p, const char *task, const pred_prompt_info *info, int budget,
                          int per_layer, pred_plan *out, int *replanned, emoe_err *err)
{
    (void)info; /* the plan covers the whole request; length does not change the set */
    if (replanned) *replanned = 0;
    if (out->n_layers != p->L || out->n_experts != p->E)
        return emoe_errf(err, EMOE_EINVAL, "predictor: plan shape %dx%d, model %dx%d", out->n_layers,
                         out->n_experts, p->L, p->E);
    task_slot *s = get_task(p, task, err);
    if (!s) return EMOE_EINVAL;
    per_layer = per_layer != 0;
    plan_cache *pc;
    int owner_req;
    pred_plan_source src;
    if (s->insensitive || s->n_req == 0) {
        pc = &p->gpc;
        owner_req = p->g_req;
        src = p->g_req == 0 ? PRED_PLAN_EMPTY : s->insensitive ? PRED_PLAN_INSENSITIVE : PRED_PLAN_GLOBAL;
    } else {
        pc = &s->pc;
        owner_req = s->n_req;
        src = PRED_PLAN_TASK;
    }
    /* Reuse unless: no plan yet, other budget, N requests since, or the cached
     * plan was made before anything was observed. */
    int stale = !pc->valid || pc->budget != budget || pc->per_layer != per_layer ||
                owner_req - pc->req_at_plan >= p->cfg.replan_every ||
                (pc->plan.source == PRED_PLAN_EMPTY && owner_req > 0);
    if (stale) {
        fill_scores(p, pc == &p->gpc ? NULL : s, p->tmp_score);
        build_plan(p, p->tmp_score, budget, per_layer, &pc->plan);
        pc->plan.source = owner_req == 0 ? PRED_PLAN_EMPTY : src;
        pc->valid = 1;
        pc->budget = budget;
        pc->per_layer = per_layer;
        pc->req_at_plan = owner_req;
        if (replanned) *replanned = 1;
    }
    plan_copy(out, &pc->plan);
    if (pc == &p->gpc && out->source != PRED_PLAN_EMPTY) out->source = src;
    return EMOE_OK;
}

emoe_status pred_next_layer(pred_t *p, const char *task, int layer, const int *experts, int k,
                            float *scores, emoe_err *err)
{
    if (layer < 0 || layer + 1 >= p->L)
        return emoe_errf(err, EMOE_EINVAL, "predictor: no layer after %d (model has %d)", layer, p->L);
    int E = p->E;
    const task_slot *s = find_task(p, task);
    /* the prior of layer+1 only (fill_scores' rule, one row) */
    float *prior = p->tmp_score;
    const float *g = p->gfreq + (size_t)(layer + 1) * (size_t)E;
    if (!s || s->n_req == 0 || s->insensitive) {
        memcpy(prior, g, (size_t)E * sizeof *prior);
    } else {
        const float *f = s->freq + (size_t)(layer + 1) * (size_t)E;
        float b = p->g_req ? p->cfg.global_blend : 0.0f;
        for (int e = 0; e < E; e++) prior[e] = (1.0f - b) * f[e] + b * g[e];
    }
    const float *T = p->trans + (size_t)layer * (size_t)E * (size_t)E;
    for (int e = 0; e < E; e++) scores[e] = 0.0f;
    double mass = 0.0;
    for (int j = 0; j < k; j++) {
        int a = experts[j];
        if (a < 0 || a >= E) continue;
        for (int b = 0; b < E; b++) {
            scores[b] += T[(size_t)a * (size_t)E + (size_t)b];
            mass += T[(size_t)a * (size_t)E + (size_t)b];
        }
    }
    /* Confidence grows with the evidence behind the rows used. */
    double alpha = mass > 0.0 ? mass / (mass + 8.0 * (double)p->K) : 0.0;
    for (int b = 0; b < E; b++) {
        double t = mass > 0.0 ? (double)scores[b] / mass * (double)p->K : 0.0;
        scores[b] = (float)(alpha * t + (1.0 - alpha) * (double)prior[b]);
    }
    return EMOE_OK;
}

emoe_status pred_tracker_init(pred_tracker *t, const pred_t *p, emoe_err *err)
{
    memset(t, 0, sizeof *t);
    size_t le = (size_t)p->L * (size_t)p->E;
    t->n_layers = p->L;
    t->n_experts = p->E;
    t->alpha = p->cfg.track_alpha;
    t->prior_w = p->cfg.track_prior_w;
    t->ewma = calloc(le, sizeof *t->ewma);
    t->prior = calloc(le, sizeof *t->prior);
    if (!t->ewma || !t->prior) {
        pred_tracker_free(t);
        return emoe_errf(err, EMOE_ENOMEM, "predictor: out of memory for a tracker");
    }
    return EMOE_OK;
}

void pred_tracker_free(pred_tracker *t)
{
    if (!t) return;
    free(t->ewma);
    free(t->prior);
    t->ewma = t->prior = NULL;
}

void pred_tracker_reset(pred_tracker *t, const pred_plan *plan)
{
    size_t le = (size_t)t->n_layers * (size_t)t->n_experts;
    if (plan && plan->n_layers == t->n_layers && plan->n_experts == t->n_experts) {
        memcpy(t->ewma, plan->score, le * sizeof *t->ewma);
        memcpy(t->prior, plan->score, le * sizeof *t->prior);
    } else {
        memset(t->ewma, 0, le * sizeof *t->ewma);
        memset(t->prior, 0, le * sizeof *t->prior);
    }
}

void pred_tracker_observe(pred_tracker *t, int layer, const int *experts, int k)
{
    if (layer < 0 || layer >= t->n_layers) return;
    float *row = t->ewma + (size_t)layer * (size_t)t->n_experts;
    float keep = 1.0f - t->alpha;
    for (int e = 0; e < t->n_experts; e++) row[e] *= keep;
    for (int j = 0; j < k; j++)
        if (experts[j] >= 0 && experts[j] < t->n_experts) row[experts[j]] += t->alpha;
}

double pred_tracker_reuse(const pred_tracker *t, int cur_layer, int layer, int expert, const float *q_next)
{
    int L = t->n_layers;
    double p = pred_tracker_score(t, layer, expert);
    if (!(p >= 1e-4)) p = 1e-4; /* also catches NaN */
    if (p > 1.0) p = 1.0;
    int d = ((layer - cur_layer) % L + L) % L;
    if (d == 0) d = L; /* the layer being served comes back next token */
    if (d == 1 && q_next) {
        double q = q_next[expert];
        if (!(q >= 0.0)) q = 0.0;
        if (q > 1.0) q = 1.0;
        return 1.0 + (1.0 - q) * L / p;
    }
    return d + L * (1.0 - p) / p;
}
