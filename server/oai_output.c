/* oai_output.c — log-probability objects and tool-call parsing; see oai_output.h. */
#include "server/oai_output.h"
#include "server/tool_calls.h"

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

/* The legacy completions' top_logprobs entry of one position: {token text: logprob} for its N alternatives. */
static json_t *top_map(const oai_out *o, const int32_t *tid, const float *tlp, int N, emoe_buf *b)
{
    json_t *m = json_object();
    for (int j = 0; j < N; j++) {
        tok_bytes(o, tid[j], b);
        json_t *k = token_str(b);
        json_object_set_new(m, json_string_value(k), json_real(lp_value(tlp[j])));
        json_decref(k);
    }
    return m;
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
            json_array_append_new(tops, top_map(o, tid + i * N, tlp + i * N, N, &b));
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
        json_array_append_new(tops, top_map(o, tid + i * N, tlp + i * N, N, &b));
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

json_t *oai_tool_calls(const oai_out *o, const char *text, size_t len, size_t *content_len, unsigned long long seq)
{
    *content_len = len;
    if (!o->tools) return NULL;
    return tool_calls_parse(text, len, o->single_call, content_len, seq);
}

size_t oai_tool_safe_prefix(const char *text, size_t len) { return tool_calls_safe_prefix(text, len); }
