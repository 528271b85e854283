/*
 * cmd_run.c — `emoe run`: one prompt through the engine, then N sampled
 * tokens. --json prints prompt_ids, generated_ids, last_logits (every vocab
 * entry at the last prompt position), routing (per layer, per prompt position,
 * expert ids highest weight first) and timing.
 */
#include <jansson.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cache.h"
#include "engine/engine.h"
#include "engine/matmul.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "tools/tool_cfg.h"
#include "tools/args.h"
#include "tools/cmds.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: emoe run -m DIR (--prompt-ids 1,2,3 | --prompt TEXT) [-n N] [options]\n"
            "  -m, --model DIR        Hugging Face model directory\n"
            "  --prompt-ids LIST      prompt as comma-separated token ids\n"
            "  --prompt TEXT          prompt as text (needs tokenizer.json in DIR)\n"
            "  -n, --max-tokens N     tokens to generate (default 16)\n"
            "  --temperature T        0 = greedy (default 0)\n"
            "  --top-p P  --top-k K  --min-p P  --seed S\n"
            "  --presence-penalty X  --frequency-penalty X\n"
            "  --ignore-eos           do not stop at the model's EOS tokens\n"
            "  --threads N            worker threads (default: physical cores)\n"
            "  --kv-dtype T           KV cache element type: f32 (default), f16, bf16; else [engine] kv_dtype\n"
            "  --backend B            cpu | cuda | auto (default cpu)\n"
            "  --gpu-budget MB        CUDA: device memory for expert slots (default: as much as fits)\n"
            "  --cuda-graphs on|off   CUDA: decode steps as CUDA graph replays when every expert is resident (default on)\n"
            "  --json                 print one JSON object (ids, last logits, routing, timing)\n"
            "  --budget B             expert cache: device budget, 25%% of all experts or a size such as 512MiB\n"
            "                         (a bare number is an error; default: all experts resident, no cache)\n"
            "  --config FILE, --set S.K=V  read [model] path, [engine] and [cache] settings as `emoe serve`\n"
            "                         does; options given here win\n"
            "  --host-budget X%%|BYTES expert cache: pinned host tier (default 0)\n"
            "  --miss-policy P        exact (load on demand, default) | substitute (use resident experts) |\n"
            "                         lowbit (compute a miss with a resident low-bit copy while the expert loads)\n"
            "  --expert-format F      bf16 (default) | q8 | q4: routed experts from a quantized store (without\n"
            "                         --budget all experts resident)\n"
            "  --lowbit-format F      q4 (default) | q8: the resident copy of the lowbit miss policy\n"
            "  --store FILE           expert store (default DIR/experts.emoe or experts.q8/q4.emoe, built if missing)\n"
            "  --inject-read-error N  testing: the Nth expert read from the store fails with EIO\n");
}

typedef struct route_rec {
    int n_layers, k, n_prompt;
    int *ids;      /* (n_layers, n_prompt, k) */
    int active;
} route_rec;

static void on_route(void *user, void *tag, int pos, int layer, const int *experts, const float *w, int k)
{
    (void)tag;
    (void)w;
    route_rec *r = user;
    if (!r->active || pos < 0 || pos >= r->n_prompt || layer < 0 || layer >= r->n_layers || k != r->k) return;
    memcpy(r->ids + ((size_t)layer * r->n_prompt + pos) * k, experts, sizeof(int) * (size_t)k);
}

static int is_eos(const eng_model_desc *d, int tok)
{
    for (int i = 0; i < d->n_eos; i++) if (d->eos_ids[i] == tok) return 1;
    return 0;
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_run(int argc, char **argv)
{
    const char *model = NULL, *prompt_ids = NULL, *prompt = NULL;
    long long n_gen = 16, threads = 0, ll;
    int json = 0, ignore_eos = 0;
    eng_backend_kind backend = ENG_BACKEND_CPU;
    long long gpu_budget_mb = 0;
    int kv_dtype = -1, no_graphs = 0; /* kv_dtype unset: [engine] kv_dtype, else f32 */
    int backend_set = 0;
    eng_sampling sp;
    eng_sampling_default(&sp);
    double dv;
    cache_cli_opts co = {0};
    char budget_buf[64], host_buf[64];
    static tool_cfg tcfg;
    int rcfg;
    cache_t *cache = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
#define VAL() do { if (!(v = arg_value("run", argc, argv, &i))) return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); model = v; }
        else if (!strcmp(a, "--prompt-ids")) { VAL(); prompt_ids = v; }
        else if (!strcmp(a, "--prompt")) { VAL(); prompt = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) { VAL(); if (arg_int("run", a, v, 0, 1 << 24, &n_gen)) return 2; }
        else if (!strcmp(a, "--temperature")) { VAL(); if (arg_float("run", a, v, 0, 100, &dv)) return 2; sp.temperature = (float)dv; }
        else if (!strcmp(a, "--top-p")) { VAL(); if (arg_float("run", a, v, 1e-9, 1, &dv)) return 2; sp.top_p = (float)dv; }
        else if (!strcmp(a, "--min-p")) { VAL(); if (arg_float("run", a, v, 0, 1, &dv)) return 2; sp.min_p = (float)dv; }
        else if (!strcmp(a, "--top-k")) { VAL(); if (arg_int("run", a, v, 0, 1 << 24, &ll)) return 2; sp.top_k = (int)ll; }
        else if (!strcmp(a, "--seed")) { VAL(); if (arg_int("run", a, v, 0, INT64_MAX, &ll)) return 2; sp.seed = (uint64_t)ll; }
        else if (!strcmp(a, "--presence-penalty")) { VAL(); if (arg_float("run", a, v, -2, 2, &dv)) return 2; sp.presence_penalty = (float)dv; }
        else if (!strcmp(a, "--frequency-penalty")) { VAL(); if (arg_float("run", a, v, -2, 2, &dv)) return 2; sp.frequency_penalty = (float)dv; }
        else if (!strcmp(a, "--threads")) { VAL(); if (arg_int("run", a, v, 0, 256, &threads)) return 2; }
        else if (!strcmp(a, "--backend")) { VAL(); backend_set = 1; if (eng_backend_parse(v, &backend)) { fprintf(stderr, "emoe run: --backend: expected cpu, cuda or auto, got '%s'\n", v); return 2; } }
        else if (!strcmp(a, "--gpu-budget")) { VAL(); if (arg_int("run", a, v, 1, 1LL << 30, &gpu_budget_mb)) return 2; }
        else if (!strcmp(a, "--cuda-graphs")) {
            VAL();
            if (strcmp(v, "on") && strcmp(v, "off")) { fprintf(stderr, "emoe run: --cuda-graphs: expected on or off, got '%s'\n", v); return 2; }
            no_graphs = !strcmp(v, "off");
        }
        else if (!strcmp(a, "--kv-dtype")) {
            VAL();
            if (!strcmp(v, "f32")) kv_dtype = ENG_DT_F32;
            else if (!strcmp(v, "f16")) kv_dtype = ENG_DT_F16;
            else if (!strcmp(v, "bf16")) kv_dtype = ENG_DT_BF16;
            else { fprintf(stderr, "emoe run: --kv-dtype: expected f32, f16 or bf16, got '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--budget")) { VAL(); if (arg_budget_norm("run", a, v, budget_buf, sizeof budget_buf)) return 2; co.budget = budget_buf; }
        else if (!strcmp(a, "--host-budget")) { VAL(); if (arg_budget_norm("run", a, v, host_buf, sizeof host_buf)) return 2; co.host_budget = host_buf; }
        else if ((rcfg = tool_cfg_arg("run", argc, argv, &i, &tcfg)) != 0) { if (rcfg < 0) return 2; }
        else if (!strcmp(a, "--miss-policy")) { VAL(); co.miss_policy = v; }
        else if (!strcmp(a, "--expert-format")) { VAL(); co.expert_format = v; }
        else if (!strcmp(a, "--lowbit-format")) { VAL(); co.lowbit_format = v; }
        else if (!strcmp(a, "--store")) { VAL(); co.store = v; }
        else if (!strcmp(a, "--inject-read-error")) { VAL(); if (arg_int("run", a, v, 1, 1 << 30, &ll)) return 2; co.fail_nth_read = (int)ll; }
        else { fprintf(stderr, "emoe run: unknown option '%s'\n", a); usage(stderr); return 2; }
#undef VAL
    }
    if (tool_cfg_apply("run", &tcfg, &model, &threads, &backend, backend_set, &co)) return 2;
    tool_cfg_kv_dtype(&tcfg, &kv_dtype);
    if (!model) { fprintf(stderr, "emoe run: -m DIR is required\n"); usage(stderr); return 2; }
    if (!co.budget && (co.host_budget || co.miss_policy || co.fail_nth_read || (co.store && !co.expert_format))) {
        fprintf(stderr, "emoe run: --host-budget, --miss-policy, --store and --inject-read-error need --budget\n");
        return 2;
    }
    if (!!prompt_ids == !!prompt) { fprintf(stderr, "emoe run: give exactly one of --prompt-ids or --prompt\n"); return 2; }
    int32_t *ids = NULL;
    int n_ids = 0;
    tok_tokenizer *tok = NULL;
    emoe_err terr = {0};
    if (prompt) {
        /* As `tokenizer(text)` does: the post-processor's special tokens (e.g. BOS) included. */
        size_t nn = 0;
        if (tok_load_dir(model, &tok, &terr) != EMOE_OK || tok_encode(tok, prompt, strlen(prompt), 1, &ids, &nn, &terr) != EMOE_OK) {
            fprintf(stderr, "emoe run: --prompt: %s\n", terr.msg);
            tok_free(tok);
            return 2;
        }
        n_ids = (int)nn;
        if (n_ids == 0) { fprintf(stderr, "emoe run: --prompt encodes to no tokens\n"); tok_free(tok); free(ids); return 2; }
    } else if (arg_ids("run", "--prompt-ids", prompt_ids, &ids, &n_ids)) {
        return 2;
    }

    emoe_err err = {0};
    eng_engine *e = NULL;
    eng_open_opts oo = {.n_threads = (int)threads, .backend = backend, .gpu_expert_budget = (uint64_t)gpu_budget_mb << 20,
                        .kv_dtype = kv_dtype, .cuda_no_graphs = no_graphs};
    int rc = 1;
    eng_seq *seq = NULL;
    eng_sampler *smp = NULL;
    float *logits = NULL, *last = NULL;
    int32_t *gen = NULL;
    route_rec rr = {0};
    if (eng_open(model, &oo, &e, &err) != EMOE_OK) { fprintf(stderr, "emoe run: %s\n", err.msg); goto out; }
    const eng_model_desc *d = eng_desc(e);
    if ((co.budget || co.expert_format) && cache_attach(e, &co, &cache, &err) != EMOE_OK) { fprintf(stderr, "emoe run: %s\n", err.msg); goto out; }
    if (eng_sampling_check(&sp, &err) != EMOE_OK) { fprintf(stderr, "emoe run: %s\n", err.msg); goto out; }
    if (n_ids + n_gen > eng_max_ctx(e)) {
        fprintf(stderr, "emoe run: prompt (%d) + max tokens (%lld) exceed the context length %d\n", n_ids, n_gen, eng_max_ctx(e));
        goto out;
    }
    seq = eng_seq_new(e, 0, &err);
    smp = eng_sampler_new(&sp, d->vocab);
    logits = malloc(sizeof(float) * (size_t)d->vocab);
    last = malloc(sizeof(float) * (size_t)d->vocab);
    gen = malloc(sizeof(int32_t) * (size_t)(n_gen + 1));
    rr.n_layers = d->n_layers;
    rr.k = d->top_k;
    rr.n_prompt = n_ids;
    rr.ids = calloc((size_t)d->n_layers * (size_t)n_ids * (size_t)d->top_k, sizeof(int));
    if (!seq || !smp || !logits || !last || !gen || !rr.ids) { fprintf(stderr, "emoe run: out of memory\n"); goto out; }
    rr.active = 1;
    eng_set_routing_cb(e, on_route, &rr);
    double t0 = emoe_now(), c0 = cpu_seconds();
    if (eng_forward(e, seq, ids, n_ids, logits, &err) != EMOE_OK) { fprintf(stderr, "emoe run: %s\n", err.msg); goto out; }
    if (cache) cache_step_end(cache);
    double t1 = emoe_now(), c1 = cpu_seconds();
    rr.active = 0;
    memcpy(last, logits, sizeof(float) * (size_t)d->vocab);
    int n_out = 0;
    while (n_out < n_gen) {
        int next = eng_sampler_sample(smp, logits);
        eng_sampler_accept(smp, next);
        gen[n_out++] = next;
        if (!ignore_eos && is_eos(d, next)) break;
        if (n_out == n_gen) break;
        if (eng_forward(e, seq, &gen[n_out - 1], 1, logits, &err) != EMOE_OK) { fprintf(stderr, "emoe run: %s\n", err.msg); goto out; }
        if (cache) cache_step_end(cache);
    }
    double t2 = emoe_now(), c2 = cpu_seconds();
    int n_decode_steps = n_out > 0 ? n_out - 1 : 0;
    if (json) {
        json_t *o = json_object(), *pa = json_array(), *ga = json_array(), *la = json_array(), *ra = json_array();
        for (int i = 0; i < n_ids; i++) json_array_append_new(pa, json_integer(ids[i]));
        for (int i = 0; i < n_out; i++) json_array_append_new(ga, json_integer(gen[i]));
        for (int i = 0; i < d->vocab; i++) json_array_append_new(la, json_real(last[i]));
        for (int l = 0; l < d->n_layers; l++) {
            json_t *lay = json_array();
            for (int p = 0; p < n_ids; p++) {
                json_t *ex = json_array();
                for (int j = 0; j < d->top_k; j++)
                    json_array_append_new(ex, json_integer(rr.ids[((size_t)l * n_ids + p) * d->top_k + j]));
                json_array_append_new(lay, ex);
            }
            json_array_append_new(ra, lay);
        }
        json_object_set_new(o, "prompt_ids", pa);
        json_object_set_new(o, "generated_ids", ga);
        json_object_set_new(o, "last_logits", la);
        json_object_set_new(o, "routing", ra);
        json_t *tm = json_object();
        json_object_set_new(tm, "prefill_s", json_real(t1 - t0));
        json_object_set_new(tm, "prefill_tokens_per_s", json_real(n_ids / (t1 - t0)));
        json_object_set_new(tm, "decode_s", json_real(t2 - t1));
        json_object_set_new(tm, "decode_tokens_per_s", json_real(n_decode_steps > 0 ? n_decode_steps / (t2 - t1) : 0));
        /* CPU time of the process (all threads) over the same intervals: on a
         * shared machine, what the work cost apart from waiting for a core. */
        json_object_set_new(tm, "prefill_cpu_s", json_real(c1 - c0));
        json_object_set_new(tm, "decode_cpu_s", json_real(c2 - c1));
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        json_object_set_new(tm, "peak_rss_bytes", json_integer((json_int_t)ru.ru_maxrss * 1024));
        json_object_set_new(tm, "cpu_kernels", json_string(eng_mm_isa_name(eng_mm_isa_active())));
        json_object_set_new(o, "kv_dtype", json_string(tool_cfg_kv_dtype_name(eng_kv_dtype(e))));
        json_object_set_new(o, "timing", tm);
        if (cache) {
            cache_stats cs;
            cache_get_stats(cache, &cs);
            json_object_set_new(o, "cache", cache_stats_json(&cs));
        }
        json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9));
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("prompt ids:    ");
        for (int i = 0; i < n_ids; i++) printf("%s%d", i ? "," : "", ids[i]);
        printf("\ngenerated ids: ");
        for (int i = 0; i < n_out; i++) printf("%s%d", i ? "," : "", gen[i]);
        if (tok) {
            char *text = NULL;
            size_t tl = 0;
            if (tok_decode(tok, gen, (size_t)n_out, 1, &text, &tl, &terr) == EMOE_OK) printf("\ntext:          %s", text);
            free(text);
        }
        printf("\nprefill: %d tokens in %.3f s (%.1f tok/s); decode: %d steps in %.3f s (%.2f tok/s)\n", n_ids, t1 - t0,
               n_ids / (t1 - t0), n_decode_steps, t2 - t1, n_decode_steps > 0 ? n_decode_steps / (t2 - t1) : 0.0);
        if (cache) {
            cache_stats cs;
            cache_get_stats(cache, &cs);
            printf("expert cache: %d slots, hits %llu, misses %llu, bytes loaded %llu, peak resident %llu of %llu budget bytes\n",
                   cs.device_slots, (unsigned long long)cs.hits[0], (unsigned long long)cs.misses[0],
                   (unsigned long long)cs.bytes_read, (unsigned long long)cs.peak_resident_bytes,
                   (unsigned long long)cs.budget_bytes);
        }
    }
    rc = 0;
out:
    free(rr.ids);
    free(gen);
    free(last);
    free(logits);
    eng_sampler_free(smp);
    eng_seq_free(seq);
    eng_free(e);
    cache_free(cache);
    free(ids);
    tok_free(tok);
    return rc;
}
