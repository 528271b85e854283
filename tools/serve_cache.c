/*
 * serve_cache.c — the expert cache and the predictor in `emoe serve` (see
 * serve_cache.h).
 *
 * Data flow, all on the scheduler's run-loop thread:
 *  - on_admit (a request was admitted, before its first prefill step): the
 *    predictor's plan for the request's task (recomputed every plan_every
 *    requests of the task, reused in between) is prefetched into the cache,
 *    asynchronously, so the loads overlap the steps that run meanwhile; the
 *    plan's scores also seed the eviction order (below).
 *  - routing callback (during eng_step): each (request, position, layer)
 *    routing is buffered; the engine routes layer by layer over the whole
 *    batch, so tokens are only complete when the step ends. It also feeds
 *    the tracker and records the layer being served.
 *  - on_step_end: buffered complete tokens go to pred_observe under their
 *    request's task, then cache_step_end closes the step's stall figures.
 *  - on_finish: the buffer is flushed, then pred_end_request folds the
 *    task's observed tokens into its statistics.
 * Eviction ([predictor] evict_hint): the order `emoe replay --policy
 * predictor` evaluates (docs/predictor.md), generalised to a batch: the
 * tracker's prior is the largest plan score of any running request, its EWMA
 * follows every routed token of the batch, and the cache evicts the largest
 * expected reuse distance (pred_tracker_reuse) from the layer being served;
 * equal distances fall back to LRU inside the cache. The hint is read by
 * cache calls made during eng_step (the loop thread and the engine's pool,
 * which the step synchronises with), never while the loop thread updates it.
 * Requests without a task use the task "default". Tokens of a step that
 * failed half way (an expert read error) are incomplete and dropped; a step
 * retried after a failure overwrites its own records, so nothing is counted
 * twice.
 */
#include "tools/serve_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cache.h"
#include "engine/quant.h"
#include "predictor/predictor.h"

#define TASK_MAX 64

typedef struct obs_rec {
    uint64_t rid;
    int task;   /* index into tasks */
    int pos, layer;
    int ex;     /* offset into ex_buf (top_k ints) */
} obs_rec;

typedef struct active_req {
    uint64_t rid;
    float *score;  /* (n_layers, n_experts) the plan's scores */
} active_req;

struct serve_cache {
    eng_engine *e;
    cache_t *cache;
    pred_t *pred;
    int L, E, K;
    int slots;             /* device slots */
    int plan_budget;       /* (layer, expert) pairs a plan selects: prefetch_share of slots */
    char insensitive[CFG_LIST_MAX];
    pred_plan plan;
    int *ids;              /* (n_experts) one layer's planned ids */
    int *tok;              /* (n_layers, top_k) one token's routing */
    unsigned char *seen;   /* (n_layers) */
    /* routing buffer of the current step */
    obs_rec *recs;
    size_t n_recs, cap_recs;
    int *ex_buf;           /* (cap_recs, top_k) */
    char (*tasks)[TASK_MAX];
    int n_tasks, cap_tasks;
    /* eviction order: the tracker, its prior the max over running requests of their plan's scores */
    active_req *act;
    int n_act, cap_act;
    pred_tracker trk;
    int trk_ready;
    int cur_layer;         /* the layer being served (last routed) */
    /* counters for /metrics (written by the run loop) */
    _Atomic uint64_t plans, plans_computed, prefetched, observed_tokens, requests, insensitive_reqs, errors;
    _Atomic int n_tasks_known;
    /* miss policy lowbit: low-bit expert uses per task of finished requests (mu) */
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

/* Higher = keep longer: minus the expected reuse distance. */
static double hint_fn(void *user, int layer, int expert)
{
    serve_cache *sc = user;
    return -pred_tracker_reuse(&sc->trk, sc->cur_layer, layer, expert, NULL);
}

static void prior_rebuild(serve_cache *sc)
{
    size_t le = (size_t)sc->L * (size_t)sc->E;
    float *prior = sc->trk.prior;
    memset(prior, 0, le * sizeof *prior);
    for (int a = 0; a < sc->n_act; a++)
        for (size_t i = 0; i < le; i++)
            if (sc->act[a].score[i] > prior[i]) prior[i] = sc->act[a].score[i];
}

/* ---- routing buffer ---- */

static int intern_task(serve_cache *sc, const char *t)
{
    for (int i = 0; i < sc->n_tasks; i++)
        if (!strcmp(sc->tasks[i], t)) return i;
    if (sc->n_tasks == sc->cap_tasks) {
        int nc = sc->cap_tasks ? sc->cap_tasks * 2 : 8;
        char(*nt)[TASK_MAX] = realloc(sc->tasks, (size_t)nc * sizeof *nt);
        if (!nt) return -1;
        sc->tasks = nt;
        sc->cap_tasks = nc;
    }
    snprintf(sc->tasks[sc->n_tasks], TASK_MAX, "%s", t);
    return sc->n_tasks++;
}

static void on_route(void *user, void *tag, int pos, int layer, const int *experts, const float *w, int k)
{
    (void)w;
    serve_cache *sc = user;
    if (!tag || k != sc->K || layer < 0 || layer >= sc->L) return;
    const sched_req *r = tag; /* the scheduler tags each sequence with its request */
    sc->cur_layer = layer;
    if (sc->trk_ready) pred_tracker_observe(&sc->trk, layer, experts, k);
    if (sc->n_recs == sc->cap_recs) {
        size_t nc = sc->cap_recs ? sc->cap_recs * 2 : 1024;
        obs_rec *nr = realloc(sc->recs, nc * sizeof *nr);
        if (!nr) return;
        sc->recs = nr;
        int *ne = realloc(sc->ex_buf, nc * (size_t)sc->K * sizeof *ne);
        if (!ne) return;
        sc->ex_buf = ne;
        sc->cap_recs = nc;
    }
    int t = intern_task(sc, task_of(r));
    if (t < 0) return;
    obs_rec *o = &sc->recs[sc->n_recs];
    o->rid = sched_req_id(r);
    o->task = t;
    o->pos = pos;
    o->layer = layer;
    o->ex = (int)(sc->n_recs * (size_t)sc->K);
    memcpy(sc->ex_buf + o->ex, experts, (size_t)k * sizeof *experts);
    sc->n_recs++;
}

static int rec_cmp(const void *a, const void *b)
{
    const obs_rec *x = a, *y = b;
    if (x->rid != y->rid) return x->rid < y->rid ? -1 : 1;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return x->ex < y->ex ? -1 : x->ex > y->ex; /* a retried step's later record wins */
}

/* Feeds the buffered complete tokens to the predictor and empties the buffer. */
static void flush_routing(serve_cache *sc)
{
    if (!sc->pred || sc->n_recs == 0) {
        sc->n_recs = 0;
        sc->n_tasks = 0;
        return;
    }
    qsort(sc->recs, sc->n_recs, sizeof *sc->recs, rec_cmp);
    uint64_t n_tok = 0;
    for (size_t i = 0; i < sc->n_recs;) {
        size_t j = i;
        memset(sc->seen, 0, (size_t)sc->L);
        int n_seen = 0;
        while (j < sc->n_recs && sc->recs[j].rid == sc->recs[i].rid && sc->recs[j].pos == sc->recs[i].pos) {
            const obs_rec *o = &sc->recs[j];
            memcpy(sc->tok + (size_t)o->layer * (size_t)sc->K, sc->ex_buf + o->ex, (size_t)sc->K * sizeof *sc->tok);
            if (!sc->seen[o->layer]) { sc->seen[o->layer] = 1; n_seen++; }
            j++;
        }
        if (n_seen == sc->L) {
            emoe_err err = {0};
            if (pred_observe(sc->pred, sc->tasks[sc->recs[i].task], sc->tok, &err) == EMOE_OK) n_tok++;
            else atomic_fetch_add(&sc->errors, 1);
        }
        i = j;
    }
    atomic_fetch_add(&sc->observed_tokens, n_tok);
    sc->n_recs = 0;
    sc->n_tasks = 0;
}

/* ---- run-loop hooks ---- */

static void on_admit(void *user, sched_req *r)
{
    serve_cache *sc = user;
    if (!sc->pred) return;
    const char *task = task_of(r);
    emoe_err err = {0};
    int insensitive = cfg_list_has(sc->insensitive, task);
    /* Marked at every admission of an insensitive task: the mark lives in the
     * task's slot, which the predictor may have recycled since. (Marking
     * drops the slot's own cached plan, which insensitive tasks never use;
     * other tasks are never marked, so their plans are reused as planned.) */
    if (insensitive && pred_set_insensitive(sc->pred, task, 1, &err) != EMOE_OK) {
        LOG_WARN("predictor: %s", err.msg);
        atomic_fetch_add(&sc->errors, 1);
        return;
    }
    if (insensitive) atomic_fetch_add(&sc->insensitive_reqs, 1);
    pred_prompt_info info = {sched_req_n_prompt(r), sched_req_max_tokens(r)};
    int replanned = 0;
    if (pred_plan_get(sc->pred, task, &info, sc->plan_budget, 0, &sc->plan, &replanned, &err) != EMOE_OK) {
        LOG_WARN("predictor: task %s: %s", task, err.msg);
        atomic_fetch_add(&sc->errors, 1);
        return;
    }
    atomic_fetch_add(&sc->plans, 1);
    atomic_store(&sc->plans_computed, pred_plans_computed(sc->pred));
    atomic_store(&sc->n_tasks_known, pred_n_tasks(sc->pred));
    /* The eviction order first, so that the prefetch below already evicts by
     * it: the plan joins the prior and seeds the EWMA (as a tracker reset
     * does for one request, without forgetting the running ones). */
    if (sc->trk_ready && sc->plan.source != PRED_PLAN_EMPTY) {
        if (sc->n_act == sc->cap_act) {
            int nc = sc->cap_act ? sc->cap_act * 2 : 8;
            active_req *na = realloc(sc->act, (size_t)nc * sizeof *na);
            if (na) { sc->act = na; sc->cap_act = nc; }
        }
        size_t le = (size_t)sc->L * (size_t)sc->E;
        float *s = sc->n_act < sc->cap_act ? malloc(le * sizeof *s) : NULL;
        if (s) {
            memcpy(s, sc->plan.score, le * sizeof *s);
            sc->act[sc->n_act++] = (active_req){sched_req_id(r), s};
            prior_rebuild(sc);
            for (size_t i = 0; i < le; i++)
                if (s[i] > sc->trk.ewma[i]) sc->trk.ewma[i] = s[i];
        }
    }
    uint64_t n = 0;
    for (int l = 0; l < sc->L; l++) {
        int m = sc->plan.n_sel[l];
        if (m <= 0) continue;
        for (int j = 0; j < m; j++) sc->ids[j] = sc->plan.order[(size_t)l * (size_t)sc->E + (size_t)j];
        cache_prefetch(sc->cache, l, sc->ids, m);
        n += (uint64_t)m;
    }
    atomic_fetch_add(&sc->prefetched, n);
}

static void on_finish(void *user, sched_req *r)
{
    serve_cache *sc = user;
    uint64_t lb = sched_req_lowbit(r);
    if (lb) {
        const char *t = task_of(r);
        pthread_mutex_lock(&sc->lb_mu);
        int i = 0;
        while (i < sc->n_lb_task && strcmp(sc->lb_task[i].task, t)) i++;
        if (i == sc->n_lb_task && i < TASK_MAX) snprintf(sc->lb_task[sc->n_lb_task++].task, TASK_MAX, "%s", t);
        if (i < sc->n_lb_task) { sc->lb_task[i].uses += lb; sc->lb_task[i].requests++; }
        else sc->lb_other += lb;
        pthread_mutex_unlock(&sc->lb_mu);
    }
    if (sc->pred) {
        flush_routing(sc);
        pred_end_request(sc->pred, task_of(r));
        atomic_fetch_add(&sc->requests, 1);
    }
    uint64_t rid = sched_req_id(r);
    for (int a = 0; a < sc->n_act; a++) {
        if (sc->act[a].rid != rid) continue;
        free(sc->act[a].score);
        sc->act[a] = sc->act[--sc->n_act];
        prior_rebuild(sc);
        break;
    }
}

static void on_step_end(void *user)
{
    serve_cache *sc = user;
    flush_routing(sc);
    cache_step_end(sc->cache);
}

/* ---- life cycle ---- */

static void format_budget(const cfg_budget *b, char *buf, size_t n)
{
    if (b->is_pct) snprintf(buf, n, "%.9g%%", b->pct);
    else snprintf(buf, n, "%llu", (unsigned long long)b->bytes);
}

emoe_status serve_cache_init(const emoe_config *cfg, eng_engine *e, int fail_nth_read, serve_cache **out,
                             emoe_err *err)
{
    *out = NULL;
    const cfg_budget *db = &cfg->cache.device_budget;
    if (db->is_pct && db->pct >= 100.0 && cfg->cache.expert_format == 0 && cfg->cache.miss_policy != CFG_MISS_LOWBIT) {
        if (fail_nth_read > 0)
            return emoe_errf(err, EMOE_EINVAL, "--inject-read-error needs a [cache] device_budget below 100%%");
        return EMOE_OK;
    }
    serve_cache *sc = calloc(1, sizeof *sc);
    if (!sc) return emoe_errf(err, EMOE_ENOMEM, "serve: out of memory");
    pthread_mutex_init(&sc->lb_mu, NULL);
    const eng_model_desc *d = eng_desc(e);
    sc->e = e;
    sc->L = d->n_layers;
    sc->E = d->n_experts;
    sc->K = d->top_k;
    snprintf(sc->insensitive, sizeof sc->insensitive, "%s", cfg->predictor.insensitive_tasks);
    char budget[64], host[64];
    format_budget(db, budget, sizeof budget);
    format_budget(&cfg->cache.host_budget, host, sizeof host);
    cache_cli_opts co = {
        .budget = budget,
        .host_budget = host,
        .miss_policy = cfg->cache.miss_policy == CFG_MISS_SUBSTITUTE ? "substitute"
                       : cfg->cache.miss_policy == CFG_MISS_LOWBIT   ? "lowbit"
                                                                     : "exact",
        .expert_format = quant_format_name(cfg->cache.expert_format),
        .lowbit_format = cfg->cache.lowbit_format == 1 ? "q8" : "q4",
        .store = cfg->cache.store_path[0] ? cfg->cache.store_path : NULL,
        .queue_depth = cfg->cache.io_queue_depth,
        .fail_nth_read = fail_nth_read,
    };
    emoe_status st = cache_attach(e, &co, &sc->cache, err);
    if (st != EMOE_OK) goto fail;
    cache_stats cs;
    cache_get_stats(sc->cache, &cs);
    sc->slots = cs.device_slots;
    sc->plan_budget = (int)((int64_t)cs.device_slots * cfg->predictor.prefetch_share / 100);
    uint64_t total = (uint64_t)sc->L * (uint64_t)sc->E * cs.slot_bytes;
    LOG_INFO("expert cache: device budget %s = %llu bytes (%d slots of %llu bytes, %.1f%% of %d experts), "
             "host tier %llu bytes (%d slots), miss policy %s, loader %s, io queue depth %d, store %s; resident %llu bytes",
             budget, (unsigned long long)cs.budget_bytes, cs.device_slots, (unsigned long long)cs.slot_bytes,
             total ? 100.0 * (double)cs.device_slots * (double)cs.slot_bytes / (double)total : 0.0, sc->L * sc->E,
             (unsigned long long)cs.host_budget_bytes, cs.host_slots, co.miss_policy,
             cs.loader_mode ? cs.loader_mode : "?", cfg->cache.io_queue_depth, store_path(cache_store(sc->cache)),
             (unsigned long long)cs.resident_bytes);
    if (fail_nth_read > 0) LOG_WARN("testing: expert read #%d from the store will fail with EIO", fail_nth_read);

    sc->ids = malloc((size_t)sc->E * sizeof *sc->ids);
    sc->tok = malloc((size_t)sc->L * (size_t)sc->K * sizeof *sc->tok);
    sc->seen = malloc((size_t)sc->L);
    if (!sc->ids || !sc->tok || !sc->seen) {
        st = emoe_errf(err, EMOE_ENOMEM, "serve: out of memory");
        goto fail;
    }
    if (cfg->predictor.enabled) {
        pred_config pc;
        pred_config_default(&pc);
        pc.replan_every = cfg->predictor.plan_every;
        pc.max_tasks = cfg->predictor.max_tasks;
        if ((st = pred_config_check(&pc, err)) != EMOE_OK) goto fail;
        if ((st = pred_init(&pc, sc->L, sc->E, sc->K, &sc->pred, err)) != EMOE_OK) goto fail;
        if ((st = pred_plan_init(&sc->plan, sc->L, sc->E, err)) != EMOE_OK) goto fail;
        if (cfg->predictor.evict_hint) {
            if ((st = pred_tracker_init(&sc->trk, sc->pred, err)) != EMOE_OK) goto fail;
            sc->trk_ready = 1;
            cache_set_evict_hint(sc->cache, hint_fn, sc);
        }
        LOG_INFO("expert predictor: plans of %d of %d slots, re-planned every %d requests of a task, %d task slots, "
                 "eviction by %s%s%s",
                 sc->plan_budget, sc->slots, pc.replan_every, pc.max_tasks,
                 sc->trk_ready ? "predicted reuse distance" : "LRU",
                 sc->insensitive[0] ? ", insensitive tasks: " : "", sc->insensitive);
    } else {
        LOG_INFO("expert predictor: off ([predictor] enabled = false)");
    }
    *out = sc;
    return EMOE_OK;
fail:
    serve_cache_free(sc);
    return st;
}

void serve_cache_hooks(serve_cache *sc, sched_opts *so)
{
    if (!sc) return;
    so->on_admit = on_admit;
    so->on_finish = on_finish;
    so->on_step_end = on_step_end;
    so->hook_user = sc;
    if (sc->pred) eng_set_routing_cb(sc->e, on_route, sc);
}

void serve_cache_free(serve_cache *sc)
{
    if (!sc) return;
    eng_set_routing_cb(sc->e, NULL, NULL);
    eng_set_expert_provider(sc->e, NULL);
    cache_free(sc->cache);
    pred_free(sc->pred);
    pred_plan_free(&sc->plan);
    pred_tracker_free(&sc->trk);
    for (int a = 0; a < sc->n_act; a++) free(sc->act[a].score);
    free(sc->act);
    free(sc->recs);
    free(sc->ex_buf);
    free(sc->tasks);
    free(sc->ids);
    free(sc->tok);
    free(sc->seen);
    pthread_mutex_destroy(&sc->lb_mu);
    free(sc);
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

void serve_cache_metrics(void *user, FILE *f)
{
    serve_cache *sc = user;
    if (!sc) return;
    cache_stats s;
    cache_get_stats(sc->cache, &s);
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
    counter(f, "emoe_expert_cache_prefetch_loads_total", "Loads started by prefetch.", s.prefetch_issued);
    counter(f, "emoe_expert_cache_substituted_experts_total",
            "Experts found not resident under the substitute miss policy (replaced by resident ones).",
            s.substitute_misses);
    counter(f, "emoe_expert_cache_lowbit_uses_total",
            "Expert uses computed with the resident low-bit copy (miss policy lowbit).", s.lowbit_uses);
    fprintf(f, "# HELP emoe_expert_cache_lowbit_uses_by_task_total Low-bit expert uses (token x expert) of finished "
               "requests, per task.\n# TYPE emoe_expert_cache_lowbit_uses_by_task_total counter\n");
    fprintf(f, "# HELP emoe_expert_cache_lowbit_requests_by_task_total Finished requests that used the low-bit copy, "
               "per task.\n# TYPE emoe_expert_cache_lowbit_requests_by_task_total counter\n");
    pthread_mutex_lock(&sc->lb_mu);
    for (int i = 0; i < sc->n_lb_task; i++) {
        fprintf(f, "emoe_expert_cache_lowbit_uses_by_task_total{task=\"%s\"} %llu\n", sc->lb_task[i].task,
                (unsigned long long)sc->lb_task[i].uses);
        fprintf(f, "emoe_expert_cache_lowbit_requests_by_task_total{task=\"%s\"} %llu\n", sc->lb_task[i].task,
                (unsigned long long)sc->lb_task[i].requests);
    }
    if (sc->lb_other)
        fprintf(f, "emoe_expert_cache_lowbit_uses_by_task_total{task=\"_other\"} %llu\n", (unsigned long long)sc->lb_other);
    pthread_mutex_unlock(&sc->lb_mu);
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
    gauge(f, "emoe_expert_cache_resident_bytes", "Device tier: bytes of slots holding an expert.",
          (double)s.resident_bytes);
    gauge(f, "emoe_expert_cache_peak_resident_bytes", "Device tier: most bytes resident at once.",
          (double)s.peak_resident_bytes);
    gauge(f, "emoe_expert_cache_budget_bytes", "Device tier budget in bytes.", (double)s.budget_bytes);
    gauge(f, "emoe_expert_cache_slots", "Device tier slots (experts that fit the budget).", s.device_slots);
    gauge(f, "emoe_expert_cache_host_resident_bytes", "Pinned host tier: bytes holding an expert.",
          (double)s.host_resident_bytes);
    gauge(f, "emoe_expert_cache_host_budget_bytes", "Pinned host tier budget in bytes.", (double)s.host_budget_bytes);
    if (!sc->pred) return;
    counter(f, "emoe_predictor_plans_total", "Prefetch plans taken at request admission (computed or reused).",
            atomic_load(&sc->plans));
    counter(f, "emoe_predictor_plans_computed_total", "Times the planner actually ran (every plan_every requests of a task).",
            atomic_load(&sc->plans_computed));
    counter(f, "emoe_predictor_prefetched_experts_total", "(layer, expert) pairs handed to the cache's prefetch.",
            atomic_load(&sc->prefetched));
    counter(f, "emoe_predictor_observed_tokens_total", "Tokens whose routing was fed to the predictor.",
            atomic_load(&sc->observed_tokens));
    counter(f, "emoe_predictor_requests_total", "Finished requests folded into the task statistics.",
            atomic_load(&sc->requests));
    counter(f, "emoe_predictor_insensitive_requests_total", "Requests of tasks marked insensitive (no per-task planning).",
            atomic_load(&sc->insensitive_reqs));
    counter(f, "emoe_predictor_errors_total", "Predictor calls that failed (logged).", atomic_load(&sc->errors));
    gauge(f, "emoe_predictor_tasks", "Task slots in use.", atomic_load(&sc->n_tasks_known));
}
