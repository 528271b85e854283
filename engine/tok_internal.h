/*
 * tok_internal.h — the tokenizer's internal representation, shared by
 * tok_load.c (parsing), tok_encode.c (normalize, pre-tokenize, added tokens),
 * tok_bpe.c (merges), tok_decode.c (decode, streaming) and tok_chat.c.
 * Not part of the public API.
 */
#ifndef EMOE_TOK_INTERNAL_H
#define EMOE_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

#include "engine/tokenizer.h"

/* String -> int32 open-addressing hash map over borrowed keys. */
typedef struct tok_strmap {
    const char **keys;
    uint32_t *klen;
    int32_t *vals;
    size_t cap, n; /* cap is a power of two */
} tok_strmap;

int tok_strmap_init(tok_strmap *m, size_t expect);
void tok_strmap_free(tok_strmap *m);
/* Key memory is borrowed: it must outlive the map. Returns 0, or -1 on OOM.
 * An existing key keeps its first value. */
int tok_strmap_put(tok_strmap *m, const char *k, size_t len, int32_t v);
int32_t tok_strmap_get(const tok_strmap *m, const char *k, size_t len); /* -1 if absent */
uint64_t tok_hash_bytes(const char *p, size_t n);

/* (left id, right id) -> (rank, merged id). */
typedef struct tok_pair_ent {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    int32_t rank, merged;
} tok_pair_ent;

/* One 16-byte entry per slot, so a lookup touches one cache line. */
typedef struct tok_pairmap {
    tok_pair_ent *e;
    size_t cap, n;
} tok_pairmap;

int tok_pairmap_init(tok_pairmap *m, size_t expect);
void tok_pairmap_free(tok_pairmap *m);
int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
/* Returns 1 and fills rank/merged if present. */
int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged);

/* A flat list of strings (each NUL-terminated in buf; may contain NULs). */
typedef struct tok_strlist {
    char *buf;
    size_t n, cap;
    size_t *off;
    uint32_t *len;
    size_t count, ccap;
} tok_strlist;

int tok_strlist_push(tok_strlist *l, const char *s, size_t n);
void tok_strlist_free(tok_strlist *l);

/* Decodes model.vocab (keys + ids) and model.merges (a, b, a, b, ...) of a
 * tokenizer.json text directly; *rest is the text with those two values
 * replaced by {} and [] (malloc'd), for jansson. Returns 1 on success, 0 when
 * the input is not fully understood (the caller then parses it all with
 * jansson, which reports any error). See tok_json.c. */
int tok_json_fast_model(const char *text, size_t len, tok_strlist *vkeys, int32_t **vids, tok_strlist *merges,
                        char **rest, size_t *rest_len);

enum tok_norm_type {
    TOK_NORM_NFC, TOK_NORM_NFD, TOK_NORM_NFKC, TOK_NORM_NFKD, TOK_NORM_LOWER,
    TOK_NORM_PREPEND, TOK_NORM_REPLACE, TOK_NORM_STRIP,
};

typedef struct tok_norm {
    int type;
    char *str;     /* Prepend: prefix; Replace: content */
    size_t str_len;
    pcre2_code *re; /* Replace: pattern (String patterns compiled literal) */
    int left, right; /* Strip */
} tok_norm;

enum tok_pre_type {
    TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL, TOK_PRE_METASPACE, TOK_PRE_DIGITS,
    TOK_PRE_WHITESPACE, TOK_PRE_WSSPLIT,
};
enum tok_split_behavior {
    TOK_SPLIT_REMOVED, TOK_SPLIT_ISOLATED, TOK_SPLIT_MERGED_PREV, TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
};
enum tok_prepend_scheme { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER };

typedef struct tok_pre {
    int type;
    pcre2_code *re;
    int behavior, invert;
    int add_prefix_space; /* ByteLevel */
    char repl[8];         /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    int prepend_scheme, split;
} tok_pre;

enum tok_dec_type {
    TOK_DEC_BYTELEVEL, TOK_DEC_REPLACE, TOK_DEC_BYTEFALLBACK, TOK_DEC_FUSE, TOK_DEC_STRIP,
    TOK_DEC_METASPACE,
};

typedef struct tok_dec {
    int type;
    char *pat, *content; /* Replace (String pattern only) */
    size_t pat_len, content_len;
    uint32_t strip_char; /* Strip */
    int start, stop;
    char repl[8];        /* Metaspace */
    size_t repl_len;
    int prepend_scheme;
} tok_dec;

typedef struct tok_added {
    int32_t id;
    char *content;   /* the token's text (decode) */
    size_t len;
    char *pat;       /* what is matched: content, or content normalized for normalized=true */
    size_t pat_len;
    int pat_owned;
    int special, lstrip, rstrip, normalized, single_word;
} tok_added;

/* The added-token matcher: leftmost-longest over a set of tokens. */
typedef struct tok_matcher {
    int32_t *by_byte[256]; /* indices into added[], longest first */
    int n_by_byte[256];
    int any;
} tok_matcher;

typedef struct tok_cache_ent {
    char *key;
    uint32_t klen, n;
    int32_t *ids;
} tok_cache_ent;

struct tok_tokenizer {
    /* vocabulary: id -> string; strings live in `arena` */
    int n_vocab;          /* tok_vocab_size */
    const char **piece;   /* (n_vocab) NULL for unused ids */
    uint32_t *piece_len;  /* (n_vocab) */
    unsigned char *is_special; /* (n_vocab) */
    char *arena;
    size_t arena_len, arena_cap;
    tok_strmap vocab;     /* model vocabulary string -> id */
    tok_strmap added_map; /* added token content -> id */

    /* BPE model */
    tok_pairmap merges;
    int unk_id;           /* -1 if none */
    int byte_fallback, fuse_unk, ignore_merges;
    size_t max_piece_len;  /* longest piece string: no token covers more input bytes */
    int32_t byte_tok[256]; /* <0xNN> ids for byte fallback, -1 if absent */
    int bytelevel;        /* pre-tokenizer has ByteLevel: pieces map byte->char */
    int32_t bl_char_id[256]; /* vocab id of the byte-level char of each byte, -1 */

    tok_norm *norms;
    int n_norms;
    tok_pre *pres;
    int n_pres;
    tok_dec *decs;
    int n_decs;

    tok_added *added;
    int n_added;
    tok_matcher match_raw;  /* normalized=false tokens, on raw text */
    tok_matcher match_norm; /* normalized=true tokens, on normalized text */

    /* post processor: ids added around the sequence when add_special */
    int32_t *post_pre, *post_post;
    int n_post_pre, n_post_post;

    /* from tokenizer_config.json */
    char *bos_str, *eos_str, *unk_str, *pad_str;
    int bos_id, eos_id;
    char *chat_template;

    /* encode cache for pre-token pieces */
    pthread_mutex_t cache_mu;
    tok_cache_ent *cache;
    size_t cache_cap, cache_n;
};

/* GPT-2 byte <-> unicode char table. */
void tok_bytelevel_tables(uint32_t byte_to_cp[256]);
/* Code point -> byte for byte-level decoding, -1 if not a byte-level char. */
int tok_bytelevel_cp_to_byte(uint32_t cp);

/* BPE-encodes one pre-token piece (raw bytes; byte-level mapped internally when
 * t->bytelevel) appending ids to *ids (growable). Returns 0 or -1 on OOM. */
int tok_bpe_piece(tok_tokenizer *t, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap);
void tok_cache_free(tok_tokenizer *t);

/* UTF-8 helpers. tok_utf8_len: length of the sequence starting with byte c
 * (1..4), 0 if c cannot start one. tok_utf8_valid: index of the first invalid
 * byte, or len if all valid. */
int tok_utf8_len(unsigned char c);
size_t tok_utf8_valid(const char *s, size_t len);
/* Decodes one code point at s (valid UTF-8 assumed); returns its length. */
int tok_utf8_decode(const char *s, size_t len, uint32_t *cp);
int tok_utf8_encode(uint32_t cp, char out[4]);

/* Runs the normalizer chain over s (as for encoding); *out is malloc'd.
 * Used at load for normalized added tokens, which match in normalized form. */
emoe_status tok_normalize_str(const tok_tokenizer *t, const char *s, size_t n, char **out, size_t *out_len, emoe_err *err);

/* Pushes ids to a growable array; -1 on OOM. */
int tok_ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t v);

#endif
