/*
 * tokenizer.h — Hugging Face tokenizer.json (BPE) loader, encoder, decoder,
 * streaming detokenizer and chat-template rendering.
 *
 * Supported tokenizer.json components (anything else is a load-time EMOE_EUNSUP
 * error naming the component):
 *   normalizer    NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace (String|Regex),
 *                 Strip, Sequence, null
 *   pre_tokenizer Split (String|Regex; Isolated, Removed, MergedWithPrevious,
 *                 MergedWithNext, Contiguous; invert), ByteLevel (incl. use_regex),
 *                 Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence, null
 *   model         BPE (merges as "a b" or ["a","b"]; byte_fallback, unk_token,
 *                 fuse_unk, ignore_merges)
 *   decoder       ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence
 *   post_processor (only used with add_special) TemplateProcessing, ByteLevel,
 *                 Sequence, null
 * Regexes are PCRE2 in UTF+UCP mode (JIT-compiled where available); the Hugging
 * Face library uses Oniguruma, whose Unicode classes agree on the patterns that
 * the model families here use.
 *
 * Thread-safety: a loaded tok_tokenizer is immutable except for an internal
 * piece cache guarded by a mutex, so encode/decode may run on many threads.
 */
#ifndef EMOE_TOKENIZER_H
#define EMOE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "engine/common.h"

typedef struct tok_tokenizer tok_tokenizer;

/* Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (special
 * token strings, chat_template) and DIR/chat_template.jinja (preferred over the
 * config's chat_template, as transformers does). DIR may be a model directory or
 * a directory holding only tokenizer files. On success *out is owned by the
 * caller (tok_free); on failure *out is NULL and err names the file and field. */
emoe_status tok_load_dir(const char *dir, tok_tokenizer **out, emoe_err *err);

/* Loads from in-memory JSON texts. config_json may be NULL. `name` is used in
 * error messages. Same ownership as tok_load_dir. */
emoe_status tok_load_json(const char *tokenizer_json, size_t len, const char *config_json,
                          size_t config_len, const char *name, tok_tokenizer **out, emoe_err *err);
void tok_free(tok_tokenizer *t);

/* Number of ids (max id + 1 over the model vocabulary and added tokens). */
int tok_vocab_size(const tok_tokenizer *t);
/* bos/eos ids from tokenizer_config.json (bos_token/eos_token), -1 when absent. */
int tok_bos(const tok_tokenizer *t);
int tok_eos(const tok_tokenizer *t);
/* bos/eos token strings (NULL when absent); owned by t. */
const char *tok_bos_str(const tok_tokenizer *t);
const char *tok_eos_str(const tok_tokenizer *t);
/* The token string of id (the vocabulary form, e.g. "Ġhello"); NULL if out of
 * range. *len receives its length. Owned by t. */
const char *tok_id_to_piece(const tok_tokenizer *t, int id, size_t *len);
/* The raw bytes token id adds to the output (byte-level and byte-fallback
 * pieces mapped back to bytes, Metaspace/Replace decoders applied; possibly
 * part of a UTF-8 character) into out, which is reset first (tok_bytes.c).
 * 0, or -1 for an id without a token or when out of memory. */
int tok_token_bytes(const tok_tokenizer *t, int id, emoe_buf *out);
/* id of an exact vocabulary/added-token string, -1 if none. */
int tok_piece_to_id(const tok_tokenizer *t, const char *s, size_t len);
/* 1 if id is a special added token. */
int tok_is_special(const tok_tokenizer *t, int id);
/* The chat template source, NULL if the tokenizer has none. */
const char *tok_chat_template(const tok_tokenizer *t);

/* Encodes len bytes of text (must be valid UTF-8; embedded NULs allowed).
 * add_special: apply the post-processor (e.g. prepend <s>): tokenizer.json's,
 * except for Llama/CodeLlama/Gemma tokenizer classes, where it follows
 * tokenizer_config.json's add_bos_token/add_eos_token as transformers does.
 * Chat-template output already holds its special tokens: encode it with 0.
 * On success *ids is a malloc'd array of *n ids (caller frees; non-NULL even
 * when *n is 0). On failure *ids is NULL, *n is 0 and err says why (e.g. invalid
 * UTF-8 at byte N). */
emoe_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, int add_special,
                       int32_t **ids, size_t *n, emoe_err *err);

/* Decodes ids to text exactly as Hugging Face tokenizers' decode does.
 * skip_special drops special added tokens. On success *out is a malloc'd
 * NUL-terminated string of *out_len bytes (may contain NULs; caller frees).
 * Ids that have no token (negative, past the vocabulary, or in a gap, e.g.
 * the padding rows of a model's larger embedding) are skipped, as tokenizers'
 * decode does; the streaming detokenizer skips them too. */
/* tok_encode that stops as soon as the text has more than max_ids tokens
 * (0 = no limit): then EINVAL with *over = 1 and no ids. The work done is
 * bounded by about max_ids tokens' worth of BPE, not by the text's length
 * (normalization and pre-tokenization still see the whole text). */
emoe_status tok_encode_limited(const tok_tokenizer *t, const char *text, size_t len, int add_special, size_t max_ids,
                               int32_t **ids, size_t *n, int *over, emoe_err *err);
emoe_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                       char **out, size_t *out_len, emoe_err *err);

/* Streaming detokenizer. Feed ids one at a time; each push appends to *out the
 * text that is final (never an incomplete UTF-8 sequence: bytes of a character
 * split across byte-fallback or byte-level tokens are held until the character
 * is complete). flush emits whatever is held (an incomplete tail becomes U+FFFD,
 * as decode does). For every id sequence that is valid UTF-8 once decoded (e.g.
 * anything tok_encode produced) the concatenated output equals tok_decode.
 * Difference: a byte-fallback run that is not valid UTF-8 is replaced one U+FFFD
 * per invalid byte as soon as it is known to be invalid, whereas decode replaces
 * every byte of the whole run.
 * The state holds a pointer to t, which must outlive it. */
typedef struct tok_detok {
    const tok_tokenizer *tok;
    int skip_special;
    int64_t n_tokens;      /* tokens seen (after skipping) */
    unsigned char pend[8]; /* bytes of an incomplete UTF-8 character */
    int n_pend;
    int pend_from_bytes;   /* pend came from ByteFallback pieces (per-byte U+FFFD) */
    int strip_left;        /* leading strip-chars still to drop (Strip start) */
    int started;           /* a non-stripped character has been emitted */
    char *held;            /* trailing strip-chars held for Strip stop */
    size_t n_held, cap_held;
} tok_detok;

void tok_detok_init(tok_detok *d, const tok_tokenizer *t, int skip_special);
/* Appends the final text for id to (*out, *out_len, *out_cap) (a malloc'd buffer the
 * caller owns; may start as NULL/0/0; kept NUL-terminated). */
emoe_status tok_detok_push(tok_detok *d, int32_t id, char **out, size_t *out_len, size_t *out_cap,
                           emoe_err *err);
emoe_status tok_detok_flush(tok_detok *d, char **out, size_t *out_len, size_t *out_cap, emoe_err *err);
void tok_detok_free(tok_detok *d);

/* Renders the chat template with `messages` (a JSON array of {role, content,...}),
 * add_generation_prompt, the special-token strings of tokenizer_config.json
 * (bos_token, eos_token, unk_token, pad_token) and `kwargs` (a JSON object whose
 * members become template variables, e.g. {"enable_thinking": false}; may be
 * NULL). `tools` is none unless kwargs sets it. On success *out is a malloc'd
 * NUL-terminated string (caller frees). Templates are untrusted: recursion,
 * loop iterations and output size are bounded (see jinja.h). */
emoe_status tok_apply_chat_template(const tok_tokenizer *t, json_t *messages, int add_generation_prompt,
                                    json_t *kwargs, char **out, emoe_err *err);
/* The same with the rendered output (and every string the template builds)
 * capped at max_output bytes (0 = the default cap of jinja.h). */
emoe_status tok_apply_chat_template_capped(const tok_tokenizer *t, json_t *messages, int add_generation_prompt,
                                           json_t *kwargs, size_t max_output, char **out, emoe_err *err);
/* Longest vocabulary piece or added token, in bytes: no token covers more
 * input bytes than this (after normalization). */
size_t tok_max_piece_bytes(const tok_tokenizer *t);

#endif
