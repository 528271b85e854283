/*
 * request_oai.c — the OpenAI request fields beyond plain sampling: the
 * allow-list of top-level fields (anything else is refused with 400 naming
 * it: no silent ignoring), n / best_of, logprobs / top_logprobs, logit_bias,
 * response_format, tools / tool_choice / parallel_tool_calls, echo, suffix,
 * and the OpenAI fields emoe refuses (audio, modalities, prediction, ...).
 * docs/api.md lists every field and what emoe does with it.
 */
#include "server/request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INVALID "invalid_request_error"

/* Fields accepted on both generation endpoints. Other branches' request
 * fields belong here too (slo, priority: scheduling; task: predictor). */
static const char *const common_fields[] = {
    "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
    "presence_penalty", "frequency_penalty", "seed", "stop", "n", "stream", "stream_options", "user",
    "logprobs", "logit_bias", "ignore_eos", "return_token_ids", "task", "slo", "priority",
    /* checked below; accepted only in the values that need nothing from emoe */
    "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier",
    NULL,
};
static const char *const chat_fields[] = {
    "messages", "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls",
    "chat_template_kwargs",
    /* refused below with a reason */
    "audio", "modalities", "prediction", "web_search_options", "functions", "function_call", "reasoning_effort",
    "verbosity",
    NULL,
};
static const char *const completion_fields[] = {"prompt", "best_of", "echo", "suffix", NULL};

static int in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (!strcmp(*l, k)) return 1;
    return 0;
}

static int check_fields(json_t *root, srv_kind kind, srv_error *e)
{
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        (void)v;
        if (in_list(common_fields, k)) continue;
        if (kind == SRV_KIND_CHAT && in_list(chat_fields, k)) continue;
        if (kind == SRV_KIND_COMPLETION && in_list(completion_fields, k)) continue;
        char param[64];
        snprintf(param, sizeof param, "%s", k);
        return srv_fail(e, 400, INVALID, NULL, param, "unknown or unsupported field '%.64s' for %s", param,
                        kind == SRV_KIND_CHAT ? "/v1/chat/completions" : "/v1/completions");
    }
    return 0;
}

static json_t *field(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return v && !json_is_null(v) ? v : NULL;
}

static int get_intv(json_t *o, const char *k, long long lo, long long hi, int *out, srv_error *e)
{
    json_t *v = field(o, k);
    if (!v) return 0;
    if (!json_is_integer(v)) return srv_fail(e, 400, INVALID, NULL, k, "'%s' must be an integer", k);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return srv_fail(e, 400, INVALID, NULL, k, "'%s' must be in [%lld, %lld]", k, lo, hi);
    *out = (int)x;
    return 1;
}

static int get_boolv(json_t *o, const char *k, int *out, srv_error *e)
{
    json_t *v = field(o, k);
    if (!v) return 0;
    if (!json_is_boolean(v)) return srv_fail(e, 400, INVALID, NULL, k, "'%s' must be a boolean", k);
    *out = json_is_true(v);
    return 1;
}

static int refuse(srv_error *e, const char *k, const char *why)
{
    return srv_fail(e, 400, INVALID, NULL, k, "'%s' is not supported: %s", k, why);
}

/* OpenAI fields with no meaning here: accepted only where they ask for
 * nothing (store: false; metadata without store; service_tier auto/default);
 * the others are refused. */
static int parse_refused(json_t *root, srv_kind kind, srv_error *e)
{
    json_t *v;
    int b = 0;
    if (get_boolv(root, "store", &b, e) < 0) return -1;
    if (b) return refuse(e, "store", "emoe does not store completions");
    if ((v = field(root, "metadata")) && !json_is_object(v))
        return srv_fail(e, 400, INVALID, NULL, "metadata", "'metadata' must be an object");
    if ((v = field(root, "service_tier"))) {
        if (!json_is_string(v) || (strcmp(json_string_value(v), "auto") && strcmp(json_string_value(v), "default")))
            return refuse(e, "service_tier", "only \"auto\" or \"default\"");
    }
    static const char *const str_fields[] = {"prompt_cache_key", "safety_identifier"};
    for (size_t i = 0; i < 2; i++)
        if ((v = field(root, str_fields[i])) && !json_is_string(v))
            return srv_fail(e, 400, INVALID, NULL, str_fields[i], "'%s' must be a string", str_fields[i]);
    if (kind != SRV_KIND_CHAT) return 0;
    if ((v = field(root, "modalities"))) {
        if (!json_is_array(v) || json_array_size(v) != 1 || !json_is_string(json_array_get(v, 0)) ||
            strcmp(json_string_value(json_array_get(v, 0)), "text"))
            return refuse(e, "modalities", "only [\"text\"]");
    }
    if (field(root, "audio")) return refuse(e, "audio", "text output only");
    if (field(root, "prediction")) return refuse(e, "prediction", "no predicted outputs");
    if (field(root, "web_search_options")) return refuse(e, "web_search_options", "no web search");
    if (field(root, "functions")) return refuse(e, "functions", "deprecated; use 'tools'");
    if (field(root, "function_call")) return refuse(e, "function_call", "deprecated; use 'tool_choice'");
    if (field(root, "reasoning_effort")) return refuse(e, "reasoning_effort", "use chat_template_kwargs (e.g. enable_thinking)");
    if (field(root, "verbosity")) return refuse(e, "verbosity", "not a model option here");
    return 0;
}

/* logit_bias: {"<token id>": bias in [-100, 100]}; ids are checked against
 * the vocabulary by the server. */
static int parse_bias(json_t *root, srv_gen_req *r, srv_error *e)
{
    json_t *o = field(root, "logit_bias");
    if (!o) return 0;
    if (!json_is_object(o)) return srv_fail(e, 400, INVALID, NULL, "logit_bias", "'logit_bias' must be an object");
    size_t n = json_object_size(o);
    if (n > SRV_MAX_LOGIT_BIAS)
        return srv_fail(e, 400, INVALID, NULL, "logit_bias", "'logit_bias' may hold at most %d entries", SRV_MAX_LOGIT_BIAS);
    if (!n) return 0;
    r->bias_ids = malloc(n * sizeof *r->bias_ids);
    r->bias = malloc(n * sizeof *r->bias);
    if (!r->bias_ids || !r->bias) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        char *end = NULL;
        long id = strtol(k, &end, 10);
        if (!k[0] || *end || id < 0 || id > INT32_MAX || (k[0] == '0' && k[1]))
            return srv_fail(e, 400, INVALID, NULL, "logit_bias", "'logit_bias' keys must be token ids (got \"%.32s\")", k);
        if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < -100 ||
            json_number_value(v) > 100)
            return srv_fail(e, 400, INVALID, NULL, "logit_bias", "'logit_bias[%ld]' must be a number in [-100, 100]", id);
        r->bias_ids[r->n_bias] = (int32_t)id;
        r->bias[r->n_bias++] = (float)json_number_value(v);
    }
    return 0;
}

static int parse_response_format(json_t *root, srv_gen_req *r, srv_error *e)
{
    json_t *rf = field(root, "response_format");
    if (!rf) return 0;
    const char *P = "response_format";
    if (!json_is_object(rf)) return srv_fail(e, 400, INVALID, NULL, P, "'response_format' must be an object");
    json_t *t = json_object_get(rf, "type");
    if (!json_is_string(t)) return srv_fail(e, 400, INVALID, NULL, P, "'response_format.type' must be a string");
    const char *ty = json_string_value(t);
    if (!strcmp(ty, "text")) return 0;
    if (!strcmp(ty, "json_object")) {
        r->response_format = json_incref(rf);
        return 0;
    }
    if (strcmp(ty, "json_schema"))
        return srv_fail(e, 400, INVALID, NULL, P, "'response_format.type' must be text, json_object or json_schema");
    json_t *js = json_object_get(rf, "json_schema");
    if (!json_is_object(js)) return srv_fail(e, 400, INVALID, NULL, P, "'response_format.json_schema' must be an object");
    json_t *name = json_object_get(js, "name"), *schema = json_object_get(js, "schema"), *strict = json_object_get(js, "strict");
    if (name && !json_is_string(name)) return srv_fail(e, 400, INVALID, NULL, P, "'response_format.json_schema.name' must be a string");
    if (!json_is_object(schema))
        return srv_fail(e, 400, INVALID, NULL, P, "'response_format.json_schema.schema' must be an object");
    if (strict && !json_is_null(strict) && !json_is_boolean(strict))
        return srv_fail(e, 400, INVALID, NULL, P, "'response_format.json_schema.strict' must be a boolean");
    r->response_format = json_incref(rf);
    return 0;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int parse_tools(json_t *root, srv_gen_req *r, srv_error *e)
{
    json_t *tools = field(root, "tools");
    r->parallel_tool_calls = 1;
    if (get_boolv(root, "parallel_tool_calls", &r->parallel_tool_calls, e) < 0) return -1;
    if (tools) {
        if (!json_is_array(tools) || json_array_size(tools) > SRV_MAX_TOOLS)
            return srv_fail(e, 400, INVALID, NULL, "tools", "'tools' must be an array of at most %d tools", SRV_MAX_TOOLS);
        for (size_t i = 0; i < json_array_size(tools); i++) {
            json_t *t = json_array_get(tools, i), *f = json_object_get(t, "function");
            json_t *ty = json_object_get(t, "type");
            if (!json_is_object(t) || !json_is_string(ty) || strcmp(json_string_value(ty), "function") ||
                !json_is_object(f))
                return srv_fail(e, 400, INVALID, NULL, "tools", "'tools[%zu]' must be {\"type\":\"function\",\"function\":{...}}", i);
            json_t *nm = json_object_get(f, "name"), *pa = json_object_get(f, "parameters"), *d = json_object_get(f, "description");
            if (!json_is_string(nm) || !name_ok(json_string_value(nm)))
                return srv_fail(e, 400, INVALID, NULL, "tools", "'tools[%zu].function.name' must be 1..64 characters of [A-Za-z0-9_-]", i);
            if (pa && !json_is_null(pa) && !json_is_object(pa))
                return srv_fail(e, 400, INVALID, NULL, "tools", "'tools[%zu].function.parameters' must be an object", i);
            if (d && !json_is_null(d) && !json_is_string(d))
                return srv_fail(e, 400, INVALID, NULL, "tools", "'tools[%zu].function.description' must be a string", i);
            for (size_t k = 0; k < i; k++)
                if (json_equal(json_object_get(json_object_get(json_array_get(tools, k), "function"), "name"), nm))
                    return srv_fail(e, 400, INVALID, NULL, "tools", "duplicate tool name '%s'", json_string_value(nm));
        }
        if (json_array_size(tools)) r->tools = json_incref(tools);
    }
    json_t *tc = field(root, "tool_choice");
    if (!tc) return 0;
    const char *P = "tool_choice";
    if (json_is_string(tc)) {
        const char *v = json_string_value(tc);
        if (strcmp(v, "none") && strcmp(v, "auto") && strcmp(v, "required"))
            return srv_fail(e, 400, INVALID, NULL, P, "'tool_choice' must be none, auto, required or a named function");
        if (!r->tools && strcmp(v, "none"))
            return srv_fail(e, 400, INVALID, NULL, P, "'tool_choice' \"%s\" needs 'tools'", v);
    } else if (json_is_object(tc)) {
        json_t *f = json_object_get(tc, "function"), *nm = json_object_get(f, "name");
        if (!json_is_string(nm)) return srv_fail(e, 400, INVALID, NULL, P, "'tool_choice.function.name' must be a string");
        int found = 0;
        for (size_t i = 0; r->tools && i < json_array_size(r->tools); i++)
            found |= json_equal(json_object_get(json_object_get(json_array_get(r->tools, i), "function"), "name"), nm);
        if (!found) return srv_fail(e, 400, INVALID, NULL, P, "'tool_choice' names '%.64s', which is not in 'tools'", json_string_value(nm));
    } else {
        return srv_fail(e, 400, INVALID, NULL, P, "'tool_choice' must be a string or an object");
    }
    r->tool_choice = json_incref(tc);
    return 0;
}

int srv_parse_oai(json_t *root, srv_kind kind, srv_gen_req *r, srv_error *e)
{
    r->n = 1;
    r->parallel_tool_calls = 1;
    if (check_fields(root, kind, e) || parse_refused(root, kind, e)) return -1;
    json_t *so = field(root, "stream_options");
    if (json_is_object(so)) {
        const char *k;
        json_t *v;
        json_object_foreach(so, k, v) {
            if (!strcmp(k, "include_usage")) continue;
            if (!strcmp(k, "include_obfuscation") && !json_is_true(v)) continue;
            return srv_fail(e, 400, INVALID, NULL, "stream_options", "'stream_options.%.40s' is not supported", k);
        }
    }
    if (get_intv(root, "n", 1, SRV_MAX_N, &r->n, e) < 0) return -1;
    if (kind == SRV_KIND_CHAT) {
        if (get_boolv(root, "logprobs", &r->logprobs, e) < 0) return -1;
        int got = get_intv(root, "top_logprobs", 0, 20, &r->top_logprobs, e);
        if (got < 0) return -1;
        if (got && !r->logprobs)
            return srv_fail(e, 400, INVALID, NULL, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (parse_response_format(root, r, e) || parse_tools(root, r, e)) return -1;
        if (r->tools && r->response_format)
            return srv_fail(e, 400, INVALID, NULL, "response_format", "'response_format' together with 'tools' is not supported");
    } else {
        int lp = -1, bo = 0;
        if (get_intv(root, "logprobs", 0, 20, &lp, e) < 0) return -1;
        if (lp >= 0) { r->logprobs = 1; r->top_logprobs = lp; }
        if (get_intv(root, "best_of", 1, SRV_MAX_N, &bo, e) < 0) return -1;
        if (bo && bo != r->n)
            return srv_fail(e, 400, INVALID, NULL, "best_of", "only best_of equal to n is supported");
        int echo = 0;
        if (get_boolv(root, "echo", &echo, e) < 0) return -1;
        r->echo = echo;
        json_t *sfx = field(root, "suffix");
        if (sfx && !json_is_string(sfx)) return srv_fail(e, 400, INVALID, NULL, "suffix", "'suffix' must be a string");
        if (sfx && json_string_length(sfx)) return refuse(e, "suffix", "no fill-in-the-middle");
    }
    return parse_bias(root, r, e);
}

void srv_oai_free(srv_gen_req *r)
{
    free(r->bias_ids);
    free(r->bias);
    r->bias_ids = NULL;
    r->bias = NULL;
    r->n_bias = 0;
    json_decref(r->response_format);
    json_decref(r->tools);
    json_decref(r->tool_choice);
    r->response_format = r->tools = r->tool_choice = NULL;
}
