/* tool_calls.c — tool calls parsed from generated text; see tool_calls.h. */
#include "server/tool_calls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

size_t tool_calls_safe_prefix(const char *text, size_t len)
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

static json_t *parse_calls(const char *text, size_t len, size_t *content_len, unsigned long long seq);

json_t *tool_calls_parse(const char *text, size_t len, int single, size_t *content_len, unsigned long long seq)
{
    json_t *c = parse_calls(text, len, content_len, seq);
    while (c && single && json_array_size(c) > 1) json_array_remove(c, json_array_size(c) - 1);
    return c;
}

static json_t *parse_calls(const char *text, size_t len, size_t *content_len, unsigned long long seq)
{
    *content_len = len;
    if (!text) return NULL;
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
