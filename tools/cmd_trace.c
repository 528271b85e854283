/*
 * cmd_trace.c — `emoe trace`: runs a file of task-labelled prompts through the
 * engine with greedy decoding and records every token's routing (prefill and
 * decode, per layer the router's top-k, highest weight first, and the weights
 * applied) as a routing trace (predictor/trace.h, one JSON line per request):
 * the same format as the third-party traces, so `emoe replay` reads both.
 *
 * Prompts file: JSONL, one object per line with "task" and one of "prompt"
 * (text: encoded with the model's tokenizer.json, its post-processor adding BOS
 * as transformers does), "messages" (rendered with the model's chat template,
 * generation prompt added, then encoded without added specials, as
 * apply_chat_template(tokenize=True) does) or "prompt_ids" (token ids, used as
 * given); "max_tokens" (tokens to generate, default 16). Generation follows
 * transformers' generate(): the
 * prompt is one prefill, then each generated token but the last is fed back
 * (max_tokens - 1 decode steps), stopping early at an EOS id unless
 * --ignore-eos.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "predictor/trace.h"
#include "tools/tool_cfg.h"
#include "tools/args.h"
#include "tools/cmds.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: emoe trace -m DIR --prompts FILE -o OUT.jsonl [options]\n"
            "  -m, --model DIR     Hugging Face model directory\n"
            "  --config FILE, --set S.K=V  [model] path and [engine] threads as `emoe serve` reads them\n"
            "  --prompts FILE      JSONL: {\"task\", \"prompt\" | \"messages\" | \"prompt_ids\", \"max_tokens\"}\n"
            "  -o, --output FILE   routing trace to write (JSONL, '-' = stdout)\n"
            "  --max-tokens N      override every prompt's max_tokens\n"
            "  --limit N           only the first N prompts\n"
            "  --ignore-eos        do not stop at the model's EOS tokens\n"
            "  --no-weights        do not record the gate weights\n"
            "  --threads N         worker threads (default: physical cores)\n");
}

typedef struct rec_state {
    pred_trace_req *req;
    int base_row;       /* row of position base_pos */
    int base_pos;
    int n_rows;         /* rows of the current step */
    emoe_err err;
    int failed;
} rec_state;

static void on_route(void *user, void *tag, int pos, int layer, const int *experts, const float *w,
                     int k)
{
    (void)tag;
    rec_state *s = user;
    if (!s->req || s->failed) return;
    int row = s->base_row + (pos - s->base_pos);
    if (row < s->base_row || row >= s->base_row + s->n_rows) {
        s->failed = 1;
        emoe_errf(&s->err, EMOE_EINVAL, "routing callback for position %d outside the step", pos);
        return;
    }
    if (pred_req_set_layer(s->req, row, layer, experts, w, k, &s->err)) s->failed = 1;
}

typedef struct prompt {
    char task[PRED_TASK_NAME_MAX];
    int32_t *ids;
    int n_ids;
    int max_tokens;
} prompt;

static int is_eos(const eng_model_desc *d, int tok)
{
    for (int i = 0; i < d->n_eos; i++)
        if (d->eos_ids[i] == tok) return 1;
    return 0;
}

/* Parses one prompts line into p (ids encoded with tok when text). */
static emoe_status parse_prompt(const char *line, size_t len, const char *where, tok_tokenizer **tok,
                                const char *model_dir, prompt *p, emoe_err *err)
{
    memset(p, 0, sizeof *p);
    p->max_tokens = 16;
    json_error_t je;
    json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    emoe_status st = EMOE_OK;
    if (!o) return emoe_errf(err, EMOE_EINVAL, "%s: invalid JSON at column %d: %s", where, je.column, je.text);
    char *text = NULL;
    size_t text_len = 0;
    if (!json_is_object(o)) { st = emoe_errf(err, EMOE_EINVAL, "%s: a prompt line must be an object", where); goto out; }
    json_t *t = json_object_get(o, "task");
    if (!json_is_string(t) || json_string_length(t) == 0 || json_string_length(t) >= sizeof p->task ||
        memchr(json_string_value(t), 0, json_string_length(t))) {
        st = emoe_errf(err, EMOE_EINVAL, "%s: \"task\" must be a non-empty string of at most %zu bytes", where,
                       sizeof p->task - 1);
        goto out;
    }
    snprintf(p->task, sizeof p->task, "%s", json_string_value(t));
    json_t *mt = json_object_get(o, "max_tokens");
    if (mt) {
        if (!json_is_integer(mt) || json_integer_value(mt) < 1 || json_integer_value(mt) > 1 << 20) {
            st = emoe_errf(err, EMOE_EINVAL, "%s: \"max_tokens\" must be an integer in [1, %d]", where, 1 << 20);
            goto out;
        }
        p->max_tokens = (int)json_integer_value(mt);
    }
    json_t *pr = json_object_get(o, "prompt"), *ms = json_object_get(o, "messages"),
           *pi = json_object_get(o, "prompt_ids");
    if (!!pr + !!ms + !!pi != 1) {
        st = emoe_errf(err, EMOE_EINVAL, "%s: give exactly one of \"prompt\", \"messages\", \"prompt_ids\"", where);
        goto out;
    }
    if (pi) {
        if (!json_is_array(pi) || json_array_size(pi) == 0 || json_array_size(pi) > 1 << 20) {
            st = emoe_errf(err, EMOE_EINVAL, "%s: \"prompt_ids\" must be a non-empty array of ids", where);
            goto out;
        }
        p->n_ids = (int)json_array_size(pi);
        p->ids = malloc(sizeof *p->ids * (size_t)p->n_ids);
        if (!p->ids) { st = emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", where); goto out; }
        for (int i = 0; i < p->n_ids; i++) {
            json_t *v = json_array_get(pi, (size_t)i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
                st = emoe_errf(err, EMOE_EINVAL, "%s: \"prompt_ids\"[%d] must be a non-negative integer", where, i);
                goto out;
            }
            p->ids[i] = (int32_t)json_integer_value(v);
        }
        goto out;
    }
    if (!*tok && (st = tok_load_dir(model_dir, tok, err))) {
        emoe_err_prefix(err, "%s: text prompts need the model's tokenizer", where);
        goto out;
    }
    if (pr) {
        if (!json_is_string(pr)) { st = emoe_errf(err, EMOE_EINVAL, "%s: \"prompt\" must be a string", where); goto out; }
        text_len = json_string_length(pr);
        text = malloc(text_len + 1);
        if (!text) { st = emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", where); goto out; }
        memcpy(text, json_string_value(pr), text_len + 1);
    } else {
        if (!json_is_array(ms)) { st = emoe_errf(err, EMOE_EINVAL, "%s: \"messages\" must be an array", where); goto out; }
        if ((st = tok_apply_chat_template(*tok, ms, 1, NULL, &text, err))) {
            emoe_err_prefix(err, "%s: \"messages\"", where);
            goto out;
        }
        text_len = strlen(text);
    }
    size_t n = 0;
    /* Text prompts get the post-processor's specials (BOS), as transformers'
     * tokenizer(prompt) does; a rendered chat template carries its own, as
     * apply_chat_template(tokenize=True) encodes without adding any. */
    if ((st = tok_encode(*tok, text, text_len, pr != NULL, &p->ids, &n, err))) {
        emoe_err_prefix(err, "%s: encoding the prompt", where);
        goto out;
    }
    p->n_ids = (int)n;
    if (n == 0) st = emoe_errf(err, EMOE_EINVAL, "%s: the prompt encodes to no tokens", where);
out:
    free(text);
    json_decref(o);
    if (st) { free(p->ids); p->ids = NULL; }
    return st;
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Runs one prompt and appends its request to the trace file. */
static emoe_status run_prompt(eng_engine *e, const prompt *p, int64_t reqno, const char *model_name,
                              int with_w, int ignore_eos, FILE *out, float *logits, emoe_err *err)
{
    const eng_model_desc *d = eng_desc(e);
    pred_trace_req req;
    rec_state rs = {0};
    emoe_status st = pred_req_begin(&req, model_name, p->task, reqno, d->n_layers, d->n_experts, d->top_k,
                                    with_w, err);
    if (st) return st;
    eng_seq *seq = NULL;
    if (p->n_ids + p->max_tokens > eng_max_ctx(e)) {
        st = emoe_errf(err, EMOE_EINVAL, "prompt (%d tokens) + max_tokens (%d) exceed the context length %d",
                       p->n_ids, p->max_tokens, eng_max_ctx(e));
        goto out;
    }
    for (int i = 0; i < p->n_ids; i++)
        if (p->ids[i] >= d->vocab) {
            st = emoe_errf(err, EMOE_EINVAL, "prompt id %d at index %d out of the vocabulary (%d)", p->ids[i], i, d->vocab);
            goto out;
        }
    if (!(seq = eng_seq_new(e, 0, err))) { st = err->code ? err->code : EMOE_ENOMEM; goto out; }
    for (int i = 0; i < p->n_ids; i++)
        if ((st = pred_req_add_token(&req, PRED_PHASE_PREFILL, i, err)) < 0) goto out;
    rs.req = &req;
    rs.base_row = 0, rs.base_pos = 0, rs.n_rows = p->n_ids;
    eng_set_routing_cb(e, on_route, &rs);
    if ((st = eng_forward(e, seq, p->ids, p->n_ids, logits, err))) goto out;
    for (int g = 1; g < p->max_tokens; g++) {
        if (rs.failed) break;
        int32_t tok = argmax(logits, d->vocab);
        if (!ignore_eos && is_eos(d, tok)) break;
        int pos = eng_seq_len(seq);
        int row = pred_req_add_token(&req, PRED_PHASE_DECODE, pos, err);
        if (row < 0) { st = (emoe_status)row; goto out; }
        rs.base_row = row, rs.base_pos = pos, rs.n_rows = 1;
        if ((st = eng_forward(e, seq, &tok, 1, logits, err))) goto out;
    }
    if (rs.failed) { *err = rs.err; st = err->code ? err->code : EMOE_EINVAL; goto out; }
    st = pred_req_write(&req, out, err);
    fflush(out);
out:
    eng_set_routing_cb(e, NULL, NULL);
    eng_seq_free(seq);
    pred_req_free(&req);
    return st;
}

int cmd_trace(int argc, char **argv)
{
    const char *model = NULL, *prompts = NULL, *output = NULL;
    long long threads = 0, max_override = 0, limit = 0;
    int ignore_eos = 0, with_w = 1, rcfg;
    static tool_cfg tcfg;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
#define VAL() do { if (!(v = arg_value("trace", argc, argv, &i))) return 2; } while (0)
        if ((rcfg = tool_cfg_arg("trace", argc, argv, &i, &tcfg)) != 0) { if (rcfg < 0) return 2; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); model = v; }
        else if (!strcmp(a, "--prompts")) { VAL(); prompts = v; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { VAL(); output = v; }
        else if (!strcmp(a, "--max-tokens")) { VAL(); if (arg_int("trace", a, v, 1, 1 << 20, &max_override)) return 2; }
        else if (!strcmp(a, "--limit")) { VAL(); if (arg_int("trace", a, v, 1, INT32_MAX, &limit)) return 2; }
        else if (!strcmp(a, "--threads")) { VAL(); if (arg_int("trace", a, v, 0, 256, &threads)) return 2; }
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else if (!strcmp(a, "--no-weights")) with_w = 0;
        else { fprintf(stderr, "emoe trace: unknown option '%s'\n", a); usage(stderr); return 2; }
#undef VAL
    }
    /* [model] path and [engine] threads from --config / --set (trace records
     * the full routing, so no expert budget applies). */
    if (tool_cfg_apply("trace", &tcfg, &model, &threads, NULL, 0, NULL)) return 2;
    if (!model || !prompts || !output) {
        fprintf(stderr, "emoe trace: -m DIR, --prompts FILE and -o FILE are required\n");
        usage(stderr);
        return 2;
    }
    int rc = 1;
    emoe_err err = {0};
    eng_engine *e = NULL;
    tok_tokenizer *tok = NULL;
    FILE *in = NULL, *out = NULL;
    char *line = NULL;
    size_t cap = 0;
    float *logits = NULL;
    eng_open_opts oo = {.n_threads = (int)threads};
    if (!(in = fopen(prompts, "rb"))) {
        fprintf(stderr, "emoe trace: %s: cannot open: %s\n", prompts, strerror(errno));
        goto done;
    }
    if (eng_open(model, &oo, &e, &err) != EMOE_OK) { fprintf(stderr, "emoe trace: %s\n", err.msg); goto done; }
    const eng_model_desc *d = eng_desc(e);
    char model_name[128];
    const char *base = strrchr(model, '/');
    base = base && base[1] ? base + 1 : model;
    snprintf(model_name, sizeof model_name, "%.60s (%s, %dx%d experts, top-%d; emoe trace)", base,
             eng_family_name(d->family), d->n_layers, d->n_experts, d->top_k);
    logits = malloc(sizeof *logits * (size_t)d->vocab);
    if (!logits) { fprintf(stderr, "emoe trace: out of memory\n"); goto done; }
    out = strcmp(output, "-") ? fopen(output, "wb") : stdout;
    if (!out) { fprintf(stderr, "emoe trace: %s: cannot create: %s\n", output, strerror(errno)); goto done; }
    ssize_t n;
    int lineno = 0, done_reqs = 0;
    while ((n = getline(&line, &cap, in)) > 0) {
        lineno++;
        size_t a = 0, b = (size_t)n;
        while (a < b && (line[a] == ' ' || line[a] == '\t' || line[a] == '\r' || line[a] == '\n')) a++;
        while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t' || line[b - 1] == '\r' || line[b - 1] == '\n')) b--;
        if (a == b) continue;
        if (limit && done_reqs >= limit) break;
        char where[4200];
        snprintf(where, sizeof where, "%s:%d", prompts, lineno);
        prompt p;
        if (parse_prompt(line + a, b - a, where, &tok, model, &p, &err)) {
            fprintf(stderr, "emoe trace: %s\n", err.msg);
            goto done;
        }
        if (max_override) p.max_tokens = (int)max_override;
        emoe_status st = run_prompt(e, &p, done_reqs, model_name, with_w, ignore_eos, out, logits, &err);
        free(p.ids);
        if (st) { fprintf(stderr, "emoe trace: %s: %s\n", where, err.msg); goto done; }
        done_reqs++;
    }
    if (ferror(in)) { fprintf(stderr, "emoe trace: %s: read error\n", prompts); goto done; }
    if (out != stdout && fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, "emoe trace: %s: write error\n", output);
        goto done;
    }
    out = NULL;
    fprintf(stderr, "emoe trace: %d requests written to %s\n", done_reqs, output);
    rc = 0;
done:
    if (out && out != stdout) fclose(out);
    if (in) fclose(in);
    free(line);
    free(logits);
    tok_free(tok);
    eng_free(e);
    return rc;
}
