/*
 * cmd_bench.c — `emoe bench`: N sequences of P prompt tokens prefilled together
 * in one engine step, then G tokens decoded greedily for all N together (one
 * eng_step per token), on any backend. Prints prefill and decode tokens/s,
 * time to first token (the prefill step, as the first token is sampled from
 * its logits), per-step decode latency, and, on a device backend, device memory
 * by category (peak) and the GPU expert cache's hits/misses/stall time.
 * Prompts are deterministic pseudo-random token ids (--seed), so runs compare.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "engine/engine.h"
#include "engine/cache.h"
#include "tools/tool_cfg.h"
#include "tools/args.h"
#include "tools/cmds.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: emoe bench -m DIR [options]\n"
            "  -m, --model DIR     Hugging Face model directory\n"
            "  --batch N           sequences decoded together (default 1)\n"
            "  --prompt-len P      prompt tokens per sequence (default 128)\n"
            "  --gen G             tokens generated per sequence (default 32)\n"
            "  --backend B         cpu | cuda | auto (default auto)\n"
            "  --config FILE, --set S.K=V  [model] path and [engine] settings as `emoe serve` reads them\n"
            "  --budget X%%         CUDA: the expert cache's GPU slots (its device tier) hold X%% of all experts;\n"
            "                      100%%: every expert loaded before timing (default: the backend's own slots, as many as fit)\n"
            "  --store FILE        with --budget: the expert store (default: beside the model, built if missing)\n"
            "  --cuda-graphs on|off  CUDA: decode steps as CUDA graph replays when every expert is resident (default on)\n"
            "  --threads N         CPU worker threads (default: physical cores)\n"
            "  --expert-format F   bf16 | q8 | q4: CPU, routed experts from a store of that format, all resident\n"
            "                      (loaded before timing; default: bf16 straight from the checkpoint)\n"
            "  --warmup N          untimed warm-up steps before measuring (default 1)\n"
            "  --seed S            prompt token seed (default 1)\n"
            "  --prompt-ids LIST   use this prompt for every sequence (its length replaces --prompt-len)\n"
            "  --json              one JSON object instead of text\n");
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int cmd_bench(int argc, char **argv)
{
    const char *model = NULL, *prompt_list = NULL;
    long long batch = 1, plen = 128, gen = 32, threads = 0, warmup = 1, seed = 1;
    double budget_pct = 0;
    int json = 0;
    const char *expert_format = NULL, *budget_arg = NULL, *store = NULL;
    int no_graphs = 0;
    cache_t *cache = NULL;
    eng_backend_kind backend = ENG_BACKEND_AUTO;
    int backend_set = 0, rcfg;
    static tool_cfg tcfg;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
#define VAL() do { if (!(v = arg_value("bench", argc, argv, &i))) return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); model = v; }
        else if (!strcmp(a, "--batch")) { VAL(); if (arg_int("bench", a, v, 1, 4096, &batch)) return 2; }
        else if (!strcmp(a, "--prompt-len")) { VAL(); if (arg_int("bench", a, v, 1, 1 << 20, &plen)) return 2; }
        else if (!strcmp(a, "--gen")) { VAL(); if (arg_int("bench", a, v, 1, 1 << 20, &gen)) return 2; }
        else if (!strcmp(a, "--threads")) { VAL(); if (arg_int("bench", a, v, 0, 256, &threads)) return 2; }
        else if (!strcmp(a, "--warmup")) { VAL(); if (arg_int("bench", a, v, 0, 100, &warmup)) return 2; }
        else if (!strcmp(a, "--seed")) { VAL(); if (arg_int("bench", a, v, 0, INT64_MAX, &seed)) return 2; }
        else if (!strcmp(a, "--budget")) {
            VAL();
            if (arg_budget("bench", a, v, 1)) return 2;
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            size_t n = strlen(buf);
            if (n && buf[n - 1] == '%') buf[n - 1] = 0;
            if (arg_float("bench", a, buf, 1e-9, 100, &budget_pct)) return 2;
            budget_arg = v;
        }
        else if (!strcmp(a, "--store")) { VAL(); store = v; }
        else if (!strcmp(a, "--cuda-graphs")) {
            VAL();
            if (strcmp(v, "on") && strcmp(v, "off")) { fprintf(stderr, "emoe bench: --cuda-graphs: expected on or off, got '%s'\n", v); return 2; }
            no_graphs = !strcmp(v, "off");
        }
        else if ((rcfg = tool_cfg_arg("bench", argc, argv, &i, &tcfg)) != 0) { if (rcfg < 0) return 2; }
        else if (!strcmp(a, "--backend")) {
            VAL();
            backend_set = 1;
            if (eng_backend_parse(v, &backend)) { fprintf(stderr, "emoe bench: --backend: expected cpu, cuda or auto, got '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--prompt-ids")) { VAL(); prompt_list = v; }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--expert-format")) { VAL(); expert_format = v; }
        else { fprintf(stderr, "emoe bench: unknown option '%s'\n", a); usage(stderr); return 2; }
#undef VAL
    }
    /* [model] path, [engine] threads and backend (the [cache] budgets are the
     * expert cache's, which bench does not use: see --budget). */
    if (tool_cfg_apply("bench", &tcfg, &model, &threads, &backend, backend_set, NULL)) return 2;
    int kv_dtype = -1;
    tool_cfg_kv_dtype(&tcfg, &kv_dtype);
    if (!model) { fprintf(stderr, "emoe bench: -m DIR is required\n"); usage(stderr); return 2; }

    int32_t *fixed = NULL;
    int n_fixed = 0;
    if (prompt_list) {
        if (arg_ids("bench", "--prompt-ids", prompt_list, &fixed, &n_fixed)) return 2;
        plen = n_fixed;
    }
    int rc = 1, N = (int)batch, P = (int)plen, G = (int)gen;
    int32_t *out_tok = NULL;
    emoe_err err = {0};
    eng_engine *e = NULL;
    eng_seq **seqs = NULL;
    eng_batch_item *items = NULL;
    int32_t *prompts = NULL, *next = NULL;
    float *logits = NULL;
    double *step_s = NULL;
    /* --budget on CUDA sizes the expert cache's device tier: its GPU slots
     * are the only expert memory (engine/cuda/slot_mem.cu), not a pool of
     * the backend's own. */
    eng_open_opts oo = {.n_threads = (int)threads, .backend = backend, .cuda_no_graphs = no_graphs, .kv_dtype = kv_dtype};
    if (eng_open(model, &oo, &e, &err) != EMOE_OK) { fprintf(stderr, "emoe bench: %s\n", err.msg); goto out; }
    if (budget_pct > 0 && !strcmp(eng_backend_name(e), "cpu")) {
        /* It used to be ignored silently here (issue 14). */
        fprintf(stderr, "emoe bench: --budget sets the CUDA backend's expert slots; this run is on the CPU, where "
                        "`emoe run --budget` and `emoe perplexity --budget` run through the expert cache\n");
        goto out;
    }
    const eng_model_desc *d = eng_desc(e);
    if (expert_format || budget_arg) {
        cache_cli_opts co = {.expert_format = expert_format, .budget = budget_arg, .store = store};
        if (cache_attach(e, &co, &cache, &err) != EMOE_OK) { fprintf(stderr, "emoe bench: %s\n", err.msg); goto out; }
        /* every expert resident before timing (a budget below 100% measures
         * the cache's miss regime from a cold start instead) */
        if (!budget_arg || budget_pct >= 100) {
            int *all = malloc(sizeof(int) * (size_t)d->n_experts);
            for (int x = 0; all && x < d->n_experts; x++) all[x] = x;
            for (int l = 0; all && l < d->n_layers; l++) cache_prefetch(cache, l, all, d->n_experts);
            free(all);
            cache_drain(cache);
        }
    }
    if ((long long)P + G > eng_max_ctx(e)) {
        fprintf(stderr, "emoe bench: prompt (%d) + generated (%d) tokens exceed the context length %d\n", P, G, eng_max_ctx(e));
        goto out;
    }
    seqs = calloc((size_t)N, sizeof *seqs);
    items = calloc((size_t)N, sizeof *items);
    prompts = malloc(sizeof(int32_t) * (size_t)N * (size_t)P);
    next = malloc(sizeof(int32_t) * (size_t)N);
    logits = malloc(sizeof(float) * (size_t)N * (size_t)d->vocab);
    step_s = calloc((size_t)G, sizeof *step_s);
    out_tok = malloc(sizeof(int32_t) * (size_t)N * (size_t)G);
    if (!seqs || !items || !prompts || !next || !logits || !step_s || !out_tok) { fprintf(stderr, "emoe bench: out of memory\n"); goto out; }
    uint64_t rs = (uint64_t)seed;
    for (size_t i = 0; i < (size_t)N * P; i++)
        prompts[i] = fixed ? fixed[i % (size_t)P] : (int32_t)(next_rand(&rs) % (uint64_t)d->vocab);
    /* Warm-up (untimed): one short sequence through prefill and a decode step. */
    for (int w = 0; w < warmup; w++) {
        eng_seq *s = eng_seq_new(e, 0, &err);
        int wl = P < 8 ? P : 8;
        int ok = s && eng_forward(e, s, prompts, wl, logits, &err) == EMOE_OK;
        int32_t t = argmax(logits, d->vocab);
        ok = ok && (wl + 1 > eng_max_ctx(e) || eng_forward(e, s, &t, 1, logits, &err) == EMOE_OK);
        eng_seq_free(s);
        if (!ok) { fprintf(stderr, "emoe bench: warm-up: %s\n", err.msg); goto out; }
    }
    for (int i = 0; i < N; i++)
        if (!(seqs[i] = eng_seq_new(e, P + G, &err))) { fprintf(stderr, "emoe bench: %s\n", err.msg); goto out; }
    for (int i = 0; i < N; i++)
        items[i] = (eng_batch_item){.seq = seqs[i], .ids = prompts + (size_t)i * P, .n_ids = P,
                                    .logits = logits + (size_t)i * d->vocab};
    double t0 = emoe_now();
    if (eng_step(e, items, N, &err) != EMOE_OK) { fprintf(stderr, "emoe bench: prefill: %s\n", err.msg); goto out; }
    for (int i = 0; i < N; i++) out_tok[(size_t)i * G] = next[i] = argmax(logits + (size_t)i * d->vocab, d->vocab);
    double t1 = emoe_now();
    int steps = 0;
    double max_step = 0;
    for (int g = 1; g < G; g++, steps++) {
        for (int i = 0; i < N; i++) items[i] = (eng_batch_item){.seq = seqs[i], .ids = &next[i], .n_ids = 1,
                                                                .logits = logits + (size_t)i * d->vocab};
        double s0 = emoe_now();
        if (eng_step(e, items, N, &err) != EMOE_OK) { fprintf(stderr, "emoe bench: decode step %d: %s\n", g, err.msg); goto out; }
        for (int i = 0; i < N; i++) out_tok[(size_t)i * G + g] = next[i] = argmax(logits + (size_t)i * d->vocab, d->vocab);
        step_s[steps] = emoe_now() - s0;
        if (step_s[steps] > max_step) max_step = step_s[steps];
    }
    double t2 = emoe_now();
    double prefill_tps = (double)N * P / (t1 - t0);
    double decode_tps = steps ? (double)N * steps / (t2 - t1) : 0;
    double mean_step = steps ? (t2 - t1) / steps : 0;
    eng_backend_stats bs;
    eng_backend_stats_get(e, &bs);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (json) {
        json_t *o = json_object(), *m = json_object(), *c = json_object();
        json_object_set_new(o, "model", json_string(model));
        json_object_set_new(o, "backend", json_string(eng_backend_name(e)));
        json_object_set_new(o, "kv_dtype", json_string(tool_cfg_kv_dtype_name(eng_kv_dtype(e))));
        json_object_set_new(o, "batch", json_integer(N));
        json_object_set_new(o, "prompt_len", json_integer(P));
        json_object_set_new(o, "gen", json_integer(G));
        json_object_set_new(o, "expert_format", json_string(expert_format ? expert_format : "bf16"));
        json_object_set_new(o, "prefill_s", json_real(t1 - t0));
        json_object_set_new(o, "prefill_tokens_per_s", json_real(prefill_tps));
        json_object_set_new(o, "ttft_s", json_real(t1 - t0));
        json_object_set_new(o, "decode_steps", json_integer(steps));
        json_object_set_new(o, "decode_s", json_real(t2 - t1));
        json_object_set_new(o, "decode_tokens_per_s", json_real(decode_tps));
        json_object_set_new(o, "decode_step_mean_s", json_real(mean_step));
        json_object_set_new(o, "decode_step_max_s", json_real(max_step));
        json_object_set_new(o, "peak_rss_bytes", json_integer((json_int_t)ru.ru_maxrss * 1024));
        json_t *ga = json_array(); /* greedy tokens per sequence */
        for (int i = 0; i < N; i++) {
            json_t *one = json_array();
            for (int g = 0; g < G; g++) json_array_append_new(one, json_integer(out_tok[(size_t)i * G + g]));
            json_array_append_new(ga, one);
        }
        json_object_set_new(o, "generated", ga);
        if (bs.has_device) {
            json_object_set_new(m, "weights_bytes", json_integer((json_int_t)bs.weights_bytes));
            json_object_set_new(m, "kv_bytes", json_integer((json_int_t)bs.kv_bytes));
            json_object_set_new(m, "workspace_bytes", json_integer((json_int_t)bs.workspace_bytes));
            json_object_set_new(m, "expert_budget_bytes", json_integer((json_int_t)bs.expert_budget_bytes));
            json_object_set_new(m, "peak_bytes", json_integer((json_int_t)bs.peak_bytes));
            json_object_set_new(o, "device_memory", m);
            json_object_set_new(c, "slots", json_integer(bs.expert_slots));
            json_object_set_new(c, "slot_bytes", json_integer((json_int_t)bs.expert_slot_bytes));
            json_object_set_new(c, "hits", json_integer((json_int_t)bs.expert_hits));
            json_object_set_new(c, "misses", json_integer((json_int_t)bs.expert_misses));
            json_object_set_new(c, "upload_bytes", json_integer((json_int_t)bs.expert_upload_bytes));
            json_object_set_new(c, "stall_s", json_real(bs.expert_stall_s));
            json_object_set_new(o, "expert_cache", c);
            json_object_set_new(o, "steps_device_routed", json_integer((json_int_t)bs.steps_device_routed));
            json_object_set_new(o, "graph_launches", json_integer((json_int_t)bs.graph_launches));
            if (cache) { /* the expert cache's device tier is the GPU expert memory (--budget) */
                cache_stats cst;
                cache_get_stats(cache, &cst);
                json_t *cj = cache_stats_json(&cst);
                if (cj) json_object_set_new(o, "cache", cj);
            }
        } else {
            json_decref(m);
            json_decref(c);
        }
        json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("model %s, backend %s, batch %d, prompt %d, gen %d\n", model, eng_backend_name(e), N, P, G);
        printf("prefill: %d tokens in %.4f s = %.1f tok/s; time to first token %.4f s\n", N * P, t1 - t0, prefill_tps, t1 - t0);
        printf("decode:  %d steps x %d sequences in %.4f s = %.2f tok/s; step mean %.2f ms, max %.2f ms\n", steps, N,
               t2 - t1, decode_tps, mean_step * 1e3, max_step * 1e3);
        printf("peak RSS %.1f MiB\n", ru.ru_maxrss / 1024.0);
        if (bs.has_device) {
            printf("device memory (MiB): weights %.1f, KV %.1f, workspace %.1f, expert slots %.1f; peak %.1f\n",
                   bs.weights_bytes / 1048576.0, bs.kv_bytes / 1048576.0, bs.workspace_bytes / 1048576.0,
                   bs.expert_budget_bytes / 1048576.0, bs.peak_bytes / 1048576.0);
            printf("expert cache: %d slots of %.2f MiB, %llu hits, %llu misses, %.1f MiB uploaded, stall %.4f s\n",
                   bs.expert_slots, bs.expert_slot_bytes / 1048576.0, (unsigned long long)bs.expert_hits,
                   (unsigned long long)bs.expert_misses, bs.expert_upload_bytes / 1048576.0, bs.expert_stall_s);
            printf("steps with the routing on the device: %llu; as CUDA graph replays: %llu\n",
                   (unsigned long long)bs.steps_device_routed, (unsigned long long)bs.graph_launches);
        } else {
            printf("no device memory: the %s backend keeps everything in host memory (experts read from the checkpoint mapping)\n",
                   eng_backend_name(e));
        }
    }
    rc = 0;
out:
    if (seqs)
        for (int i = 0; i < N; i++) eng_seq_free(seqs[i]);
    free(seqs);
    free(items);
    free(prompts);
    free(next);
    free(logits);
    free(step_s);
    free(out_tok);
    free(fixed);
    if (e && cache) eng_set_expert_provider(e, NULL);
    cache_free(cache);
    eng_free(e);
    return rc;
}
