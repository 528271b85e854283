/* oai_output.c — log-probability objects and tool-call parsing; see oai_output.h. */
#include "server/oai_output.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/textstream.h"

static double lp_value(float x) { return isfinite(x) ? (double)x : -9999.0; }

/* A token's text as OpenAI shows it: the bytes when they are valid UTF-8,
 * else "bytes:\xNN..." (a token holding part of a character). */
static json_t *token_str(const emoe_buf *b)
{
    if (b->n == 0) return json_string("");
    if (sched_utf8_valid(b->p, b->n)) return json_stringn(b->p, b->n);
    char *s = malloc(6 + 4 * b->n + 1);
    if (!s) return json_string("");
    size_t k = (size_t)sprintf(s, "bytes:");
    for (size_t i = 0; i < b->n; i++) k += (size_t)sprintf(s + k, "\\x%02x", (unsigned char)b->p[i]);
    json_t *o = json_stringn(s, k);
    free(s);
    return o;
}

static json_t *bytes_arr(const emoe_buf *b)
{
    json_t *a = json_array();
    for (size_t i = 0; i < b->n; i++) json_array_append_new(a, json_integer((unsigned char)b->p[i]));
    return a;
}

static void tok_bytes(const oai_out *o, int id, emoe_buf *b)
{
    if (srv_text_token_bytes(o->text, id, b) != 0) {
        /* No tokenizer: name the id. */
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "<%d>", id);
        b->n = 0;
        emoe_buf_put(b, tmp, (size_t)n);
    }
}

json_t *oai_logprobs_json(const oai_out *o, sched_req *r, int from, int to, size_t *text_off)
{
    int n = to - from, N = o->top_logprobs;
    if (n < 0) n = 0;
    int32_t *ids = malloc(sizeof *ids * (size_t)(to > 0 ? to : 1));
    float *lp = malloc(sizeof *lp * (size_t)(n ? n : 1));
    int32_t *tid = malloc(sizeof *tid * (size_t)(n * N + 1));
    float *tlp = malloc(sizeof *tlp * (size_t)(n * N + 1));
    emoe_buf b = {0};
    json_t *res = NULL;
    if (!ids || !lp || !tid || !tlp) goto out;
    int have = sched_req_tokens(r, ids, to);
    int got = sched_req_logprobs(r, from, n, lp, tid, tlp);
    if (got < 0) got = 0;
    if (from + got > have) got = have - from > 0 ? have - from : 0;
    if (o->kind == SRV_KIND_CHAT) {
        json_t *content = json_array();
        for (int i = 0; i < got; i++) {
            tok_bytes(o, ids[from + i], &b);
            json_t *e = json_pack("{s:o, s:f, s:o}", "token", token_str(&b), "logprob", lp_value(lp[i]), "bytes", bytes_arr(&b));
            json_t *tops = json_array();
            for (int j = 0; j < N; j++) {
                tok_bytes(o, tid[i * N + j], &b);
                json_array_append_new(tops, json_pack("{s:o, s:f, s:o}", "token", token_str(&b), "logprob",
                                                      lp_value(tlp[i * N + j]), "bytes", bytes_arr(&b)));
            }
            json_object_set_new(e, "top_logprobs", tops);
            json_array_append_new(content, e);
        }
        res = json_pack("{s:o, s:n}", "content", content, "refusal");
    } else {
        json_t *toks = json_array(), *tl = json_array(), *tops = json_array(), *offs = json_array();
        for (int i = 0; i < got; i++) {
            tok_bytes(o, ids[from + i], &b);
            json_array_append_new(toks, token_str(&b));
            json_array_append_new(tl, json_real(lp_value(lp[i])));
            json_array_append_new(offs, json_integer((json_int_t)*text_off));
            *text_off += srv_text_is_special(o->text, ids[from + i]) ? 0 : b.n;
            json_t *m = json_object();
            for (int j = 0; j < N; j++) {
                tok_bytes(o, tid[i * N + j], &b);
                json_t *k = token_str(&b);
                json_object_set_new(m, json_string_value(k), json_real(lp_value(tlp[i * N + j])));
                json_decref(k);
            }
            json_array_append_new(tops, m);
        }
        res = json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", tl, "top_logprobs", tops,
                        "text_offset", offs);
    }
out:
    free(ids);
    free(lp);
    free(tid);
    free(tlp);
    free(b.p);
    return res;
}

json_t *oai_prompt_logprobs_json(const oai_out *o, sched_req *r, const int32_t *ids, int n, size_t *text_off, json_t *gen)
{
    int N = o->top_logprobs;
    float *lp = malloc(sizeof *lp * (size_t)(n ? n : 1));
    int32_t *tid = malloc(sizeof *tid * (size_t)(n * N + 1));
    float *tlp = malloc(sizeof *tlp * (size_t)(n * N + 1));
    emoe_buf b = {0};
    json_t *res = NULL;
    if (!lp || !tid || !tlp) goto out;
    int got = sched_req_prompt_logprobs(r, lp, tid, tlp);
    json_t *toks = json_array(), *tl = json_array(), *tops = json_array(), *offs = json_array();
    for (int i = 0; i < n; i++) {
        tok_bytes(o, ids[i], &b);
        json_array_append_new(toks, token_str(&b));
        json_array_append_new(offs, json_integer((json_int_t)*text_off));
        *text_off += srv_text_is_special(o->text, ids[i]) ? 0 : b.n;
        if (i == 0 || got != n) {
            json_array_append_new(tl, json_null());
            json_array_append_new(tops, json_null());
            continue;
        }
        json_array_append_new(tl, json_real(lp_value(lp[i])));
        json_t *m = json_object();
        for (int j = 0; j < N; j++) {
            tok_bytes(o, tid[i * N + j], &b);
            json_t *k = token_str(&b);
            json_object_set_new(m, json_string_value(k), json_real(lp_value(tlp[i * N + j])));
            json_decref(k);
        }
        json_array_append_new(tops, m);
    }
    static const char *const keys[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    res = json_pack("{s:o, s:o, s:o, s:o}", keys[0], toks, keys[1], tl, keys[2], tops, keys[3], offs);
    for (int k = 0; res && gen && k < 4; k++)
        json_array_extend(json_object_get(res, keys[k]), json_object_get(gen, keys[k]));
out:
    json_decref(gen);
    free(lp);
    free(tid);
    free(tlp);
    free(b.p);
    return res;
}

/* {"name": s, "arguments"|"parameters": object or JSON string} -> a call. */
static json_t *call_of(json_t *v, unsigned long long seq, size_t idx)
{
    json_t *name = json_object_get(v, "name"), *args = json_object_get(v, "arguments");
    if (!args) args = json_object_get(v, "parameters");
    if (!json_is_object(v) || !json_is_string(name)) return NULL;
    char *a = NULL;
    if (json_is_string(args)) a = strdup(json_string_value(args));
    else if (json_is_object(args)) a = json_dumps(args, JSON_COMPACT);
    else if (!args || json_is_null(args)) a = strdup("{}");
    if (!a) return NULL;
    char id[48];
    snprintf(id, sizeof id, "call_%012llx%02zx", seq & 0xffffffffffffull, idx);
    json_t *c = json_pack("{s:s, s:s, s:{s:O, s:s}}", "id", id, "type", "function", "function", "name", name,
                          "arguments", a);
    free(a);
    return c;
}

/* Appends the calls in v (one call object or an array of them); -1 if v is
 * not in that form. */
static int add_calls(json_t *calls, json_t *v, unsigned long long seq)
{
    if (json_is_array(v)) {
        if (!json_array_size(v)) return -1;
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!json_is_object(json_array_get(v, i)) || !json_is_string(json_object_get(json_array_get(v, i), "name")))
                return -1;
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *c = call_of(json_array_get(v, i), seq, json_array_size(calls));
            if (!c) return -1;
            json_array_append_new(calls, c);
        }
        return 0;
    }
    json_t *c = call_of(v, seq, json_array_size(calls));
    if (!c) return -1;
    json_array_append_new(calls, c);
    return 0;
}

static json_t *parse_json(const char *s, size_t n)
{
    json_error_t je;
    return json_loadb(s, n, 0, &je);
}

static const char *find(const char *h, size_t hn, const char *needle)
{
    size_t nn = strlen(needle);
    for (size_t i = 0; i + nn <= hn; i++)
        if (!memcmp(h + i, needle, nn)) return h + i;
    return NULL;
}

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) i++;
    return i;
}

size_t oai_tool_safe_prefix(const char *text, size_t len)
{
    static const char *const marks[] = {"<tool_call>", "[TOOL_CALLS]"};
    size_t i = skip_ws(text, 0, len);
    if (i == len || text[i] == '{' || text[i] == '[') return 0;
    size_t safe = len;
    for (size_t m = 0; m < 2; m++) {
        const char *p = find(text, len, marks[m]);
        if (p && (size_t)(p - text) < safe) safe = (size_t)(p - text);
        /* a suffix that is a prefix of the marker */
        size_t ml = strlen(marks[m]);
        for (size_t k = ml - 1; k > 0; k--)
            if (k <= len && !memcmp(text + len - k, marks[m], k)) {
                if (len - k < safe) safe = len - k;
                break;
            }
    }
    /* keep whole UTF-8 characters */
    while (safe > 0 && safe < len && ((unsigned char)text[safe] & 0xc0) == 0x80) safe--;
    return safe;
}

static json_t *tool_calls(const oai_out *o, const char *text, size_t len, size_t *content_len, unsigned long long seq);

json_t *oai_tool_calls(const oai_out *o, const char *text, size_t len, size_t *content_len, unsigned long long seq)
{
    json_t *c = tool_calls(o, text, len, content_len, seq);
    while (c && o->single_call && json_array_size(c) > 1) json_array_remove(c, json_array_size(c) - 1);
    return c;
}

static json_t *tool_calls(const oai_out *o, const char *text, size_t len, size_t *content_len, unsigned long long seq)
{
    *content_len = len;
    if (!o->tools || !text) return NULL;
    json_t *calls = json_array();
    /* Hermes / Qwen: <tool_call>{json}</tool_call>, repeated. */
    const char *p = find(text, len, "<tool_call>");
    if (p) {
        size_t first = (size_t)(p - text);
        while (p) {
            const char *body = p + strlen("<tool_call>");
            size_t rest = len - (size_t)(body - text);
            const char *end = find(body, rest, "</tool_call>");
            size_t bl = end ? (size_t)(end - body) : rest;
            json_t *v = parse_json(body, bl);
            if (!v || add_calls(calls, v, seq)) { json_decref(v); break; }
            json_decref(v);
            if (!end) break;
            size_t off = (size_t)(end - text) + strlen("</tool_call>");
            p = find(text + off, len - off, "<tool_call>");
        }
        if (json_array_size(calls)) {
            while (first > 0 && (text[first - 1] == '\n' || text[first - 1] == ' ')) first--;
            *content_len = first;
            return calls;
        }
    }
    /* Mistral: [TOOL_CALLS][{...}] (when the marker survives detokenizing). */
    p = find(text, len, "[TOOL_CALLS]");
    size_t start = 0;
    if (p) start = (size_t)(p - text) + strlen("[TOOL_CALLS]");
    /* Llama-3.1 / Mistral without the marker / emoe's constrained form: the
     * output is one JSON call object or an array of them. */
    size_t i = skip_ws(text, start, len);
    if (i < len && (text[i] == '{' || text[i] == '[')) {
        json_t *v = parse_json(text + i, len - i);
        if (v && !add_calls(calls, v, seq)) {
            json_decref(v);
            *content_len = p ? (size_t)(p - text) : 0;
            return calls;
        }
        json_decref(v);
    }
    json_decref(calls);
    return NULL;
}
