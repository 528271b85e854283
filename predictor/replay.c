/*
 * replay.c — the offline cache simulator behind `emoe replay` (see replay.h).
 *
 * The state is a handful of per-slot arrays (slot = layer*n_experts + expert).
 * Victim selection scans the pool: pools hold at most a few thousand slots and
 * traces a few hundred thousand accesses, so a scan is simpler than a heap and
 * still takes milliseconds. Belady needs each access's next use: the access
 * stream is flattened once and a backward pass links every access to the next
 * one of the same slot.
 */
#include "predictor/replay.h"

#include "predictor/forecast.h"
#include "predictor/pathmem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void pred_replay_opts_default(pred_replay_opts *o)
{
    memset(o, 0, sizeof *o);
    o->policy = PRED_REPLAY_LRU;
    o->order = PRED_REPLAY_ORDER_INTERLEAVED;
    o->budget = 0.5;
    o->per_layer = 0;
    o->expert_bytes = 1;
    o->phases = 0;
    pred_config_default(&o->pcfg);
    o->evict = PRED_REPLAY_EVICT_SCORE;
    o->pin_frac = 0.5;
    o->no_prior = 0;
    o->lookahead = 0;
    o->fc_threshold = 0.3;
    o->fc_max = 0;
    o->fc_plan = 0;
    o->fc_lr = 0.05;
    o->fc_depth = 3;
    o->fc_history = 4096;
    o->fc_matches = 16;
    o->fc_gamma = 0.8;
    o->fc_ctx = 0.3;
    o->fc_power = 4.0;
    o->fc_precision = 0.6;
    o->fc_lru_budget = 1;
}

void pred_replay_result_free(pred_replay_result *r)
{
    if (!r) return;
    free(r->precision);
    free(r->recall);
    free(r->coverage);
    r->precision = r->recall = r->coverage = NULL;
}

#define N_POLICIES 6
static const char *const policy_names[N_POLICIES] = {"lru", "lfu", "belady", "predictor", "lookahead", "forecast"};
static const char *const order_names[] = {"file", "interleaved", "grouped"};

const char *pred_replay_policy_name(pred_replay_policy p)
{
    return (unsigned)p < N_POLICIES ? policy_names[p] : "?";
}

int pred_replay_policy_parse(const char *s, pred_replay_policy *out)
{
    for (int i = 0; i < N_POLICIES; i++)
        if (!strcmp(s, policy_names[i])) { *out = (pred_replay_policy)i; return 0; }
    return -1;
}

const char *pred_replay_order_name(pred_replay_order o) { return (unsigned)o < 3 ? order_names[o] : "?"; }

int pred_replay_order_parse(const char *s, pred_replay_order *out)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, order_names[i])) { *out = (pred_replay_order)i; return 0; }
    return -1;
}

typedef struct sim {
    const pred_replay_opts *o;
    int L, E, K, S;          /* S = L*E slots */
    int n_pools;
    int *pool_cap, *pool_used;
    uint8_t *resident, *pinned, *pref_unused;
    /* forecast with fc_lru_budget: a shadow LRU directory (which slots plain
     * LRU would hold) and its misses, the loads LRU would have made so far */
    uint8_t *sh_res;
    uint64_t *sh_last;
    int *sh_used;
    uint64_t sh_misses;
    uint64_t *last, *cnt, *stamp;
    int64_t *next_use;       /* Belady: index of the next access, INT64_MAX = never */
    float *pscore;           /* predictor: plan score of pinned slots */
    const pred_tracker *trk; /* predictor: keep-scores (score eviction) */
    const pred_forecast *fc; /* forecast: next-use estimates */
    double fc_th;            /* forecast: the prefetch threshold now (adapted with fc_precision) */
    uint64_t tick, step;
    int cur_layer;           /* layer being served */
    const float *q_next;     /* predictor: P(used by this token) for layer cur_layer+1, or NULL */
    pred_replay_result *res;
} sim;

static int pool_of(const sim *m, int s) { return m->o->per_layer ? s / m->E : 0; }

static double reuse_dist(const sim *m, int s)
{
    return pred_tracker_reuse(m->trk, m->cur_layer, s / m->E, s % m->E, m->q_next);
}

/* 1 if a should be evicted before b. */
static int worse(const sim *m, int a, int b)
{
    switch (m->o->policy) {
    case PRED_REPLAY_LFU:
        if (m->cnt[a] != m->cnt[b]) return m->cnt[a] < m->cnt[b];
        return m->last[a] < m->last[b];
    case PRED_REPLAY_BELADY:
        if (m->next_use[a] != m->next_use[b]) return m->next_use[a] > m->next_use[b];
        return m->last[a] < m->last[b];
    case PRED_REPLAY_PREDICTOR:
    case PRED_REPLAY_LOOKAHEAD:
        if (m->o->evict == PRED_REPLAY_EVICT_SCORE) {
            double sa = reuse_dist(m, a), sb = reuse_dist(m, b);
            if (sa != sb) return sa > sb;
            return m->last[a] < m->last[b];
        }
        if (m->pinned[a] != m->pinned[b]) return m->pinned[a] < m->pinned[b];
        if (m->pinned[a] && m->pscore[a] != m->pscore[b]) return m->pscore[a] < m->pscore[b];
        return m->last[a] < m->last[b];
    case PRED_REPLAY_FORECAST: {
        if (m->o->fc_stale && (m->pref_unused[a] == 2) != (m->pref_unused[b] == 2)) return m->pref_unused[a] == 2;
        double sa = pred_forecast_reuse(m->fc, m->cur_layer, a / m->E, a % m->E);
        double sb = pred_forecast_reuse(m->fc, m->cur_layer, b / m->E, b % m->E);
        if (sa != sb) return sa > sb;
        return m->last[a] < m->last[b];
    }
    case PRED_REPLAY_LRU:
    default:
        return m->last[a] < m->last[b];
    }
}

/* The victim in pool p (not serving the current step; with no_pinned, not
 * pinned either), or -1. */
static int victim(const sim *m, int p, int no_pinned)
{
    int lo = m->o->per_layer ? p * m->E : 0, hi = m->o->per_layer ? lo + m->E : m->S;
    int best = -1;
    for (int s = lo; s < hi; s++) {
        if (!m->resident[s] || m->stamp[s] == m->step) continue;
        if (no_pinned && m->pinned[s]) continue;
        if (best < 0 || worse(m, s, best)) best = s;
    }
    return best;
}

static void evict(sim *m, int s)
{
    m->resident[s] = 0;
    m->pref_unused[s] = 0;
    m->pool_used[pool_of(m, s)]--;
}

/* Makes room for one slot in s's pool; returns 0 or -1 if nothing may go. */
static int make_room(sim *m, int s, int no_pinned)
{
    int p = pool_of(m, s);
    while (m->pool_used[p] >= m->pool_cap[p]) {
        int v = victim(m, p, no_pinned);
        if (v < 0) return -1;
        evict(m, v);
    }
    return 0;
}

static void insert(sim *m, int s)
{
    m->resident[s] = 1;
    m->pool_used[pool_of(m, s)]++;
    m->res->loads++;
}

/* A forecast prefetch is resolved at its layer's first run: used (1) or not.
 * With a precision target the threshold follows it (stochastic approximation:
 * at equilibrium the share used equals the target). */
static void fc_outcome(sim *m, int used)
{
    double pi = m->o->fc_precision;
    if (m->o->policy != PRED_REPLAY_FORECAST || !(pi > 0.0)) return;
    m->fc_th += 0.002 * (pi - (double)used);
    if (m->fc_th < 0.01) m->fc_th = 0.01;
    if (m->fc_th > 1.0) m->fc_th = 1.0;
}

/* The shadow LRU directory sees the same access (fc_lru_budget). */
static void shadow_access(sim *m, int s)
{
    if (!m->sh_res) return;
    if (!m->sh_res[s]) {
        int p = pool_of(m, s);
        m->sh_misses++;
        if (m->sh_used[p] >= m->pool_cap[p]) {
            int lo = m->o->per_layer ? p * m->E : 0, hi = m->o->per_layer ? lo + m->E : m->S, v = -1;
            for (int x = lo; x < hi; x++)
                if (m->sh_res[x] && m->stamp[x] != m->step && (v < 0 || m->sh_last[x] < m->sh_last[v])) v = x;
            if (v >= 0) m->sh_res[v] = 0, m->sh_used[p]--;
        }
        m->sh_res[s] = 1;
        m->sh_used[p]++;
    }
    m->sh_last[s] = m->tick;
}

static void access_slot(sim *m, int s, int64_t next)
{
    m->tick++;
    m->res->accesses++;
    m->stamp[s] = m->step;
    if (m->resident[s]) {
        m->res->hits++;
        if (m->pref_unused[s]) {
            if (m->pref_unused[s] == 1) fc_outcome(m, 1);
            m->res->prefetch_used++;
            m->pref_unused[s] = 0;
        }
    } else {
        m->res->misses++;
        /* Pools hold >= top_k slots and only this step's experts are protected,
         * so room can always be made. */
        if (make_room(m, s, 0) == 0) insert(m, s);
    }
    m->last[s] = m->tick;
    m->cnt[s]++;
    m->next_use[s] = next;
    shadow_access(m, s);
}

static void prefetch(sim *m, int s)
{
    if (m->resident[s]) return;
    if (make_room(m, s, 1) != 0) return;
    insert(m, s);
    m->tick++;
    m->last[s] = m->tick;
    m->pref_unused[s] = 1;
    m->res->prefetches++;
}

/* Forecast prefetch for layer n while m->cur_layer is served: the
 * non-resident experts whose estimate is at least the threshold, best first
 * (at most fc_max, top_k by default), each only while it is expected sooner
 * than the victim it would displace. */
static void fc_prefetch(sim *m, int n)
{
    const pred_replay_opts *o = m->o;
    int E = m->E, maxp = o->fc_max > 0 ? o->fc_max : m->K;
    for (int c = 0; c < maxp; c++) {
        int best = -1;
        float bp = 0.0f;
        for (int e = 0; e < E; e++) {
            if (m->resident[n * E + e]) continue;
            float p = pred_forecast_p(m->fc, n, e);
            if ((double)p >= m->fc_th && (best < 0 || p > bp)) best = e, bp = p;
        }
        if (best < 0) return;
        int s = n * E + best, pool = pool_of(m, s);
        if (m->pool_used[pool] >= m->pool_cap[pool]) {
            int v = victim(m, pool, 1);
            if (v < 0) return;
            if (!(pred_forecast_reuse(m->fc, m->cur_layer, v / E, v % E) >
                  pred_forecast_reuse(m->fc, m->cur_layer, n, best)))
                return;
        }
        /* the LRU budget: never more loads so far than plain LRU would have made */
        if (o->fc_lru_budget && m->res->loads + 1 > m->sh_misses) return;
        prefetch(m, s);
    }
}

/* Orders the requests of all traces; returns a malloc'd array of n pointers. */
static const pred_trace_req **order_requests(const pred_trace *const *tr, int nt, pred_replay_order ord,
                                            int *n_out)
{
    int n = 0;
    for (int i = 0; i < nt; i++) n += tr[i]->n_reqs;
    const pred_trace_req **all = calloc((size_t)(n ? n : 1), sizeof *all);
    const pred_trace_req **out = calloc((size_t)(n ? n : 1), sizeof *out);
    int *task_of = calloc((size_t)(n ? n : 1), sizeof *task_of);
    int *taken = calloc((size_t)(n ? n : 1), sizeof *taken);
    if (!all || !out || !task_of || !taken) {
        free(all), free(out), free(task_of), free(taken);
        return NULL;
    }
    int k = 0;
    for (int i = 0; i < nt; i++)
        for (int j = 0; j < tr[i]->n_reqs; j++) all[k++] = &tr[i]->reqs[j];
    /* task index = index of the first request with that task name */
    int n_tasks = 0;
    for (int i = 0; i < n; i++) {
        task_of[i] = -1;
        for (int j = 0; j < i; j++)
            if (!strcmp(all[j]->task, all[i]->task)) { task_of[i] = task_of[j]; break; }
        if (task_of[i] < 0) task_of[i] = n_tasks++;
    }
    int w = 0;
    if (ord == PRED_REPLAY_ORDER_FILE) {
        for (int i = 0; i < n; i++) out[w++] = all[i];
    } else if (ord == PRED_REPLAY_ORDER_GROUPED) {
        for (int t = 0; t < n_tasks; t++)
            for (int i = 0; i < n; i++)
                if (task_of[i] == t) out[w++] = all[i];
    } else {
        while (w < n)
            for (int t = 0; t < n_tasks; t++)
                for (int i = 0; i < n; i++)
                    if (task_of[i] == t && !taken[i]) { taken[i] = 1; out[w++] = all[i]; break; }
    }
    free(all);
    free(task_of);
    free(taken);
    *n_out = n;
    return out;
}

static int phase_on(const pred_replay_opts *o, int phase)
{
    int mask = o->phases ? o->phases : 3;
    return (mask >> phase) & 1;
}

/* Whether request q's prefill tokens are replayed as one step per layer. */
static int batched_prefill(const pred_replay_opts *o, const pred_trace_req *q)
{
    if (!o->prefill_step || !phase_on(o, PRED_PHASE_PREFILL)) return 0;
    for (int t = 0; t < q->n_tokens; t++)
        if (q->phase[t] == PRED_PHASE_PREFILL) return 1;
    return 0;
}

/* The distinct experts of layer l over q's prefill tokens, in order of first
 * use (token by token, highest weight first): the experts one prefill step
 * acquires at that layer. mark is n_experts bytes of scratch. Returns the count. */
static int prefill_layer_set(const pred_trace_req *q, int l, uint8_t *mark, int *out)
{
    int n = 0;
    memset(mark, 0, (size_t)q->n_experts);
    for (int t = 0; t < q->n_tokens; t++) {
        if (q->phase[t] != PRED_PHASE_PREFILL) continue;
        const int16_t *ex = pred_req_experts(q, t, l);
        for (int j = 0; j < q->top_k; j++)
            if (!mark[ex[j]]) { mark[ex[j]] = 1; out[n++] = ex[j]; }
    }
    return n;
}

emoe_status pred_replay_run(const pred_trace *const *traces, int n_traces, const pred_replay_opts *o,
                            pred_replay_result *res, emoe_err *err)
{
    memset(res, 0, sizeof *res);
    emoe_status st = EMOE_OK;
    sim m;
    memset(&m, 0, sizeof m);
    const pred_trace_req **reqs = NULL;
    int32_t *flat = NULL;
    int64_t *nxt = NULL, *seen = NULL;
    pred_t *pr = NULL;
    pred_plan plan;
    memset(&plan, 0, sizeof plan);
    pred_tracker trk;
    memset(&trk, 0, sizeof trk);
    pred_forecast fc;
    memset(&fc, 0, sizeof fc);
    pred_pathmem pm;
    memset(&pm, 0, sizeof pm);
    float *pm_v = NULL;
    uint8_t *used = NULL, *inplan = NULL;
    double *tp = NULL, *n_plan = NULL, *n_used = NULL, *cov = NULL, *lacc = NULL;
    int *ids = NULL, *pset = NULL;
    uint8_t *pmark = NULL;
    float *la_scores = NULL, *q_next = NULL;
    int la_pred[PRED_TRACE_MAX_TOPK], la_valid = 0, la_layer = -1, la_m = 0;

    if (n_traces < 1) return emoe_errf(err, EMOE_EINVAL, "replay: no trace given");
    if (!(o->budget > 0.0 && o->budget <= 1.0))
        return emoe_errf(err, EMOE_EINVAL, "replay: budget %g must be in (0, 1]", o->budget);
    if (!(o->pin_frac >= 0.0 && o->pin_frac <= 1.0))
        return emoe_errf(err, EMOE_EINVAL, "replay: pin fraction %g must be in [0, 1]", o->pin_frac);
    if ((unsigned)o->policy > PRED_REPLAY_FORECAST)
        return emoe_errf(err, EMOE_EINVAL, "replay: unknown policy %d", (int)o->policy);
    if ((unsigned)o->evict > PRED_REPLAY_EVICT_PIN_LRU)
        return emoe_errf(err, EMOE_EINVAL, "replay: unknown eviction mode %d", (int)o->evict);
    if (o->lookahead < 0) return emoe_errf(err, EMOE_EINVAL, "replay: lookahead must be >= 0");
    if (o->policy == PRED_REPLAY_FORECAST &&
        (o->fc_depth < 1 || o->fc_depth > 64 || o->fc_history < 1 || o->fc_matches < 1 ||
         !(o->fc_gamma >= 0.0 && o->fc_gamma <= 1.0) || !(o->fc_ctx >= 0.0 && o->fc_ctx <= 1.0) ||
         !(o->fc_power >= 0.0 && o->fc_power <= 16.0)))
        return emoe_errf(err, EMOE_EINVAL,
                         "replay: forecast depth %d must be in [1, 64], history %d and matches %d >= 1, gamma %g and context %g in [0, 1], power %g in [0, 16]",
                         o->fc_depth, o->fc_history, o->fc_matches, o->fc_gamma, o->fc_ctx, o->fc_power);
    if (o->fc_max < 0) return emoe_errf(err, EMOE_EINVAL, "replay: forecast prefetch count must be >= 0");
    if (!(o->fc_precision >= 0.0 && o->fc_precision < 1.0))
        return emoe_errf(err, EMOE_EINVAL, "replay: forecast precision target %g must be in [0, 1)", o->fc_precision);
    if (!(o->fc_threshold >= 0.0))
        return emoe_errf(err, EMOE_EINVAL, "replay: forecast threshold %g must be >= 0", o->fc_threshold);
    int L = 0, E = 0, K = 0;
    for (int i = 0; i < n_traces; i++) {
        const pred_trace *t = traces[i];
        if (t->n_reqs == 0) continue;
        if (L == 0) { L = t->n_layers; E = t->n_experts; K = t->top_k; }
        else if (t->n_layers != L || t->n_experts != E || t->top_k != K)
            return emoe_errf(err, EMOE_EINVAL,
                             "replay: trace %d has shape %dx%d top-%d, the first %dx%d top-%d", i,
                             t->n_layers, t->n_experts, t->top_k, L, E, K);
    }
    if (L == 0) return emoe_errf(err, EMOE_EINVAL, "replay: the traces hold no request");
    int n_req = 0;
    reqs = order_requests(traces, n_traces, o->order, &n_req);
    if (!reqs) goto oom;

    m.o = o;
    m.res = res;
    m.fc_th = o->fc_threshold;
    m.L = L, m.E = E, m.K = K, m.S = L * E;
    size_t nslots = (size_t)L * (size_t)E;
    m.n_pools = o->per_layer ? L : 1;
    m.pool_cap = calloc((size_t)m.n_pools, sizeof *m.pool_cap);
    m.pool_used = calloc((size_t)m.n_pools, sizeof *m.pool_used);
    m.resident = calloc((size_t)m.S, 1);
    m.pinned = calloc((size_t)m.S, 1);
    m.pref_unused = calloc((size_t)m.S, 1);

    m.last = calloc((size_t)m.S, sizeof *m.last);
    m.cnt = calloc((size_t)m.S, sizeof *m.cnt);
    m.stamp = calloc((size_t)m.S, sizeof *m.stamp);
    m.next_use = calloc((size_t)m.S, sizeof *m.next_use);
    m.pscore = calloc((size_t)m.S, sizeof *m.pscore);
    ids = calloc((size_t)L * (size_t)K, sizeof *ids);
    pmark = calloc((size_t)E, 1);
    pset = calloc((size_t)E, sizeof *pset);
    if (!m.pool_cap || !m.pool_used || !m.resident || !m.pinned || !m.pref_unused || !m.last ||
        !m.cnt || !m.stamp || !m.next_use || !m.pscore || !ids || !pmark || !pset)
        goto oom;
    for (int p = 0; p < m.n_pools; p++) {
        int slots = o->per_layer ? E : m.S;
        int c = (int)floor(o->budget * (double)slots + 1e-9);
        if (c < K) c = K;
        if (c > slots) c = slots;
        m.pool_cap[p] = c;
        res->capacity += c;
    }
    res->n_layers = L, res->n_experts = E, res->top_k = K, res->n_requests = n_req;

    /* Belady: flatten the stream and link each access to the next of its slot. */
    uint64_t n_acc = 0;
    if (o->policy == PRED_REPLAY_BELADY) {
        for (int r = 0; r < n_req; r++)
            for (int t = 0; t < reqs[r]->n_tokens; t++)
                if (phase_on(o, reqs[r]->phase[t])) n_acc += (uint64_t)L * (uint64_t)K;
        flat = malloc((size_t)(n_acc ? n_acc : 1) * sizeof *flat);
        nxt = malloc((size_t)(n_acc ? n_acc : 1) * sizeof *nxt);
        seen = malloc((size_t)m.S * sizeof *seen);
        if (!flat || !nxt || !seen) goto oom;
        uint64_t i = 0;
        for (int r = 0; r < n_req; r++) {
            int bp = batched_prefill(o, reqs[r]);
            if (bp)
                for (int l = 0; l < L; l++) {
                    int n = prefill_layer_set(reqs[r], l, pmark, pset);
                    for (int j = 0; j < n; j++) flat[i++] = l * E + pset[j];
                }
            for (int t = 0; t < reqs[r]->n_tokens; t++) {
                if (!phase_on(o, reqs[r]->phase[t])) continue;
                if (bp && reqs[r]->phase[t] == PRED_PHASE_PREFILL) continue;
                for (int l = 0; l < L; l++) {
                    const int16_t *ex = pred_req_experts(reqs[r], t, l);
                    for (int j = 0; j < K; j++) flat[i++] = l * E + ex[j];
                }
            }
        }
        n_acc = i;
        for (int s = 0; s < m.S; s++) seen[s] = INT64_MAX;
        for (uint64_t q = n_acc; q-- > 0;) {
            nxt[q] = seen[flat[q]];
            seen[flat[q]] = (int64_t)q;
        }
    }

    int fc_on = o->policy == PRED_REPLAY_FORECAST;
    int pred_on = o->policy == PRED_REPLAY_PREDICTOR || o->policy == PRED_REPLAY_LOOKAHEAD || fc_on;
    la_m = o->lookahead > 0 ? o->lookahead : (o->policy == PRED_REPLAY_LOOKAHEAD ? K : 0);
    if (pred_on) {
        if ((st = pred_init(&o->pcfg, L, E, K, &pr, err))) goto fail;
        if ((st = pred_plan_init(&plan, L, E, err))) goto fail;
        if ((st = pred_tracker_init(&trk, pr, err))) goto fail;
        m.trk = &trk;
        if (fc_on) {
            pred_forecast_cfg fcc;
            pred_forecast_cfg_default(&fcc);
            fcc.lr = (float)o->fc_lr;
            fcc.slow_alpha = o->pcfg.track_alpha;
            fcc.depth = o->fc_depth;
            if ((st = pred_forecast_init(&fc, L, E, &fcc, err))) goto fail;
            if ((st = pred_pathmem_init(&pm, L, E, K, o->fc_history, o->fc_matches, (float)o->fc_gamma, err)))
                goto fail;
            pred_pathmem_set_ctx(&pm, (float)o->fc_ctx, (float)o->fc_power);
            if (o->fc_lru_budget) {
                m.sh_res = calloc((size_t)m.S, 1);
                m.sh_last = calloc((size_t)m.S, sizeof *m.sh_last);
                m.sh_used = calloc((size_t)m.n_pools, sizeof *m.sh_used);
                if (!m.sh_res || !m.sh_last || !m.sh_used) goto oom;
            }
            if (!(pm_v = calloc((size_t)E, sizeof *pm_v))) goto oom;
            m.fc = &fc;
        }
        used = calloc((size_t)m.S, 1);
        inplan = calloc((size_t)m.S, 1);
        tp = calloc((size_t)L, sizeof *tp);
        n_plan = calloc((size_t)L, sizeof *n_plan);
        n_used = calloc((size_t)L, sizeof *n_used);
        cov = calloc((size_t)L, sizeof *cov);
        lacc = calloc((size_t)L, sizeof *lacc);
        la_scores = calloc((size_t)E, sizeof *la_scores);
        q_next = calloc((size_t)E, sizeof *q_next);
        res->precision = calloc((size_t)L, sizeof(double));
        res->recall = calloc((size_t)L, sizeof(double));
        res->coverage = calloc((size_t)L, sizeof(double));
        if (!used || !inplan || !tp || !n_plan || !n_used || !cov || !lacc || !la_scores || !q_next || !res->precision ||
            !res->recall || !res->coverage)
            goto oom;
    }
    int pin_budget = o->no_prior ? 0 : (int)floor(o->pin_frac * (double)res->capacity + 1e-9);

    uint64_t ai = 0;
    for (int r = 0; r < n_req; r++) {
        const pred_trace_req *q = reqs[r];
        if (pred_on) {
            pred_prompt_info info = {0, 0};
            for (int t = 0; t < q->n_tokens; t++) {
                if (q->phase[t] == PRED_PHASE_PREFILL) info.n_prompt_tokens++;
                else info.max_new_tokens++;
            }
            if ((st = pred_plan_get(pr, q->task, &info, pin_budget, o->per_layer, &plan, NULL, err)))
                goto fail;
            memset(m.pinned, 0, nslots);
            memset(used, 0, nslots);
            memset(inplan, 0, nslots);
            m.step++; /* nothing is being served while prefetching */
            for (int l = 0; l < L; l++)
                for (int i = 0; i < plan.n_sel[l]; i++) {
                    int s = l * E + plan.order[(size_t)l * (size_t)E + (size_t)i];
                    m.pinned[s] = 1;
                    inplan[s] = 1;
                    m.pscore[s] = plan.score[s];
                }
            if (o->evict == PRED_REPLAY_EVICT_SCORE) {
                /* Nothing is pinned: the plan seeds the keep-scores and what it
                 * selects is prefetched. */
                pred_tracker_reset(&trk, o->no_prior ? NULL : &plan);
                memset(m.pinned, 0, nslots);
            }
            if (fc_on) {
                pred_forecast_reset(&fc, o->no_prior ? NULL : plan.score);
                pred_pathmem_begin_request(&pm);
            }
            if (!fc_on || o->fc_plan)
                for (int l = 0; l < L; l++)
                    for (int i = 0; i < plan.n_sel[l]; i++)
                        prefetch(&m, l * E + plan.order[(size_t)l * (size_t)E + (size_t)i]);
        }
        int bp = batched_prefill(o, q);
        if (bp) {
            /* One engine step for the whole prompt: at each layer every distinct
             * expert is acquired once, computed and released, so only the one
             * being computed must be resident. */
            for (int l = 0; l < L; l++) {
                int n = prefill_layer_set(q, l, pmark, pset);
                m.cur_layer = l;
                m.q_next = NULL;
                for (int j = 0; j < n; j++) {
                    int s = l * E + pset[j];
                    int64_t nx = o->policy == PRED_REPLAY_BELADY ? nxt[ai] : INT64_MAX;
                    ai++;
                    m.step++;
                    if (pred_on) {
                        used[s] = 1;
                        lacc[l] += 1;
                        if (inplan[s]) cov[l] += 1;
                    }
                    access_slot(&m, s, nx);
                }
            }
            for (int t = 0; t < q->n_tokens; t++) {
                if (q->phase[t] != PRED_PHASE_PREFILL) continue;
                res->tokens++;
                if (!pred_on) continue;
                for (int l = 0; l < L; l++) {
                    for (int j = 0; j < K; j++) ids[l * K + j] = pred_req_experts(q, t, l)[j];
                    pred_tracker_observe(&trk, l, ids + l * K, K);
                    if (fc_on) {
                        pred_forecast_observe(&fc, l, ids + l * K, K);
                        pred_pathmem_layer(&pm, l, ids + l * K, K);
                    }
                }
                if (fc_on) pred_pathmem_end_token(&pm);
                if ((st = pred_observe(pr, q->task, ids, err))) goto fail;
            }
        }
        for (int t = 0; t < q->n_tokens; t++) {
            if (!phase_on(o, q->phase[t])) continue;
            if (bp && q->phase[t] == PRED_PHASE_PREFILL) continue;
            res->tokens++;
            for (int l = 0; l < L; l++) {
                const int16_t *ex = pred_req_experts(q, t, l);
                m.step++;
                m.cur_layer = l;
                m.q_next = NULL;
                if (fc_on) {
                    /* the router's choice at l is known before its experts run:
                     * it labels the estimates of layer l, and the transitions
                     * give the near estimate of layer l+1 */
                    for (int j = 0; j < K; j++) ids[l * K + j] = ex[j];
                    pred_forecast_observe(&fc, l, ids + l * K, K);
                    pred_pathmem_layer(&pm, l, ids + l * K, K);
                    /* the layers this token has passed come next in the next token */
                    for (int j = 0; j <= l; j++) {
                        int nv = pred_pathmem_predict_next(&pm, j, pm_v);
                        pred_forecast_next(&fc, j, nv ? pm_v : NULL);
                    }
                    for (int d = 1; d <= o->fc_depth && l + d < L; d++) {
                        if (d == 1 && (st = pred_next_layer(pr, q->task, l, ids + l * K, K, q_next, err))) goto fail;
                        int nv = pred_pathmem_predict(&pm, l + d, pm_v);
                        pred_forecast_near(&fc, l + d, d, d == 1 ? q_next : NULL, nv ? pm_v : NULL);
                    }
                } else if (pred_on && o->evict == PRED_REPLAY_EVICT_SCORE && l + 1 < L) {
                    /* the router's choice at l is known before its experts run */
                    for (int j = 0; j < K; j++) ids[l * K + j] = ex[j];
                    if ((st = pred_next_layer(pr, q->task, l, ids + l * K, K, q_next, err))) goto fail;
                    m.q_next = q_next;
                }
                for (int j = 0; j < K; j++) {
                    int s = l * E + ex[j];
                    int64_t nx = INT64_MAX;
                    if (o->policy == PRED_REPLAY_BELADY) nx = nxt[ai];
                    ai++;
                    if (pred_on) {
                        used[s] = 1;
                        lacc[l] += 1;
                        if (inplan[s]) cov[l] += 1;
                    }
                    access_slot(&m, s, nx);
                    ids[l * K + j] = ex[j];
                }
                if (pred_on) pred_tracker_observe(&trk, l, ids + l * K, K);
                if (fc_on)
                    for (int e = 0; e < E; e++) /* prefetched for this layer and not used: stale */
                        if (m.pref_unused[l * E + e] == 1) {
                            m.pref_unused[l * E + e] = 2;
                            fc_outcome(&m, 0);
                        }
                if (fc_on && (o->fc_threshold <= 1.0 || o->fc_precision > 0.0)) fc_prefetch(&m, (l + 1) % L);
                if (pred_on && la_valid && la_layer == l) {
                    for (int j = 0; j < K; j++)
                        for (int i = 0; i < K; i++)
                            if (ex[j] == la_pred[i]) { res->lookahead_hits++; break; }
                    res->lookahead_checked += (uint64_t)K;
                }
                la_valid = 0;
                if (pred_on && la_m > 0 && l + 1 < L) {
                    if ((st = pred_next_layer(pr, q->task, l, ids + l * K, K, la_scores, err))) goto fail;
                    /* the prediction's top_k, for the accuracy */
                    for (int i = 0; i < K; i++) {
                        int best = -1;
                        for (int e = 0; e < E; e++) {
                            int taken = 0;
                            for (int h = 0; h < i; h++) taken |= la_pred[h] == e;
                            if (!taken && (best < 0 || la_scores[e] > la_scores[best])) best = e;
                        }
                        la_pred[i] = best;
                    }
                    la_valid = 1;
                    la_layer = l + 1;
                    if (o->la_blend > 0)
                        for (int e = 0; e < E; e++) la_scores[e] += (float)(o->la_blend * pred_tracker_score(&trk, l + 1, e));
                    if (o->la_new)
                        for (int e = 0; e < E; e++)
                            if (m.resident[(l + 1) * E + e]) la_scores[e] = -1.0f;
                    for (int n = 0; n < la_m && n < E; n++) {
                        int best = -1;
                        for (int e = 0; e < E; e++)
                            if (la_scores[e] >= 0 && (best < 0 || la_scores[e] > la_scores[best])) best = e;
                        if (best < 0) break;
                        la_scores[best] = -1.0f;
                        prefetch(&m, (l + 1) * E + best);
                    }
                }
            }
            if (pred_on && (st = pred_observe(pr, q->task, ids, err))) goto fail;
            if (fc_on) pred_pathmem_end_token(&pm);
        }
        if (pred_on) {
            pred_end_request(pr, q->task);
            for (int l = 0; l < L; l++) {
                int np = plan.n_sel[l], nu = 0, in = 0;
                for (int e = 0; e < E; e++) {
                    int s = l * E + e;
                    nu += used[s];
                    in += used[s] && inplan[s];
                }
                tp[l] += in;
                n_plan[l] += np;
                n_used[l] += nu;
            }
        }
    }
    res->loads = res->misses + res->prefetches;
    res->bytes_loaded = res->loads * o->expert_bytes;
    res->hit_rate = res->accesses ? (double)res->hits / (double)res->accesses : 0.0;
    res->misses_per_token = res->tokens ? (double)res->misses / (double)res->tokens : 0.0;
    if (pred_on) {
        double a = 0, b = 0, c = 0, d = 0, e2 = 0;
        for (int l = 0; l < L; l++) {
            res->precision[l] = n_plan[l] > 0 ? tp[l] / n_plan[l] : 0.0;
            res->recall[l] = n_used[l] > 0 ? tp[l] / n_used[l] : 0.0;
            res->coverage[l] = lacc[l] > 0 ? cov[l] / lacc[l] : 0.0;
            a += tp[l], b += n_plan[l], c += n_used[l], d += cov[l], e2 += lacc[l];
        }
        res->precision_all = b > 0 ? a / b : 0.0;
        res->recall_all = c > 0 ? a / c : 0.0;
        res->coverage_all = e2 > 0 ? d / e2 : 0.0;
        res->plans_computed = pred_plans_computed(pr);
        res->lookahead_accuracy = res->lookahead_checked ? (double)res->lookahead_hits / (double)res->lookahead_checked : 0.0;
        if (fc_on) {
            res->fc_logloss_far = fc.n_far ? fc.logloss_far / (double)fc.n_far : 0.0;
            res->fc_logloss_near = fc.n_near ? fc.logloss_near / (double)fc.n_near : 0.0;
            res->fc_threshold_end = m.fc_th;
        }
    }
    goto done;
oom:
    st = emoe_errf(err, EMOE_ENOMEM, "replay: out of memory");
fail:
    pred_replay_result_free(res);
done:
    free(reqs);
    free(flat);
    free(nxt);
    free(seen);
    free(m.pool_cap), free(m.pool_used), free(m.resident), free(m.pinned), free(m.pref_unused);
    free(m.sh_res), free(m.sh_last), free(m.sh_used);
    free(m.last), free(m.cnt), free(m.stamp), free(m.next_use), free(m.pscore);
    free(ids), free(pset), free(pmark);
    pred_free(pr);
    pred_plan_free(&plan);
    pred_tracker_free(&trk);
    pred_forecast_free(&fc);
    pred_pathmem_free(&pm);
    free(pm_v);
    free(used), free(inplan), free(tp), free(n_plan), free(n_used), free(cov), free(lacc), free(la_scores), free(q_next);
    return st;
}
