/*
 * cmd_profile.c — `emoe profile`: measures, per task, how sensitive its
 * outputs are to routing errors, how concentrated its expert use is and how
 * long its outputs are, and writes the task profile `emoe serve` loads with
 * [predictor] task_profile (format: predictor/profile.h; method:
 * docs/predictor.md#task-profiles).
 *
 * Method (eMoE-style, on the task's documents, CPU reference engine, all
 * experts read from the checkpoint):
 *  1. all experts: perplexity (as `emoe perplexity` scores it) and, per
 *     layer, how often the task routes to each expert; a greedy continuation
 *     of the first tokens of each document (--gen tokens);
 *  2. restricted routing: every layer limited to the task's own most used
 *     --budget share of the experts (at least top_k), the router picking its
 *     top-k among them and renormalising, which is what the `substitute` miss
 *     policy does when the cache holds the task's plan: perplexity, and the
 *     share of the greedy continuation's tokens that stay the same (output
 *     similarity);
 *  3. layer by layer: the same restriction on one layer at a time
 *     (perplexity change per layer).
 * sensitivity = ln(ppl_restricted / ppl_all). A task is insensitive (it skips
 * per-task prediction and gets the substitute miss policy) when its
 * sensitivity is at most --threshold. concentration = the share of the task's
 * routed experts that fall in its top --budget share (mean over layers).
 * expected_output_tokens = mean decode tokens per request of the task in
 * --trace (e.g. a trace recorded with [predictor] trace_path); 0 = unknown.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "predictor/profile.h"
#include "predictor/trace.h"
#include "tools/args.h"
#include "tools/eval_docs.h"
#include "tools/cmds.h"

#define PTASK_MAX 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: emoe profile -m DIR --docs FILE [options]\n"
            "  -m, --model DIR     Hugging Face model directory\n"
            "  --docs FILE         JSON lines {\"task\", \"text\"} or {\"task\", \"ids\"}\n"
            "  -o, --output FILE   where to write the profile (default: stdout)\n"
            "  --budget X%%         share of each layer's experts the restriction keeps (default 25%%)\n"
            "  --max-docs N        documents per task (default 4)\n"
            "  --max-len N         tokens per document incl. BOS (default 129)\n"
            "  --gen N             greedy tokens generated for the output similarity (default 16)\n"
            "  --threshold T       insensitive when ln(ppl_restricted / ppl_all) <= T (default 0.7)\n"
            "  --trace FILE        routing trace: expected output length = mean decode tokens per request\n"
            "  --threads N         worker threads (default: all CPUs)\n");
}

typedef struct pdoc {
    int task;
    int32_t *ids;
    int n;
} pdoc;

typedef struct ptask {
    char name[64];
    double nll_all, nll_res;
    long long preds;
    double *nll_layer;    /* (L) */
    double *count;        /* (L, E) routed tokens */
    unsigned char *allow; /* (L, E) the task's top budget share */
    double same, gen_total;
    int docs;
    double expected_out;
    double concentration;
} ptask;

/* ---- documents (the `emoe perplexity` framing: BOS + tokens + EOS, truncated) ---- */

static int task_index(ptask *t, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(t[i].name, name)) return i;
    if (*n == PTASK_MAX || !pred_profile_task_name_ok(name)) return -1;
    memset(&t[*n], 0, sizeof t[*n]);
    snprintf(t[*n].name, sizeof t[*n].name, "%s", name);
    return (*n)++;
}

/* The documents (eval_docs.c), each with the index of its task. */
static int load_docs(const char *path, const char *model_dir, const eng_model_desc *d, int max_docs, int max_len,
                     ptask *tasks, int *n_tasks, pdoc **out, int *n_out)
{
    eval_doc *ed = NULL;
    int ne = 0;
    if (eval_docs_load("emoe profile", path, model_dir, d, NULL, max_docs, max_len, 3, &ed, &ne)) return -1;
    pdoc *docs = calloc(ne > 0 ? (size_t)ne : 1, sizeof *docs);
    if (!docs) { fprintf(stderr, "emoe profile: out of memory\n"); eval_docs_free(ed, ne); return -1; }
    for (int i = 0; i < ne; i++) {
        int ti = task_index(tasks, n_tasks, ed[i].task);
        if (ti < 0) {
            fprintf(stderr, "emoe profile: %s: task \"%.40s\": bad name or more than %d tasks\n", path, ed[i].task, PTASK_MAX);
            for (int k = 0; k < i; k++) free(docs[k].ids);
            free(docs);
            eval_docs_free(ed, ne);
            return -1;
        }
        docs[i] = (pdoc){ti, ed[i].ids, ed[i].n};
        ed[i].ids = NULL;
        tasks[ti].docs++;
    }
    eval_docs_free(ed, ne);
    *out = docs;
    *n_out = ne;
    return 0;
}

/* ---- restricted routing: a provider over the checkpoint ---- */

typedef struct restrict_prov {
    eng_engine *e;
    const unsigned char *allow; /* (L, E) or NULL = all */
    int layer;                  /* restrict only this layer; -1 = every layer */
    int E;
} restrict_prov;

static emoe_status rp_acquire(void *ctx, int layer, int expert, eng_expert_weights *w, emoe_err *err)
{
    restrict_prov *p = ctx;
    return eng_checkpoint_expert(p->e, layer, expert, w, err);
}
static int rp_resident(void *ctx, int layer, int expert)
{
    restrict_prov *p = ctx;
    if (!p->allow || (p->layer >= 0 && layer != p->layer)) return 1;
    return p->allow[(size_t)layer * (size_t)p->E + (size_t)expert];
}
static int rp_substitute(void *ctx) { return ((restrict_prov *)ctx)->allow != NULL; }

/* ---- scoring ---- */

typedef struct count_ctx {
    ptask *t;
    int E;
} count_ctx;

static void count_route(void *user, void *tag, int pos, int layer, const int *experts, const float *w, int k)
{
    (void)tag; (void)pos; (void)w;
    count_ctx *c = user;
    if (!c->t) return;
    for (int j = 0; j < k; j++)
        if (experts[j] >= 0 && experts[j] < c->E) c->t->count[(size_t)layer * (size_t)c->E + (size_t)experts[j]] += 1;
}

/* NLL of one document (one prefill step); returns NAN on error. */
static double doc_nll(eng_engine *e, const pdoc *dc, float *all, emoe_err *err)
{
    const eng_model_desc *d = eng_desc(e);
    eng_seq *s = eng_seq_new(e, dc->n, err);
    if (!s) return NAN;
    eng_batch_item it = {.seq = s, .ids = dc->ids, .n_ids = dc->n, .all_logits = all};
    double nll = 0;
    if (eng_step(e, &it, 1, err) != EMOE_OK) nll = NAN;
    for (int p = 0; p + 1 < dc->n && !isnan(nll); p++) {
        const float *lg = all + (size_t)p * d->vocab;
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < d->vocab; v++) if (lg[v] > mx) mx = lg[v];
        for (int v = 0; v < d->vocab; v++) sum += exp((double)lg[v] - mx);
        nll += (mx + log(sum)) - (double)lg[dc->ids[p + 1]];
    }
    eng_seq_free(s);
    return nll;
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) if (v[i] > v[b]) b = i;
    return b;
}

/* Greedy continuation of the document's first tokens into out[0..gen). */
static emoe_status doc_generate(eng_engine *e, const pdoc *dc, int gen, int32_t *out, float *logits, emoe_err *err)
{
    const eng_model_desc *d = eng_desc(e);
    int np = dc->n - 1 < 32 ? dc->n - 1 : 32;
    eng_seq *s = eng_seq_new(e, np + gen + 1, err);
    if (!s) return err->code ? err->code : EMOE_ENOMEM;
    emoe_status st = eng_forward(e, s, dc->ids, np, logits, err);
    for (int g = 0; g < gen && st == EMOE_OK; g++) {
        out[g] = argmax(logits, d->vocab);
        if (g + 1 < gen) st = eng_forward(e, s, &out[g], 1, logits, err);
    }
    eng_seq_free(s);
    return st;
}

static int cmp_desc(const void *a, const void *b, void *arg)
{
    const double *c = arg;
    int x = *(const int *)a, y = *(const int *)b;
    return c[x] < c[y] ? 1 : c[x] > c[y] ? -1 : x - y;
}

static double sens_of(const ptask *t) { return t->preds ? (t->nll_res - t->nll_all) / (double)t->preds : 0.0; }

int cmd_profile(int argc, char **argv)
{
    const char *model = NULL, *docs_path = NULL, *out_path = NULL, *trace_path = NULL;
    double budget = 25.0, threshold = 0.7;
    long long max_docs = 4, max_len = 129, gen = 16, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!(v = arg_value("profile", argc, argv, &i))) { usage(stderr); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--docs")) docs_path = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out_path = v;
        else if (!strcmp(a, "--trace")) trace_path = v;
        else if (!strcmp(a, "--budget")) {
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            size_t n = strlen(buf);
            if (n && buf[n - 1] == '%') buf[n - 1] = 0;
            if (arg_float("profile", "--budget", buf, 0.1, 100, &budget)) return 2;
        } else if (!strcmp(a, "--threshold")) { if (arg_float("profile", a, v, 0, 100, &threshold)) return 2; }
        else if (!strcmp(a, "--max-docs")) { if (arg_int("profile", a, v, 1, 100000, &max_docs)) return 2; }
        else if (!strcmp(a, "--max-len")) { if (arg_int("profile", a, v, 3, 1 << 20, &max_len)) return 2; }
        else if (!strcmp(a, "--gen")) { if (arg_int("profile", a, v, 1, 4096, &gen)) return 2; }
        else if (!strcmp(a, "--threads")) { if (arg_int("profile", a, v, 0, 4096, &threads)) return 2; }
        else { fprintf(stderr, "emoe profile: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (!model || !docs_path) { usage(stderr); return 2; }
    emoe_err err = {0};
    eng_engine *e = NULL;
    eng_open_opts oo = {.n_threads = (int)threads};
    if (eng_open(model, &oo, &e, &err) != EMOE_OK) { fprintf(stderr, "emoe profile: %s\n", err.msg); return 1; }
    const eng_model_desc *d = eng_desc(e);
    int L = d->n_layers, E = d->n_experts, K = d->top_k, rc = 1;
    if (E > 4096) { fprintf(stderr, "emoe profile: %d experts per layer: at most 4096 supported\n", E); eng_free(e); return 1; }
    ptask tasks[PTASK_MAX];
    int n_tasks = 0, n_docs = 0;
    pdoc *docs = NULL;
    float *all = NULL, *logits = NULL;
    int32_t *ref = NULL, *got = NULL;
    if (load_docs(docs_path, model, d, (int)max_docs, (int)max_len, tasks, &n_tasks, &docs, &n_docs)) goto out;
    if (n_docs == 0) { fprintf(stderr, "emoe profile: %s: no usable document\n", docs_path); goto out; }
    for (int t = 0; t < n_tasks; t++) {
        tasks[t].nll_layer = calloc((size_t)L, sizeof(double));
        tasks[t].count = calloc((size_t)L * (size_t)E, sizeof(double));
        tasks[t].allow = calloc((size_t)L * (size_t)E, 1);
        if (!tasks[t].nll_layer || !tasks[t].count || !tasks[t].allow) { fprintf(stderr, "emoe profile: out of memory\n"); goto out; }
    }
    all = malloc(sizeof(float) * (size_t)max_len * (size_t)d->vocab);
    logits = malloc(sizeof(float) * (size_t)d->vocab);
    ref = malloc(sizeof(int32_t) * (size_t)gen * (size_t)n_docs);
    got = malloc(sizeof(int32_t) * (size_t)gen);
    if (!all || !logits || !ref || !got) { fprintf(stderr, "emoe profile: out of memory\n"); goto out; }

    /* 1. all experts */
    count_ctx cc = {NULL, E};
    eng_set_routing_cb(e, count_route, &cc);
    for (int i = 0; i < n_docs; i++) {
        ptask *t = &tasks[docs[i].task];
        cc.t = t;
        double nll = doc_nll(e, &docs[i], all, &err);
        cc.t = NULL;
        if (isnan(nll) || doc_generate(e, &docs[i], (int)gen, ref + (size_t)i * (size_t)gen, logits, &err) != EMOE_OK) {
            fprintf(stderr, "emoe profile: %s\n", err.msg);
            goto out;
        }
        t->nll_all += nll;
        t->preds += docs[i].n - 1;
    }
    eng_set_routing_cb(e, NULL, NULL);
    int keep = (int)floor(budget / 100.0 * E + 1e-9);
    if (keep < K) keep = K;
    if (keep > E) keep = E;
    int order[4096];
    for (int t = 0; t < n_tasks; t++) {
        ptask *pt = &tasks[t];
        double in = 0, tot = 0;
        for (int l = 0; l < L; l++) {
            double *c = pt->count + (size_t)l * (size_t)E;
            for (int x = 0; x < E; x++) order[x] = x;
            qsort_r(order, (size_t)E, sizeof *order, cmp_desc, c);
            for (int j = 0; j < keep; j++) {
                pt->allow[(size_t)l * (size_t)E + (size_t)order[j]] = 1;
                in += c[order[j]];
            }
            for (int x = 0; x < E; x++) tot += c[x];
        }
        pt->concentration = tot > 0 ? in / tot : 0;
    }
    /* 2. every layer restricted; 3. one layer at a time */
    restrict_prov rp = {e, NULL, -1, E};
    eng_expert_provider prov = {&rp, rp_acquire, NULL, rp_resident, rp_substitute, NULL, NULL, NULL, 0, NULL, 0};
    eng_set_expert_provider(e, &prov);
    for (int i = 0; i < n_docs; i++) {
        ptask *t = &tasks[docs[i].task];
        rp.allow = t->allow;
        for (int layer = -1; layer < L; layer++) {
            rp.layer = layer;
            double nll = doc_nll(e, &docs[i], all, &err);
            if (isnan(nll)) { fprintf(stderr, "emoe profile: %s\n", err.msg); goto out; }
            if (layer < 0) t->nll_res += nll;
            else t->nll_layer[layer] += nll;
        }
        rp.layer = -1;
        if (doc_generate(e, &docs[i], (int)gen, got, logits, &err) != EMOE_OK) { fprintf(stderr, "emoe profile: %s\n", err.msg); goto out; }
        for (int g = 0; g < gen; g++) t->same += got[g] == ref[(size_t)i * (size_t)gen + (size_t)g];
        t->gen_total += (double)gen;
    }
    eng_set_expert_provider(e, NULL);
    /* expected output length from a trace */
    if (trace_path) {
        pred_trace tr;
        pred_trace_init(&tr);
        if (pred_trace_load(&tr, trace_path, &err) != EMOE_OK) {
            fprintf(stderr, "emoe profile: %s\n", err.msg);
            pred_trace_free(&tr);
            goto out;
        }
        for (int t = 0; t < n_tasks; t++) {
            double sum = 0;
            int nr = 0;
            for (int r = 0; r < tr.n_reqs; r++) {
                if (strcmp(tr.reqs[r].task, tasks[t].name)) continue;
                nr++;
                for (int k = 0; k < tr.reqs[r].n_tokens; k++) sum += tr.reqs[r].phase[k] == PRED_PHASE_DECODE;
            }
            tasks[t].expected_out = nr ? sum / nr + 1.0 : 0.0; /* the last generated token is not routed */
        }
        pred_trace_free(&tr);
    }
    /* ranking: least to most sensitive */
    double sens[PTASK_MAX];
    int rank[PTASK_MAX];
    for (int t = 0; t < n_tasks; t++) { sens[t] = -sens_of(&tasks[t]); rank[t] = t; }
    qsort_r(rank, (size_t)n_tasks, sizeof *rank, cmp_desc, sens);
    json_t *root = json_object(), *jt = json_object(), *jr = json_array();
    const char *base = strrchr(model, '/');
    json_object_set_new(root, "format", json_string("emoe-task-profile"));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "model", json_string(base && base[1] ? base + 1 : model));
    json_object_set_new(root, "num_layers", json_integer(L));
    json_object_set_new(root, "num_experts", json_integer(E));
    json_object_set_new(root, "top_k", json_integer(K));
    char bs[32];
    snprintf(bs, sizeof bs, "%g%%", budget);
    json_object_set_new(root, "budget", json_string(bs));
    json_object_set_new(root, "experts_kept_per_layer", json_integer(keep));
    json_object_set_new(root, "threshold", json_real(threshold));
    json_object_set_new(root, "method", json_string("sensitivity = ln(ppl with every layer restricted to the task's top budget share of experts / ppl with all experts); insensitive when <= threshold"));
    fprintf(stderr, "%-16s %5s %9s %9s %11s %10s %13s %9s  policy\n", "task", "docs", "ppl_all", "ppl_res", "sensitivity",
            "similarity", "concentration", "exp_out");
    for (int i = 0; i < n_tasks; i++) {
        ptask *t = &tasks[rank[i]];
        double s = sens_of(t);
        int ins = s <= threshold;
        json_t *o = json_object(), *ls = json_array();
        for (int l = 0; l < L; l++) json_array_append_new(ls, json_real((t->nll_layer[l] - t->nll_all) / (double)t->preds));
        json_object_set_new(o, "sensitivity", json_real(s));
        json_object_set_new(o, "ppl_all", json_real(exp(t->nll_all / (double)t->preds)));
        json_object_set_new(o, "ppl_restricted", json_real(exp(t->nll_res / (double)t->preds)));
        json_object_set_new(o, "layer_sensitivity", ls);
        json_object_set_new(o, "output_similarity", json_real(t->gen_total > 0 ? t->same / t->gen_total : 0));
        json_object_set_new(o, "concentration", json_real(t->concentration));
        json_object_set_new(o, "expected_output_tokens", json_integer((json_int_t)llround(t->expected_out)));
        json_object_set_new(o, "docs", json_integer(t->docs));
        json_object_set_new(o, "predictions", json_integer(t->preds));
        json_object_set_new(o, "insensitive", json_boolean(ins));
        json_object_set_new(o, "miss_policy", json_string(ins ? "substitute" : "exact"));
        json_object_set_new(jt, t->name, o);
        json_array_append_new(jr, json_string(t->name));
        fprintf(stderr, "%-16s %5d %9.3f %9.3f %11.4f %10.3f %13.3f %9.0f  %s\n", t->name, t->docs,
                exp(t->nll_all / (double)t->preds), exp(t->nll_res / (double)t->preds), s,
                t->gen_total > 0 ? t->same / t->gen_total : 0, t->concentration, t->expected_out, ins ? "substitute" : "exact");
    }
    json_object_set_new(root, "ranking", jr);
    json_object_set_new(root, "tasks", jt);
    int ok = out_path ? json_dump_file(root, out_path, JSON_INDENT(1)) == 0 : json_dumpf(root, stdout, JSON_INDENT(1)) == 0;
    if (!out_path) putchar('\n');
    json_decref(root);
    if (!ok) { fprintf(stderr, "emoe profile: cannot write %s\n", out_path ? out_path : "stdout"); goto out; }
    rc = 0;
out:
    eng_set_routing_cb(e, NULL, NULL);
    eng_set_expert_provider(e, NULL);
    for (int t = 0; t < n_tasks; t++) { free(tasks[t].nll_layer); free(tasks[t].count); free(tasks[t].allow); }
    for (int i = 0; i < n_docs; i++) free(docs[i].ids);
    free(docs);
    free(all);
    free(logits);
    free(ref);
    free(got);
    eng_free(e);
    return rc;
}
