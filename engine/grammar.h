/*
 * grammar.h — constrained decoding for structured output: a JSON Schema (or
 * "any JSON object", or "one call of one of these tools") compiled to a
 * byte-level pushdown automaton, matched over the tokenizer's token byte
 * strings to mask the logits each step, so the output always parses and
 * validates (cf. llama.cpp's GBNF, XGrammar, Outlines).
 *
 * Files: gram_schema.c (JSON Schema -> node tree; a keyword it cannot honour
 * is an error naming it), gram_match.c (the automaton: a stack of frames fed
 * one byte at a time), gram_vocab.c (token byte strings sorted so that
 * tokens sharing a prefix share the work; the per-step mask).
 *
 * Output form: JSON with at most one space after each ':' and ',' (none
 * elsewhere), object members
 * in the schema's property order, strings without \u escapes, numbers without
 * exponents. Unbounded sizes get bounds so that even a random-weight model
 * finishes: strings <= GRAM_MAX_STRING characters unless maxLength, arrays
 * <= GRAM_MAX_ITEMS items unless maxItems, integers <= 15 digits, fractions
 * <= GRAM_MAX_FRAC digits, free objects <= GRAM_MAX_ITEMS members, nesting
 * <= GRAM_MAX_DEPTH.
 *
 * Thread-safety: a gram and a gram_vocab are immutable once built and may be
 * shared; a gram_state belongs to one request.
 */
#ifndef EMOE_GRAMMAR_H
#define EMOE_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "engine/common.h"

#define GRAM_MAX_DEPTH 32
#define GRAM_MAX_STRING 64
#define GRAM_MAX_ITEMS 16
#define GRAM_MAX_FRAC 6
#define GRAM_MAX_INT_DIGITS 15
#define GRAM_MAX_ENUM 64       /* enum values, object properties, tools */

typedef struct gram gram;
typedef struct gram_vocab gram_vocab;
typedef struct gram_state gram_state;

/* Compiles a JSON Schema. Supported: type (object, array, string, integer,
 * number, boolean, null, or several), anyOf / oneOf (alternatives must
 * differ in their first character: object vs null vs string ...),
 * properties, required,
 * additionalProperties (false, or absent), items, minItems, maxItems,
 * minLength, maxLength, minimum, maximum, exclusiveMinimum,
 * exclusiveMaximum, enum, const, and the annotations title, description,
 * default, examples, $schema, $id; "$ref": "#/$defs/<name>" (or
 * #/definitions/; compiled once and shared; recursion is refused). Anything
 * else (pattern, format, ...) is EMOE_EUNSUP with err naming the
 * keyword and where it is ("schema.properties.a: 'pattern' is not
 * supported"). On success *out has one reference (gram_release). */
emoe_status gram_compile_schema(json_t *schema, gram **out, emoe_err *err);
/* Any JSON object (response_format json_object). */
emoe_status gram_compile_json_object(gram **out, emoe_err *err);
/* One tool call {"name":"<one of tools>","arguments":<its parameters
 * schema>}; tools is the OpenAI tools array; only_name restricts it to one
 * function (NULL = any). */
emoe_status gram_compile_tool_call(json_t *tools, const char *only_name, gram **out, emoe_err *err);
void gram_release(gram *g);

/* The automaton's state, fed bytes. */
gram_state *gram_state_new(gram *g, const gram_vocab *v); /* takes a reference on g; v may be NULL (no masking) */
void gram_state_free(gram_state *s);
/* Feeds n bytes; 0, or -1 if the output could no longer match (the state
 * is then unchanged). */
int gram_state_feed(gram_state *s, const char *bytes, size_t n);
/* 1 if the output so far is a complete value (EOS allowed). */
int gram_state_can_end(const gram_state *s);
/* 1 if complete and nothing may follow. */
int gram_state_done(const gram_state *s);

/* Token byte strings of a vocabulary. bytes(ctx, id, out) fills out (reset
 * first) with the bytes token id produces and returns 0, or -1 for ids
 * without text (special tokens, gaps): those are never allowed, except the
 * EOS ids, allowed exactly when the output can end. */
gram_vocab *gram_vocab_new(int vocab, int (*bytes)(void *ctx, int id, emoe_buf *out), void *ctx, const int *eos_ids,
                           int n_eos);
void gram_vocab_free(gram_vocab *v);
/* Sets logits of disallowed tokens to -INFINITY; returns the number allowed
 * (0 = dead end). vocab is the logits' length (ids past the vocabulary are
 * disallowed). */
int gram_state_mask(gram_state *s, float *logits, int vocab);
/* Advances by token id; 1 = done (nothing may follow), 0 = go on, -1 = the
 * token is not allowed (state unchanged). An EOS id is accepted when the
 * output can end (returns 1). */
int gram_state_accept_token(gram_state *s, int id);

#endif
