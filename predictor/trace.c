/*
 * trace.c — the routing-trace JSONL reader and writer (format: trace.h and
 * ../shared/traces/README.md). Parsing goes through jansson one line at a time;
 * every field is type- and range-checked and a failure names "file:line", the
 * field path (e.g. tokens[3].experts[5][1]) and what was wrong.
 */
#include "predictor/trace.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void pred_req_free(pred_trace_req *r)
{
    if (!r) return;
    free(r->phase);
    free(r->pos);
    free(r->experts);
    free(r->weights);
    memset(r, 0, sizeof *r);
}

void pred_trace_init(pred_trace *t) { memset(t, 0, sizeof *t); }

void pred_trace_free(pred_trace *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_reqs; i++) pred_req_free(&t->reqs[i]);
    free(t->reqs);
    memset(t, 0, sizeof *t);
}

const char *pred_phase_name(pred_phase p) { return p == PRED_PHASE_PREFILL ? "prefill" : "decode"; }

static emoe_status get_int(json_t *o, const char *key, const char *where, int64_t lo, int64_t hi,
                           int64_t *out, emoe_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return emoe_errf(err, EMOE_EINVAL, "%s: missing field \"%s\"", where, key);
    if (!json_is_integer(v))
        return emoe_errf(err, EMOE_EINVAL, "%s: field \"%s\" must be an integer", where, key);
    int64_t x = (int64_t)json_integer_value(v);
    if (x < lo || x > hi)
        return emoe_errf(err, EMOE_EINVAL, "%s: field \"%s\" = %lld out of range [%lld, %lld]", where,
                         key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return EMOE_OK;
}

static emoe_status get_str(json_t *o, const char *key, const char *where, int required, char *dst,
                           size_t cap, emoe_err *err)
{
    json_t *v = json_object_get(o, key);
    dst[0] = 0;
    if (!v) {
        if (!required) return EMOE_OK;
        return emoe_errf(err, EMOE_EINVAL, "%s: missing field \"%s\"", where, key);
    }
    if (!json_is_string(v))
        return emoe_errf(err, EMOE_EINVAL, "%s: field \"%s\" must be a string", where, key);
    size_t n = json_string_length(v);
    if (n >= cap)
        return emoe_errf(err, EMOE_EINVAL, "%s: field \"%s\" is %zu bytes (max %zu)", where, key, n,
                         cap - 1);
    const char *s = json_string_value(v);
    if (memchr(s, 0, n))
        return emoe_errf(err, EMOE_EINVAL, "%s: field \"%s\" contains a NUL byte", where, key);
    memcpy(dst, s, n);
    dst[n] = 0;
    return EMOE_OK;
}

static emoe_status alloc_rows(pred_trace_req *r, int cap, int with_weights, emoe_err *err)
{
    size_t per = (size_t)r->n_layers * (size_t)r->top_k;
    uint8_t *ph = realloc(r->phase, (size_t)cap);
    if (ph) r->phase = ph;
    int32_t *po = ph ? realloc(r->pos, (size_t)cap * sizeof *po) : NULL;
    if (po) r->pos = po;
    int16_t *ex = po ? realloc(r->experts, (size_t)cap * per * sizeof *ex) : NULL;
    if (ex) r->experts = ex;
    float *w = NULL;
    if (ex && with_weights) {
        w = realloc(r->weights, (size_t)cap * per * sizeof *w);
        if (w) r->weights = w;
    }
    if (!ph || !po || !ex || (with_weights && !w))
        return emoe_errf(err, EMOE_ENOMEM, "trace: out of memory for %d token rows", cap);
    r->cap_tokens = cap;
    return EMOE_OK;
}

/* Parses tokens[i].experts (or .weights) — an array of n_layers arrays of top_k. */
static emoe_status parse_rows(json_t *arr, const char *where, int ti, const char *field,
                              pred_trace_req *r, int16_t *ex, float *w, emoe_err *err)
{
    if (!json_is_array(arr))
        return emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].%s must be an array", where, ti, field);
    if ((int)json_array_size(arr) != r->n_layers)
        return emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].%s has %zu layers, num_layers is %d",
                         where, ti, field, json_array_size(arr), r->n_layers);
    for (int l = 0; l < r->n_layers; l++) {
        json_t *row = json_array_get(arr, (size_t)l);
        if (!json_is_array(row))
            return emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].%s[%d] must be an array", where, ti,
                             field, l);
        if ((int)json_array_size(row) != r->top_k)
            return emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].%s[%d] has %zu entries, top_k is %d",
                             where, ti, field, l, json_array_size(row), r->top_k);
        for (int j = 0; j < r->top_k; j++) {
            json_t *v = json_array_get(row, (size_t)j);
            if (ex) {
                if (!json_is_integer(v))
                    return emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].%s[%d][%d] must be an integer",
                                     where, ti, field, l, j);
                json_int_t x = json_integer_value(v);
                if (x < 0 || x >= r->n_experts)
                    return emoe_errf(err, EMOE_EINVAL,
                                     "%s: tokens[%d].%s[%d][%d] = %lld out of range [0, %d)", where,
                                     ti, field, l, j, (long long)x, r->n_experts);
                for (int q = 0; q < j; q++)
                    if (ex[l * r->top_k + q] == (int16_t)x)
                        return emoe_errf(err, EMOE_EINVAL,
                                         "%s: tokens[%d].%s[%d] repeats expert %lld", where, ti,
                                         field, l, (long long)x);
                ex[l * r->top_k + j] = (int16_t)x;
            } else {
                if (!json_is_number(v))
                    return emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].%s[%d][%d] must be a number",
                                     where, ti, field, l, j);
                double d = json_number_value(v);
                if (!(d >= -1e30 && d <= 1e30))
                    return emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].%s[%d][%d] is not finite",
                                     where, ti, field, l, j);
                w[l * r->top_k + j] = (float)d;
            }
        }
    }
    return EMOE_OK;
}

emoe_status pred_req_parse(const char *line, size_t len, const char *where, pred_trace_req *out,
                           emoe_err *err)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    emoe_status st = EMOE_OK;
    if (!root)
        return emoe_errf(err, EMOE_EINVAL, "%s: invalid JSON at column %d: %s", where, jerr.column,
                         jerr.text);
    if (!json_is_object(root)) {
        st = emoe_errf(err, EMOE_EINVAL, "%s: a trace line must be a JSON object", where);
        goto fail;
    }
    int64_t x;
    if ((st = get_str(root, "model", where, 0, out->model, sizeof out->model, err))) goto fail;
    if ((st = get_str(root, "task", where, 1, out->task, sizeof out->task, err))) goto fail;
    if (!out->task[0]) {
        st = emoe_errf(err, EMOE_EINVAL, "%s: field \"task\" is empty", where);
        goto fail;
    }
    out->request = -1;
    if (json_object_get(root, "request")) {
        if ((st = get_int(root, "request", where, 0, INT64_MAX, &x, err))) goto fail;
        out->request = x;
    }
    if ((st = get_int(root, "num_layers", where, 1, PRED_TRACE_MAX_LAYERS, &x, err))) goto fail;
    out->n_layers = (int)x;
    if ((st = get_int(root, "num_experts", where, 1, PRED_TRACE_MAX_EXPERTS, &x, err))) goto fail;
    out->n_experts = (int)x;
    if ((st = get_int(root, "top_k", where, 1, PRED_TRACE_MAX_TOPK, &x, err))) goto fail;
    out->top_k = (int)x;
    if (out->top_k > out->n_experts) {
        st = emoe_errf(err, EMOE_EINVAL, "%s: top_k %d exceeds num_experts %d", where, out->top_k,
                       out->n_experts);
        goto fail;
    }
    json_t *toks = json_object_get(root, "tokens");
    if (!toks || !json_is_array(toks)) {
        st = emoe_errf(err, EMOE_EINVAL, "%s: field \"tokens\" must be an array", where);
        goto fail;
    }
    size_t nt = json_array_size(toks);
    if (nt > (size_t)1 << 24) {
        st = emoe_errf(err, EMOE_EINVAL, "%s: %zu tokens is too many", where, nt);
        goto fail;
    }
    /* Weights are kept when the first token has them; then every token must. */
    int with_w = nt > 0 && json_object_get(json_array_get(toks, 0), "weights") != NULL;
    if (nt > 0 && (st = alloc_rows(out, (int)nt, with_w, err))) goto fail;
    size_t per = (size_t)out->n_layers * (size_t)out->top_k;
    for (size_t i = 0; i < nt; i++) {
        json_t *tk = json_array_get(toks, i);
        int ti = (int)i;
        if (!json_is_object(tk)) {
            st = emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d] must be an object", where, ti);
            goto fail;
        }
        json_t *ph = json_object_get(tk, "phase");
        if (!ph || !json_is_string(ph)) {
            st = emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].phase must be \"prefill\" or \"decode\"",
                           where, ti);
            goto fail;
        }
        if (!strcmp(json_string_value(ph), "prefill") && json_string_length(ph) == 7)
            out->phase[i] = PRED_PHASE_PREFILL;
        else if (!strcmp(json_string_value(ph), "decode") && json_string_length(ph) == 6)
            out->phase[i] = PRED_PHASE_DECODE;
        else {
            st = emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].phase must be \"prefill\" or \"decode\"",
                           where, ti);
            goto fail;
        }
        char fld[64];
        snprintf(fld, sizeof fld, "tokens[%d]", ti);
        char w2[600];
        snprintf(w2, sizeof w2, "%s: %s", where, fld);
        out->pos[i] = ti;
        if (json_object_get(tk, "pos")) {
            if ((st = get_int(tk, "pos", w2, 0, INT32_MAX, &x, err))) goto fail;
            out->pos[i] = (int32_t)x;
        }
        if ((st = parse_rows(json_object_get(tk, "experts"), where, ti, "experts", out,
                             out->experts + i * per, NULL, err)))
            goto fail;
        json_t *wv = json_object_get(tk, "weights");
        if (with_w && !wv) {
            st = emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].weights missing (tokens[0] has weights)",
                           where, ti);
            goto fail;
        }
        if (!with_w && wv) {
            st = emoe_errf(err, EMOE_EINVAL, "%s: tokens[%d].weights present but tokens[0] has none",
                           where, ti);
            goto fail;
        }
        if (with_w && (st = parse_rows(wv, where, ti, "weights", out, NULL,
                                       out->weights + i * per, err)))
            goto fail;
        out->n_tokens = ti + 1;
    }
    json_decref(root);
    return EMOE_OK;
fail:
    json_decref(root);
    pred_req_free(out);
    return st;
}

emoe_status pred_trace_append(pred_trace *t, pred_trace_req *r, emoe_err *err)
{
    if (t->n_reqs > 0 &&
        (r->n_layers != t->n_layers || r->n_experts != t->n_experts || r->top_k != t->top_k))
        return emoe_errf(err, EMOE_EINVAL,
                         "trace request %lld (task %s) has shape %dx%d top-%d, earlier requests "
                         "%dx%d top-%d",
                         (long long)r->request, r->task, r->n_layers, r->n_experts, r->top_k,
                         t->n_layers, t->n_experts, t->top_k);
    if (t->n_reqs == t->cap_reqs) {
        int nc = t->cap_reqs ? t->cap_reqs * 2 : 16;
        pred_trace_req *nr = realloc(t->reqs, (size_t)nc * sizeof *nr);
        if (!nr) return emoe_errf(err, EMOE_ENOMEM, "trace: out of memory for %d requests", nc);
        t->reqs = nr;
        t->cap_reqs = nc;
    }
    if (t->n_reqs == 0) {
        t->n_layers = r->n_layers;
        t->n_experts = r->n_experts;
        t->top_k = r->top_k;
    }
    t->reqs[t->n_reqs++] = *r;
    memset(r, 0, sizeof *r);
    return EMOE_OK;
}

emoe_status pred_trace_load_mem(pred_trace *t, const char *buf, size_t len, const char *name,
                                emoe_err *err)
{
    size_t off = 0;
    int lineno = 0;
    while (off < len) {
        const char *nl = memchr(buf + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - buf) : len;
        lineno++;
        size_t a = off, b = end;
        while (a < b && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r')) a++;
        while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r')) b--;
        if (b > a) {
            char where[512];
            snprintf(where, sizeof where, "%s:%d", name, lineno);
            pred_trace_req r;
            emoe_status st = pred_req_parse(buf + a, b - a, where, &r, err);
            if (st) return st;
            if ((st = pred_trace_append(t, &r, err))) {
                pred_req_free(&r);
                return emoe_err_prefix(err, "%s", where);
            }
        }
        off = end + 1;
    }
    return EMOE_OK;
}

emoe_status pred_trace_load(pred_trace *t, const char *path, emoe_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return emoe_errf(err, EMOE_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    emoe_status st = EMOE_OK;
    for (;;) {
        if (cap - len < 65536) {
            size_t nc = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, nc);
            if (!nb) {
                st = emoe_errf(err, EMOE_ENOMEM, "%s: out of memory reading the file", path);
                goto out;
            }
            buf = nb;
            cap = nc;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    if (ferror(f)) {
        st = emoe_errf(err, EMOE_EIO, "%s: read error", path);
        goto out;
    }
    st = pred_trace_load_mem(t, buf ? buf : "", len, path, err);
out:
    free(buf);
    fclose(f);
    return st;
}

emoe_status pred_req_begin(pred_trace_req *r, const char *model, const char *task, int64_t request,
                           int n_layers, int n_experts, int top_k, int with_weights, emoe_err *err)
{
    memset(r, 0, sizeof *r);
    if (n_layers < 1 || n_layers > PRED_TRACE_MAX_LAYERS || n_experts < 1 ||
        n_experts > PRED_TRACE_MAX_EXPERTS || top_k < 1 || top_k > PRED_TRACE_MAX_TOPK ||
        top_k > n_experts)
        return emoe_errf(err, EMOE_EINVAL, "trace: bad shape %d layers x %d experts, top-%d",
                         n_layers, n_experts, top_k);
    if (!task || !*task || strlen(task) >= sizeof r->task)
        return emoe_errf(err, EMOE_EINVAL, "trace: task name empty or longer than %zu bytes",
                         sizeof r->task - 1);
    snprintf(r->model, sizeof r->model, "%s", model ? model : "");
    snprintf(r->task, sizeof r->task, "%s", task);
    r->request = request;
    r->n_layers = n_layers;
    r->n_experts = n_experts;
    r->top_k = top_k;
    if (with_weights) {
        /* Mark that weights are kept: allocate a first block now. */
        emoe_status st = alloc_rows(r, 64, 1, err);
        if (st) pred_req_free(r);
        return st;
    }
    return EMOE_OK;
}

int pred_req_add_token(pred_trace_req *r, pred_phase phase, int32_t pos, emoe_err *err)
{
    if (r->n_tokens == r->cap_tokens) {
        if (r->cap_tokens >= 1 << 24)
            return emoe_errf(err, EMOE_EINVAL, "trace: too many tokens in one request");
        int nc = r->cap_tokens ? r->cap_tokens * 2 : 64;
        emoe_status st = alloc_rows(r, nc, r->weights != NULL, err);
        if (st) return st;
    }
    int t = r->n_tokens++;
    size_t per = (size_t)r->n_layers * (size_t)r->top_k;
    r->phase[t] = (uint8_t)phase;
    r->pos[t] = pos;
    for (size_t i = 0; i < per; i++) r->experts[(size_t)t * per + i] = -1;
    if (r->weights) memset(r->weights + (size_t)t * per, 0, per * sizeof(float));
    return t;
}

emoe_status pred_req_set_layer(pred_trace_req *r, int t, int l, const int *experts,
                               const float *weights, int k, emoe_err *err)
{
    if (t < 0 || t >= r->n_tokens || l < 0 || l >= r->n_layers || k != r->top_k)
        return emoe_errf(err, EMOE_EINVAL, "trace: bad row token %d layer %d k %d (have %d tokens, "
                         "%d layers, top-%d)", t, l, k, r->n_tokens, r->n_layers, r->top_k);
    int16_t *dst = r->experts + ((size_t)t * (size_t)r->n_layers + (size_t)l) * (size_t)k;
    for (int j = 0; j < k; j++) {
        if (experts[j] < 0 || experts[j] >= r->n_experts)
            return emoe_errf(err, EMOE_EINVAL, "trace: expert id %d out of range [0, %d)",
                             experts[j], r->n_experts);
        dst[j] = (int16_t)experts[j];
    }
    if (r->weights && weights)
        memcpy(r->weights + ((size_t)t * (size_t)r->n_layers + (size_t)l) * (size_t)k, weights,
               (size_t)k * sizeof(float));
    return EMOE_OK;
}

static void write_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

emoe_status pred_req_write(const pred_trace_req *r, FILE *f, emoe_err *err)
{
    size_t per = (size_t)r->n_layers * (size_t)r->top_k;
    for (size_t i = 0; i < (size_t)r->n_tokens * per; i++)
        if (r->experts[i] < 0)
            return emoe_errf(err, EMOE_EINVAL, "trace: request %lld token %zu layer %zu not filled",
                             (long long)r->request, i / per, (i % per) / (size_t)r->top_k);
    fputs("{\"model\": ", f);
    write_json_string(f, r->model);
    fputs(", \"task\": ", f);
    write_json_string(f, r->task);
    fprintf(f, ", \"request\": %lld, \"num_layers\": %d, \"num_experts\": %d, \"top_k\": %d, "
               "\"tokens\": [",
            (long long)(r->request < 0 ? 0 : r->request), r->n_layers, r->n_experts, r->top_k);
    for (int t = 0; t < r->n_tokens; t++) {
        fprintf(f, "%s{\"phase\": \"%s\", \"pos\": %d, \"experts\": [", t ? ", " : "",
                pred_phase_name((pred_phase)r->phase[t]), r->pos[t]);
        for (int l = 0; l < r->n_layers; l++) {
            const int16_t *e = pred_req_experts(r, t, l);
            fputs(l ? ", [" : "[", f);
            for (int j = 0; j < r->top_k; j++) fprintf(f, "%s%d", j ? ", " : "", e[j]);
            fputc(']', f);
        }
        fputc(']', f);
        if (r->weights) {
            fputs(", \"weights\": [", f);
            for (int l = 0; l < r->n_layers; l++) {
                const float *w = r->weights + ((size_t)t * (size_t)r->n_layers + (size_t)l) * (size_t)r->top_k;
                fputs(l ? ", [" : "[", f);
                for (int j = 0; j < r->top_k; j++) fprintf(f, "%s%.6g", j ? ", " : "", (double)w[j]);
                fputc(']', f);
            }
            fputc(']', f);
        }
        fputc('}', f);
    }
    fputs("]}\n", f);
    if (ferror(f)) return emoe_errf(err, EMOE_EIO, "trace: write error");
    return EMOE_OK;
}
