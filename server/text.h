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
