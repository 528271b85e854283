/*
 * test_quant_models.cuh — q8/q4 experts on the cuda backend end to end
 * (included by tests/gpu/test_kernels.cu, one translation unit; uses its
 * helpers and test_models.cuh's). The CUDA backend with a q8 or q4 expert
 * store (engine/cache.c's device tier holding the packed extents, the grouped
 * kernels of engine/cuda/moe_quant.cu) against the CPU backend with the SAME
 * store: same quantized weights, and the CPU's activations kept in float
 * (quant_act_mode_set(QUANT_ACT_F32); the GPU kernels never round
 * activations), so what differs is float summation order (and, as for bf16
 * experts, the bf16 rounding of activations cuBLAS applies to the dense
 * projections of prefills over 8 rows).
 *
 * Per format: prompts greedily decoded on the CPU one at a time (Q_STEPS
 * steps); the cuda runs are teacher-forced with the CPU's tokens, at batch 1
 * (a 7-token prompt), batch 3 (4, 3 and 1 tokens in every step) and batch 1
 * with a 33-token prompt, each at budget 100% preloaded (device-side routing,
 * CUDA graph replays) and 25% (host routing, evictions, grouped re-uploads).
 * Checks, every position:
 *  - logits within Q_TOL relative (L2) of the CPU's where every step has at
 *    most 8 rows (float32 GEMV for the dense projections: only summation
 *    order differs), Q_TOL_LONG for the 33-token prompt (its prefill takes the
 *    cuBLAS path, which rounds activations to bf16, as with bf16 experts);
 *    argmax equal;
 *  - where Q_TOL applies, the CPU's q8/q4 logits are far (> Q_SEP x the cuda
 *    difference) from its bf16 ones: the cuda run did compute with the
 *    quantized weights;
 *  - 25% bitwise equal to 100% (both paths compute every pair alone);
 *  - the path taken: device-routed + graphs at 100%, host-routed and
 *    evicting at 25%; the GPU slots are the cache's (packed extent bytes).
 */
#define Q_STEPS 6
#define Q_TOL 1e-5      /* seen: <= 2e-7 */
#define Q_TOL_LONG 5e-3 /* seen: ~7e-4 (bf16-rounded activations in the >8-row prefill) */
#define Q_SEP 10.0

typedef struct q_run {
    int nb;                  /* sequences */
    const int32_t *prompt[3];
    int plen[3];
    int32_t *toks;           /* (3, Q_STEPS): generated (gen) or forced */
    float *out;              /* (3, 1 + Q_STEPS, V) logits: the prompt's last, then each step's */
} q_run;

/* Prefill of r->nb sequences in one step, then Q_STEPS decode steps of nb rows. */
static int q_steps(eng_engine *e, q_run *r, int V, int gen, emoe_err *err)
{
    eng_seq *s[3] = {};
    eng_batch_item it[3];
    int ok = 1;
    for (int b = 0; b < r->nb && ok; b++) {
        ok = (s[b] = eng_seq_new(e, 0, err)) != NULL;
        it[b] = (eng_batch_item){s[b], r->prompt[b], r->plen[b], r->out + (size_t)b * (1 + Q_STEPS) * V, NULL};
    }
    ok = ok && eng_step(e, it, r->nb, err) == EMOE_OK;
    for (int i = 0; i < Q_STEPS && ok; i++) {
        for (int b = 0; b < r->nb; b++) {
            float *prev = r->out + ((size_t)b * (1 + Q_STEPS) + i) * V;
            if (gen) r->toks[b * Q_STEPS + i] = argmax(prev, V);
            it[b] = (eng_batch_item){s[b], r->toks + b * Q_STEPS + i, 1, prev + V, NULL};
        }
        ok = eng_step(e, it, r->nb, err) == EMOE_OK;
    }
    for (int b = 0; b < r->nb; b++) eng_seq_free(s[b]);
    return ok;
}

/* Opens dir on backend be with the expert cache over store (fmt) at budget. */
static eng_engine *q_open(const char *dir, int cuda, const char *fmt, const char *store, const char *budget, int preload,
                          cache_t **cache, emoe_err *err)
{
    eng_open_opts o = {};
    o.backend = cuda ? ENG_BACKEND_CUDA : ENG_BACKEND_CPU;
    eng_engine *e = NULL;
    *cache = NULL;
    if (eng_open(dir, &o, &e, err) != EMOE_OK) return NULL;
    if (!fmt) return e; /* bf16, the checkpoint's experts */
    cache_cli_opts co = {};
    co.budget = budget;
    co.expert_format = fmt;
    co.store = store;
    if (cache_attach(e, &co, cache, err) != EMOE_OK) { eng_free(e); return NULL; }
    if (preload) {
        const eng_model_desc *d = eng_desc(e);
        int *all = (int *)malloc(sizeof(int) * d->n_experts);
        for (int x = 0; x < d->n_experts; x++) all[x] = x;
        for (int l = 0; l < d->n_layers; l++) cache_prefetch(*cache, l, all, d->n_experts);
        cache_drain(*cache);
        free(all);
    }
    return e;
}

/* The prompts: case 1 (7 tokens), its first 4, case 2's first 3, case 0 (1), case 2 (33). */
#define Q_PROMPTS 5
static void test_quant_models(const char *shared, const char *name, json_t *md)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    json_t *cases = json_object_get(md, "cases");
    static const int pcase[Q_PROMPTS] = {1, 1, 2, 0, 2}, plim[Q_PROMPTS] = {1 << 20, 4, 3, 1 << 20, 1 << 20};
    int32_t *pr[Q_PROMPTS];
    int pl[Q_PROMPTS];
    for (int b = 0; b < Q_PROMPTS; b++) {
        json_t *p = json_object_get(json_array_get(cases, (size_t)pcase[b] % json_array_size(cases)), "prompt_ids");
        pl[b] = (int)json_array_size(p) < plim[b] ? (int)json_array_size(p) : plim[b];
        pr[b] = (int32_t *)malloc(sizeof(int32_t) * (pl[b] ? pl[b] : 1));
        for (int i = 0; i < pl[b]; i++) pr[b][i] = (int32_t)json_integer_value(json_array_get(p, i));
    }
    emoe_err err = {};
    cache_t *cache = NULL;
    eng_engine *e = q_open(dir, 0, NULL, NULL, NULL, 0, &cache, &err);
    if (!e) { fprintf(stderr, "  %s\n", err.msg); result(0, "quant cuda %s: open", name); return; }
    int V = eng_desc(e)->vocab, dim = eng_desc(e)->dim, ffn = eng_desc(e)->expert_ffn;
    eng_free(e);
    if (g_emu && V > EMU_BIG_VOCAB) {
        printf("SKIP quant cuda %s: emulator, vocabulary %d\n", name, V);
        g_skip++;
        for (int b = 0; b < Q_PROMPTS; b++) free(pr[b]);
        return;
    }
    size_t one = (size_t)(1 + Q_STEPS) * V, per = Q_PROMPTS * one;
    float *cpu = (float *)malloc(sizeof(float) * per), *cpu8a = (float *)malloc(sizeof(float) * per);
    float *bf = (float *)malloc(sizeof(float) * per), *full = (float *)malloc(sizeof(float) * 3 * one);
    float *got = (float *)malloc(sizeof(float) * 3 * one), *ref = (float *)malloc(sizeof(float) * 3 * one);
    int32_t toks[Q_PROMPTS * Q_STEPS], ftoks[3 * Q_STEPS];
    static const char *fmts[] = {"q8", "q4"};
    struct { int nb, seq[3]; double tol; const char *what; } runs[] = {
        {1, {0}, Q_TOL, "batch 1"}, {3, {1, 2, 3}, Q_TOL, "batch 3"}, {1, {4}, Q_TOL_LONG, "batch 1, 33-token prompt"},
    };
    for (int fi = 0; fi < 2; fi++) {
        const char *fmt = fmts[fi];
        char store[256];
        snprintf(store, sizeof store, "/tmp/emoe-gpu-quant-%d-%s.%s.store", (int)getpid(), name, fmt);
        /* CPU references, one sequence at a time: float activations (the
         * comparison, greedy), q8a (the CPU default; reported) and bf16
         * experts, both teacher-forced with the first pass's tokens. */
        int ok = 1;
        for (int pass = 0; pass < 3 && ok; pass++) {
            quant_act_mode_set(pass == 1 ? QUANT_ACT_Q8 : QUANT_ACT_F32);
            for (int b = 0; b < Q_PROMPTS && ok; b++) {
                float *dst = (pass == 0 ? cpu : pass == 1 ? cpu8a : bf) + (size_t)b * one;
                q_run r = {1, {pr[b]}, {pl[b]}, toks + b * Q_STEPS, dst};
                e = q_open(dir, 0, pass == 2 ? NULL : fmt, store, "100%", 0, &cache, &err);
                ok = e && q_steps(e, &r, V, pass == 0, &err);
                eng_free(e);
                cache_free(cache);
            }
        }
        quant_act_mode_set(QUANT_ACT_Q8);
        if (!ok) { fprintf(stderr, "  %s\n", err.msg); result(0, "quant cuda %s %s: CPU reference", name, fmt); unlink(store); continue; }
        double d8a = rel_err(cpu8a, cpu, per);
        for (auto &R : runs) {
            size_t n = (size_t)R.nb * one;
            for (int b = 0; b < R.nb; b++) {
                memcpy(ref + (size_t)b * one, cpu + (size_t)R.seq[b] * one, sizeof(float) * one);
                memcpy(ftoks + b * Q_STEPS, toks + R.seq[b] * Q_STEPS, sizeof(int32_t) * Q_STEPS);
            }
            double sep = 1e300;
            for (int b = 0; b < R.nb; b++) {
                double sb = rel_err(cpu + (size_t)R.seq[b] * one, bf + (size_t)R.seq[b] * one, one);
                if (sb < sep) sep = sb;
            }
            static const char *budgets[] = {"100%", "25%"};
            for (int bi = 0; bi < 2; bi++) {
                const char *budget = budgets[bi];
                int preload = bi == 0;
                float *dst = bi == 0 ? full : got;
                for (size_t i = 0; i < n; i++) dst[i] = NAN;
                q_run r = {R.nb, {pr[R.seq[0]], pr[R.seq[1]], pr[R.seq[2]]}, {pl[R.seq[0]], pl[R.seq[1]], pl[R.seq[2]]}, ftoks, dst};
                e = q_open(dir, 1, fmt, store, budget, preload, &cache, &err);
                ok = e && q_steps(e, &r, V, 0, &err);
                if (!ok) fprintf(stderr, "  %s\n", err.msg);
                eng_backend_stats bs = {};
                cache_stats cs = {};
                if (e) eng_backend_stats_get(e, &bs);
                if (cache) cache_get_stats(cache, &cs);
                eng_free(e);
                cache_free(cache);
                double worst = 0;
                int amax = 1;
                for (int b = 0; ok && b < R.nb; b++)
                    for (int i = 0; i <= Q_STEPS; i++) {
                        size_t at = (size_t)b * one + (size_t)i * V;
                        if (!all_finite(dst + at, V)) { ok = 0; break; }
                        double re = rel_err(dst + at, ref + at, V);
                        if (re > worst) worst = re;
                        amax &= argmax(dst + at, V) == argmax(ref + at, V);
                    }
                /* a GPU slot holds the packed extent (not a bf16 expert) */
                uint64_t slot = 2 * (uint64_t)ffn * cu_quant_row_bytes(fi + 1, dim) + (uint64_t)dim * cu_quant_row_bytes(fi + 1, ffn);
                int tier = bs.expert_slots == 0 && cs.loads > 0 && bs.expert_budget_bytes > 0 && bs.expert_budget_bytes % slot == 0 &&
                           bs.expert_budget_bytes <= (uint64_t)cs.device_slots * slot;
                /* path: preloaded 100% device-routed with graphs on every
                 * decode step; 25% host-routed and evicting */
                int path = preload ? bs.steps_device_routed == 1 + Q_STEPS && bs.graph_launches == Q_STEPS
                                   : bs.steps_device_routed == 0 && cs.evictions > 0;
                int same = bi == 0 || (ok && memcmp(full, got, sizeof(float) * n) == 0);
                int separated = R.tol > Q_TOL || sep > Q_SEP * worst;
                result(ok && worst <= R.tol && amax && separated && path && tier && same,
                       "quant cuda %s %s %s budget %s%s: logits vs CPU %s (float activations) worst rel %.2e (tol %.0e), "
                       "argmax %s; CPU %s vs bf16 %.2e; CPU q8a vs float act %.2e; %s; device-routed %llu, graphs %llu, "
                       "evictions %llu, slots %d",
                       name, fmt, R.what, budget, preload ? " preloaded" : "", fmt, worst, R.tol, amax ? "equal" : "DIFFERS", fmt,
                       sep, d8a, bi ? (same ? "bitwise = 100%" : "NOT bitwise = 100%") : "reference",
                       (unsigned long long)bs.steps_device_routed, (unsigned long long)bs.graph_launches,
                       (unsigned long long)cs.evictions, cs.device_slots);
            }
        }
        unlink(store);
    }
    for (int b = 0; b < Q_PROMPTS; b++) free(pr[b]);
    free(cpu); free(cpu8a); free(bf); free(full); free(got); free(ref);
}

/* miss_policy lowbit on the cuda backend: the cache's low-bit copy (q4)
 * placed in GPU memory (the slot memory's persist hook), a miss computed from
 * it with the q4 kernels while the full expert loads.
 *  - q4 slots + q4 low-bit copy at 25%: whichever experts are served low-bit
 *    (it depends on when loads complete), the weights are the same bytes, so
 *    the logits must be BITWISE those of q4 exact all-resident: checks the
 *    device copy, its offsets, the split of a group into slot experts and
 *    low-bit stand-ins and the kernels' format per part; and low-bit uses > 0
 *    (cache and per sequence), so the stand-in path did run;
 *  - bf16 slots + q4 low-bit copy at 25%: low-bit uses > 0, finite, the
 *    logits differ from exact bf16 but stay close (max difference over the
 *    positions under a quarter of the largest logit, as the CPU's
 *    test_quant_store; which steps use the low-bit copy depends on when the
 *    loads complete). */
static void test_quant_lowbit(const char *shared, const char *name, json_t *md)
{
    char dir[4096], pb[256], p4[256];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    snprintf(pb, sizeof pb, "/tmp/emoe-gpu-lowbit-%d-%s.bf16.store", (int)getpid(), name);
    snprintf(p4, sizeof p4, "/tmp/emoe-gpu-lowbit-%d-%s.q4.store", (int)getpid(), name);
    json_t *pj = json_object_get(json_array_get(json_object_get(md, "cases"), 1 % json_array_size(json_object_get(md, "cases"))), "prompt_ids");
    int n = (int)json_array_size(pj);
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (n ? n : 1));
    for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(pj, i));
    emoe_err err = {};
    eng_open_opts og = {};
    og.backend = ENG_BACKEND_CUDA;
    eng_engine *e = NULL;
    uint64_t fp = 0;
    store_info info;
    int ok = eng_open(dir, &og, &e, &err) == EMOE_OK && store_model_fingerprint(e, &fp, &err) == EMOE_OK &&
             store_info_from_engine(e, &info, &err) == EMOE_OK &&
             store_pack_engine_format(e, pb, QUANT_NONE, 0, &err) == EMOE_OK && store_pack_engine_format(e, p4, QUANT_Q4, 0, &err) == EMOE_OK;
    int V = ok ? eng_desc(e)->vocab : 0;
    eng_free(e);
    if (!ok) { fprintf(stderr, "  %s\n", err.msg); result(0, "lowbit cuda %s: open / pack", name); free(ids); return; }
    if (g_emu && V > EMU_BIG_VOCAB) { printf("SKIP lowbit cuda %s: emulator, vocabulary %d\n", name, V); g_skip++; free(ids); unlink(pb); unlink(p4); return; }
    size_t one = (size_t)(1 + Q_STEPS) * V;
    float *ref4 = (float *)malloc(sizeof(float) * one), *refb = (float *)malloc(sizeof(float) * one), *got = (float *)malloc(sizeof(float) * one);
    int32_t toks[Q_STEPS];
    uint64_t total = (uint64_t)info.n_layers * info.n_experts * info.extent_stride; /* percentages of the bf16 experts */
    /* runs: 0 q4 exact 100% (reference, greedy), 1 bf16 exact on the backend's own slots, 2 q4 + lowbit q4 25%, 3 bf16 + lowbit q4 25% */
    for (int run = 0; run < 4; run++) {
        int fmt = run == 0 || run == 2 ? QUANT_Q4 : 0, lowbit = run >= 2;
        float *dst = run == 0 ? ref4 : run == 1 ? refb : got;
        for (size_t i = 0; i < one; i++) dst[i] = NAN;
        e = NULL;
        cache_t *c = NULL;
        ok = eng_open(dir, &og, &e, &err) == EMOE_OK;
        if (ok && run != 1) {
            cache_config cfg = {};
            ok = cache_parse_budget(run == 0 ? "100%" : "25%", total, "budget", &cfg.device_budget, &err) == EMOE_OK;
            cfg.expert_format = fmt;
            cfg.miss_policy = lowbit ? CACHE_MISS_LOWBIT : CACHE_MISS_EXACT;
            if (lowbit) { cfg.lowbit_store = p4; cfg.lowbit_format = QUANT_Q4; }
            cfg.slot_mem = (const cache_slot_mem *)eng_backend_slot_mem_format(e, fmt);
            ok = ok && cfg.slot_mem && cache_open(fmt ? p4 : pb, fp, &cfg, &c, &err) == EMOE_OK;
            if (ok) eng_set_expert_provider(e, cache_provider(c));
        }
        eng_seq *s = ok ? eng_seq_new(e, 0, &err) : NULL;
        ok = s && eng_forward(e, s, ids, n, dst, &err) == EMOE_OK;
        for (int i = 0; i < Q_STEPS && ok; i++) {
            if (run == 0) toks[i] = argmax(dst + (size_t)i * V, V);
            if (c) cache_drain(c); /* loads started by a token complete before the next (as emoe perplexity --miss-policy lowbit) */
            ok = eng_forward(e, s, toks + i, 1, dst + (size_t)(i + 1) * V, &err) == EMOE_OK;
        }
        uint64_t seq_lb = s ? eng_seq_lowbit(s) : 0;
        cache_stats cs = {};
        if (c) cache_get_stats(c, &cs);
        if (!ok) fprintf(stderr, "  %s\n", err.msg);
        eng_seq_free(s);
        eng_free(e);
        cache_free(c);
        if (run == 2) {
            int same = ok && memcmp(got, ref4, sizeof(float) * one) == 0;
            result(same && cs.lowbit_uses > 0 && seq_lb >= cs.lowbit_uses,
                   "lowbit cuda %s: q4 slots + q4 low-bit copy in GPU memory at 25%%: bitwise = q4 exact all-resident over %d positions; "
                   "low-bit uses %llu (per token x expert %llu), loads %llu", name, 1 + Q_STEPS, (unsigned long long)cs.lowbit_uses,
                   (unsigned long long)seq_lb, (unsigned long long)cs.loads);
        } else if (run == 3) {
            double diff = 0, mag = 0;
            for (size_t v = 0; v < one; v++) { diff = fmax(diff, fabs((double)got[v] - refb[v])); mag = fmax(mag, fabs((double)refb[v])); }
            result(ok && all_finite(got, one) && cs.lowbit_uses > 0 && seq_lb >= cs.lowbit_uses && diff > 0 && diff < 0.25 * mag + 1e-2,
                   "lowbit cuda %s: bf16 slots + q4 low-bit copy at 25%%: low-bit uses %llu (per token x expert %llu), max logit "
                   "diff vs exact over %d positions %.3g of %.3g, low-bit bytes %llu", name, (unsigned long long)cs.lowbit_uses,
                   (unsigned long long)seq_lb, 1 + Q_STEPS, diff, mag, (unsigned long long)cs.lowbit_bytes);
        } else if (!ok) {
            result(0, "lowbit cuda %s: reference run %d", name, run);
        }
    }
    unlink(pb); unlink(p4);
    free(ids); free(ref4); free(refb); free(got);
}

/* One engine switching expert formats: own slots (bf16) -> a q8 cache ->
 * a q4 cache -> own slots again (each cache preloaded, so every step is
 * device-routed and replays a CUDA graph). Per phase a new sequence of 4
 * single-token steps must be BITWISE the same steps on a fresh engine with
 * only that phase's experts: the slot memory is remade per format, the
 * device table and the graphs (whose MoE launches are per format) rebuilt. */
static void test_quant_switch(const char *shared, const char *name)
{
    char dir[4096], store[2][256];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", shared, name);
    static const char *fmts[4] = {NULL, "q8", "q4", NULL};
    for (int i = 0; i < 2; i++) snprintf(store[i], sizeof store[i], "/tmp/emoe-gpu-qswitch-%d-%s.%s.store", (int)getpid(), name, fmts[i + 1]);
    emoe_err err = {};
    cache_t *ce = NULL;
    eng_engine *e = q_open(dir, 1, NULL, NULL, NULL, 0, &ce, &err);
    if (!e) { fprintf(stderr, "  %s\n", err.msg); result(0, "quant switch %s: open", name); return; }
    int V = eng_desc(e)->vocab, ok = 1, same = 1;
    if (g_emu && V > EMU_BIG_VOCAB) { printf("SKIP quant switch %s: emulator, vocabulary %d\n", name, V); g_skip++; eng_free(e); return; }
    const int N = 4;
    float *a = (float *)malloc(sizeof(float) * V * N), *b = (float *)malloc(sizeof(float) * V * N);
    uint64_t routed = 0, graphs = 0;
    for (int ph = 0; ph < 4 && ok; ph++) {
        const char *st = fmts[ph] ? store[ph - 1] : NULL;
        if (fmts[ph]) {
            cache_cli_opts co = {};
            co.budget = "100%";
            co.expert_format = fmts[ph];
            co.store = st;
            ok = cache_attach(e, &co, &ce, &err) == EMOE_OK;
            const eng_model_desc *d = eng_desc(e);
            int *all = (int *)malloc(sizeof(int) * d->n_experts);
            for (int x = 0; ok && x < d->n_experts; x++) all[x] = x;
            for (int l = 0; ok && l < d->n_layers; l++) cache_prefetch(ce, l, all, d->n_experts);
            if (ok) cache_drain(ce);
            free(all);
        }
        cache_t *cf = NULL;
        eng_engine *f = ok ? q_open(dir, 1, fmts[ph], st, "100%", 1, &cf, &err) : NULL;
        eng_seq *sa = ok ? eng_seq_new(e, 0, &err) : NULL, *sb = f ? eng_seq_new(f, 0, &err) : NULL;
        ok = sa && sb;
        for (int i = 0; i < N && ok; i++) {
            int32_t tok = (int32_t)((7 * i + 5 + ph) % V);
            ok = eng_forward(e, sa, &tok, 1, a + (size_t)i * V, &err) == EMOE_OK &&
                 eng_forward(f, sb, &tok, 1, b + (size_t)i * V, &err) == EMOE_OK;
        }
        same &= ok && !memcmp(a, b, sizeof(float) * V * N);
        eng_seq_free(sa); eng_seq_free(sb);
        eng_free(f);
        cache_free(cf);
        if (ce) { /* detach and free this phase's cache */
            eng_set_expert_provider(e, NULL);
            cache_free(ce);
            ce = NULL;
        }
    }
    eng_backend_stats bs = {};
    if (ok) eng_backend_stats_get(e, &bs);
    routed = bs.steps_device_routed;
    graphs = bs.graph_launches;
    if (!ok) fprintf(stderr, "  %s\n", err.msg);
    result(ok && same && routed == 4 * (uint64_t)N && graphs == 4 * (uint64_t)N,
           "quant switch %s: own slots -> q8 cache -> q4 cache -> own slots in one engine: every phase bitwise = a fresh engine; "
           "device-routed %llu, graph replays %llu of %d steps", name, (unsigned long long)routed, (unsigned long long)graphs, 4 * N);
    eng_free(e);
    cache_free(ce);
    for (int i = 0; i < 2; i++) unlink(store[i]);
    free(a); free(b);
}
