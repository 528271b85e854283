/* request.c — request body parsing and validation; see request.h. */
#include "server/request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/textstream.h"

#define INVALID "invalid_request_error"

int srv_fail(srv_error *e, int http, const char *type, const char *code, const char *param,
             const char *fmt, ...)
{
    e->http = http;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    /* Messages may quote user input: keep them valid UTF-8 for JSON. */
    size_t n = strlen(e->message);
    while (n && !sched_utf8_valid(e->message, n)) e->message[--n] = 0;
    return -1;
}

char *srv_error_json(const srv_error *e)
{
    json_t *o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->message, "type",
                          e->type ? e->type : INVALID, "param",
                          e->param[0] ? json_string(e->param) : json_null(), "code",
                          e->code ? json_string(e->code) : json_null());
    if (!o) return strdup("{\"error\":{\"message\":\"internal error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

void srv_gen_req_free(srv_gen_req *r)
{
    if (!r) return;
    json_decref(r->messages);
    json_decref(r->template_kwargs);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    srv_oai_free(r);
    memset(r, 0, sizeof *r);
}

int srv_task_valid(const char *s, size_t n)
{
    if (n == 0 || n > SRV_MAX_TASK) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

/* ---- typed field getters: 0 = absent/null, 1 = set, -1 = error ---- */

static int get_number(json_t *o, const char *key, double lo, double hi, int lo_open, double *out, srv_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return srv_fail(e, 400, INVALID, NULL, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi || (lo_open && d == lo))
        return srv_fail(e, 400, INVALID, NULL, key, "'%s' must be in %s%g, %g]", key, lo_open ? "(" : "[", lo, hi);
    *out = d;
    return 1;
}

static int get_int(json_t *o, const char *key, long long lo, long long hi, long long *out, srv_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return srv_fail(e, 400, INVALID, NULL, key, "'%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return srv_fail(e, 400, INVALID, NULL, key, "'%s' must be in [%lld, %lld]", key, lo, hi);
    *out = x;
    return 1;
}

static int get_bool(json_t *o, const char *key, int *out, srv_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return srv_fail(e, 400, INVALID, NULL, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 1;
}

static int get_string(json_t *o, const char *key, const char **out, size_t *len, srv_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return srv_fail(e, 400, INVALID, NULL, key, "'%s' must be a string", key);
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 1;
}

/* An array of token ids (non-negative int32). vocab is checked later. */
static int parse_ids(json_t *arr, const char *param, int32_t **ids, int *n, srv_error *e)
{
    size_t cnt = json_array_size(arr);
    if (cnt > (1u << 24)) return srv_fail(e, 400, INVALID, NULL, param, "'%s' has too many tokens", param);
    *ids = malloc((cnt ? cnt : 1) * sizeof **ids);
    if (!*ids) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        json_t *t = json_array_get(arr, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX) {
            free(*ids);
            *ids = NULL;
            return srv_fail(e, 400, INVALID, NULL, param, "'%s[%zu]' must be a non-negative integer token id", param, i);
        }
        (*ids)[i] = (int32_t)json_integer_value(t);
    }
    *n = (int)cnt;
    return 0;
}

/* messages: [{role, content: string | [{type:"text", text}] | null}, ...] ->
 * normalised [{role, content: string}]. */
static int parse_messages(json_t *body, srv_gen_req *r, srv_error *e)
{
    json_t *m = json_object_get(body, "messages");
    if (!m || json_is_null(m)) return srv_fail(e, 400, INVALID, NULL, "messages", "'messages' is required");
    if (!json_is_array(m) || json_array_size(m) == 0)
        return srv_fail(e, 400, INVALID, NULL, "messages", "'messages' must be a non-empty array");
    if (json_array_size(m) > 10000) return srv_fail(e, 400, INVALID, NULL, "messages", "too many messages");
    static const char *roles[] = {"system", "developer", "user", "assistant", "tool"};
    r->messages = json_array();
    for (size_t i = 0; i < json_array_size(m); i++) {
        char param[48];
        json_t *msg = json_array_get(m, i);
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(msg)) return srv_fail(e, 400, INVALID, NULL, param, "'%s' must be an object", param);
        json_t *role = json_object_get(msg, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_is_string(role)) return srv_fail(e, 400, INVALID, NULL, param, "'%s' must be a string", param);
        int ok = 0;
        for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++)
            if (!strcmp(json_string_value(role), roles[k])) ok = 1;
        if (!ok)
            return srv_fail(e, 400, INVALID, NULL, param,
                            "'%s' must be one of system, developer, user, assistant, tool", param);
        json_t *content = json_object_get(msg, "content");
        snprintf(param, sizeof param, "messages[%zu].content", i);
        json_t *text = NULL;
        if (!content || json_is_null(content)) {
            text = json_string("");
        } else if (json_is_string(content)) {
            text = json_incref(content);
        } else if (json_is_array(content)) {
            /* Content parts: only text parts are supported. */
            size_t total = 0;
            for (size_t k = 0; k < json_array_size(content); k++) {
                json_t *part = json_array_get(content, k);
                json_t *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
                if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") ||
                    !json_is_string(t))
                    return srv_fail(e, 400, INVALID, NULL, param,
                                    "'%s[%zu]' must be a {\"type\":\"text\",\"text\":...} part (only text is supported)",
                                    param, k);
                total += json_string_length(t);
            }
            char *buf = malloc(total + 1);
            if (!buf) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
            size_t used = 0;
            for (size_t k = 0; k < json_array_size(content); k++) {
                json_t *t = json_object_get(json_array_get(content, k), "text");
                memcpy(buf + used, json_string_value(t), json_string_length(t));
                used += json_string_length(t);
            }
            text = json_stringn_nocheck(buf, used);
            free(buf);
        } else {
            return srv_fail(e, 400, INVALID, NULL, param, "'%s' must be a string or an array of text parts", param);
        }
        /* Other members (name, tool_calls, reasoning_content...) pass through
         * to the template unchanged. */
        json_t *norm = json_copy(msg);
        if (!norm) { json_decref(text); return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory"); }
        json_object_set_new(norm, "content", text);
        json_array_append_new(r->messages, norm);
    }
    return 0;
}

static int parse_stop(json_t *body, srv_gen_req *r, srv_error *e)
{
    json_t *s = json_object_get(body, "stop");
    if (!s || json_is_null(s)) return 0;
    json_t *one[1] = {s};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(s)) {
        n = json_array_size(s);
        if (n > SRV_MAX_STOP) return srv_fail(e, 400, INVALID, NULL, "stop", "'stop' may hold at most %d strings", SRV_MAX_STOP);
    } else if (!json_is_string(s)) {
        return srv_fail(e, 400, INVALID, NULL, "stop", "'stop' must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_is_array(s) ? json_array_get(s, i) : items[i];
        if (!json_is_string(v)) return srv_fail(e, 400, INVALID, NULL, "stop", "'stop[%zu]' must be a string", i);
        size_t len = json_string_length(v);
        if (len > SRV_MAX_STOP_LEN)
            return srv_fail(e, 400, INVALID, NULL, "stop", "'stop' strings may be at most %d bytes", SRV_MAX_STOP_LEN);
        if (len == 0 || memchr(json_string_value(v), 0, len)) continue; /* empty stops never match */
        r->stop[r->n_stop] = strdup(json_string_value(v));
        if (!r->stop[r->n_stop]) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        r->n_stop++;
    }
    return 0;
}

/* Completion prompt: string, [string], token ids, or [[ids]]. */
static int parse_prompt(json_t *body, srv_gen_req *r, srv_error *e, int required)
{
    json_t *p = json_object_get(body, "prompt");
    if (!p || json_is_null(p)) {
        if (!required) return 0;
        return srv_fail(e, 400, INVALID, NULL, "prompt", "'prompt' is required");
    }
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0); /* a batch of one */
    if (json_is_string(p)) {
        r->prompt_len = json_string_length(p);
        r->prompt = malloc(r->prompt_len + 1);
        if (!r->prompt) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        memcpy(r->prompt, json_string_value(p), r->prompt_len + 1);
        return 0;
    }
    if (json_is_array(p)) {
        json_t *first = json_array_get(p, 0);
        if (first && (json_is_string(first) || json_is_array(first)))
            return srv_fail(e, 400, INVALID, NULL, "prompt", "batched prompts are not supported; send one prompt per request");
        if (json_array_size(p) == 0) return srv_fail(e, 400, INVALID, NULL, "prompt", "'prompt' is empty");
        return parse_ids(p, "prompt", &r->prompt_ids, &r->n_prompt_ids, e);
    }
    return srv_fail(e, 400, INVALID, NULL, "prompt", "'prompt' must be a string or an array of token ids");
}

static int parse_sampling(json_t *body, srv_gen_req *r, srv_error *e)
{
    double d;
    long long x;
    int rc, b;
    if ((rc = get_number(body, "temperature", 0, 2, 0, &d, e)) < 0) return -1;
    if (rc) r->sampling.temperature = (float)d;
    if ((rc = get_number(body, "top_p", 0, 1, 1, &d, e)) < 0) return -1;
    if (rc) r->sampling.top_p = (float)d;
    if ((rc = get_int(body, "top_k", -1, 1 << 30, &x, e)) < 0) return -1;
    if (rc) r->sampling.top_k = x < 0 ? 0 : (int)x;
    if ((rc = get_number(body, "min_p", 0, 1, 0, &d, e)) < 0) return -1;
    if (rc) r->sampling.min_p = (float)d;
    if ((rc = get_number(body, "presence_penalty", -2, 2, 0, &d, e)) < 0) return -1;
    if (rc) r->sampling.presence_penalty = (float)d;
    if ((rc = get_number(body, "frequency_penalty", -2, 2, 0, &d, e)) < 0) return -1;
    if (rc) r->sampling.frequency_penalty = (float)d;
    if ((rc = get_int(body, "seed", INT64_MIN, INT64_MAX, &x, e)) < 0) return -1;
    if (rc) { r->sampling.seed = (uint64_t)x; r->seed_set = 1; }
    /* n, best_of: request_oai.c */
    long long mt = -1, mct = -1;
    if (get_int(body, "max_tokens", 1, 1 << 30, &mt, e) < 0) return -1;
    if (get_int(body, "max_completion_tokens", 1, 1 << 30, &mct, e) < 0) return -1;
    r->max_tokens = mct > 0 ? (int)mct : (int)mt;
    if (get_bool(body, "stream", &r->stream, e) < 0) return -1;
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return srv_fail(e, 400, INVALID, NULL, "stream_options", "'stream_options' must be an object");
        if (!r->stream)
            return srv_fail(e, 400, INVALID, NULL, "stream_options", "'stream_options' is only allowed with stream=true");
        b = 0;
        if (get_bool(so, "include_usage", &b, e) < 0) { snprintf(e->param, sizeof e->param, "stream_options.include_usage"); return -1; }
        r->include_usage = b;
    }
    if (get_bool(body, "ignore_eos", &r->ignore_eos, e) < 0) return -1;
    if (get_bool(body, "return_token_ids", &r->return_token_ids, e) < 0) return -1;
    const char *s;
    size_t n;
    if ((rc = get_string(body, "user", &s, &n, e)) < 0) return -1;
    if ((rc = get_string(body, "task", &s, &n, e)) < 0) return -1;
    if (rc) {
        if (!srv_task_valid(s, n))
            return srv_fail(e, 400, INVALID, NULL, "task", "'task' must be 1..%d characters of [A-Za-z0-9_.:-]", SRV_MAX_TASK);
        memcpy(r->task, s, n);
        r->task[n] = 0;
    }
    /* logprobs: request_oai.c */
    return parse_stop(body, r, e);
}

static int parse_template_kwargs(json_t *root, srv_gen_req *r, srv_error *e)
{
    json_t *kw = json_object_get(root, "chat_template_kwargs");
    if (!kw || json_is_null(kw)) return 0;
    if (!json_is_object(kw))
        return srv_fail(e, 400, INVALID, NULL, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
    /* The variables emoe itself sets from the validated request (issue 14):
     * overriding them would bypass message validation and its limits. */
    static const char *reserved[] = {"messages", "tools", "documents", "add_generation_prompt",
                                     "bos_token", "eos_token", "unk_token", "pad_token"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (json_object_get(kw, reserved[i]))
            return srv_fail(e, 400, INVALID, NULL, "chat_template_kwargs",
                            "chat_template_kwargs may not set '%s' (it comes from the request itself)", reserved[i]);
    r->template_kwargs = json_incref(kw);
    return 0;
}

int srv_parse_request(srv_kind kind, const char *body, size_t len, srv_gen_req *r, srv_error *e)
{
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->kind = kind;
    r->max_tokens = -1;
    r->add_special_tokens = 1;
    r->add_generation_prompt = 1;
    eng_sampling_default(&r->sampling);
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return srv_fail(e, 400, INVALID, NULL, NULL, "invalid JSON body at line %d, column %d: %s", je.line, je.column,
                        je.text);
    int rc = -1;
    if (!json_is_object(root)) {
        srv_fail(e, 400, INVALID, NULL, NULL, "the request body must be a JSON object");
        goto done;
    }
    const char *s;
    size_t n;
    int got = get_string(root, "model", &s, &n, e);
    if (got < 0) goto done;
    if (got) {
        if (n >= sizeof r->model || memchr(s, 0, n)) {
            srv_fail(e, 404, INVALID, "model_not_found", "model", "the model does not exist");
            goto done;
        }
        memcpy(r->model, s, n + 1);
    }
    switch (kind) {
    case SRV_KIND_CHAT:
        if (parse_messages(root, r, e) || parse_sampling(root, r, e)) goto done;
        if (parse_template_kwargs(root, r, e)) goto done;
        if (srv_parse_oai(root, kind, r, e)) goto done;
        break;
    case SRV_KIND_COMPLETION:
        if (parse_prompt(root, r, e, 1) || parse_sampling(root, r, e)) goto done;
        if (srv_parse_oai(root, kind, r, e)) goto done; /* also echo, suffix */
        break;
    case SRV_KIND_TOKENIZE:
        if (json_object_get(root, "messages") && !json_is_null(json_object_get(root, "messages"))) {
            if (parse_messages(root, r, e) || parse_template_kwargs(root, r, e)) goto done;
            if (get_bool(root, "add_generation_prompt", &r->add_generation_prompt, e) < 0) goto done;
        } else if (parse_prompt(root, r, e, 1)) {
            goto done;
        } else if (r->prompt_ids) {
            srv_fail(e, 400, INVALID, NULL, "prompt", "'prompt' must be a string");
            goto done;
        }
        if (get_bool(root, "add_special_tokens", &r->add_special_tokens, e) < 0) goto done;
        break;
    case SRV_KIND_DETOKENIZE: {
        json_t *t = json_object_get(root, "tokens");
        if (!json_is_array(t)) {
            srv_fail(e, 400, INVALID, NULL, "tokens", "'tokens' must be an array of token ids");
            goto done;
        }
        if (parse_ids(t, "tokens", &r->prompt_ids, &r->n_prompt_ids, e)) goto done;
        break;
    }
    }
    rc = 0;
done:
    json_decref(root);
    if (rc) srv_gen_req_free(r);
    return rc;
}
