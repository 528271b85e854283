/*
 * trace.h — expert-routing traces: the JSONL format of ../shared/traces/README.md
 * (one request per line: model, task, request, num_layers, num_experts, top_k,
 * and per token its phase, position and per-layer expert ids, optionally with
 * gate weights), read into memory and written back.
 *
 * The reader is total: any byte sequence gives either a trace or an error whose
 * message names the file, the line and the field that was wrong. The writer
 * produces exactly the format the reader (and the third-party traces) use, so
 * recorded and third-party traces replay through one evaluator.
 *
 * Every request of one trace must agree on num_layers / num_experts / top_k
 * (a replay of mixed shapes is meaningless); pred_trace_append checks it.
 */
#ifndef EMOE_PRED_TRACE_H
#define EMOE_PRED_TRACE_H

#include <stdint.h>
#include <stdio.h>

#include "engine/common.h"

#define PRED_TRACE_MAX_LAYERS 1024
#define PRED_TRACE_MAX_EXPERTS 4096
#define PRED_TRACE_MAX_TOPK 64
#define PRED_TASK_NAME_MAX 64

typedef enum pred_phase {
    PRED_PHASE_PREFILL = 0,
    PRED_PHASE_DECODE = 1,
} pred_phase;

typedef struct pred_trace_req {
    char model[128];
    char task[PRED_TASK_NAME_MAX];
    int64_t request;      /* the line's "request" number */
    int n_layers, n_experts, top_k;
    int n_tokens;
    int cap_tokens;       /* allocated rows (writer side grows it) */
    uint8_t *phase;       /* (n_tokens) pred_phase */
    int32_t *pos;         /* (n_tokens) */
    int16_t *experts;     /* (n_tokens, n_layers, top_k), highest weight first */
    float *weights;       /* (n_tokens, n_layers, top_k) or NULL when absent */
} pred_trace_req;

typedef struct pred_trace {
    int n_reqs, cap_reqs;
    pred_trace_req *reqs;  /* (n_reqs) */
    int n_layers, n_experts, top_k;  /* shared by all requests; 0 while empty */
} pred_trace;

/* Experts of token t at layer l of request r: top_k ids. */
static inline const int16_t *pred_req_experts(const pred_trace_req *r, int t, int l)
{
    return r->experts + ((size_t)t * (size_t)r->n_layers + (size_t)l) * (size_t)r->top_k;
}

void pred_trace_init(pred_trace *t);
void pred_trace_free(pred_trace *t);   /* NULL-safe; leaves an empty trace */
void pred_req_free(pred_trace_req *r); /* NULL-safe */

/* Parses one JSON line (len bytes, need not be NUL-terminated) into *out.
 * `where` names the source in messages ("file.jsonl:12"). On failure *out is
 * left empty and err names the field. */
emoe_status pred_req_parse(const char *line, size_t len, const char *where,
                           pred_trace_req *out, emoe_err *err);

/* Reads a whole JSONL file and appends its requests to t (blank lines are
 * skipped). On failure t holds the requests of the lines before the bad one
 * and err names file:line and field; the caller frees t either way. */
emoe_status pred_trace_load(pred_trace *t, const char *path, emoe_err *err);
/* Same from a memory buffer. */
emoe_status pred_trace_load_mem(pred_trace *t, const char *buf, size_t len,
                                const char *name, emoe_err *err);

/* Moves *r into t (r is left empty). Fails if its shape differs from the
 * requests already in t. */
emoe_status pred_trace_append(pred_trace *t, pred_trace_req *r, emoe_err *err);

/* Builder for recorders: start a request, then add tokens. */
emoe_status pred_req_begin(pred_trace_req *r, const char *model, const char *task,
                           int64_t request, int n_layers, int n_experts, int top_k,
                           int with_weights, emoe_err *err);
/* Appends one token row; returns its index (>= 0) or a negative status. The row's
 * experts are set to -1 (weights 0) until filled with pred_req_set_layer. */
int pred_req_add_token(pred_trace_req *r, pred_phase phase, int32_t pos, emoe_err *err);
/* Fills layer l of token row t with k experts (and weights if the request keeps
 * them; weights may be NULL). */
emoe_status pred_req_set_layer(pred_trace_req *r, int t, int l, const int *experts,
                               const float *weights, int k, emoe_err *err);

/* Writes one request as one JSON line (with '\n') to f. Fails if a row is not
 * completely filled. */
emoe_status pred_req_write(const pred_trace_req *r, FILE *f, emoe_err *err);

const char *pred_phase_name(pred_phase p);

#endif
