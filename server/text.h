/*
 * text.h — the server's view of a model's tokenizer: encode prompts, render
 * the chat template, decode ids, and the streaming detokenizer the scheduler
 * uses. Backed by engine/tokenizer.h (tok_*) when the build has it; without it
 * (or for a model directory without tokenizer.json) srv_text_load returns a
 * text object for which srv_text_available() is 0 and the server accepts
 * token-id prompts only.
 */
#ifndef EMOE_SRV_TEXT_H
#define EMOE_SRV_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "engine/common.h"
#include "scheduler/sched.h"

typedef struct srv_text srv_text;

/* Loads dir's tokenizer if present. Fails only when a tokenizer is present
 * but broken (err names the file). */
emoe_status srv_text_load(const char *dir, srv_text **out, emoe_err *err);
void srv_text_free(srv_text *t);
int srv_text_available(const srv_text *t);
/* Why there is no text support (for error messages). */
const char *srv_text_missing_reason(const srv_text *t);
int srv_text_has_template(const srv_text *t);

/* text -> ids (malloc'd). */
emoe_status srv_text_encode(srv_text *t, const char *text, size_t len, int add_special, int32_t **ids, int *n,
                            emoe_err *err);
/* messages (normalised [{role, content}]) -> prompt text (malloc'd). */
/* Prompt byte bound (issue 14): a prompt longer than this many bytes cannot
 * fit the context, so it is refused before tokenizing (a 3.9 MB prompt took
 * 7.5 s of CPU and 285 MB before the context check). cap_bytes > 0 is the
 * configured bound ([model] max_prompt_bytes); 0 = automatic: context tokens x
 * the longest token's bytes x 4 (normalizers such as NFKC shrink text at most
 * about 3x). Also caps a chat template's output. */
void srv_text_set_prompt_limit(srv_text *t, int ctx, uint64_t cap_bytes);
/* srv_text_encode that gives up once the text has more than max_ids tokens
 * (0 = no limit): then EINVAL with *over = 1. */
emoe_status srv_text_encode_max(srv_text *t, const char *text, size_t len, int add_special, int max_ids, int32_t **ids,
                                int *n, int *over, emoe_err *err);
/* The bound (0 = none: no tokenizer or not set). */
size_t srv_text_prompt_limit(const srv_text *t);
emoe_status srv_text_chat(srv_text *t, json_t *messages, int add_generation_prompt, json_t *kwargs, char **out,
                          emoe_err *err);
/* ids -> text (malloc'd). */
emoe_status srv_text_decode(srv_text *t, const int32_t *ids, int n, char **out, size_t *len, emoe_err *err);
/* The raw bytes of one token (see tok_token_bytes) into out (reset first);
 * 0, or -1 when there is no tokenizer or no such token. */
int srv_text_token_bytes(srv_text *t, int id, emoe_buf *out);
/* 1 if id is a special token (no text of its own); tokenizer vocabulary size
 * (0 without a tokenizer). */
int srv_text_is_special(srv_text *t, int id);
int srv_text_vocab(srv_text *t);
/* Data derived from the tokenizer, built once by make(arg) on first use
 * (under a lock) and freed with free_fn by srv_text_free (oai_gen.c keeps
 * the grammar vocabulary here). NULL if make returned NULL (tried again next
 * time). */
void *srv_text_aux(srv_text *t, void *(*make)(void *arg), void *arg, void (*free_fn)(void *));
/* The scheduler's detokenizer ops (push NULL when unavailable). */
sched_text_ops srv_text_ops(srv_text *t);

#endif
