/*
 * tool_calls.h — tool calls in generated text, for the template families in
 * use: Hermes/Qwen `<tool_call>{"name","arguments"}</tool_call>` (repeated),
 * Mistral `[TOOL_CALLS][{...}]`, and an output that is one bare JSON call or
 * an array of them (Llama-3.1, with "parameters"; emoe's constrained form).
 * Pure functions over text (jansson only), fuzzed by tests/fuzz/fuzz_toolcalls.c.
 */
#ifndef EMOE_TOOL_CALLS_H
#define EMOE_TOOL_CALLS_H

#include <stddef.h>
#include <jansson.h>

/* The calls in text[0..len) as an OpenAI tool_calls array ({id, type:
 * "function", function:{name, arguments (a JSON string)}}), or NULL when
 * there are none. single: keep only the first. *content_len: the length of
 * the text before the first call (len when there is none). seq numbers the
 * call ids. */
json_t *tool_calls_parse(const char *text, size_t len, int single, size_t *content_len, unsigned long long seq);

/* How many bytes of text can be streamed as content before a call could
 * start (see docs/api.md "Tool calls"). */
size_t tool_calls_safe_prefix(const char *text, size_t len);

#endif
