/*
 * cmd_perplexity.c — `emoe perplexity`: perplexity of a model over documents,
 * scored the way tiny-moe-7task's reference_perplexity.json describes: per
 * task the first --max-docs documents (default 12), each as BOS + tokens + EOS,
 * the first --max-len tokens (default 257) of it run as one sequence, every
 * next-token prediction inside scored (up to max_len-1 per document); a task's
 * perplexity is exp(sum of NLL over its documents / number of predictions).
 *
 * Under an expert budget (--budget) the expert cache serves the experts. In
 * exact mode the figures equal the all-experts ones (documents run as one
 * prefill each). In substitute mode the cache is rebuilt per task and warmed by
 * running that task's documents once, token by token, in exact mode (LRU
 * eviction), then the documents are scored token by token (as decoding would
 * see them) with the substitute policy. --fetch-on-miss on (default): the
 * experts a token missed are loaded for the next tokens, as the forward pass's
 * prefetch does in serving, but synchronously so that the figures do not depend
 * on load timing; off: the warmed resident set stays frozen while scoring.
 *
 * Documents: JSON lines {"task": T, "text": S} (needs the tokenizer) or
 * {"task": T, "ids": [...]} (already tokenized, without BOS/EOS).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cache.h"
#include "engine/engine.h"
#include "engine/quant.h"
#include "engine/tokenizer.h"
#include "tools/tool_cfg.h"
#include "tools/args.h"
#include "tools/eval_docs.h"
#include "tools/cmds.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: emoe perplexity -m DIR --docs FILE [options]\n"
            "  -m, --model DIR         Hugging Face model directory\n"
            "  --docs FILE             JSON lines {\"task\", \"text\"} or {\"task\", \"ids\"}\n"
            "  --task T                only this task (default: every task, in file order)\n"
            "  --max-docs N            documents per task (default 12)\n"
            "  --max-len N             tokens per document incl. BOS (default 257)\n"
            "  --budget B               expert cache device budget: 25%% or a size such as 512MiB (default: all resident)\n"
            "  --config FILE, --set S.K=V  [model] path, [engine] threads, kv_dtype and [cache] settings as `emoe serve`\n"
            "  --host-budget X%%|BYTES  pinned host tier\n"
            "  --miss-policy P         exact | substitute | lowbit (substitute, lowbit: warm per task, then score\n"
            "                          token by token; lowbit: a miss's load completes before the next token)\n"
            "  --expert-format F       bf16 (default) | q8 | q4 (without --budget: all experts resident)\n"
            "  --quant-act A           q8 (default) | f32: activations of quantized experts' dot products\n"
            "  --lowbit-format F       q4 (default) | q8: the resident copy of the lowbit policy\n"
            "  --store FILE            expert store (default DIR/experts.emoe or experts.q8/q4.emoe, built if missing)\n"
            "  --threads N             worker threads (default: physical cores)\n"
            "  --fetch-on-miss on|off  substitute mode: load missed experts for later tokens (default on)\n"
            "  --json                  print one JSON object\n");
}

typedef eval_doc doc;

typedef struct task_acc {
    char name[64];
    double nll;
    long long preds;
    int docs;
    uint64_t substituted;
    uint64_t lowbit;
} task_acc;


/* Scores one document: adds its NLL and prediction count to acc. With score=0
 * it only runs it (cache warm-up). */
static emoe_status run_doc(eng_engine *e, const doc *dc, float *all, task_acc *acc, int score, emoe_err *err)
{
    const eng_model_desc *d = eng_desc(e);
    eng_seq *s = eng_seq_new(e, dc->n, err);
    if (!s) return err->code ? err->code : EMOE_ENOMEM;
    eng_batch_item it = {.seq = s, .ids = dc->ids, .n_ids = dc->n, .all_logits = score ? all : NULL};
    emoe_status st = eng_step(e, &it, 1, err);
    if (st == EMOE_OK && score) {
        for (int p = 0; p + 1 < dc->n; p++) {
            const float *lg = all + (size_t)p * d->vocab;
            double mx = -INFINITY, sum = 0;
            for (int v = 0; v < d->vocab; v++) if (lg[v] > mx) mx = lg[v];
            for (int v = 0; v < d->vocab; v++) sum += exp((double)lg[v] - mx);
            acc->nll += (mx + log(sum)) - (double)lg[dc->ids[p + 1]];
            acc->preds++;
        }
        acc->docs++;
        acc->substituted += eng_seq_substituted(s);
        acc->lowbit += eng_seq_lowbit(s);
    }
    eng_seq_free(s);
    return st;
}

/* Like run_doc, but one token per step (decode order): the cache sees routing
 * token by token, as in serving. */
static emoe_status run_doc_decode(eng_engine *e, const doc *dc, float *logits, task_acc *acc, int score,
                                  cache_t *cache, emoe_err *err)
{
    const eng_model_desc *d = eng_desc(e);
    eng_seq *s = eng_seq_new(e, dc->n, err);
    if (!s) return err->code ? err->code : EMOE_ENOMEM;
    emoe_status st = EMOE_OK;
    for (int p = 0; p + 1 < dc->n && st == EMOE_OK; p++) {
        st = eng_forward(e, s, &dc->ids[p], 1, logits, err);
        if (cache) cache_drain(cache); /* loads started by this token land before the next (deterministic) */
        if (cache) cache_step_end(cache);
        if (st || !score) continue;
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < d->vocab; v++) if (logits[v] > mx) mx = logits[v];
        for (int v = 0; v < d->vocab; v++) sum += exp((double)logits[v] - mx);
        acc->nll += (mx + log(sum)) - (double)logits[dc->ids[p + 1]];
        acc->preds++;
    }
    if (st == EMOE_OK && score) {
        acc->docs++;
        acc->substituted += eng_seq_substituted(s);
        acc->lowbit += eng_seq_lowbit(s);
    }
    eng_seq_free(s);
    return st;
}

/* Prefetch made synchronous: deterministic figures in substitute mode. */
static void prefetch_sync(void *ctx, int layer, const int *experts, int n)
{
    cache_prefetch(ctx, layer, experts, n);
    cache_drain(ctx);
}

int cmd_perplexity(int argc, char **argv)
{
    const char *model = NULL, *docs_path = NULL, *task = NULL;
    long long max_docs = 12, max_len = 257, threads = 0;
    int json = 0, fetch_on_miss = 1;
    cache_cli_opts co = {0};
    char budget_buf[64], host_buf[64];
    static tool_cfg tcfg;
    int rcfg;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
#define VAL() do { if (!(v = arg_value("perplexity", argc, argv, &i))) return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); model = v; }
        else if (!strcmp(a, "--docs")) { VAL(); docs_path = v; }
        else if (!strcmp(a, "--task")) { VAL(); task = v; }
        else if (!strcmp(a, "--max-docs")) { VAL(); if (arg_int("perplexity", a, v, 1, 1 << 20, &max_docs)) return 2; }
        else if (!strcmp(a, "--max-len")) { VAL(); if (arg_int("perplexity", a, v, 2, 1 << 20, &max_len)) return 2; }
        else if (!strcmp(a, "--threads")) { VAL(); if (arg_int("perplexity", a, v, 0, 256, &threads)) return 2; }
        else if (!strcmp(a, "--budget")) { VAL(); if (arg_budget_norm("perplexity", a, v, budget_buf, sizeof budget_buf)) return 2; co.budget = budget_buf; }
        else if (!strcmp(a, "--host-budget")) { VAL(); if (arg_budget_norm("perplexity", a, v, host_buf, sizeof host_buf)) return 2; co.host_budget = host_buf; }
        else if ((rcfg = tool_cfg_arg("perplexity", argc, argv, &i, &tcfg)) != 0) { if (rcfg < 0) return 2; }
        else if (!strcmp(a, "--miss-policy")) { VAL(); co.miss_policy = v; }
        else if (!strcmp(a, "--expert-format")) { VAL(); co.expert_format = v; }
        else if (!strcmp(a, "--lowbit-format")) { VAL(); co.lowbit_format = v; }
        else if (!strcmp(a, "--quant-act")) {
            VAL();
            if (!strcmp(v, "q8")) quant_act_mode_set(QUANT_ACT_Q8);
            else if (!strcmp(v, "f32")) quant_act_mode_set(QUANT_ACT_F32);
            else { fprintf(stderr, "emoe perplexity: --quant-act: expected q8 or f32, got '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--store")) { VAL(); co.store = v; }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--fetch-on-miss")) {
            VAL();
            if (strcmp(v, "on") && strcmp(v, "off")) { fprintf(stderr, "emoe perplexity: --fetch-on-miss: 'on' or 'off'\n"); return 2; }
            fetch_on_miss = !strcmp(v, "on");
        }
        else { fprintf(stderr, "emoe perplexity: unknown option '%s'\n", a); usage(stderr); return 2; }
#undef VAL
    }
    if (tool_cfg_apply("perplexity", &tcfg, &model, &threads, NULL, 0, &co)) return 2;
    int kv_dtype = -1;
    tool_cfg_kv_dtype(&tcfg, &kv_dtype);
    if (!model || !docs_path) { fprintf(stderr, "emoe perplexity: -m DIR and --docs FILE are required\n"); usage(stderr); return 2; }
    if (!co.budget && (co.host_budget || co.miss_policy || (co.store && !co.expert_format))) {
        fprintf(stderr, "emoe perplexity: --host-budget, --miss-policy and --store need --budget\n");
        return 2;
    }
    cache_miss_policy policy = CACHE_MISS_EXACT;
    if (co.miss_policy && cache_parse_miss_policy(co.miss_policy, &policy)) {
        fprintf(stderr, "emoe perplexity: --miss-policy: '%s' is not exact, substitute or lowbit\n", co.miss_policy);
        return 2;
    }
    emoe_err err = {0};
    eng_engine *e = NULL;
    eng_open_opts oo = {.n_threads = (int)threads, .kv_dtype = kv_dtype};
    doc *docs = NULL;
    int n_docs = 0, rc = 1, n_tasks = 0;
    task_acc *acc = NULL;
    float *all = NULL;
    cache_t *cache = NULL;
    cache_stats total_cs;
    memset(&total_cs, 0, sizeof total_cs);
    if (eng_open(model, &oo, &e, &err) != EMOE_OK) { fprintf(stderr, "emoe perplexity: %s\n", err.msg); goto out; }
    const eng_model_desc *d = eng_desc(e);
    if (eval_docs_load("emoe perplexity", docs_path, model, d, task, (int)max_docs, (int)max_len, 2, &docs, &n_docs)) goto out;
    if (!n_docs) { fprintf(stderr, "emoe perplexity: no documents%s%s in %s\n", task ? " of task " : "", task ? task : "", docs_path); goto out; }
    acc = calloc((size_t)n_docs, sizeof *acc);
    all = malloc(sizeof(float) * (size_t)max_len * (size_t)d->vocab);
    if (!acc || !all) { fprintf(stderr, "emoe perplexity: out of memory\n"); goto out; }
    for (int i = 0; i < n_docs; i++) {
        int t = 0;
        while (t < n_tasks && strcmp(acc[t].name, docs[i].task)) t++;
        if (t == n_tasks) snprintf(acc[n_tasks++].name, sizeof acc[0].name, "%s", docs[i].task);
    }
    double t0 = emoe_now();
    for (int t = 0; t < n_tasks; t++) {
        eng_expert_provider frozen;
        int warm = policy == CACHE_MISS_SUBSTITUTE || policy == CACHE_MISS_LOWBIT;
        if ((co.budget || co.expert_format) && (t == 0 || warm)) {
            /* substitute: a fresh cache per task, warmed on its own documents */
            eng_set_expert_provider(e, NULL);
            if (cache) {
                cache_stats cs;
                cache_get_stats(cache, &cs);
                total_cs.hits[0] += cs.hits[0];
                total_cs.misses[0] += cs.misses[0];
                total_cs.bytes_read += cs.bytes_read;
                cache_free(cache);
                cache = NULL;
            }
            cache_cli_opts c2 = co;
            if (policy != CACHE_MISS_LOWBIT) c2.miss_policy = "exact"; /* lowbit: the copy loads at open */
            if (cache_attach(e, &c2, &cache, &err) != EMOE_OK) { fprintf(stderr, "emoe perplexity: %s\n", err.msg); goto out; }
            if (policy == CACHE_MISS_LOWBIT) cache_set_miss_policy(cache, CACHE_MISS_EXACT); /* warm exactly */
            if (warm) {
                for (int i = 0; i < n_docs; i++) {
                    if (strcmp(docs[i].task, acc[t].name)) continue;
                    if (run_doc_decode(e, &docs[i], all, &acc[t], 0, cache, &err) != EMOE_OK) {
                        fprintf(stderr, "emoe perplexity: warming on %s: %s\n", acc[t].name, err.msg);
                        goto out;
                    }
                }
                cache_drain(cache);
                cache_set_miss_policy(cache, policy);
                frozen = *cache_provider(cache);
                /* lowbit: no look-ahead prefetch of the layer's experts (the miss itself starts the load) */
                frozen.prefetch = fetch_on_miss && policy == CACHE_MISS_SUBSTITUTE ? prefetch_sync : NULL;
                eng_set_expert_provider(e, &frozen);
            }
        }
        for (int i = 0; i < n_docs; i++) {
            if (strcmp(docs[i].task, acc[t].name)) continue;
            emoe_status rs = warm && co.budget
                                 ? run_doc_decode(e, &docs[i], all, &acc[t], 1, cache, &err)
                                 : run_doc(e, &docs[i], all, &acc[t], 1, &err);
            if (rs != EMOE_OK) {
                fprintf(stderr, "emoe perplexity: task %s: %s\n", acc[t].name, err.msg);
                goto out;
            }
            if (cache && !warm) cache_step_end(cache);
        }
        if (!json)
            fprintf(stderr, "%-16s ppl %10.4f  (%d docs, %lld predictions%s)\n", acc[t].name,
                    exp(acc[t].nll / (double)acc[t].preds), acc[t].docs, acc[t].preds,
                    policy == CACHE_MISS_SUBSTITUTE ? ", substituted experts counted in JSON"
                    : policy == CACHE_MISS_LOWBIT   ? ", low-bit expert uses counted in JSON"
                                                    : "");
    }
    double t1 = emoe_now();
    double nll = 0;
    long long preds = 0;
    for (int t = 0; t < n_tasks; t++) { nll += acc[t].nll; preds += acc[t].preds; }
    json_t *o = json_object(), *tasks = json_object();
    for (int t = 0; t < n_tasks; t++)
        json_object_set_new(tasks, acc[t].name,
                            json_pack("{s:f,s:f,s:I,s:i,s:I,s:I}", "ppl", exp(acc[t].nll / (double)acc[t].preds),
                                      "nll_sum", acc[t].nll, "predictions", (json_int_t)acc[t].preds, "docs",
                                      acc[t].docs, "substituted", (json_int_t)acc[t].substituted, "lowbit",
                                      (json_int_t)acc[t].lowbit));
    json_object_set_new(o, "tasks", tasks);
    json_object_set_new(o, "ppl_all_tasks", json_real(exp(nll / (double)preds)));
    json_object_set_new(o, "seconds", json_real(t1 - t0));
    json_object_set_new(o, "budget", co.budget ? json_string(co.budget) : json_null());
    json_object_set_new(o, "miss_policy", json_string(policy == CACHE_MISS_SUBSTITUTE ? "substitute"
                                                      : policy == CACHE_MISS_LOWBIT   ? "lowbit"
                                                                                      : "exact"));
    json_object_set_new(o, "expert_format", json_string(co.expert_format ? co.expert_format : "bf16"));
    json_object_set_new(o, "kv_dtype", json_string(tool_cfg_kv_dtype_name(eng_kv_dtype(e))));
    if (policy == CACHE_MISS_SUBSTITUTE) json_object_set_new(o, "fetch_on_miss", json_boolean(fetch_on_miss));
    if (cache) {
        cache_stats cs;
        cache_get_stats(cache, &cs);
        cs.hits[0] += total_cs.hits[0];
        cs.misses[0] += total_cs.misses[0];
        cs.bytes_read += total_cs.bytes_read;
        json_object_set_new(o, "cache", cache_stats_json(&cs));
    }
    if (json) {
        json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9));
        fputc('\n', stdout);
    } else {
        printf("all tasks: ppl %.4f over %lld predictions (%.1f s)\n", exp(nll / (double)preds), preds, t1 - t0);
    }
    json_decref(o);
    rc = 0;
out:
    if (e) eng_set_expert_provider(e, NULL);
    cache_free(cache);
    eval_docs_free(docs, n_docs);
    free(acc);
    free(all);
    eng_free(e);
    return rc;
}
