/*
 * request.h — parsing and validating OpenAI-style request bodies into a typed
 * struct, and OpenAI error objects. Pure functions (no HTTP, no engine), so
 * the parser can be fuzzed on its own (tests/fuzz/fuzz_request.c).
 *
 * Rules: the body must be a JSON object; a field outside the allow-list of
 * request_oai.c is refused (400 naming it); known
 * fields with the wrong type or out of range are errors naming the field
 * (`param`); JSON null means "not set" for every optional field.
 */
#ifndef EMOE_REQUEST_H
#define EMOE_REQUEST_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "engine/sampler.h"

typedef enum srv_kind {
    SRV_KIND_CHAT = 0,     /* POST /v1/chat/completions */
    SRV_KIND_COMPLETION,   /* POST /v1/completions */
    SRV_KIND_TOKENIZE,     /* POST /tokenize */
    SRV_KIND_DETOKENIZE,   /* POST /detokenize */
} srv_kind;

/* An OpenAI error object plus the HTTP status it goes with. */
typedef struct srv_error {
    int http;              /* 400, 401, 404, ... */
    const char *type;      /* "invalid_request_error", ... */
    const char *code;      /* NULL or e.g. "context_length_exceeded" */
    char param[64];        /* "" = null */
    char message[512];
} srv_error;

/* Fills e and returns -1 (for `return srv_fail(...)`). */
int srv_fail(srv_error *e, int http, const char *type, const char *code, const char *param,
             const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Serialises {"error":{"message","type","param","code"}} (malloc'd). */
char *srv_error_json(const srv_error *e);

#define SRV_MAX_STOP 4
#define SRV_MAX_STOP_LEN 256
#define SRV_MAX_TASK 63
#define SRV_MAX_N 16             /* choices per request */
#define SRV_MAX_LOGIT_BIAS 300   /* logit_bias entries (OpenAI's limit) */
#define SRV_MAX_TOOLS 64

typedef struct srv_gen_req {
    srv_kind kind;
    char model[256];             /* "" = not given */
    json_t *messages;            /* chat / tokenize: normalised [{role, content}] (owned) */
    json_t *template_kwargs;     /* chat_template_kwargs object (owned) or NULL */
    int add_generation_prompt;   /* tokenize with messages; chat always 1 */
    char *prompt;                /* completion / tokenize string prompt (owned) or NULL */
    size_t prompt_len;
    int32_t *prompt_ids;         /* token-id prompt (owned) or NULL; also detokenize's tokens */
    int n_prompt_ids;
    int add_special_tokens;      /* for string prompts; default 1 */
    int max_tokens;              /* -1 = not given */
    eng_sampling sampling;
    int seed_set;
    char *stop[SRV_MAX_STOP];    /* owned */
    int n_stop;
    int stream;
    int include_usage;
    int ignore_eos;              /* emoe extension */
    int return_token_ids;        /* vLLM extension: choices carry token_ids */
    char task[SRV_MAX_TASK + 1]; /* emoe extension: predictor task */
    /* OpenAI completeness (request_oai.c) */
    int n;                       /* choices, 1..SRV_MAX_N */
    int logprobs;                /* 1: return log-probabilities of the generated tokens */
    int top_logprobs;            /* 0..20 alternatives per token */
    int32_t *bias_ids;           /* logit_bias (owned) */
    float *bias;
    int n_bias;
    json_t *response_format;     /* {"type":"json_object"} or {"type":"json_schema",...} (owned); NULL = text */
    json_t *tools;               /* [{type:"function", function:{name, description?, parameters?}}] (owned) or NULL */
    json_t *tool_choice;         /* "none" | "auto" | "required" | {type, function:{name}} (owned) or NULL (auto) */
    int parallel_tool_calls;     /* default 1 */
    int echo;                    /* completions: the prompt comes first in the text (and logprobs) */
} srv_gen_req;

/* Parses body[0..len) for `kind`. Returns 0 and fills r (free with
 * srv_gen_req_free), or -1 with e set (r is left empty). Never crashes on
 * any input. */
int srv_parse_request(srv_kind kind, const char *body, size_t len, srv_gen_req *r, srv_error *e);
void srv_gen_req_free(srv_gen_req *r);

/* request_oai.c: refuses fields outside the allow-list for `kind` (400
 * naming the field) and parses n, logprobs, top_logprobs, logit_bias,
 * response_format, tools, tool_choice, parallel_tool_calls, echo, suffix,
 * best_of and the refused OpenAI fields. Returns 0 or -1 with e set. */
int srv_parse_oai(json_t *root, srv_kind kind, srv_gen_req *r, srv_error *e);
void srv_oai_free(srv_gen_req *r);

/* Validates a task name (from the body or the X-Emoe-Task header):
 * 1..63 bytes of [A-Za-z0-9_.:-]. */
int srv_task_valid(const char *s, size_t n);

#endif
