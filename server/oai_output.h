/*
 * oai_output.h — the OpenAI response pieces beyond plain text: log-probability
 * objects (chat and completions form, streamed and not) and tool calls parsed
 * from generated text (Hermes/Qwen <tool_call>, Mistral [TOOL_CALLS],
 * Llama-3.1 bare JSON, and the constrained form emoe generates itself for
 * tool_choice "required" / a named function).
 */
#ifndef EMOE_OAI_OUTPUT_H
#define EMOE_OAI_OUTPUT_H

#include <stddef.h>
#include <jansson.h>

#include "scheduler/sched.h"
#include "server/request.h"
#include "server/text.h"

typedef struct oai_out {
    srv_kind kind;
    srv_text *text;
    int logprobs, top_logprobs;
    int tools;           /* 1: look for tool calls in the output */
    int forced_tool;     /* 1: the output is one {"name","arguments"} object (constrained) */
    int single_call;     /* parallel_tool_calls false: only the first call is returned */
} oai_out;

/* Log-probabilities of r's generated tokens [from, to): chat
 * {"content":[{token, logprob, bytes, top_logprobs}], "refusal": null};
 * completions {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
 * (text_off: the running byte offset in the choice's text, advanced).
 * -inf (a masked token) is written as -9999.0, as OpenAI does. */
json_t *oai_logprobs_json(const oai_out *o, sched_req *r, int from, int to, size_t *text_off);

/* Completions with echo: the same object for the prompt tokens ids[0..n)
 * (the first has null logprob and top_logprobs), from r's prompt
 * log-probabilities; with `gen` (may be NULL) appended, which is consumed. */
json_t *oai_prompt_logprobs_json(const oai_out *o, sched_req *r, const int32_t *ids, int n, size_t *text_off, json_t *gen);

/* Tool calls found in text[0..len): a JSON array of
 * {id, type:"function", function:{name, arguments (a JSON string)}}, or NULL
 * when there are none. *content_len receives the length of the text before
 * the first call (the assistant's content). seq numbers the call ids. */
json_t *oai_tool_calls(const oai_out *o, const char *text, size_t len, size_t *content_len, unsigned long long seq);

/* Streaming with tools: how many bytes of text[0..len) can be sent as
 * content now without sending part of a tool call: everything before a
 * call marker (<tool_call>, [TOOL_CALLS]) or a suffix that could start one;
 * nothing while the text (after leading whitespace) is empty or starts with
 * '{' or '[' (a bare JSON call may be coming). */
size_t oai_tool_safe_prefix(const char *text, size_t len);

#endif
