/*
 * test_models.cuh — the model-level part of tests/gpu/test_kernels.cu (included
 * there, one translation unit): the fixture models end to end on the cuda
 * backend against the Hugging Face reference and the CPU backend, the expert
 * cache's device tier in GPU memory, CUDA graphs, partial own slots, provider
 * switches and the bf16 KV cache. Uses test_kernels.cu's helpers (result,
 * st_ok, ...); not a header for anything else.
 */
/* ---- fixture models end to end ---------------------------------------------------------- */

typedef struct rt_rec { int n_layers, n_pos, k; int *ids; } rt_rec;

static void on_route(void *user, void *tag, int pos, int layer, const int *ex, const float *w, int k)
{
    (void)w; (void)tag;
    rt_rec *r = (rt_rec *)user;
    if (pos < r->n_pos && layer < r->n_layers && k == r->k) memcpy(r->ids + ((size_t)layer * r->n_pos + pos) * k, ex, sizeof(int) * k);
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); den += (double)b[i] * b[i]; }
    return sqrt(num / den);
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

static int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) if (!isfinite(x[i])) return 0;
    return 1;
}

static void test_model(const char *shared, const char *name, json_t *md, uint64_t budget, const char *label)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    eng_open_opts oc = {}, og = {};
    oc.n_threads = 0; oc.backend = ENG_BACKEND_CPU;
    og.backend = ENG_BACKEND_CUDA; og.gpu_expert_budget = budget;
    eng_engine *eg = NULL, *ec = NULL;
    emoe_err err = {};
    if (eng_open(dir, &og, &eg, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); result(0, "e2e %s %s: open", name, label); return; }
    if (eng_open(dir, &oc, &ec, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); result(0, "e2e %s: open cpu", name); eng_free(eg); return; }
    const eng_model_desc *d = eng_desc(eg);
    int V = d->vocab;
    float *lg = (float *)malloc(sizeof(float) * V), *lc = (float *)malloc(sizeof(float) * V);
    size_t ci;
    json_t *c;
    long route_same = 0, route_all = 0, greedy_same = 0, greedy_all = 0, amax_same = 0, amax_all = 0;
    double worst_ref = 0, worst_cpu = 0;
    int ok = 1;
    int light = g_emu && V > EMU_BIG_VOCAB;
    if (light) printf("NOTE %s: emulator, large vocabulary: first case and 2 greedy steps only\n", name);
    json_array_foreach(json_object_get(md, "cases"), ci, c) {
        if (light && ci > 0) break;
        json_t *pids = json_object_get(c, "prompt_ids");
        int n = (int)json_array_size(pids);
        int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * n);
        for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(pids, i));
        rt_rec rr = {d->n_layers, n, d->top_k, (int *)malloc(sizeof(int) * d->n_layers * n * d->top_k)};
        for (int i = 0; i < d->n_layers * n * d->top_k; i++) rr.ids[i] = -7;
        eng_set_routing_cb(eg, on_route, &rr);
        eng_seq *s = eng_seq_new(eg, 0, &err), *sc = eng_seq_new(ec, 0, &err);
        float *all = (float *)malloc(sizeof(float) * (size_t)n * V);
        for (size_t i = 0; i < (size_t)n * V; i++) all[i] = NAN;
        for (int i = 0; i < V; i++) lg[i] = NAN;
        eng_batch_item it = {s, ids, n, lg, all};
        if (!s || !sc || eng_step(eg, &it, 1, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); ok = 0; }
        eng_set_routing_cb(eg, NULL, NULL);
        if (ok && eng_forward(ec, sc, ids, n, lc, &err) != EMOE_OK) { fprintf(stderr, "  cpu: %s\n", err.msg); ok = 0; }
        if (ok) {
            char lp[4096];
            snprintf(lp, sizeof lp, "%s/fixtures/reference/%s", shared, json_string_value(json_object_get(c, "last_logits_file")));
            FILE *f = fopen(lp, "rb");
            float *ref = (float *)malloc(sizeof(float) * V);
            if (!f || fread(ref, sizeof(float), V, f) != (size_t)V) { fprintf(stderr, "  cannot read %s\n", lp); ok = 0; }
            if (f) fclose(f);
            if (ok) {
                if (!all_finite(lg, V) || !all_finite(all, (size_t)n * V)) { fprintf(stderr, "  non-finite logits\n"); ok = 0; }
                double e1 = rel_err(lg, ref, V), e2 = rel_err(lg, lc, V);
                if (e1 > worst_ref) worst_ref = e1;
                if (e2 > worst_cpu) worst_cpu = e2;
                json_t *am = json_object_get(c, "argmax_per_position");
                for (int p = 0; p < n; p++, amax_all++) amax_same += argmax(all + (size_t)p * V, V) == (int)json_integer_value(json_array_get(am, p));
                json_t *rt = json_object_get(c, "routing");
                for (int l = 0; l < d->n_layers; l++) {
                    json_t *ex = json_object_get(json_array_get(rt, l), "experts");
                    for (int p = 0; p < n; p++, route_all++) {
                        int same = 1;
                        for (int j = 0; j < d->top_k; j++)
                            same &= rr.ids[((size_t)l * n + p) * d->top_k + j] == (int)json_integer_value(json_array_get(json_array_get(ex, p), j));
                        route_same += same;
                    }
                }
                /* Greedy, teacher-forced on the reference tokens: position i
                 * must predict greedy[i] given the reference prefix. */
                json_t *gr = json_object_get(c, "greedy_16");
                int G = (int)json_array_size(gr);
                if (light && G > 2) G = 2;
                for (int i = 0; i < G && ok; i++) {
                    int want = (int)json_integer_value(json_array_get(gr, i));
                    greedy_all++;
                    greedy_same += argmax(lg, V) == want;
                    if (i + 1 < G) {
                        int32_t tok = want;
                        if (eng_forward(eg, s, &tok, 1, lg, &err) != EMOE_OK) { fprintf(stderr, "  decode: %s\n", err.msg); ok = 0; }
                    }
                }
            }
            free(ref);
        }
        eng_seq_free(s); eng_seq_free(sc);
        free(ids); free(rr.ids); free(all);
    }
    double rf = route_all ? (double)route_same / route_all : 0, gf = greedy_all ? (double)greedy_same / greedy_all : 0;
    double af = amax_all ? (double)amax_same / amax_all : 0;
    eng_backend_stats bs;
    eng_backend_stats_get(eg, &bs);
    ok = ok && worst_ref <= 2e-2 && worst_cpu <= 2e-2 && rf >= 0.99 && gf >= 0.95 && af >= 0.95;
    result(ok, "e2e %s %s: logits rel err vs HF %.2e, vs cpu %.2e; routing %.1f%%; greedy %.1f%%; argmax %.1f%%; "
               "expert slots %d, hits %llu, misses %llu",
           name, label, worst_ref, worst_cpu, 100 * rf, 100 * gf, 100 * af, bs.expert_slots,
           (unsigned long long)bs.expert_hits, (unsigned long long)bs.expert_misses);
    free(lg); free(lc);
    eng_free(eg); eng_free(ec);
}

/* ---- one cache: engine/cache.c's device tier in GPU memory --------------------------------- */

#define TIER_STEPS 8
/* Prompt, then TIER_STEPS greedy decode steps; out: (n + TIER_STEPS) rows of logits. */
static int run_steps(eng_engine *e, const int32_t *ids, int n, int V, float *out, uint64_t *subst, emoe_err *err)
{
    eng_seq *s = eng_seq_new(e, 0, err);
    if (!s) return 0;
    float *last = (float *)malloc(sizeof(float) * V);
    eng_batch_item it = {s, ids, n, last, out};
    int ok = eng_step(e, &it, 1, err) == EMOE_OK;
    for (int i = 0; i < TIER_STEPS && ok; i++) {
        int32_t tok = argmax(out + (size_t)(n - 1 + i) * V, V);
        ok = eng_forward(e, s, &tok, 1, out + (size_t)(n + i) * V, err) == EMOE_OK;
    }
    *subst = eng_seq_substituted(s);
    eng_seq_free(s);
    free(last);
    return ok;
}

/* The cuda backend with engine/cache.c as its only expert cache (GPU slots
 * from slot_mem.cu): exact mode at 100%, 25%, 25% + a host tier and one slot
 * (more experts per layer than slots: groups released and reloaded within the
 * layer) must be BITWISE equal to the all-resident run of the backend's own
 * slots; substitute at 25% must substitute and stay finite. The engine is
 * freed before the cache, as the tools do (slot memory outlives the engine). */
static void test_device_tier(const char *shared, const char *name, json_t *md)
{
    char dir[4096], store[256];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    snprintf(store, sizeof store, "/tmp/emoe-gpu-tier-%d-%s.store", (int)getpid(), name);
    json_t *pids = json_object_get(json_array_get(json_object_get(md, "cases"), 0), "prompt_ids");
    int n = (int)json_array_size(pids);
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(pids, i));
    eng_open_opts og = {};
    og.backend = ENG_BACKEND_CUDA;
    eng_engine *e = NULL;
    emoe_err err = {};
    if (eng_open(dir, &og, &e, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); result(0, "device tier %s: open", name); free(ids); return; }
    int V = eng_desc(e)->vocab;
    size_t rows = (size_t)(n + TIER_STEPS) * V;
    float *ref = (float *)malloc(sizeof(float) * rows), *got = (float *)malloc(sizeof(float) * rows);
    uint64_t subst = 0;
    store_info si;
    int ok = run_steps(e, ids, n, V, ref, &subst, &err) && store_info_from_engine(e, &si, &err) == EMOE_OK;
    eng_backend_stats rs = {};
    eng_backend_stats_get(e, &rs);
    eng_free(e);
    /* The reference is the fast path: routing on the device every step, the
     * decode steps as graph replays. */
    uint64_t want_graphs = TIER_STEPS + (n == 1); /* a one-token prompt is a decode-shaped step too */
    result(ok && rs.steps_device_routed == 1 + TIER_STEPS && rs.graph_launches == want_graphs,
           "device tier %s reference: all-resident run on the backend's slots, %llu device-routed steps, %llu graph replays", name,
           (unsigned long long)rs.steps_device_routed, (unsigned long long)rs.graph_launches);
    if (!ok) { fprintf(stderr, "  %s\n", err.msg); result(0, "device tier %s: all-resident run", name); free(ids); free(ref); free(got); return; }
    char one_slot[64];
    snprintf(one_slot, sizeof one_slot, "%llu", (unsigned long long)si.extent_stride);
    /* preload: every expert prefetched before the run, so the device tier
     * holds them all and the device-routed path (and graphs) run from it. */
    struct { const char *budget, *host, *policy; int preload; } cfg[] = {
        {"100%", NULL, "exact", 0}, {"100%", NULL, "exact", 1}, {"25%", NULL, "exact", 0}, {"25%", "50%", "exact", 0},
        {one_slot, NULL, "exact", 0}, {"25%", NULL, "substitute", 0},
    };
    for (auto &c : cfg) {
        int sub = !strcmp(c.policy, "substitute");
        cache_t *cache = NULL;
        cache_cli_opts co = {};
        co.budget = c.budget;
        co.host_budget = c.host;
        co.miss_policy = c.policy;
        co.store = store;
        e = NULL;
        ok = eng_open(dir, &og, &e, &err) == EMOE_OK && cache_attach(e, &co, &cache, &err) == EMOE_OK;
        if (ok && c.preload) {
            const eng_model_desc *dd = eng_desc(e);
            int *all = (int *)malloc(sizeof(int) * dd->n_experts);
            for (int x = 0; x < dd->n_experts; x++) all[x] = x;
            for (int l = 0; l < dd->n_layers; l++) cache_prefetch(cache, l, all, dd->n_experts);
            cache_drain(cache);
            free(all);
        }
        for (size_t i = 0; i < rows; i++) got[i] = NAN;
#ifdef EMOE_CUDA_EMU
        uint64_t pg0 = emu_pageable_h2d_bytes();
#endif
        ok = ok && run_steps(e, ids, n, V, got, &subst, &err);
        /* Store reads (no host tier) land in pinned read buffers: no upload
         * from pageable memory (the slow path copies nothing else from it). */
        int pinned_reads = 1;
#ifdef EMOE_CUDA_EMU
        if (!c.host && !c.preload && strcmp(c.budget, "100%")) pinned_reads = emu_pageable_h2d_bytes() == pg0;
#endif
        if (!ok) fprintf(stderr, "  %s\n", err.msg);
        eng_backend_stats bs = {};
        cache_stats cs = {};
        if (e) eng_backend_stats_get(e, &bs);
        if (cache) cache_get_stats(cache, &cs);
        eng_free(e);
        cache_free(cache);
        /* The cache's GPU slots were used, not the backend's own. */
        int tier = bs.expert_slots == 0 && bs.expert_budget_bytes > 0 && cs.loads > 0;
        if (!sub) {
            int same = ok && memcmp(ref, got, sizeof(float) * rows) == 0;
            int evicting = strcmp(c.budget, "100%") ? cs.evictions > 0 : cs.evictions == 0;
            /* Below 100% a miss is always possible: per-layer host routing
             * every step. Preloaded: device routing and graphs every step. */
            int path = c.preload ? bs.steps_device_routed == 1 + TIER_STEPS && bs.graph_launches == want_graphs
                                 : strcmp(c.budget, "100%") ? bs.steps_device_routed == 0 : 1;
            result(same && tier && evicting && path && pinned_reads, "device tier %s budget %s%s%s%s exact: bitwise equal to all-resident over %d positions; "
                   "cache slots %d, loads %llu, evictions %llu, GPU slot bytes %llu, device-routed steps %llu, graph replays %llu",
                   name, c.budget, c.host ? " host " : "", c.host ? c.host : "", c.preload ? " preloaded" : "", n + TIER_STEPS,
                   cs.device_slots, (unsigned long long)cs.loads, (unsigned long long)cs.evictions,
                   (unsigned long long)bs.expert_budget_bytes, (unsigned long long)bs.steps_device_routed,
                   (unsigned long long)bs.graph_launches);
        } else {
            int fin = ok && all_finite(got, rows);
            double re = fin ? rel_err(got, ref, rows) : 0;
            result(fin && tier && subst > 0 && cs.substitute_misses > 0,
                   "device tier %s budget %s substitute: %llu experts substituted, finite logits, rel err vs exact %.2e",
                   name, c.budget, (unsigned long long)subst, re);
        }
    }
    unlink(store);
    free(ids); free(ref); free(got);
}

/* CUDA graphs: decode steps replayed from a graph (1 row; 3 rows; 11 rows in
 * the 16-row bucket with padding rows) give BITWISE the logits of the eager
 * device-routed path (the same engine options with graphs off), and the
 * graph path did run (its launch counter; the emulator's too). */
static void test_graphs(const char *shared, const char *name)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    const int NS = 11, STEPS = 3;
    float *out[2] = {};
    eng_backend_stats bs[2] = {};
    uint64_t emu_graphs[2] = {};
    int ok = 1, V = 0;
    for (int g = 0; g < 2 && ok; g++) {
        eng_open_opts og = {};
        og.backend = ENG_BACKEND_CUDA;
        og.cuda_no_graphs = g == 0;
        eng_engine *e = NULL;
        emoe_err err = {};
        if (eng_open(dir, &og, &e, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); ok = 0; break; }
        V = eng_desc(e)->vocab;
        /* rows: 1 (seq 0 alone), then seqs 0-2 (3 rows), then all 11 */
        size_t per = (size_t)V;
        out[g] = (float *)malloc(sizeof(float) * per * (STEPS * (1 + 3 + NS)));
        eng_seq *q[NS] = {};
        int32_t prompt[5] = {3, 17, 5, 9, 2};
        float *scratch = (float *)malloc(sizeof(float) * V);
        for (int i = 0; i < NS && ok; i++) {
            q[i] = eng_seq_new(e, 0, &err);
            prompt[0] = 3 + i;
            ok = q[i] && eng_forward(e, q[i], prompt, 5, scratch, &err) == EMOE_OK;
        }
#ifdef EMOE_CUDA_EMU
        uint64_t g0 = emu_graph_launch_count();
#endif
        float *o = out[g];
        int sizes[3] = {1, 3, NS};
        for (int b = 0; b < 3 && ok; b++)
            for (int step = 0; step < STEPS && ok; step++) {
                eng_batch_item it[NS];
                int32_t tok[NS];
                for (int i = 0; i < sizes[b]; i++) {
                    tok[i] = (int32_t)((7 * i + 13 * step + 5 * b) % V);
                    it[i] = (eng_batch_item){q[i], &tok[i], 1, o, NULL};
                    o += per;
                }
                ok = eng_step(e, it, sizes[b], &err) == EMOE_OK;
            }
        if (!ok) fprintf(stderr, "  %s\n", err.msg);
#ifdef EMOE_CUDA_EMU
        emu_graphs[g] = emu_graph_launch_count() - g0;
#endif
        eng_backend_stats_get(e, &bs[g]);
        for (int i = 0; i < NS; i++) eng_seq_free(q[i]);
        free(scratch);
        eng_free(e);
    }
    size_t n = (size_t)V * STEPS * (1 + 3 + NS);
    int same = ok && !memcmp(out[0], out[1], sizeof(float) * n) && all_finite(out[1], n);
    int ran = bs[1].graph_launches == 3 * STEPS && bs[0].graph_launches == 0 && bs[0].steps_device_routed > 0 &&
              (!g_emu || (emu_graphs[1] == 3 * STEPS && emu_graphs[0] == 0));
    result(ok && same && ran, "graphs %s: decode at 1, 3 and %d rows, graph replay bitwise = eager (%d); graph launches %llu "
           "(eager engine: %llu), device-routed steps %llu", name, NS, same, (unsigned long long)bs[1].graph_launches,
           (unsigned long long)bs[0].graph_launches, (unsigned long long)bs[1].steps_device_routed);
    free(out[0]); free(out[1]);
}

/* The backend's own slots short of all experts (all but one): a step tries
 * the device-routed path against what the slots hold and is re-run on the
 * host path when it needed a missing expert. Over prompt + decode steps some
 * steps must succeed device-routed and some be re-run, and every logit must be
 * bitwise the all-resident run's. */
static void test_partial_own(const char *shared, const char *name, json_t *md)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    json_t *pids = json_object_get(json_array_get(json_object_get(md, "cases"), 0), "prompt_ids");
    int n = (int)json_array_size(pids), STEPS = 30;
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(pids, i));
    eng_open_opts og = {};
    og.backend = ENG_BACKEND_CUDA;
    eng_engine *e[2] = {};
    emoe_err err = {};
    int ok = eng_open(dir, &og, &e[0], &err) == EMOE_OK;
    if (ok) {
        const eng_model_desc *d = eng_desc(e[0]);
        og.gpu_expert_budget = (uint64_t)3 * d->expert_ffn * d->dim * sizeof(cu_bf16) * (uint64_t)(d->n_layers * d->n_experts - 1);
        ok = eng_open(dir, &og, &e[1], &err) == EMOE_OK;
    }
    int V = ok ? eng_desc(e[0])->vocab : 1;
    float *out[2];
    for (int k = 0; k < 2; k++) out[k] = (float *)malloc(sizeof(float) * V * (STEPS + 1));
    for (int k = 0; k < 2 && ok; k++) { /* prompt, then STEPS greedy steps */
        eng_seq *s = eng_seq_new(e[k], 0, &err);
        ok = s && eng_forward(e[k], s, ids, n, out[k], &err) == EMOE_OK;
        for (int i = 0; i < STEPS && ok; i++) {
            int32_t tok = argmax(out[k] + (size_t)i * V, V);
            ok = eng_forward(e[k], s, &tok, 1, out[k] + (size_t)(i + 1) * V, &err) == EMOE_OK;
        }
        eng_seq_free(s);
    }
    if (!ok) fprintf(stderr, "  %s\n", err.msg);
    eng_backend_stats bs = {};
    if (e[1]) eng_backend_stats_get(e[1], &bs);
    int same = ok && !memcmp(out[0], out[1], sizeof(float) * V * (STEPS + 1));
    uint64_t steps = 1 + STEPS;
    result(same && bs.steps_device_routed > 0 && bs.steps_device_routed < steps,
           "own slots all but one %s: %d slots, %llu of %llu steps device-routed (the rest re-run or host-routed), bitwise = all-resident",
           name, bs.expert_slots, (unsigned long long)bs.steps_device_routed, (unsigned long long)steps);
    eng_free(e[0]); eng_free(e[1]);
    free(ids); free(out[0]); free(out[1]);
}

/* One engine through provider changes: device-routed on its own slots, then
 * an expert cache attached (preloaded: device-routed from the cache's GPU
 * slots, every expert pinned by the backend), then the cache detached and
 * freed (its pins must be forgotten, not released: ASan sees a release on a
 * freed cache), then its own slots again. Every step's logits are bitwise
 * those of a fresh engine decoding the same tokens. */
static void test_provider_switch(const char *shared, const char *name)
{
    char dir[4096], store[256];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    snprintf(store, sizeof store, "/tmp/emoe-gpu-switch-%d-%s.store", (int)getpid(), name);
    eng_open_opts og = {};
    og.backend = ENG_BACKEND_CUDA;
    eng_engine *e = NULL, *f = NULL;
    emoe_err err = {};
    int ok = eng_open(dir, &og, &e, &err) == EMOE_OK && eng_open(dir, &og, &f, &err) == EMOE_OK;
    if (!ok) { fprintf(stderr, "  %s\n", err.msg); result(0, "provider switch %s: open", name); eng_free(e); return; }
    const eng_model_desc *d = eng_desc(e);
    int V = d->vocab, STEPS = 9;
    float *a = (float *)malloc(sizeof(float) * V * STEPS), *b = (float *)malloc(sizeof(float) * V * STEPS);
    eng_seq *sa = eng_seq_new(e, 0, &err), *sb = eng_seq_new(f, 0, &err);
    cache_t *cache = NULL;
    uint64_t routed[3] = {};
    for (int i = 0; i < STEPS && ok; i++) {
        if (i == 3) { /* attach, preload every expert */
            cache_cli_opts co = {};
            co.budget = "100%";
            co.store = store;
            ok = cache_attach(e, &co, &cache, &err) == EMOE_OK;
            int *all = (int *)malloc(sizeof(int) * d->n_experts);
            for (int x = 0; ok && x < d->n_experts; x++) all[x] = x;
            for (int l = 0; ok && l < d->n_layers; l++) cache_prefetch(cache, l, all, d->n_experts);
            if (ok) cache_drain(cache);
            free(all);
        }
        if (i == 6) { /* detach and free the cache while the backend holds its pins */
            eng_set_expert_provider(e, NULL);
            cache_free(cache);
            cache = NULL;
        }
        int32_t tok = (int32_t)((11 * i + 3) % V);
        ok = ok && eng_forward(e, sa, &tok, 1, a + (size_t)i * V, &err) == EMOE_OK &&
             eng_forward(f, sb, &tok, 1, b + (size_t)i * V, &err) == EMOE_OK;
        if (i % 3 == 2) {
            eng_backend_stats bs = {};
            eng_backend_stats_get(e, &bs);
            routed[i / 3] = bs.steps_device_routed;
        }
    }
    if (!ok) fprintf(stderr, "  %s\n", err.msg);
    int same = ok && !memcmp(a, b, sizeof(float) * V * STEPS);
    /* every step device-routed: own slots, the cache's, own slots again */
    int fast = routed[0] == 3 && routed[1] == 6 && routed[2] == 9;
    result(same && fast, "provider switch %s: own slots -> expert cache (preloaded) -> detached: bitwise = a fresh engine over %d steps, "
           "device-routed steps %llu/%llu/%llu", name, STEPS, (unsigned long long)routed[0], (unsigned long long)routed[1],
           (unsigned long long)routed[2]);
    eng_seq_free(sa); eng_seq_free(sb);
    eng_free(e); eng_free(f);
    cache_free(cache);
    unlink(store);
    free(a); free(b);
}

/* [engine] kv_dtype = bf16 on the cuda backend: half the KV bytes, and the
 * logits of a prompt + 4 greedy steps close to the CPU backend with the same
 * bf16 KV cache (and to the f32 run), greedy tokens equal. */
static void test_kv_bf16(const char *shared, const char *name)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    eng_open_opts oc = {}, og = {}, of = {};
    oc.kv_dtype = ENG_DT_BF16;
    og.backend = ENG_BACKEND_CUDA; og.kv_dtype = ENG_DT_BF16;
    of.backend = ENG_BACKEND_CUDA;
    eng_engine *ec = NULL, *eg = NULL, *ef = NULL;
    emoe_err err = {};
    int ok = eng_open(dir, &oc, &ec, &err) == EMOE_OK && eng_open(dir, &og, &eg, &err) == EMOE_OK &&
             eng_open(dir, &of, &ef, &err) == EMOE_OK;
    if (!ok) { fprintf(stderr, "  %s\n", err.msg); result(0, "kv bf16 %s: open", name); eng_free(ec); eng_free(eg); return; }
    int V = eng_desc(eg)->vocab;
    float *a = (float *)malloc(sizeof(float) * V), *b = (float *)malloc(sizeof(float) * V), *c = (float *)malloc(sizeof(float) * V);
    eng_seq *sa = eng_seq_new(ec, 0, &err), *sb = eng_seq_new(eg, 0, &err), *sf = eng_seq_new(ef, 0, &err);
    int32_t prompt[9] = {5, 91, 7, 33, 2, 18, 64, 3, 11};
    double worst_cpu = 0, worst_f32 = 0;
    int greedy_same = 1;
    ok = sa && sb && sf && eng_forward(ec, sa, prompt, 9, a, &err) == EMOE_OK && eng_forward(eg, sb, prompt, 9, b, &err) == EMOE_OK &&
         eng_forward(ef, sf, prompt, 9, c, &err) == EMOE_OK;
    for (int i = 0; i < 5 && ok; i++) {
        double r1 = rel_err(b, a, V), r2 = rel_err(b, c, V);
        if (r1 > worst_cpu) worst_cpu = r1;
        if (r2 > worst_f32) worst_f32 = r2;
        int32_t t = argmax(a, V);
        greedy_same &= argmax(b, V) == t;
        if (i < 4)
            ok = eng_forward(ec, sa, &t, 1, a, &err) == EMOE_OK && eng_forward(eg, sb, &t, 1, b, &err) == EMOE_OK &&
                 eng_forward(ef, sf, &t, 1, c, &err) == EMOE_OK;
    }
    if (!ok) fprintf(stderr, "  %s\n", err.msg);
    eng_backend_stats s16 = {}, s32 = {};
    eng_backend_stats_get(eg, &s16);
    eng_backend_stats_get(ef, &s32);
    int half = s16.kv_bytes > 0 && 2 * s16.kv_bytes == s32.kv_bytes;
    result(ok && half && worst_cpu <= 2e-2 && greedy_same && worst_f32 > 0,
           "kv bf16 %s: KV bytes %llu (f32: %llu); logits rel err vs cpu bf16 KV %.2e, vs cuda f32 KV %.2e; greedy equal %d", name,
           (unsigned long long)s16.kv_bytes, (unsigned long long)s32.kv_bytes, worst_cpu, worst_f32, greedy_same);
    eng_seq_free(sa); eng_seq_free(sb); eng_seq_free(sf);
    free(a); free(b); free(c);
    eng_free(ec); eng_free(eg); eng_free(ef);
}

/* Several sequences in one step (prefill chunks of different lengths, then
 * batched decode) must give what each gives alone on the cuda backend. */
static void test_batched(const char *shared, const char *name)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    eng_open_opts og = {};
    og.backend = ENG_BACKEND_CUDA;
    eng_engine *e = NULL;
    emoe_err err = {};
    if (eng_open(dir, &og, &e, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); result(0, "batched %s: open", name); return; }
    int V = eng_desc(e)->vocab, NS = 5, ok = 1;
    int lens[5] = {1, 7, 3, 12, 5};
    int32_t toks[5][16];
    for (int s = 0; s < NS; s++) for (int i = 0; i < 16; i++) toks[s][i] = irand(V);
    float *solo = (float *)malloc(sizeof(float) * NS * 3 * V), *bat = (float *)malloc(sizeof(float) * NS * 3 * V);
    for (int s = 0; s < NS && ok; s++) { /* alone: prefill, then two decode steps */
        eng_seq *q = eng_seq_new(e, 0, &err);
        ok = q && eng_forward(e, q, toks[s], lens[s], solo + (size_t)(s * 3) * V, &err) == EMOE_OK &&
             eng_forward(e, q, &toks[s][14], 1, solo + (size_t)(s * 3 + 1) * V, &err) == EMOE_OK &&
             eng_forward(e, q, &toks[s][15], 1, solo + (size_t)(s * 3 + 2) * V, &err) == EMOE_OK;
        eng_seq_free(q);
    }
    eng_seq *qs[5] = {};
    eng_batch_item it[5];
    for (int s = 0; s < NS; s++) qs[s] = eng_seq_new(e, 0, &err);
    for (int step = 0; step < 3 && ok; step++) {
        for (int s = 0; s < NS; s++) {
            it[s] = (eng_batch_item){qs[s], step == 0 ? toks[s] : &toks[s][13 + step], step == 0 ? lens[s] : 1,
                                     bat + (size_t)(s * 3 + step) * V, NULL};
        }
        ok = eng_step(e, it, NS, &err) == EMOE_OK;
    }
    if (!ok) fprintf(stderr, "  %s\n", err.msg);
    double worst = 0;
    for (int s = 0; ok && s < NS * 3; s++) {
        double r = rel_err(bat + (size_t)s * V, solo + (size_t)s * V, V);
        if (r > worst) worst = r;
    }
    /* Batching changes which GEMM path and tile split runs, not the math:
     * allow float32 reordering plus the bf16 activation rounding of the
     * cuBLAS path (prefill rows > 8 take it). */
    ok = ok && worst <= 1e-2;
    result(ok, "batched %s: %d sequences, prefill + 2 decode steps together vs alone, rel err %.2e", name, NS, worst);
    for (int s = 0; s < NS; s++) eng_seq_free(qs[s]);
    free(solo); free(bat);
    eng_free(e);
}

/* eng_seq_fork copies a device KV cache: the fork and the original decode
 * the same token to identical logits, and both match a sequence that
 * prefilled on its own (n > 1 choices). */
static void test_fork(const char *shared, const char *name)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    eng_open_opts og = {};
    og.backend = ENG_BACKEND_CUDA;
    eng_engine *e = NULL;
    emoe_err err = {};
    if (eng_open(dir, &og, &e, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); result(0, "fork %s: open", name); return; }
    int V = eng_desc(e)->vocab, ok = 1;
    int32_t toks[80];
    for (int i = 0; i < 80; i++) toks[i] = irand(V);
    float *a = (float *)malloc(sizeof(float) * 3 * V);
    eng_seq *p = eng_seq_new(e, 0, &err), *f = NULL, *solo = eng_seq_new(e, 0, &err);
    ok = p && solo && eng_forward(e, p, toks, 70, a, &err) == EMOE_OK; /* 70 > 64: the cache grew once */
    if (ok) f = eng_seq_fork(p, 0, &err);
    ok = ok && f && eng_seq_len(f) == 70;
    ok = ok && eng_forward(e, p, &toks[70], 1, a, &err) == EMOE_OK && eng_forward(e, f, &toks[70], 1, a + V, &err) == EMOE_OK &&
         eng_forward(e, solo, toks, 71, a + 2 * (size_t)V, &err) == EMOE_OK;
    if (!ok) fprintf(stderr, "  %s\n", err.msg);
    int same = ok && !memcmp(a, a + V, sizeof(float) * V);
    double r = ok ? rel_err(a + V, a + 2 * (size_t)V, V) : 1;
    result(ok && same && r <= 1e-2, "fork %s: forked KV decodes like the original (identical %d), vs solo rel err %.2e", name, same, r);
    eng_seq_free(p); eng_seq_free(f); eng_seq_free(solo);
    free(a);
    eng_free(e);
}

#ifdef EMOE_CUDA_EMU
/* Kernel launches of one eager device-routed decode step of one row on
 * tiny-mixtral (no shared expert, split-KV attention at 1 row): embed + the
 * first norm, 14 per layer (3 q/k/v GEMVs, fused norm/RoPE/KV, attention +
 * merge, o-proj, fused add+norm, router GEMV, top-k, route plan, gate/up,
 * down, fused combine+residual+norm), final norm + lm_head: docs/cuda.md's
 * count, checked. */
static void test_launch_count(const char *shared)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/tiny-mixtral", shared);
    eng_open_opts og = {};
    og.backend = ENG_BACKEND_CUDA;
    og.cuda_no_graphs = 1;
    eng_engine *e = NULL;
    emoe_err err = {};
    if (eng_open(dir, &og, &e, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); result(0, "launch count: open"); return; }
    int L = eng_desc(e)->n_layers, V = eng_desc(e)->vocab;
    float *lg = (float *)malloc(sizeof(float) * V);
    eng_seq *s = eng_seq_new(e, 0, &err);
    int32_t t0 = 5, t1 = 9;
    int ok = s && eng_forward(e, s, &t0, 1, lg, &err) == EMOE_OK; /* loads every expert, enters device routing */
    uint64_t n0 = emu_launch_count();
    ok = ok && eng_forward(e, s, &t1, 1, lg, &err) == EMOE_OK;
    uint64_t n = emu_launch_count() - n0;
    result(ok && n == (uint64_t)(14 * L + 4), "launch count: one decode step of tiny-mixtral (%d layers): %llu launches (%.1f per layer + 4)", L,
           (unsigned long long)n, ((double)n - 4) / L);
    eng_seq_free(s);
    free(lg);
    eng_free(e);
}

/* Device allocation failures (emulator hook) become errors of the step that
 * needed the memory; no sequence advances and the engine keeps working. */
static void test_device_oom(const char *shared)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/tiny-mixtral", shared);
    eng_open_opts og = {};
    og.backend = ENG_BACKEND_CUDA;
    eng_engine *e = NULL;
    emoe_err err = {};
    int ok = 1;
    /* At open: the failure names the backend and CUDA's error; nothing leaks out. */
    emu_fail_malloc_after(5);
    emoe_status rc = eng_open(dir, &og, &e, &err);
    ok = ok && rc == EMOE_ENOMEM && e == NULL && strstr(err.msg, "backend cuda") && strstr(err.msg, "cudaErrorMemoryAllocation");
    if (!ok) fprintf(stderr, "  open: rc %d: %s\n", rc, err.msg);
    emu_fail_malloc_after(0);
    if (eng_open(dir, &og, &e, &err) != EMOE_OK) { fprintf(stderr, "  %s\n", err.msg); result(0, "device_oom: open"); return; }
    int V = eng_desc(e)->vocab;
    float *a = (float *)malloc(sizeof(float) * V), *b = (float *)malloc(sizeof(float) * V);
    int32_t ids[4] = {1, 2, 3, 4};
    eng_seq *s = eng_seq_new(e, 0, &err);
    /* KV allocation fails: the step fails, the sequence stays empty. */
    emu_fail_malloc_after(1);
    rc = eng_forward(e, s, ids, 4, a, &err);
    ok = ok && rc == EMOE_ENOMEM && eng_seq_len(s) == 0;
    if (rc != EMOE_ENOMEM) fprintf(stderr, "  kv: rc %d: %s\n", rc, err.msg);
    /* Workspace allocation fails (KV already there): same. */
    emu_fail_malloc_after(0);
    ok = ok && eng_forward(e, s, ids, 1, a, &err) == EMOE_OK && eng_seq_len(s) == 1;
    int32_t many[40];
    for (int i = 0; i < 40; i++) many[i] = i + 5;
    emu_fail_malloc_after(1);
    rc = eng_forward(e, s, many, 40, a, &err); /* 40 rows > the 16-row workspace: regrows */
    ok = ok && rc == EMOE_ENOMEM && eng_seq_len(s) == 1 && strstr(err.msg, "workspace");
    if (rc != EMOE_ENOMEM) fprintf(stderr, "  workspace: rc %d: %s\n", rc, err.msg);
    emu_fail_malloc_after(0);
    /* Then the same step succeeds and equals a fresh sequence's result. */
    ok = ok && eng_forward(e, s, many, 40, a, &err) == EMOE_OK && eng_seq_len(s) == 41;
    eng_seq *s2 = eng_seq_new(e, 0, &err);
    ok = ok && eng_forward(e, s2, ids, 1, b, &err) == EMOE_OK && eng_forward(e, s2, many, 40, b, &err) == EMOE_OK;
    ok = ok && rel_err(a, b, V) == 0.0;
    result(ok, "device_oom: open, KV growth and workspace allocation failures are step errors; the engine recovers");
    eng_seq_free(s);
    eng_seq_free(s2);
    free(a); free(b);
    eng_free(e);
}
#endif

/* ---- main ------------------------------------------------------------------------------- */

static const char *shared_dir(void)
{
    static char buf[4096];
    const char *env = getenv("EMOE_SHARED");
    snprintf(buf, sizeof buf, "%s", env && *env ? env : "../shared");
    struct stat st;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? buf : NULL;
}
