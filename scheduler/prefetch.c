/*
 * prefetch.c — the expert cache and the predictor in `emoe serve` (see
 * prefetch.h).
 *
 * Data flow, all on the scheduler's run-loop thread:
 *  - on_queue (each run-loop iteration, the waiting requests in queue order):
 *    a request seen for the first time gets its plan (the predictor's plan
 *    for its task, recomputed every plan_every requests of the task, reused
 *    in between); then the plans' pairs are prefetched in queue order, rank
 *    by rank across layers, while the pairs issued for queued requests stay
 *    within plan_budget (prefetch_share of the device slots). A request that
 *    left the queue without being admitted was cancelled: its entry is
 *    dropped, its unissued pairs are never loaded, and its plan leaves the
 *    eviction prior.
 *  - on_admit: the rest of the plan is prefetched (source plan) and the plan
 *    joins the eviction prior at full weight (queued plans count half).
 *  - routing callback (during eng_step): each (request, position, layer)
 *    routing is buffered (tokens are complete only when the step ends); the
 *    routed experts are prefetched at once (source engine: a head start on
 *    the forward pass's own prefetch), then the experts the transitions
 *    predict for the next lookahead_layers layers (source lookahead); the
 *    previous layer's prediction for the same row is checked (accuracy); the
 *    task's lookups and device hits (resident at routing time) are counted.
 *  - on_step_end: buffered complete tokens go to pred_observe under their
 *    request's task (and to the live trace), then cache_step_end.
 *  - on_finish: flush, pred_end_request, the trace line is written.
 * Eviction ([predictor] evict_hint), evict_order = visit (scheduler/reuse.h):
 * the largest expected time to next use on the engine's cyclic walk over the
 * layers, fed by the routing callback; lookahead loads (speculative gating,
 * transitions) raise their expert's use probability for its layer's coming
 * visit and only evict a slot worth less (cache_prefetch_gated); when a
 * layer's visit ends (seen at the next layer's w_prefetch, once all its rows
 * are routed, or at step end), its experts likely used at the next step
 * (P >= next_step_min_use) load, gated, at most la_cap_layer of them.
 * evict_order = reuse: the largest expected reuse distance
 * (pred_tracker_reuse) from the layer being served, the tracker's prior the
 * largest plan score of any running (or, halved, queued) request; experts
 * routed at the layer being served in the current step are never chosen
 * while others are available. Ties fall back to LRU inside the cache.
 * Requests without a task use the task "default". Tokens of a step that
 * failed half way (an expert read error) are incomplete and dropped.
 */
#include "scheduler/prefetch.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cache.h"
#include "engine/quant.h"
#include "predictor/predictor.h"
#include "predictor/profile.h"
#include "predictor/trace.h"
#include "scheduler/reuse.h"

#define TASK_MAX 64
#define TASK_STATS_MAX 64
#define STEP_USE_ALPHA 0.25f   /* rate of the per-step use EWMA (next-step lookahead) */
#define VISIT_ALPHA 0.25f     /* EWMA rate of the visit order's use probability (per visit of a layer) */
#define SPEC_Q_DEFAULT 0.7f    /* use probability of a speculative-gating prediction before accuracy is measured */
#define NEXT_STEP_MIN_USE 0.05f /* below this EWMA an expert is not prefetched for the next step */ /* per-task metric series; later tasks share "other" */

typedef struct obs_rec {
    uint64_t rid;
    int task;   /* index into tasks */
    int pos, layer;
    int ex;     /* offset into ex_buf (top_k ints) */
} obs_rec;

typedef enum ent_state { ENT_QUEUED = 0, ENT_RUNNING } ent_state;

/* A request the serving loop tracks (queued or running). */
typedef struct req_ent {
    uint64_t rid;
    ent_state state;
    uint64_t seen;          /* on_queue generation it was last seen in */
    int have_plan;
    pred_plan plan;         /* its plan (owned) */
    int issued;             /* pairs of the plan prefetched while queued (rank-major order) */
    int n_sel_max;          /* largest n_sel over layers */
    int n_prompt;
    char task[TASK_MAX];
    int stat;               /* index into task stats */
    pred_trace_req *trace;  /* live trace (trace_path), or NULL */
} req_ent;

typedef struct task_stat {
    char name[TASK_MAX];
    _Atomic uint64_t lookups, hits, substituted, requests;
} task_stat;

struct prefetch_t {
    eng_engine *e;
    cache_t *cache;
    pred_t *pred;
    int L, E, K;
    int slots;             /* device slots */
    int plan_budget;       /* (layer, expert) pairs a plan selects: prefetch_share of slots */
    int lookahead;         /* [predictor] lookahead_layers */
    int global_substitute; /* [cache] miss_policy = substitute */
    char insensitive[CFG_LIST_MAX];
    char model[128];
    pred_plan plan;
    int *ids;              /* (n_experts) scratch */
    int *tok;              /* (n_layers, top_k) one token's routing */
    unsigned char *seen;   /* (n_layers) */
    float *scores;         /* (n_experts) scratch */
    float *scores_le;      /* (n_layers * n_experts) scratch */
    int *chain;            /* (top_k) scratch */
    /* routing buffer of the current step */
    obs_rec *recs;
    size_t n_recs, cap_recs;
    int *ex_buf;           /* (cap_recs, top_k) */
    char (*tasks)[TASK_MAX];
    int n_tasks, cap_tasks;
    /* tracked requests */
    req_ent *ents;
    int n_ents, cap_ents;
    uint64_t gen;
    /* eviction order */
    pred_tracker trk;
    int trk_ready;
    reuse_order ro;        /* [predictor] evict_order = visit */
    int visit_order;
    float next_min_p;      /* [predictor] next_step_min_use / 100; 0 = no next-step prefetch */
    int *cand;             /* (n_experts) scratch */
    int ns_pending;        /* layer whose visit ended, its next-step prefetch not yet issued (-1 none) */
    double *keep;          /* (n_experts) scratch: gate of each prefetched expert */
    int cur_layer;         /* the layer being served (last routed) */
    uint64_t step_no;
    uint64_t *used_step;   /* (L*E) step_no when routed (protects the layer being served) */
    float *step_use;       /* (L*E) EWMA over engine steps of "routed in the step" (next-step lookahead) */
    int *chain_e;          /* (n_experts) scratch */
    uint64_t *la_step;     /* (L*E) step_no when prefetched by lookahead/engine this step (dedupe) */
    uint64_t *la_count_step; /* (L) step of la_count */
    int *la_count;         /* (L) lookahead prefetches of a layer in this step */
    int la_cap_layer;      /* their bound */
    /* lookahead accuracy: predicted next-layer set per row of the layer being routed */
    int la_layer, la_row, la_cap;
    int spec_seen, spec_row; /* the engine reports speculative gating (eng_expert_provider.predicted) */
    uint64_t *la_rid;
    int *la_pos;
    int *la_pred;          /* (la_cap, top_k) */
    unsigned char *la_valid;
    int *la_next;          /* (la_cap, top_k) predictions made at this layer for the next */
    unsigned char *la_next_valid;
    uint64_t *la_next_rid;
    int *la_next_pos;
    /* task profile (run-loop owned); a reload parks the new one in pending */
    pred_profile *profile;
    int profile_any_substitute;
    pthread_mutex_t pend_mu;
    pred_profile *pending;
    char profile_path[CFG_STR_MAX];
    /* the provider the engine sees: the cache's, plus the per-task policy */
    eng_expert_provider prov;
    /* live traces */
    FILE *trace_f;
    FILE *acq_f;           /* [predictor] acquire_log (diagnostic) */
    int acq_any;           /* something written in the current step */
    /* per-task figures */
    task_stat tstats[TASK_STATS_MAX + 1];
    _Atomic int n_tstats;
    /* counters for /metrics (written by the run loop) */
    _Atomic uint64_t plans, plans_computed, plan_prefetched, queue_plans, queue_prefetched, queue_dropped,
        la_prefetched, la_predicted, la_hits, la_checked, next_step_prefetched, observed_tokens, requests, insensitive_reqs, errors,
        traced, substituted;
    _Atomic int n_tasks_known, n_queued;
    /* miss policy lowbit: low-bit expert uses per task of finished requests (lb_mu) */
    pthread_mutex_t lb_mu;
    struct { char task[TASK_MAX]; uint64_t uses, requests; } lb_task[TASK_MAX];
    int n_lb_task;
    uint64_t lb_other;     /* tasks past the table's size */
};

static const char *task_of(const sched_req *r)
{
    const char *t = sched_req_task(r);
    return t && t[0] ? t : "default";
}

/* ---- task profile ---- */

static void profile_install(prefetch_t *pf, pred_profile *p)
{
    free(pf->profile);
    pf->profile = p;
    pf->profile_any_substitute = 0;
    for (int i = 0; p && i < p->n_tasks; i++) pf->profile_any_substitute |= p->tasks[i].substitute;
}

static void profile_take_pending(prefetch_t *pf)
{
    pthread_mutex_lock(&pf->pend_mu);
    pred_profile *p = pf->pending;
    pf->pending = NULL;
    pthread_mutex_unlock(&pf->pend_mu);
    if (!p) return;
    profile_install(pf, p);
    LOG_INFO("task profile %s installed (%d tasks)", p->path, p->n_tasks);
}

static int task_insensitive(prefetch_t *pf, const char *task)
{
    if (cfg_list_has(pf->insensitive, task)) return 1;
    const pred_profile_task *t = pred_profile_find(pf->profile, task);
    return t && t->insensitive;
}

/* ---- per-task figures ---- */

static int stat_index(prefetch_t *pf, const char *task)
{
    int n = atomic_load(&pf->n_tstats);
    for (int i = 0; i < n; i++)
        if (!strcmp(pf->tstats[i].name, task)) return i;
    if (n == TASK_STATS_MAX) return TASK_STATS_MAX; /* "other" */
    snprintf(pf->tstats[n].name, TASK_MAX, "%s", task);
    atomic_store(&pf->n_tstats, n + 1);
    return n;
}

/* ---- tracked requests ---- */

static req_ent *ent_find(prefetch_t *pf, uint64_t rid)
{
    for (int i = 0; i < pf->n_ents; i++)
        if (pf->ents[i].rid == rid) return &pf->ents[i];
    return NULL;
}

static void ent_drop(prefetch_t *pf, req_ent *x)
{
    pred_plan_free(&x->plan);
    if (x->trace) { pred_req_free(x->trace); free(x->trace); }
    *x = pf->ents[--pf->n_ents];
}

static void prior_rebuild(prefetch_t *pf)
{
    if (!pf->trk_ready) return;
    size_t le = (size_t)pf->L * (size_t)pf->E;
    float *prior = pf->trk.prior;
    memset(prior, 0, le * sizeof *prior);
    for (int a = 0; a < pf->n_ents; a++) {
        const req_ent *x = &pf->ents[a];
        if (!x->have_plan) continue;
        float w = x->state == ENT_RUNNING ? 1.0f : 0.5f;
        for (size_t i = 0; i < le; i++)
            if (w * x->plan.score[i] > prior[i]) prior[i] = w * x->plan.score[i];
    }
}

/* Creates the entry of request r with its plan. NULL on failure (logged). */
static req_ent *ent_new(prefetch_t *pf, const sched_req *r, ent_state state)
{
    if (pf->n_ents == pf->cap_ents) {
        int nc = pf->cap_ents ? pf->cap_ents * 2 : 16;
        req_ent *ne = realloc(pf->ents, (size_t)nc * sizeof *ne);
        if (!ne) return NULL;
        pf->ents = ne;
        pf->cap_ents = nc;
    }
    req_ent *x = &pf->ents[pf->n_ents];
    memset(x, 0, sizeof *x);
    x->rid = sched_req_id(r);
    x->state = state;
    x->n_prompt = sched_req_n_prompt(r);
    snprintf(x->task, sizeof x->task, "%s", task_of(r));
    x->stat = stat_index(pf, x->task);
    emoe_err err = {0};
    if (pred_plan_init(&x->plan, pf->L, pf->E, &err) != EMOE_OK) return NULL;
    pf->n_ents++;
    int insensitive = task_insensitive(pf, x->task);
    /* Marked at every plan of an insensitive task: the mark lives in the
     * task's slot, which the predictor may have recycled since. */
    if (insensitive && pred_set_insensitive(pf->pred, x->task, 1, &err) != EMOE_OK) {
        LOG_WARN("predictor: %s", err.msg);
        atomic_fetch_add(&pf->errors, 1);
        return x;
    }
    if (insensitive) atomic_fetch_add(&pf->insensitive_reqs, 1);
    pred_prompt_info info = {x->n_prompt, sched_req_max_tokens(r)};
    int replanned = 0;
    if (pred_plan_get(pf->pred, x->task, &info, pf->plan_budget, 0, &x->plan, &replanned, &err) != EMOE_OK) {
        LOG_WARN("predictor: task %s: %s", x->task, err.msg);
        atomic_fetch_add(&pf->errors, 1);
        return x;
    }
    x->have_plan = x->plan.source != PRED_PLAN_EMPTY;
    for (int l = 0; l < pf->L; l++)
        if (x->plan.n_sel[l] > x->n_sel_max) x->n_sel_max = x->plan.n_sel[l];
    atomic_fetch_add(&pf->plans, 1);
    atomic_store(&pf->plans_computed, pred_plans_computed(pf->pred));
    atomic_store(&pf->n_tasks_known, pred_n_tasks(pf->pred));
    return x;
}

/* Prefetches pairs [from, to) of x's plan in rank-major order (rank 0 of
 * every layer, then rank 1, ...). Returns the pairs handed to the cache. */
static int plan_issue(prefetch_t *pf, const req_ent *x, int from, int to, cache_pf_source src)
{
    int idx = 0, n = 0;
    for (int j = 0; j < x->n_sel_max && idx < to; j++) {
        for (int l = 0; l < pf->L && idx < to; l++) {
            if (j >= x->plan.n_sel[l]) continue;
            if (idx++ < from) continue;
            int ex = x->plan.order[(size_t)l * (size_t)pf->E + (size_t)j];
            cache_prefetch_from(pf->cache, src, l, &ex, 1);
            n++;
        }
    }
    return n;
}

/* ---- routing buffer ---- */

static int intern_task(prefetch_t *pf, const char *t)
{
    for (int i = 0; i < pf->n_tasks; i++)
        if (!strcmp(pf->tasks[i], t)) return i;
    if (pf->n_tasks == pf->cap_tasks) {
        int nc = pf->cap_tasks ? pf->cap_tasks * 2 : 8;
        char(*nt)[TASK_MAX] = realloc(pf->tasks, (size_t)nc * sizeof *nt);
        if (!nt) return -1;
        pf->tasks = nt;
        pf->cap_tasks = nc;
    }
    snprintf(pf->tasks[pf->n_tasks], TASK_MAX, "%s", t);
    return pf->n_tasks++;
}

/* Higher = keep longer: minus the expected reuse distance; experts routed at
 * the layer being served in this step first of all. */
static double hint_fn(void *user, int layer, int expert)
{
    prefetch_t *pf = user;
    if (pf->visit_order) return reuse_keep(&pf->ro, layer, expert);
    size_t i = (size_t)layer * (size_t)pf->E + (size_t)expert;
    if (layer == pf->cur_layer && pf->used_step[i] == pf->step_no) return 1e30;
    return -pred_tracker_reuse(&pf->trk, pf->cur_layer, layer, expert, NULL);
}

static int la_grow(prefetch_t *pf, int need)
{
    if (need <= pf->la_cap) return 0;
    int nc = pf->la_cap ? pf->la_cap : 64;
    while (nc < need) nc *= 2;
    size_t K = (size_t)pf->K;
#define G(p, n) do { void *q = realloc(p, (size_t)(n) * sizeof *(p)); if (!q) return -1; p = q; } while (0)
    G(pf->la_rid, nc); G(pf->la_pos, nc); G(pf->la_pred, (size_t)nc * K); G(pf->la_valid, nc);
    G(pf->la_next, (size_t)nc * K); G(pf->la_next_valid, nc); G(pf->la_next_rid, nc); G(pf->la_next_pos, nc);
#undef G
    memset(pf->la_valid + pf->la_cap, 0, (size_t)(nc - pf->la_cap));
    memset(pf->la_next_valid + pf->la_cap, 0, (size_t)(nc - pf->la_cap));
    pf->la_cap = nc;
    return 0;
}

/* Top m of scores[0..E) into out (descending). */
static void top_m(const float *scores, int E, int m, int *out)
{
    for (int j = 0; j < m; j++) out[j] = -1;
    for (int e = 0; e < E; e++) {
        int at = m;
        while (at > 0 && (out[at - 1] < 0 || scores[e] > scores[out[at - 1]])) at--;
        if (at >= m) continue;
        memmove(out + at + 1, out + at, (size_t)(m - at - 1) * sizeof *out);
        out[at] = e;
    }
}

/* A speculative load is a whole load of disk time whether or not it is used,
 * and the disk is what the budgeted engine waits for: it may only evict an
 * expert whose next use is expected at least a step (n_layers visits) later
 * than the loaded one's. (Chosen on the issue-11 benchmark: with no margin
 * the lookahead added 5,000-8,000 loads per run to the 28,500-30,400 of
 * demand paging, with this one 1,000-4,000, for the same wall time within
 * the noise; docs/performance.md.) */
static double spec_margin(const prefetch_t *pf) { return (double)pf->L; }

/* Prefetches (layer, experts) not yet asked for in this step under src.
 * Lookahead asks for at most la_cap_layer experts of one layer per step (the
 * layer's share of the device slots, at least top_k). With the visit order
 * and q (each expert's predicted use probability at the layer's coming
 * visit), the prediction raises the expert's keep-score until its layer has
 * run, and the load only evicts a slot worth less (cache_prefetch_gated). */
static int prefetch_new(prefetch_t *pf, cache_pf_source src, int layer, const int *experts, const float *q, int k)
{
    int n = 0;
    for (int j = 0; j < k; j++) {
        if (experts[j] < 0 || experts[j] >= pf->E) continue;
        size_t i = (size_t)layer * (size_t)pf->E + (size_t)experts[j];
        if (q && pf->visit_order) reuse_expect(&pf->ro, layer, experts[j], q[j]);
        if (pf->la_step[i] == pf->step_no) continue;
        if (src == CACHE_PF_LOOKAHEAD) {
            if (pf->la_count_step[layer] != pf->step_no) { pf->la_count_step[layer] = pf->step_no; pf->la_count[layer] = 0; }
            if (pf->la_count[layer] >= pf->la_cap_layer) continue;
            pf->la_count[layer]++;
        }
        pf->la_step[i] = pf->step_no;
        if (q && pf->visit_order) pf->keep[n] = reuse_keep_at(&pf->ro, layer, reuse_prob(&pf->ro, layer, experts[j])) - spec_margin(pf);
        pf->ids[n++] = experts[j];
    }
    if (n && q && pf->visit_order) return cache_prefetch_gated(pf->cache, src, layer, pf->ids, pf->keep, n);
    if (n) cache_prefetch_from(pf->cache, src, layer, pf->ids, n);
    return n;
}

/* The use probability a speculative-gating prediction stands for: its
 * measured accuracy once there is enough of it. */
static float spec_q(prefetch_t *pf)
{
    uint64_t c = atomic_load(&pf->la_checked);
    return c >= 1000 ? (float)atomic_load(&pf->la_hits) / (float)c : SPEC_Q_DEFAULT;
}

/* The visit of `layer` ended (visit order): its experts most likely used at
 * the next step's visit, P >= next_min_p, at most the layer's share of the
 * slots, load now, gated, so the disk works for the next step during the
 * rest of this one. */
static void next_step_prefetch(prefetch_t *pf, int layer)
{
    if (!pf->visit_order || pf->next_min_p <= 0.0f || layer < 0 || layer >= pf->L) return;
    int n = 0;
    for (int x = 0; x < pf->E; x++) {
        pf->scores[x] = reuse_prob(&pf->ro, layer, x);
        if (pf->scores[x] >= pf->next_min_p) n++;
    }
    if (n == 0) return;
    int m = n < pf->la_cap_layer ? n : pf->la_cap_layer;
    top_m(pf->scores, pf->E, m, pf->cand);
    float qs[64];
    int nc = 0;
    for (int j = 0; j < m && nc < 64; j++) {
        int x = pf->cand[j];
        if (x < 0 || cache_is_resident(pf->cache, layer, x)) continue;
        pf->cand[nc] = x;
        qs[nc++] = pf->scores[x];
    }
    if (nc == 0) return;
    /* gated by the keep-score each would have once resident */
    for (int j = 0; j < nc; j++) pf->keep[j] = reuse_keep_at(&pf->ro, layer, qs[j]) - spec_margin(pf);
    int got = cache_prefetch_gated(pf->cache, CACHE_PF_LOOKAHEAD, layer, pf->cand, pf->keep, nc);
    atomic_fetch_add(&pf->la_prefetched, (uint64_t)got);
    atomic_fetch_add(&pf->next_step_prefetched, (uint64_t)got);
}

/* One row of layer `layer` was routed: check the previous layer's prediction
 * for it, predict the next layers and prefetch them. */
static void lookahead_row(prefetch_t *pf, const char *task, uint64_t rid, int pos, int layer, const int *experts)
{
    int K = pf->K;
    if (layer != pf->la_layer) {
        /* a new layer: yesterday's "next" predictions become today's */
        int *tp = pf->la_pred; pf->la_pred = pf->la_next; pf->la_next = tp;
        unsigned char *tv = pf->la_valid; pf->la_valid = pf->la_next_valid; pf->la_next_valid = tv;
        uint64_t *tr = pf->la_rid; pf->la_rid = pf->la_next_rid; pf->la_next_rid = tr;
        int *tq = pf->la_pos; pf->la_pos = pf->la_next_pos; pf->la_next_pos = tq;
        if (pf->la_cap) {
            if (layer != pf->la_layer + 1) memset(pf->la_valid, 0, (size_t)pf->la_cap);
            memset(pf->la_next_valid, 0, (size_t)pf->la_cap);
        }
        pf->la_layer = layer;
        pf->la_row = 0;
        pf->spec_row = 0;
    }
    int row = pf->la_row++;
    if (la_grow(pf, row + 1) != 0) return;
    if (pf->la_valid[row] && pf->la_rid[row] == rid && pf->la_pos[row] == pos) {
        const int *p = pf->la_pred + (size_t)row * (size_t)K;
        uint64_t hit = 0;
        for (int j = 0; j < K; j++)
            for (int i = 0; i < K; i++)
                if (experts[j] == p[i]) { hit++; break; }
        atomic_fetch_add(&pf->la_hits, hit);
        atomic_fetch_add(&pf->la_checked, (uint64_t)K);
    }
    if (layer + 1 >= pf->L || pf->spec_seen) return; /* the engine's speculative gating predicts instead */
    emoe_err err = {0};
    const int *from = experts;
    for (int d = 1; d <= pf->lookahead && layer + d < pf->L; d++) {
        if (pred_next_layer(pf->pred, task, layer + d - 1, from, K, pf->scores, &err) != EMOE_OK) return;
        top_m(pf->scores, pf->E, K, pf->chain);
        if (d == 1) {
            memcpy(pf->la_next + (size_t)row * (size_t)K, pf->chain, (size_t)K * sizeof(int));
            pf->la_next_valid[row] = 1;
            pf->la_next_rid[row] = rid;
            pf->la_next_pos[row] = pos;
            atomic_fetch_add(&pf->la_predicted, (uint64_t)K);
        }
        float qs[64];
        for (int j = 0; j < K && j < 64; j++) qs[j] = pf->chain[j] >= 0 ? pf->scores[pf->chain[j]] : 0.0f;
        atomic_fetch_add(&pf->la_prefetched, (uint64_t)prefetch_new(pf, CACHE_PF_LOOKAHEAD, layer + d, pf->chain,
                                                                    K <= 64 ? qs : NULL, K));
        from = pf->chain;
    }
}

static void on_route(void *user, void *tag, int pos, int layer, const int *experts, const float *w, int k)
{
    (void)w;
    prefetch_t *pf = user;
    if (!tag || k != pf->K || layer < 0 || layer >= pf->L) return;
    const sched_req *r = tag; /* the scheduler tags each sequence with its request */
    const char *task = task_of(r);
    uint64_t rid = sched_req_id(r);
    if (pf->visit_order) {
        /* a new visit: the previous layer's next-step prefetch waits until
         * every row of this one is routed (w_prefetch), so that it cannot
         * evict what this layer is about to use */
        if (pf->ro.active && layer != pf->ro.cur) pf->ns_pending = pf->ro.cur;
        reuse_route(&pf->ro, layer, experts, k);
    }
    pf->cur_layer = layer;
    /* per-task device hits: the routed experts resident when routed */
    req_ent *x = ent_find(pf, rid);
    int si = x ? x->stat : stat_index(pf, task);
    uint64_t hit = 0;
    for (int j = 0; j < k; j++) {
        if (experts[j] < 0 || experts[j] >= pf->E) continue;
        pf->used_step[(size_t)layer * (size_t)pf->E + (size_t)experts[j]] = pf->step_no;
        hit += cache_is_resident(pf->cache, layer, experts[j]) ? 1 : 0;
    }
    atomic_fetch_add(&pf->tstats[si].lookups, (uint64_t)k);
    atomic_fetch_add(&pf->tstats[si].hits, hit);
    if (!pf->pred) return;
    /* the routed experts first (a head start on the forward pass's prefetch),
     * then the predicted ones of the next layers */
    if (pf->lookahead > 0) {
        prefetch_new(pf, CACHE_PF_ENGINE, layer, experts, NULL, k);
        lookahead_row(pf, task, rid, pos, layer, experts);
    }
    if (pf->trk_ready) pred_tracker_observe(&pf->trk, layer, experts, k);
    if (pf->n_recs == pf->cap_recs) {
        size_t nc = pf->cap_recs ? pf->cap_recs * 2 : 1024;
        obs_rec *nr = realloc(pf->recs, nc * sizeof *nr);
        if (!nr) return;
        pf->recs = nr;
        int *ne = realloc(pf->ex_buf, nc * (size_t)pf->K * sizeof *ne);
        if (!ne) return;
        pf->ex_buf = ne;
        pf->cap_recs = nc;
    }
    int t = intern_task(pf, task);
    if (t < 0) return;
    obs_rec *o = &pf->recs[pf->n_recs];
    o->rid = rid;
    o->task = t;
    o->pos = pos;
    o->layer = layer;
    o->ex = (int)(pf->n_recs * (size_t)pf->K);
    memcpy(pf->ex_buf + o->ex, experts, (size_t)k * sizeof *experts);
    pf->n_recs++;
}

static int rec_cmp(const void *a, const void *b)
{
    const obs_rec *x = a, *y = b;
    if (x->rid != y->rid) return x->rid < y->rid ? -1 : 1;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return x->ex < y->ex ? -1 : x->ex > y->ex; /* a retried step's later record wins */
}

static void trace_token(prefetch_t *pf, uint64_t rid, int pos)
{
    req_ent *x = ent_find(pf, rid);
    if (!x || !x->trace) return;
    emoe_err err = {0};
    int row = pred_req_add_token(x->trace, pos < x->n_prompt ? PRED_PHASE_PREFILL : PRED_PHASE_DECODE, pos, &err);
    if (row < 0) return;
    for (int l = 0; l < pf->L; l++)
        pred_req_set_layer(x->trace, row, l, pf->tok + (size_t)l * (size_t)pf->K, NULL, pf->K, &err);
}

/* Feeds the buffered complete tokens to the predictor and empties the buffer. */
static void flush_routing(prefetch_t *pf)
{
    if (!pf->pred || pf->n_recs == 0) {
        pf->n_recs = 0;
        pf->n_tasks = 0;
        return;
    }
    qsort(pf->recs, pf->n_recs, sizeof *pf->recs, rec_cmp);
    uint64_t n_tok = 0;
    for (size_t i = 0; i < pf->n_recs;) {
        size_t j = i;
        memset(pf->seen, 0, (size_t)pf->L);
        int n_seen = 0;
        while (j < pf->n_recs && pf->recs[j].rid == pf->recs[i].rid && pf->recs[j].pos == pf->recs[i].pos) {
            const obs_rec *o = &pf->recs[j];
            memcpy(pf->tok + (size_t)o->layer * (size_t)pf->K, pf->ex_buf + o->ex, (size_t)pf->K * sizeof *pf->tok);
            if (!pf->seen[o->layer]) { pf->seen[o->layer] = 1; n_seen++; }
            j++;
        }
        if (n_seen == pf->L) {
            emoe_err err = {0};
            if (pred_observe(pf->pred, pf->tasks[pf->recs[i].task], pf->tok, &err) == EMOE_OK) n_tok++;
            else atomic_fetch_add(&pf->errors, 1);
            if (pf->trace_f) trace_token(pf, pf->recs[i].rid, pf->recs[i].pos);
        }
        i = j;
    }
    atomic_fetch_add(&pf->observed_tokens, n_tok);
    pf->n_recs = 0;
    pf->n_tasks = 0;
}

/* ---- run-loop hooks ---- */

static void on_queue(void *user, sched_req *const *waiting, int n)
{
    prefetch_t *pf = user;
    profile_take_pending(pf);
    if (!pf->pred) return;
    uint64_t gen = ++pf->gen;
    int changed = 0;
    for (int i = 0; i < n; i++) {
        req_ent *x = ent_find(pf, sched_req_id(waiting[i]));
        if (!x) {
            x = ent_new(pf, waiting[i], ENT_QUEUED);
            if (!x) continue;
            atomic_fetch_add(&pf->queue_plans, 1);
            changed |= x->have_plan;
        }
        x->seen = gen;
        /* The SLO policy's expected expert-load time before the first token:
         * what the predictor expects the prompt's prefill to touch minus what
         * is resident now (queued prefetch lowers it as the plan lands). The
         * decode tokens come after the TTFT this estimate feeds. */
        sched_req_set_load_s_locked(waiting[i], prefetch_expected_load_s(pf, x->task, x->n_prompt));
    }
    /* queued entries not in the queue any more and not admitted: cancelled */
    for (int a = 0; a < pf->n_ents;) {
        req_ent *x = &pf->ents[a];
        if (x->state == ENT_QUEUED && x->seen != gen) {
            changed |= x->have_plan;
            ent_drop(pf, x);
            atomic_fetch_add(&pf->queue_dropped, 1);
            continue;
        }
        a++;
    }
    if (changed) prior_rebuild(pf);
    /* issue in queue order within the bounded share */
    int outstanding = 0, nq = 0;
    for (int a = 0; a < pf->n_ents; a++)
        if (pf->ents[a].state == ENT_QUEUED) { outstanding += pf->ents[a].issued; nq++; }
    atomic_store(&pf->n_queued, nq);
    for (int i = 0; i < n && outstanding < pf->plan_budget; i++) {
        req_ent *x = ent_find(pf, sched_req_id(waiting[i]));
        if (!x || !x->have_plan || x->issued >= x->plan.total_sel) continue;
        int to = x->plan.total_sel;
        if (to - x->issued > pf->plan_budget - outstanding) to = x->issued + (pf->plan_budget - outstanding);
        int m = plan_issue(pf, x, x->issued, to, CACHE_PF_QUEUE);
        outstanding += to - x->issued;
        x->issued = to;
        atomic_fetch_add(&pf->queue_prefetched, (uint64_t)m);
    }
}

static void on_admit(void *user, sched_req *r)
{
    prefetch_t *pf = user;
    if (!pf->pred) return;
    req_ent *x = ent_find(pf, sched_req_id(r));
    if (!x) x = ent_new(pf, r, ENT_RUNNING);
    if (!x) return;
    x->state = ENT_RUNNING;
    atomic_fetch_add(&pf->tstats[x->stat].requests, 1);
    if (pf->trace_f && !x->trace) {
        emoe_err err = {0};
        x->trace = calloc(1, sizeof *x->trace);
        if (x->trace && pred_req_begin(x->trace, pf->model, x->task, (int64_t)x->rid, pf->L, pf->E, pf->K, 0, &err) != EMOE_OK) {
            LOG_WARN("trace: %s", err.msg);
            free(x->trace);
            x->trace = NULL;
        }
    }
    if (!x->have_plan) return;
    /* The eviction order first, so that the prefetch below already evicts by
     * it: the plan joins the prior and seeds the EWMA. */
    if (pf->trk_ready) {
        prior_rebuild(pf);
        size_t le = (size_t)pf->L * (size_t)pf->E;
        for (size_t i = 0; i < le; i++)
            if (x->plan.score[i] > pf->trk.ewma[i]) pf->trk.ewma[i] = x->plan.score[i];
    }
    uint64_t n = 0;
    for (int l = 0; l < pf->L; l++) {
        int m = x->plan.n_sel[l];
        if (m <= 0) continue;
        for (int j = 0; j < m; j++) pf->ids[j] = x->plan.order[(size_t)l * (size_t)pf->E + (size_t)j];
        cache_prefetch_from(pf->cache, CACHE_PF_PLAN, l, pf->ids, m);
        n += (uint64_t)m;
    }
    atomic_fetch_add(&pf->plan_prefetched, n);
}

static void on_finish(void *user, sched_req *r)
{
    prefetch_t *pf = user;
    uint64_t lb = sched_req_lowbit(r);
    if (lb) {
        const char *t = task_of(r);
        pthread_mutex_lock(&pf->lb_mu);
        int i = 0;
        while (i < pf->n_lb_task && strcmp(pf->lb_task[i].task, t)) i++;
        if (i == pf->n_lb_task && i < TASK_MAX) snprintf(pf->lb_task[pf->n_lb_task++].task, TASK_MAX, "%s", t);
        if (i < pf->n_lb_task) { pf->lb_task[i].uses += lb; pf->lb_task[i].requests++; }
        else pf->lb_other += lb;
        pthread_mutex_unlock(&pf->lb_mu);
    }
    if (!pf->pred) return;
    flush_routing(pf);
    pred_end_request(pf->pred, task_of(r));
    atomic_fetch_add(&pf->requests, 1);
    req_ent *x = ent_find(pf, sched_req_id(r));
    if (!x) return;
    if (x->trace && pf->trace_f && x->trace->n_tokens > 0) {
        emoe_err err = {0};
        if (pred_req_write(x->trace, pf->trace_f, &err) == EMOE_OK && fflush(pf->trace_f) == 0) atomic_fetch_add(&pf->traced, 1);
        else { LOG_WARN("trace: %s", err.msg[0] ? err.msg : strerror(errno)); atomic_fetch_add(&pf->errors, 1); }
    }
    int had = x->have_plan;
    ent_drop(pf, x);
    if (had) prior_rebuild(pf);
}

static void on_step_end(void *user)
{
    prefetch_t *pf = user;
    flush_routing(pf);
    cache_step_end(pf->cache);
    if (pf->visit_order) {
        int last = pf->ro.active ? pf->ro.cur : -1;
        reuse_step_end(&pf->ro);
        pf->ns_pending = -1;
        next_step_prefetch(pf, last);
    }
    for (size_t i = 0, n = (size_t)pf->L * (size_t)pf->E; i < n; i++)
        pf->step_use[i] = pf->step_use[i] * (1.0f - STEP_USE_ALPHA) + (pf->used_step[i] == pf->step_no ? STEP_USE_ALPHA : 0.0f);
    if (pf->pred && pf->lookahead > 0 && !pf->visit_order) {
        /* The lookahead wraps around the step: the first lookahead_layers
         * layers of the next step, no router to apply yet, get the experts
         * recent steps used most (at most the layer's share of the slots,
         * counted in the next step's lookahead bound). */
        int m = pf->la_cap_layer < pf->E ? pf->la_cap_layer : pf->E;
        pf->step_no++;
        for (int l = 0; l < pf->lookahead && l < pf->L; l++) {
            const float *u = pf->step_use + (size_t)l * (size_t)pf->E;
            top_m(u, pf->E, m, pf->chain_e);
            int ns = 0;
            for (int j = 0; j < m; j++)
                if (pf->chain_e[j] >= 0 && u[pf->chain_e[j]] >= NEXT_STEP_MIN_USE) pf->chain_e[ns++] = pf->chain_e[j];
            atomic_fetch_add(&pf->la_prefetched, (uint64_t)prefetch_new(pf, CACHE_PF_LOOKAHEAD, l, pf->chain_e, NULL, ns));
        }
        pf->step_no--;
    }
    if (pf->acq_f && pf->acq_any) { fputc('\n', pf->acq_f); pf->acq_any = 0; }
    pf->step_no++;
    pf->la_layer = -2;
    if (pf->la_cap) {
        memset(pf->la_valid, 0, (size_t)pf->la_cap);
        memset(pf->la_next_valid, 0, (size_t)pf->la_cap);
    }
}

/* ---- the provider the engine sees ---- */

static emoe_status w_acquire(void *ctx, int layer, int expert, eng_expert_weights *w, emoe_err *err)
{
    prefetch_t *pf = ctx;
    if (pf->acq_f) {
        fprintf(pf->acq_f, "%s%d:%d", pf->acq_any ? " " : "", layer, expert);
        pf->acq_any = 1;
    }
    return cache_acquire(pf->cache, layer, expert, w, err);
}
static void w_release(void *ctx, int layer, int expert) { cache_release(((prefetch_t *)ctx)->cache, layer, expert); }
static int w_is_resident(void *ctx, int layer, int expert)
{
    return cache_is_resident(((prefetch_t *)ctx)->cache, layer, expert);
}
static int w_substitute(void *ctx)
{
    prefetch_t *pf = ctx;
    return pf->global_substitute || pf->profile_any_substitute;
}
/* Per-task miss policy: the profile's, else [cache] miss_policy. */
static int w_substitute_seq(void *ctx, void *tag)
{
    prefetch_t *pf = ctx;
    if (!tag) return pf->global_substitute;
    const pred_profile_task *t = pred_profile_find(pf->profile, task_of(tag));
    return t ? t->substitute : pf->global_substitute;
}
static void w_prefetch(void *ctx, int layer, const int *experts, int n)
{
    prefetch_t *pf = ctx;
    cache_prefetch(pf->cache, layer, experts, n);
    if (pf->ns_pending >= 0) { /* the layer's rows are all routed: the previous layer's next-step prefetch */
        int l = pf->ns_pending;
        pf->ns_pending = -1;
        next_step_prefetch(pf, l);
    }
}
/* Speculative gating: the engine applied layer `layer`'s router to the
 * previous layer's MoE input. Prefetch, and keep the next layer's prediction
 * of each row for the accuracy check. */
static void w_predicted(void *ctx, void *tag, int pos, int layer, const int *experts, int k)
{
    prefetch_t *pf = ctx;
    if (!pf->pred || k != pf->K || layer < 0 || layer >= pf->L) return;
    pf->spec_seen = 1;
    float q = spec_q(pf), qs[64];
    for (int j = 0; j < k && j < 64; j++) qs[j] = q;
    atomic_fetch_add(&pf->la_prefetched, (uint64_t)prefetch_new(pf, CACHE_PF_LOOKAHEAD, layer, experts, k <= 64 ? qs : NULL, k));
    if (!tag || layer != pf->la_layer + 1) return;
    int row = pf->spec_row++;
    if (la_grow(pf, row + 1) != 0) return;
    memcpy(pf->la_next + (size_t)row * (size_t)pf->K, experts, (size_t)k * sizeof *experts);
    pf->la_next_valid[row] = 1;
    pf->la_next_rid[row] = sched_req_id(tag);
    pf->la_next_pos[row] = pos;
    atomic_fetch_add(&pf->la_predicted, (uint64_t)k);
}

static void w_substituted(void *ctx, void *tag, int layer, int n)
{
    (void)layer;
    prefetch_t *pf = ctx;
    cache_count_substituted(pf->cache, n);
    atomic_fetch_add(&pf->substituted, (uint64_t)n);
    if (tag) {
        req_ent *x = ent_find(pf, sched_req_id(tag));
        int si = x ? x->stat : stat_index(pf, task_of(tag));
        atomic_fetch_add(&pf->tstats[si].substituted, (uint64_t)n);
    }
}

/* ---- life cycle ---- */

static void format_budget(const cfg_budget *b, char *buf, size_t n)
{
    if (b->is_pct) snprintf(buf, n, "%.9g%%", b->pct);
    else snprintf(buf, n, "%llu", (unsigned long long)b->bytes);
}

static emoe_status profile_read(prefetch_t *pf, const char *path, pred_profile **out, emoe_err *err)
{
    *out = NULL;
    pred_profile *p = malloc(sizeof *p);
    if (!p) return emoe_errf(err, EMOE_ENOMEM, "task profile: out of memory");
    emoe_status st = pred_profile_load(path, pf->L, pf->E, pf->K, p, err);
    if (st) { free(p); return st; }
    for (int i = 0; i < p->n_tasks; i++)
        LOG_INFO("task profile %s: task %s: sensitivity %.4g, %s, miss policy %s, expected output %d tokens", path,
                 p->tasks[i].name, p->tasks[i].sensitivity, p->tasks[i].insensitive ? "insensitive" : "sensitive",
                 p->tasks[i].substitute ? "substitute" : "exact", p->tasks[i].expected_output_tokens);
    *out = p;
    return EMOE_OK;
}

emoe_status prefetch_init(const emoe_config *cfg, eng_engine *e, int fail_nth_read, prefetch_t **out, emoe_err *err)
{
    *out = NULL;
    const cfg_budget *db = &cfg->cache.device_budget;
    if (db->is_pct && db->pct >= 100.0 && cfg->cache.expert_format == 0 && cfg->cache.miss_policy != CFG_MISS_LOWBIT) {
        if (fail_nth_read > 0)
            return emoe_errf(err, EMOE_EINVAL, "--inject-read-error needs a [cache] device_budget below 100%%");
        if (cfg->predictor.task_profile[0])
            LOG_WARN("[predictor] task_profile %s unused: every expert is resident ([cache] device_budget 100%%)",
                     cfg->predictor.task_profile);
        if (cfg->predictor.trace_path[0])
            LOG_WARN("[predictor] trace_path %s unused: the routing is recorded only with a [cache] device_budget below 100%%",
                     cfg->predictor.trace_path);
        return EMOE_OK;
    }
    prefetch_t *pf = calloc(1, sizeof *pf);
    if (!pf) return emoe_errf(err, EMOE_ENOMEM, "serve: out of memory");
    pthread_mutex_init(&pf->pend_mu, NULL);
    pthread_mutex_init(&pf->lb_mu, NULL);
    snprintf(pf->tstats[TASK_STATS_MAX].name, TASK_MAX, "other");
    const eng_model_desc *d = eng_desc(e);
    pf->e = e;
    pf->L = d->n_layers;
    pf->E = d->n_experts;
    pf->K = d->top_k;
    pf->cur_layer = 0;
    pf->step_no = 1;
    pf->la_layer = -2;
    pf->ns_pending = -1;
    pf->lookahead = cfg->predictor.lookahead_layers;
    pf->global_substitute = cfg->cache.miss_policy == CFG_MISS_SUBSTITUTE;
    snprintf(pf->insensitive, sizeof pf->insensitive, "%s", cfg->predictor.insensitive_tasks);
    const char *base = strrchr(cfg->model.path, '/');
    snprintf(pf->model, sizeof pf->model, "%s", base && base[1] ? base + 1 : cfg->model.path);
    snprintf(pf->profile_path, sizeof pf->profile_path, "%s", cfg->predictor.task_profile);
    emoe_status st = EMOE_OK;
    if (cfg->predictor.task_profile[0]) {
        pred_profile *p;
        if ((st = profile_read(pf, cfg->predictor.task_profile, &p, err)) != EMOE_OK) goto fail;
        profile_install(pf, p);
    }
    if (cfg->predictor.trace_path[0]) {
        pf->trace_f = fopen(cfg->predictor.trace_path, "a");
        if (!pf->trace_f) {
            st = emoe_errf(err, EMOE_EIO, "[predictor] trace_path %s: cannot open for appending: %s",
                           cfg->predictor.trace_path, strerror(errno));
            goto fail;
        }
        if (!cfg->predictor.enabled) LOG_WARN("[predictor] trace_path needs [predictor] enabled: nothing will be recorded");
    }
    if (cfg->predictor.acquire_log[0] && !(pf->acq_f = fopen(cfg->predictor.acquire_log, "w"))) {
        st = emoe_errf(err, EMOE_EIO, "[predictor] acquire_log %s: cannot open for writing: %s",
                       cfg->predictor.acquire_log, strerror(errno));
        goto fail;
    }
    char budget[64], host[64];
    format_budget(db, budget, sizeof budget);
    format_budget(&cfg->cache.host_budget, host, sizeof host);
    cache_cli_opts co = {
        .budget = budget,
        .host_budget = host,
        .miss_policy = pf->global_substitute                           ? "substitute"
                       : cfg->cache.miss_policy == CFG_MISS_LOWBIT ? "lowbit"
                                                                   : "exact",
        .expert_format = quant_format_name(cfg->cache.expert_format),
        .lowbit_format = cfg->cache.lowbit_format == 1 ? "q8" : "q4",
        .store = cfg->cache.store_path[0] ? cfg->cache.store_path : NULL,
        .queue_depth = cfg->cache.io_queue_depth,
        .fail_nth_read = fail_nth_read,
    };
    st = cache_attach(e, &co, &pf->cache, err);
    if (st != EMOE_OK) goto fail;
    /* The engine sees our provider: the cache's, with the per-task policy. */
    pf->prov = (eng_expert_provider){pf, w_acquire, w_release, w_is_resident, w_substitute, w_prefetch,
                                     w_substitute_seq, w_substituted, 0, w_predicted,
                                     cache_provider(pf->cache)->device_views /* GPU slots on CUDA */};
    if (pf->profile_any_substitute) cache_set_miss_policy(pf->cache, CACHE_MISS_SUBSTITUTE);
    eng_set_expert_provider(e, &pf->prov);
    cache_stats cs;
    cache_get_stats(pf->cache, &cs);
    pf->slots = cs.device_slots;
    pf->plan_budget = (int)((int64_t)cs.device_slots * cfg->predictor.prefetch_share / 100);
    uint64_t total = (uint64_t)pf->L * (uint64_t)pf->E * cs.slot_bytes;
    LOG_INFO("expert cache: device budget %s = %llu bytes (%d slots of %llu bytes, %.1f%% of %d experts), "
             "host tier %llu bytes (%d slots), miss policy %s, loader %s, io queue depth %d, store %s; resident %llu bytes",
             budget, (unsigned long long)cs.budget_bytes, cs.device_slots, (unsigned long long)cs.slot_bytes,
             total ? 100.0 * (double)cs.device_slots * (double)cs.slot_bytes / (double)total : 0.0, pf->L * pf->E,
             (unsigned long long)cs.host_budget_bytes, cs.host_slots,
             pf->profile ? "per task (task profile)" : co.miss_policy, cs.loader_mode ? cs.loader_mode : "?",
             cfg->cache.io_queue_depth, store_path(cache_store(pf->cache)), (unsigned long long)cs.resident_bytes);
    if (fail_nth_read > 0) LOG_WARN("testing: expert read #%d from the store will fail with EIO", fail_nth_read);

    size_t le = (size_t)pf->L * (size_t)pf->E;
    pf->ids = malloc((size_t)pf->E * sizeof *pf->ids);
    pf->tok = malloc((size_t)pf->L * (size_t)pf->K * sizeof *pf->tok);
    pf->seen = malloc((size_t)pf->L);
    pf->scores = malloc((size_t)pf->E * sizeof *pf->scores);
    pf->scores_le = malloc(le * sizeof *pf->scores_le);
    pf->chain = malloc((size_t)pf->K * sizeof *pf->chain);
    pf->used_step = calloc(le, sizeof *pf->used_step);
    pf->step_use = calloc(le, sizeof *pf->step_use);
    pf->chain_e = malloc((size_t)pf->E * sizeof *pf->chain_e);
    pf->la_step = calloc(le, sizeof *pf->la_step);
    pf->la_count_step = calloc((size_t)pf->L, sizeof *pf->la_count_step);
    pf->la_count = calloc((size_t)pf->L, sizeof *pf->la_count);
    pf->cand = malloc((size_t)pf->E * sizeof *pf->cand);
    pf->keep = malloc((size_t)pf->E * sizeof *pf->keep);
    /* a layer's fair share of the slots: more lookahead loads for one layer
     * only evict each other (prefill steps predict most of a layer) */
    pf->la_cap_layer = cs.device_slots / pf->L > pf->K ? cs.device_slots / pf->L : pf->K;
    if (!pf->ids || !pf->tok || !pf->seen || !pf->scores || !pf->scores_le || !pf->chain || !pf->used_step || !pf->la_step || !pf->step_use || !pf->chain_e ||
        !pf->la_count_step || !pf->la_count || !pf->cand || !pf->keep) {
        st = emoe_errf(err, EMOE_ENOMEM, "serve: out of memory");
        goto fail;
    }
    if (cfg->predictor.enabled) {
        pred_config pc;
        pred_config_default(&pc);
        pc.replan_every = cfg->predictor.plan_every;
        pc.max_tasks = cfg->predictor.max_tasks;
        if ((st = pred_config_check(&pc, err)) != EMOE_OK) goto fail;
        if ((st = pred_init(&pc, pf->L, pf->E, pf->K, &pf->pred, err)) != EMOE_OK) goto fail;
        if ((st = pred_plan_init(&pf->plan, pf->L, pf->E, err)) != EMOE_OK) goto fail;
        pf->prov.lookahead_layers = pf->lookahead;
        if (cfg->predictor.evict_hint) {
            if ((st = pred_tracker_init(&pf->trk, pf->pred, err)) != EMOE_OK) goto fail;
            pf->trk_ready = 1;
            if (cfg->predictor.evict_order == 0) {
                if ((st = reuse_init(&pf->ro, pf->L, pf->E, VISIT_ALPHA, err)) != EMOE_OK) goto fail;
                pf->visit_order = 1;
                pf->next_min_p = (float)cfg->predictor.next_step_min_use / 100.0f;
            }
            cache_set_evict_hint(pf->cache, hint_fn, pf);
        }
        LOG_INFO("expert predictor: plans of %d of %d slots, re-planned every %d requests of a task (queued requests "
                 "prefetched within the same bound), %d task slots, eviction by %s, lookahead %d layer(s)%s%s%s%s",
                 pf->plan_budget, pf->slots, pc.replan_every, pc.max_tasks,
                 pf->visit_order ? "visit order (cyclic time to next use)" : pf->trk_ready ? "predicted reuse distance" : "LRU", pf->lookahead,
                 pf->insensitive[0] ? ", insensitive tasks: " : "", pf->insensitive,
                 pf->trace_f ? ", recording traces to " : "", pf->trace_f ? cfg->predictor.trace_path : "");
    } else {
        LOG_INFO("expert predictor: off ([predictor] enabled = false)");
    }
    *out = pf;
    return EMOE_OK;
fail:
    prefetch_free(pf);
    return st;
}

void prefetch_hooks(prefetch_t *pf, sched_opts *so)
{
    if (!pf) return;
    so->on_admit = on_admit;
    so->on_finish = on_finish;
    so->on_step_end = on_step_end;
    so->on_queue = on_queue;
    so->hook_user = pf;
    /* the routing callback also counts per-task hits, with or without the predictor */
    eng_set_routing_cb(pf->e, on_route, pf);
}

emoe_status prefetch_reload(prefetch_t *pf, const emoe_config *next, emoe_err *err)
{
    if (!pf) return EMOE_OK;
    const char *path = next->predictor.task_profile;
    pred_profile *p = NULL;
    if (path[0]) {
        emoe_status st = profile_read(pf, path, &p, err);
        if (st) return st;
    } else if (!pf->profile_path[0]) {
        return EMOE_OK; /* none before, none now */
    } else {
        p = calloc(1, sizeof *p); /* an empty profile: every task back to [cache] miss_policy */
        if (!p) return emoe_errf(err, EMOE_ENOMEM, "task profile: out of memory");
    }
    if (p->n_tasks && !pf->global_substitute) {
        int any = 0;
        for (int i = 0; i < p->n_tasks; i++) any |= p->tasks[i].substitute;
        if (any) cache_set_miss_policy(pf->cache, CACHE_MISS_SUBSTITUTE);
    }
    snprintf(pf->profile_path, sizeof pf->profile_path, "%s", path);
    pthread_mutex_lock(&pf->pend_mu);
    free(pf->pending);
    pf->pending = p;
    pthread_mutex_unlock(&pf->pend_mu);
    return EMOE_OK;
}

void prefetch_free(prefetch_t *pf)
{
    if (!pf) return;
    eng_set_routing_cb(pf->e, NULL, NULL);
    eng_set_expert_provider(pf->e, NULL);
    cache_free(pf->cache);
    pred_free(pf->pred);
    pred_plan_free(&pf->plan);
    pred_tracker_free(&pf->trk);
    reuse_free(&pf->ro);
    free(pf->cand);
    free(pf->keep);
    while (pf->n_ents > 0) ent_drop(pf, &pf->ents[pf->n_ents - 1]);
    free(pf->ents);
    free(pf->recs);
    free(pf->ex_buf);
    free(pf->tasks);
    free(pf->ids);
    free(pf->tok);
    free(pf->seen);
    free(pf->scores);
    free(pf->scores_le);
    free(pf->chain);
    free(pf->used_step);
    free(pf->step_use);
    free(pf->chain_e);
    free(pf->la_step);
    free(pf->la_count_step);
    free(pf->la_count);
    free(pf->la_rid); free(pf->la_pos); free(pf->la_pred); free(pf->la_valid);
    free(pf->la_next); free(pf->la_next_valid); free(pf->la_next_rid); free(pf->la_next_pos);
    free(pf->profile);
    free(pf->pending);
    if (pf->trace_f) fclose(pf->trace_f);
    if (pf->acq_f) fclose(pf->acq_f);
    pthread_mutex_destroy(&pf->pend_mu);
    pthread_mutex_destroy(&pf->lb_mu);
    free(pf);
}

/* ---- estimators ---- */

double prefetch_expected_load_s(prefetch_t *pf, const char *task, int n_tokens)
{
    if (!pf || !pf->pred || n_tokens <= 0) return 0.0;
    emoe_err err = {0};
    if (pred_scores(pf->pred, task && task[0] ? task : "default", pf->scores_le, &err) != EMOE_OK) return 0.0;
    cache_stats s;
    cache_get_stats(pf->cache, &s);
    /* Wall time per load: loads overlap (io queue depth), so the disk-busy
     * time per load, not the mean latency of one (~10x more at 25%). */
    double lat = s.loads && s.busy_seconds > 0 ? s.busy_seconds / (double)s.loads : 1e-3;
    double expect = 0.0;
    for (int l = 0; l < pf->L; l++)
        for (int x = 0; x < pf->E; x++) {
            double p = pf->scores_le[(size_t)l * (size_t)pf->E + (size_t)x];
            if (p <= 0.0) continue;
            if (p > 1.0) p = 1.0;
            if (cache_is_resident(pf->cache, l, x)) continue;
            expect += 1.0 - pow(1.0 - p, (double)n_tokens);
        }
    return expect * lat;
}

int prefetch_expected_output_tokens(prefetch_t *pf, const char *task)
{
    if (!pf) return 0;
    const pred_profile_task *t = pred_profile_find(pf->profile, task && task[0] ? task : "default");
    return t ? t->expected_output_tokens : 0;
}

void prefetch_get_stats(prefetch_t *pf, prefetch_stats *o)
{
    memset(o, 0, sizeof *o);
    if (!pf) return;
    o->plans = atomic_load(&pf->plans);
    o->queue_plans = atomic_load(&pf->queue_plans);
    o->queue_prefetched = atomic_load(&pf->queue_prefetched);
    o->queue_dropped = atomic_load(&pf->queue_dropped);
    o->plan_prefetched = atomic_load(&pf->plan_prefetched);
    o->lookahead_prefetched = atomic_load(&pf->la_prefetched);
    o->lookahead_predicted = atomic_load(&pf->la_predicted);
    o->lookahead_hits = atomic_load(&pf->la_hits);
    o->lookahead_checked = atomic_load(&pf->la_checked);
    o->next_step_prefetched = atomic_load(&pf->next_step_prefetched);
    o->observed_tokens = atomic_load(&pf->observed_tokens);
    o->requests = atomic_load(&pf->requests);
    o->errors = atomic_load(&pf->errors);
    o->traced_requests = atomic_load(&pf->traced);
    o->substituted = atomic_load(&pf->substituted);
    o->queued = atomic_load(&pf->n_queued);
}

/* ---- /metrics ---- */

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, (unsigned long long)v);
}

static void gauge(FILE *f, const char *name, const char *help, double v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

/* Task names are checked by the server (printable); quotes and backslashes
 * are escaped anyway (Prometheus label syntax). */
static void label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if (*s == '\n') { fputs("\\n", f); continue; }
        fputc(*s, f);
    }
}

static void task_family(FILE *f, prefetch_t *pf, int n, const char *name, const char *type, const char *help, int which)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int i = 0; i <= TASK_STATS_MAX; i++) {
        if (i >= n && i != TASK_STATS_MAX) continue;
        task_stat *t = &pf->tstats[i];
        uint64_t lk = atomic_load(&t->lookups), h = atomic_load(&t->hits);
        if (i == TASK_STATS_MAX && lk == 0) continue;
        fprintf(f, "%s{task=\"", name);
        label(f, t->name);
        switch (which) {
        case 0: fprintf(f, "\"} %llu\n", (unsigned long long)lk); break;
        case 1: fprintf(f, "\"} %llu\n", (unsigned long long)h); break;
        case 2: fprintf(f, "\"} %.17g\n", lk ? (double)h / (double)lk : 0.0); break;
        case 3: fprintf(f, "\"} %llu\n", (unsigned long long)atomic_load(&t->substituted)); break;
        default: fprintf(f, "\"} %llu\n", (unsigned long long)atomic_load(&t->requests)); break;
        }
    }
}

void prefetch_metrics(void *user, FILE *f)
{
    prefetch_t *pf = user;
    if (!pf) return;
    cache_stats s;
    cache_get_stats(pf->cache, &s);
    static const char *tier[3] = {"device", "host", "store"};
    fprintf(f, "# HELP emoe_expert_cache_hits_total Expert lookups served by a tier (device: acquire found the "
               "expert resident; host: filled from the pinned host tier; store: extents read from the store).\n"
               "# TYPE emoe_expert_cache_hits_total counter\n");
    for (int t = 0; t < 3; t++)
        fprintf(f, "emoe_expert_cache_hits_total{tier=\"%s\"} %llu\n", tier[t], (unsigned long long)s.hits[t]);
    fprintf(f, "# HELP emoe_expert_cache_misses_total Expert lookups a tier could not serve (device/host: not "
               "resident; store: failed reads).\n# TYPE emoe_expert_cache_misses_total counter\n");
    for (int t = 0; t < 3; t++)
        fprintf(f, "emoe_expert_cache_misses_total{tier=\"%s\"} %llu\n", tier[t], (unsigned long long)s.misses[t]);
    counter(f, "emoe_expert_cache_acquires_total", "Expert acquisitions by the forward pass.", s.acquires);
    counter(f, "emoe_expert_cache_bytes_loaded_total", "Bytes read from the expert store.", s.bytes_read);
    counter(f, "emoe_expert_cache_loads_total", "Device slots filled (from the host tier or the store).", s.loads);
    counter(f, "emoe_expert_cache_load_errors_total", "Expert loads that failed (I/O error, checksum).", s.load_errors);
    counter(f, "emoe_expert_cache_evictions_total", "Experts evicted from device slots.", s.evictions);
    fprintf(f, "# HELP emoe_expert_cache_prefetch_loads_total Loads started by prefetch, by who asked (plan: a "
               "request's plan at admission; queue: a queued request's plan; lookahead: predicted experts of the next "
               "layers; engine: the experts a layer routed to).\n# TYPE emoe_expert_cache_prefetch_loads_total counter\n");
    for (int i = 0; i < CACHE_PF_SOURCES; i++)
        fprintf(f, "emoe_expert_cache_prefetch_loads_total{source=\"%s\"} %llu\n", cache_pf_source_names[i],
                (unsigned long long)s.prefetch_by_source[i]);
    fprintf(f, "# HELP emoe_expert_cache_prefetch_used_total Prefetched loads an acquire used before the slot was "
               "evicted, by source.\n# TYPE emoe_expert_cache_prefetch_used_total counter\n");
    for (int i = 0; i < CACHE_PF_SOURCES; i++)
        fprintf(f, "emoe_expert_cache_prefetch_used_total{source=\"%s\"} %llu\n", cache_pf_source_names[i],
                (unsigned long long)s.prefetch_used[i]);
    counter(f, "emoe_expert_cache_substituted_experts_total",
            "Experts the forward pass replaced by resident ones (substitute miss policy).", s.substituted);
    counter(f, "emoe_expert_cache_lowbit_uses_total",
            "Expert uses computed with the resident low-bit copy (miss policy lowbit).", s.lowbit_uses);
    fprintf(f, "# HELP emoe_expert_cache_lowbit_uses_by_task_total Low-bit expert uses (token x expert) of finished "
               "requests, per task.\n# TYPE emoe_expert_cache_lowbit_uses_by_task_total counter\n");
    fprintf(f, "# HELP emoe_expert_cache_lowbit_requests_by_task_total Finished requests that used the low-bit copy, "
               "per task.\n# TYPE emoe_expert_cache_lowbit_requests_by_task_total counter\n");
    pthread_mutex_lock(&pf->lb_mu);
    for (int i = 0; i < pf->n_lb_task; i++) {
        fprintf(f, "emoe_expert_cache_lowbit_uses_by_task_total{task=\"%s\"} %llu\n", pf->lb_task[i].task,
                (unsigned long long)pf->lb_task[i].uses);
        fprintf(f, "emoe_expert_cache_lowbit_requests_by_task_total{task=\"%s\"} %llu\n", pf->lb_task[i].task,
                (unsigned long long)pf->lb_task[i].requests);
    }
    if (pf->lb_other)
        fprintf(f, "emoe_expert_cache_lowbit_uses_by_task_total{task=\"_other\"} %llu\n", (unsigned long long)pf->lb_other);
    pthread_mutex_unlock(&pf->lb_mu);
    gauge(f, "emoe_expert_cache_lowbit_bytes", "Memory of the resident low-bit expert copy (beside the budget).",
          (double)s.lowbit_bytes);
    fprintf(f, "# HELP emoe_expert_cache_load_latency_seconds Expert load latency (request to ready).\n"
               "# TYPE emoe_expert_cache_load_latency_seconds histogram\n");
    uint64_t cum = 0;
    for (int b = 0; b < CACHE_LAT_BUCKETS - 1; b++) {
        cum += s.lat_hist[b];
        fprintf(f, "emoe_expert_cache_load_latency_seconds_bucket{le=\"%g\"} %llu\n", cache_lat_bounds_us[b] * 1e-6,
                (unsigned long long)cum);
    }
    cum += s.lat_hist[CACHE_LAT_BUCKETS - 1];
    fprintf(f, "emoe_expert_cache_load_latency_seconds_bucket{le=\"+Inf\"} %llu\n"
               "emoe_expert_cache_load_latency_seconds_sum %.9f\nemoe_expert_cache_load_latency_seconds_count %llu\n",
            (unsigned long long)cum, s.load_seconds, (unsigned long long)cum);
    fprintf(f, "# HELP emoe_expert_cache_stall_seconds_total Time engine steps waited for expert loads.\n"
               "# TYPE emoe_expert_cache_stall_seconds_total counter\nemoe_expert_cache_stall_seconds_total %.9f\n",
            s.stall_seconds);
    gauge(f, "emoe_expert_cache_stall_max_step_seconds", "Longest wait for expert loads in one engine step.",
          s.stall_max_step);
    counter(f, "emoe_expert_cache_steps_total", "Engine steps (for loads and bytes per step).", s.steps);
    gauge(f, "emoe_expert_cache_inflight_max", "Most expert loads in flight at once (queue depth reached).",
          (double)s.inflight_max);
    gauge(f, "emoe_expert_cache_inflight_mean", "Loads already in flight when a load started, on average.",
          s.loads + s.load_errors ? (double)s.inflight_sum / (double)(s.loads + s.load_errors) : 0.0);
    fprintf(f, "# HELP emoe_expert_cache_busy_seconds_total Time with at least one expert load in flight.\n"
               "# TYPE emoe_expert_cache_busy_seconds_total counter\nemoe_expert_cache_busy_seconds_total %.9f\n",
            s.busy_seconds);
    counter(f, "emoe_expert_cache_stall_bytes_total", "Bytes of expert loads that completed while the engine waited.",
            s.stall_bytes);
    gauge(f, "emoe_expert_cache_resident_bytes", "Device tier: bytes of slots holding an expert.",
          (double)s.resident_bytes);
    gauge(f, "emoe_expert_cache_peak_resident_bytes", "Device tier: most bytes resident at once.",
          (double)s.peak_resident_bytes);
    gauge(f, "emoe_expert_cache_budget_bytes", "Device tier budget in bytes.", (double)s.budget_bytes);
    gauge(f, "emoe_expert_cache_slots", "Device tier slots (experts that fit the budget).", s.device_slots);
    gauge(f, "emoe_expert_cache_host_resident_bytes", "Pinned host tier: bytes holding an expert.",
          (double)s.host_resident_bytes);
    gauge(f, "emoe_expert_cache_host_budget_bytes", "Pinned host tier budget in bytes.", (double)s.host_budget_bytes);
    int n = atomic_load(&pf->n_tstats);
    task_family(f, pf, n, "emoe_expert_cache_task_lookups_total", "counter",
                "Routed (token, layer, expert) triples of a task's requests.", 0);
    task_family(f, pf, n, "emoe_expert_cache_task_hits_total", "counter",
                "Of those, experts resident on the device when routed.", 1);
    task_family(f, pf, n, "emoe_expert_cache_task_hit_rate", "gauge", "Device hit rate of a task's routed experts.", 2);
    task_family(f, pf, n, "emoe_expert_cache_task_substituted_experts_total", "counter",
                "Experts substituted in a task's requests.", 3);
    if (!pf->pred) return;
    counter(f, "emoe_predictor_plans_total", "Prefetch plans taken (at queueing or admission; computed or reused).",
            atomic_load(&pf->plans));
    counter(f, "emoe_predictor_plans_computed_total", "Times the planner actually ran (every plan_every requests of a task).",
            atomic_load(&pf->plans_computed));
    counter(f, "emoe_predictor_prefetched_experts_total", "(layer, expert) pairs of plans handed to the cache at admission.",
            atomic_load(&pf->plan_prefetched));
    counter(f, "emoe_predictor_queue_plans_total", "Plans taken for requests while they waited in the queue.",
            atomic_load(&pf->queue_plans));
    counter(f, "emoe_predictor_queue_prefetched_experts_total", "(layer, expert) pairs prefetched for queued requests.",
            atomic_load(&pf->queue_prefetched));
    counter(f, "emoe_predictor_queue_cancelled_total", "Queued requests that left the queue unadmitted (cancelled); their "
            "remaining prefetch was dropped.", atomic_load(&pf->queue_dropped));
    gauge(f, "emoe_predictor_queued_requests", "Queued requests with a plan.", atomic_load(&pf->n_queued));
    counter(f, "emoe_predictor_lookahead_prefetched_experts_total", "Lookahead pairs handed to the cache (new in their step).",
            atomic_load(&pf->la_prefetched));
    counter(f, "emoe_predictor_next_step_prefetched_experts_total",
            "Loads started for the next step's visit of a layer when its visit ended (evict_order = visit; counted in the "
            "lookahead source too).", atomic_load(&pf->next_step_prefetched));
    uint64_t lh = atomic_load(&pf->la_hits), lc = atomic_load(&pf->la_checked);
    counter(f, "emoe_predictor_lookahead_checked_total", "Next-layer routed experts checked against the lookahead prediction.", lc);
    counter(f, "emoe_predictor_lookahead_hits_total", "Of those, experts the prediction had (top-k of the transitions).", lh);
    gauge(f, "emoe_predictor_lookahead_accuracy", "Share of the next layer's routed experts that were predicted.",
          lc ? (double)lh / (double)lc : 0.0);
    counter(f, "emoe_predictor_observed_tokens_total", "Tokens whose routing was fed to the predictor.",
            atomic_load(&pf->observed_tokens));
    counter(f, "emoe_predictor_requests_total", "Finished requests folded into the task statistics.",
            atomic_load(&pf->requests));
    counter(f, "emoe_predictor_insensitive_requests_total", "Requests of tasks marked insensitive (no per-task planning).",
            atomic_load(&pf->insensitive_reqs));
    counter(f, "emoe_predictor_traced_requests_total", "Requests written to [predictor] trace_path.", atomic_load(&pf->traced));
    counter(f, "emoe_predictor_errors_total", "Predictor calls that failed (logged).", atomic_load(&pf->errors));
    gauge(f, "emoe_predictor_tasks", "Task slots in use.", atomic_load(&pf->n_tasks_known));
}
