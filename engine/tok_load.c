/*
 * tok_load.c — parses tokenizer.json (model, normalizer, pre_tokenizer, decoder,
 * post_processor, added_tokens) and tokenizer_config.json (special-token strings,
 * chat template) into a tok_tokenizer. Every field is validated; anything not
 * understood is an error naming the field, never silently ignored, because a
 * tokenizer that is slightly wrong produces ids the model was not trained on.
 */
#include "engine/tok_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_VOCAB (1 << 24)

static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static emoe_status compile_re(const char *pat, size_t len, int literal, pcre2_code **out,
                              const char *where, emoe_err *err)
{
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return emoe_errf(err, EMOE_EUNSUP, "%s: regex /%.*s/ does not compile at offset %zu: %s", where,
                         (int)(len > 200 ? 200 : len), pat, (size_t)eo, (char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    *out = re;
    return EMOE_OK;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* Reads a {"String": s} or {"Regex": r} pattern into a compiled regex. */
static emoe_status parse_pattern(json_t *pat, pcre2_code **re, char **lit, size_t *lit_len,
                                 const char *where, emoe_err *err)
{
    json_t *s = json_object_get(pat, "String"), *r = json_object_get(pat, "Regex");
    if (json_is_string(s)) {
        if (lit) {
            *lit = dupn(json_string_value(s), json_string_length(s));
            if (!*lit) return emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", where);
            *lit_len = json_string_length(s);
        }
        if (!re) return EMOE_OK;
        if (json_string_length(s) == 0)
            return emoe_errf(err, EMOE_EINVAL, "%s.pattern.String: empty pattern", where);
        return compile_re(json_string_value(s), json_string_length(s), 1, re, where, err);
    }
    if (json_is_string(r)) {
        if (!re) return emoe_errf(err, EMOE_EUNSUP, "%s: Regex patterns are not supported here", where);
        return compile_re(json_string_value(r), json_string_length(r), 0, re, where, err);
    }
    return emoe_errf(err, EMOE_EINVAL, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", where);
}

static const char *type_of(json_t *o)
{
    json_t *t = json_object_get(o, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static int get_bool(json_t *o, const char *k, int def)
{
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

/* ---- normalizer ---- */

static emoe_status add_norm(tok_tokenizer *t, tok_norm *n, emoe_err *err)
{
    if (t->n_norms >= 64) return emoe_errf(err, EMOE_EUNSUP, "normalizer: more than 64 steps");
    tok_norm *p = realloc(t->norms, (size_t)(t->n_norms + 1) * sizeof *p);
    if (!p) return emoe_errf(err, EMOE_ENOMEM, "normalizer: out of memory");
    t->norms = p;
    t->norms[t->n_norms++] = *n;
    return EMOE_OK;
}

static emoe_status parse_normalizer(tok_tokenizer *t, json_t *j, const char *where, int depth, emoe_err *err)
{
    if (json_is_null(j) || !j) return EMOE_OK;
    if (depth > 8) return emoe_errf(err, EMOE_EUNSUP, "%s: nesting too deep", where);
    const char *ty = type_of(j);
    if (!ty) return emoe_errf(err, EMOE_EINVAL, "%s: missing \"type\"", where);
    tok_norm n;
    memset(&n, 0, sizeof n);
    if (!strcmp(ty, "Sequence")) {
        json_t *a = json_object_get(j, "normalizers");
        if (!json_is_array(a)) return emoe_errf(err, EMOE_EINVAL, "%s.normalizers: expected an array", where);
        for (size_t i = 0; i < json_array_size(a); i++) {
            char w[256];
            snprintf(w, sizeof w, "%s.normalizers[%zu]", where, i);
            emoe_status st = parse_normalizer(t, json_array_get(a, i), w, depth + 1, err);
            if (st) return st;
        }
        return EMOE_OK;
    }
    if (!strcmp(ty, "NFC")) n.type = TOK_NORM_NFC;
    else if (!strcmp(ty, "NFD")) n.type = TOK_NORM_NFD;
    else if (!strcmp(ty, "NFKC")) n.type = TOK_NORM_NFKC;
    else if (!strcmp(ty, "NFKD")) n.type = TOK_NORM_NFKD;
    else if (!strcmp(ty, "Lowercase")) n.type = TOK_NORM_LOWER;
    else if (!strcmp(ty, "Strip")) {
        n.type = TOK_NORM_STRIP;
        n.left = get_bool(j, "strip_left", 1);
        n.right = get_bool(j, "strip_right", 1);
    } else if (!strcmp(ty, "Prepend")) {
        json_t *p = json_object_get(j, "prepend");
        if (!json_is_string(p)) return emoe_errf(err, EMOE_EINVAL, "%s.prepend: expected a string", where);
        n.type = TOK_NORM_PREPEND;
        n.str_len = json_string_length(p);
        n.str = dupn(json_string_value(p), n.str_len);
        if (!n.str) return emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", where);
    } else if (!strcmp(ty, "Replace")) {
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c)) return emoe_errf(err, EMOE_EINVAL, "%s.content: expected a string", where);
        n.type = TOK_NORM_REPLACE;
        emoe_status st = parse_pattern(json_object_get(j, "pattern"), &n.re, NULL, NULL, where, err);
        if (st) return st;
        n.str_len = json_string_length(c);
        n.str = dupn(json_string_value(c), n.str_len);
        if (!n.str) { pcre2_code_free(n.re); return emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", where); }
    } else {
        return emoe_errf(err, EMOE_EUNSUP, "%s: unsupported normalizer type \"%s\"", where, ty);
    }
    emoe_status st = add_norm(t, &n, err);
    if (st) { free(n.str); pcre2_code_free(n.re); }
    return st;
}

/* ---- pre-tokenizer ---- */

static emoe_status add_pre(tok_tokenizer *t, tok_pre *p, emoe_err *err)
{
    if (t->n_pres >= 64) return emoe_errf(err, EMOE_EUNSUP, "pre_tokenizer: more than 64 steps");
    tok_pre *q = realloc(t->pres, (size_t)(t->n_pres + 1) * sizeof *q);
    if (!q) return emoe_errf(err, EMOE_ENOMEM, "pre_tokenizer: out of memory");
    t->pres = q;
    t->pres[t->n_pres++] = *p;
    return EMOE_OK;
}

static emoe_status parse_scheme(json_t *j, int *scheme, const char *where, emoe_err *err)
{
    json_t *ps = json_object_get(j, "prepend_scheme");
    if (json_is_string(ps)) {
        const char *s = json_string_value(ps);
        if (!strcmp(s, "always")) *scheme = TOK_PREPEND_ALWAYS;
        else if (!strcmp(s, "first")) *scheme = TOK_PREPEND_FIRST;
        else if (!strcmp(s, "never")) *scheme = TOK_PREPEND_NEVER;
        else return emoe_errf(err, EMOE_EINVAL, "%s.prepend_scheme: unknown value \"%s\"", where, s);
    } else {
        *scheme = get_bool(j, "add_prefix_space", 1) ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
    }
    return EMOE_OK;
}

static emoe_status parse_replacement(json_t *j, char *out, size_t *len, const char *where, emoe_err *err)
{
    json_t *r = json_object_get(j, "replacement");
    const char *s = json_is_string(r) ? json_string_value(r) : "\xe2\x96\x81";
    size_t n = json_is_string(r) ? json_string_length(r) : 3;
    if (n == 0 || n > 4 || (size_t)tok_utf8_len((unsigned char)s[0]) != n || tok_utf8_valid(s, n) != n)
        return emoe_errf(err, EMOE_EINVAL, "%s.replacement: expected one character", where);
    memcpy(out, s, n);
    *len = n;
    return EMOE_OK;
}

static emoe_status parse_pretok(tok_tokenizer *t, json_t *j, const char *where, int depth, emoe_err *err)
{
    if (json_is_null(j) || !j) return EMOE_OK;
    if (depth > 8) return emoe_errf(err, EMOE_EUNSUP, "%s: nesting too deep", where);
    const char *ty = type_of(j);
    if (!ty) return emoe_errf(err, EMOE_EINVAL, "%s: missing \"type\"", where);
    tok_pre p;
    memset(&p, 0, sizeof p);
    emoe_status st = EMOE_OK;
    if (!strcmp(ty, "Sequence")) {
        json_t *a = json_object_get(j, "pretokenizers");
        if (!json_is_array(a)) return emoe_errf(err, EMOE_EINVAL, "%s.pretokenizers: expected an array", where);
        for (size_t i = 0; i < json_array_size(a); i++) {
            char w[256];
            snprintf(w, sizeof w, "%s.pretokenizers[%zu]", where, i);
            st = parse_pretok(t, json_array_get(a, i), w, depth + 1, err);
            if (st) return st;
        }
        return EMOE_OK;
    }
    if (!strcmp(ty, "Split")) {
        p.type = TOK_PRE_SPLIT;
        st = parse_pattern(json_object_get(j, "pattern"), &p.re, NULL, NULL, where, err);
        if (st) return st;
        json_t *b = json_object_get(j, "behavior");
        const char *bs = json_is_string(b) ? json_string_value(b) : "";
        if (!strcmp(bs, "Removed")) p.behavior = TOK_SPLIT_REMOVED;
        else if (!strcmp(bs, "Isolated")) p.behavior = TOK_SPLIT_ISOLATED;
        else if (!strcmp(bs, "MergedWithPrevious")) p.behavior = TOK_SPLIT_MERGED_PREV;
        else if (!strcmp(bs, "MergedWithNext")) p.behavior = TOK_SPLIT_MERGED_NEXT;
        else if (!strcmp(bs, "Contiguous")) p.behavior = TOK_SPLIT_CONTIGUOUS;
        else {
            pcre2_code_free(p.re);
            return emoe_errf(err, EMOE_EINVAL, "%s.behavior: unknown value \"%s\"", where, bs);
        }
        p.invert = get_bool(j, "invert", 0);
    } else if (!strcmp(ty, "ByteLevel")) {
        p.type = TOK_PRE_BYTELEVEL;
        p.add_prefix_space = get_bool(j, "add_prefix_space", 1);
        if (get_bool(j, "use_regex", 1)) {
            st = compile_re(gpt2_regex, sizeof gpt2_regex - 1, 0, &p.re, where, err);
            if (st) return st;
        }
        p.behavior = TOK_SPLIT_ISOLATED;
        t->bytelevel = 1;
    } else if (!strcmp(ty, "Metaspace")) {
        p.type = TOK_PRE_METASPACE;
        st = parse_replacement(j, p.repl, &p.repl_len, where, err);
        if (!st) st = parse_scheme(j, &p.prepend_scheme, where, err);
        if (st) return st;
        p.split = get_bool(j, "split", 1);
    } else if (!strcmp(ty, "Digits")) {
        p.type = TOK_PRE_DIGITS;
        int ind = get_bool(j, "individual_digits", 0);
        const char *re = ind ? "\\p{N}" : "\\p{N}+";
        st = compile_re(re, strlen(re), 0, &p.re, where, err);
        if (st) return st;
        p.behavior = TOK_SPLIT_ISOLATED;
    } else if (!strcmp(ty, "Whitespace")) {
        p.type = TOK_PRE_WHITESPACE;
        st = compile_re("\\w+|[^\\w\\s]+", strlen("\\w+|[^\\w\\s]+"), 0, &p.re, where, err);
        if (st) return st;
        p.behavior = TOK_SPLIT_REMOVED;
        p.invert = 1;
    } else if (!strcmp(ty, "WhitespaceSplit")) {
        p.type = TOK_PRE_WSSPLIT;
        st = compile_re("\\s+", strlen("\\s+"), 0, &p.re, where, err);
        if (st) return st;
        p.behavior = TOK_SPLIT_REMOVED;
    } else {
        return emoe_errf(err, EMOE_EUNSUP, "%s: unsupported pre_tokenizer type \"%s\"", where, ty);
    }
    st = add_pre(t, &p, err);
    if (st) pcre2_code_free(p.re);
    return st;
}

/* ---- decoder ---- */

static emoe_status parse_decoder(tok_tokenizer *t, json_t *j, const char *where, int depth, emoe_err *err)
{
    if (json_is_null(j) || !j) return EMOE_OK;
    if (depth > 8) return emoe_errf(err, EMOE_EUNSUP, "%s: nesting too deep", where);
    const char *ty = type_of(j);
    if (!ty) return emoe_errf(err, EMOE_EINVAL, "%s: missing \"type\"", where);
    if (!strcmp(ty, "Sequence")) {
        json_t *a = json_object_get(j, "decoders");
        if (!json_is_array(a)) return emoe_errf(err, EMOE_EINVAL, "%s.decoders: expected an array", where);
        for (size_t i = 0; i < json_array_size(a); i++) {
            char w[256];
            snprintf(w, sizeof w, "%s.decoders[%zu]", where, i);
            emoe_status st = parse_decoder(t, json_array_get(a, i), w, depth + 1, err);
            if (st) return st;
        }
        return EMOE_OK;
    }
    tok_dec d;
    memset(&d, 0, sizeof d);
    if (!strcmp(ty, "ByteLevel")) d.type = TOK_DEC_BYTELEVEL;
    else if (!strcmp(ty, "ByteFallback")) d.type = TOK_DEC_BYTEFALLBACK;
    else if (!strcmp(ty, "Fuse")) d.type = TOK_DEC_FUSE;
    else if (!strcmp(ty, "Strip")) {
        d.type = TOK_DEC_STRIP;
        json_t *c = json_object_get(j, "content"), *a = json_object_get(j, "start"), *b = json_object_get(j, "stop");
        if (!json_is_string(c) || json_string_length(c) == 0 ||
            (size_t)tok_utf8_len((unsigned char)json_string_value(c)[0]) != json_string_length(c))
            return emoe_errf(err, EMOE_EINVAL, "%s.content: expected one character", where);
        tok_utf8_decode(json_string_value(c), json_string_length(c), &d.strip_char);
        if (!json_is_integer(a) || !json_is_integer(b) || json_integer_value(a) < 0 ||
            json_integer_value(b) < 0 || json_integer_value(a) > 1000 || json_integer_value(b) > 1000)
            return emoe_errf(err, EMOE_EINVAL, "%s.start/stop: expected integers in [0, 1000]", where);
        d.start = (int)json_integer_value(a);
        d.stop = (int)json_integer_value(b);
    } else if (!strcmp(ty, "Replace")) {
        d.type = TOK_DEC_REPLACE;
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c)) return emoe_errf(err, EMOE_EINVAL, "%s.content: expected a string", where);
        emoe_status st = parse_pattern(json_object_get(j, "pattern"), NULL, &d.pat, &d.pat_len, where, err);
        if (st) return st;
        if (d.pat_len == 0) { free(d.pat); return emoe_errf(err, EMOE_EINVAL, "%s.pattern: empty", where); }
        d.content_len = json_string_length(c);
        d.content = dupn(json_string_value(c), d.content_len);
        if (!d.content) { free(d.pat); return emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", where); }
    } else if (!strcmp(ty, "Metaspace")) {
        d.type = TOK_DEC_METASPACE;
        emoe_status st = parse_replacement(j, d.repl, &d.repl_len, where, err);
        if (!st) st = parse_scheme(j, &d.prepend_scheme, where, err);
        if (st) return st;
    } else {
        return emoe_errf(err, EMOE_EUNSUP, "%s: unsupported decoder type \"%s\"", where, ty);
    }
    if (t->n_decs >= 64) { free(d.pat); free(d.content); return emoe_errf(err, EMOE_EUNSUP, "decoder: too many steps"); }
    tok_dec *q = realloc(t->decs, (size_t)(t->n_decs + 1) * sizeof *q);
    if (!q) { free(d.pat); free(d.content); return emoe_errf(err, EMOE_ENOMEM, "decoder: out of memory"); }
    t->decs = q;
    t->decs[t->n_decs++] = d;
    return EMOE_OK;
}

/* ---- post-processor (ids around the sequence when add_special) ---- */

static emoe_status post_push(int32_t **a, int *n, int32_t id, emoe_err *err)
{
    if (*n >= 64) return emoe_errf(err, EMOE_EUNSUP, "post_processor: too many special tokens");
    int32_t *p = realloc(*a, (size_t)(*n + 1) * sizeof *p);
    if (!p) return emoe_errf(err, EMOE_ENOMEM, "post_processor: out of memory");
    *a = p;
    p[(*n)++] = id;
    return EMOE_OK;
}

static int32_t lookup_any(const tok_tokenizer *t, const char *s, size_t n)
{
    int32_t id = tok_strmap_get(&t->added_map, s, n);
    return id >= 0 ? id : tok_strmap_get(&t->vocab, s, n);
}

static emoe_status parse_post(tok_tokenizer *t, json_t *j, const char *where, int depth, emoe_err *err)
{
    if (json_is_null(j) || !j) return EMOE_OK;
    if (depth > 8) return emoe_errf(err, EMOE_EUNSUP, "%s: nesting too deep", where);
    const char *ty = type_of(j);
    if (!ty) return emoe_errf(err, EMOE_EINVAL, "%s: missing \"type\"", where);
    if (!strcmp(ty, "ByteLevel")) return EMOE_OK; /* only adjusts offsets */
    if (!strcmp(ty, "Sequence")) {
        json_t *a = json_object_get(j, "processors");
        if (!json_is_array(a)) return emoe_errf(err, EMOE_EINVAL, "%s.processors: expected an array", where);
        for (size_t i = 0; i < json_array_size(a); i++) {
            emoe_status st = parse_post(t, json_array_get(a, i), where, depth + 1, err);
            if (st) return st;
        }
        return EMOE_OK;
    }
    if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
        json_t *cls = json_object_get(j, "cls"), *sep = json_object_get(j, "sep");
        json_t *ci = json_array_get(cls, 1), *si = json_array_get(sep, 1);
        if (!json_is_integer(ci) || !json_is_integer(si))
            return emoe_errf(err, EMOE_EINVAL, "%s.cls/sep: expected [token, id]", where);
        emoe_status st = post_push(&t->post_pre, &t->n_post_pre, (int32_t)json_integer_value(ci), err);
        if (!st) st = post_push(&t->post_post, &t->n_post_post, (int32_t)json_integer_value(si), err);
        return st;
    }
    if (strcmp(ty, "TemplateProcessing"))
        return emoe_errf(err, EMOE_EUNSUP, "%s: unsupported post_processor type \"%s\"", where, ty);
    json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
    if (!json_is_array(single)) return emoe_errf(err, EMOE_EINVAL, "%s.single: expected an array", where);
    int seen_seq = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *e = json_array_get(single, i);
        json_t *sp = json_object_get(e, "SpecialToken");
        if (json_object_get(e, "Sequence")) { seen_seq = 1; continue; }
        json_t *name = json_object_get(sp, "id");
        if (!json_is_string(name)) return emoe_errf(err, EMOE_EINVAL, "%s.single[%zu]: expected SpecialToken or Sequence", where, i);
        json_t *ids = json_object_get(json_object_get(specials, json_string_value(name)), "ids");
        if (!json_is_array(ids)) {
            int32_t id = lookup_any(t, json_string_value(name), json_string_length(name));
            if (id < 0) return emoe_errf(err, EMOE_EINVAL, "%s: special token \"%s\" has no id", where, json_string_value(name));
            emoe_status st = post_push(seen_seq ? &t->post_post : &t->post_pre, seen_seq ? &t->n_post_post : &t->n_post_pre, id, err);
            if (st) return st;
            continue;
        }
        for (size_t k = 0; k < json_array_size(ids); k++) {
            json_t *v = json_array_get(ids, k);
            if (!json_is_integer(v)) return emoe_errf(err, EMOE_EINVAL, "%s.special_tokens: ids must be integers", where);
            emoe_status st = post_push(seen_seq ? &t->post_post : &t->post_pre, seen_seq ? &t->n_post_post : &t->n_post_pre,
                                       (int32_t)json_integer_value(v), err);
            if (st) return st;
        }
    }
    return EMOE_OK;
}

/* ---- model ---- */

static char *arena_add(tok_tokenizer *t, const char *s, size_t n)
{
    if (t->arena_len + n + 1 > t->arena_cap) return NULL; /* sized up front */
    char *p = t->arena + t->arena_len;
    memcpy(p, s, n);
    p[n] = 0;
    t->arena_len += n + 1;
    return p;
}

/* vocab and merges as flat lists, from the fast path or from jansson */
typedef struct raw_model {
    tok_strlist keys;  /* vocab keys */
    int32_t *ids;      /* (keys.count) */
    tok_strlist pairs; /* merges: a0, b0, a1, b1, ... */
} raw_model;

static void raw_free(raw_model *r)
{
    tok_strlist_free(&r->keys);
    tok_strlist_free(&r->pairs);
    free(r->ids);
    memset(r, 0, sizeof *r);
}

/* Fills r from the jansson tree (the slow path), validating types. */
static emoe_status raw_from_json(raw_model *r, json_t *vocab, json_t *merges, emoe_err *err)
{
    size_t nv = json_object_size(vocab), k = 0;
    r->ids = malloc((nv ? nv : 1) * sizeof *r->ids);
    if (!r->ids) return emoe_errf(err, EMOE_ENOMEM, "model.vocab: out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= TOK_MAX_VOCAB)
            return emoe_errf(err, EMOE_EINVAL, "model.vocab[\"%.64s\"]: id must be an integer in [0, %d)", key, TOK_MAX_VOCAB);
        r->ids[k++] = (int32_t)json_integer_value(val);
        if (tok_strlist_push(&r->keys, key, strlen(key))) return emoe_errf(err, EMOE_ENOMEM, "model.vocab: out of memory");
    }
    for (size_t i = 0; i < json_array_size(merges); i++) {
        json_t *m = json_array_get(merges, i);
        int bad = 0;
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *sp = memchr(s, ' ', json_string_length(m));
            if (!sp || memchr(sp + 1, ' ', json_string_length(m) - (size_t)(sp + 1 - s)))
                return emoe_errf(err, EMOE_EINVAL, "model.merges[%zu]: \"%.64s\" is not two tokens separated by one space", i, s);
            bad = tok_strlist_push(&r->pairs, s, (size_t)(sp - s)) ||
                  tok_strlist_push(&r->pairs, sp + 1, json_string_length(m) - (size_t)(sp - s) - 1);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            bad = tok_strlist_push(&r->pairs, json_string_value(json_array_get(m, 0)), json_string_length(json_array_get(m, 0))) ||
                  tok_strlist_push(&r->pairs, json_string_value(json_array_get(m, 1)), json_string_length(json_array_get(m, 1)));
        } else {
            return emoe_errf(err, EMOE_EINVAL, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", i);
        }
        if (bad) return emoe_errf(err, EMOE_ENOMEM, "model.merges: out of memory");
    }
    return EMOE_OK;
}

static emoe_status parse_model_tables(tok_tokenizer *t, json_t *model, raw_model *raw, json_t *added, const int32_t *eff, emoe_err *err);

static emoe_status parse_model(tok_tokenizer *t, json_t *model, json_t *added, raw_model *raw, emoe_err *err)
{
    const char *ty = type_of(model);
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (ty && strcmp(ty, "BPE"))
        return emoe_errf(err, EMOE_EUNSUP, "model.type: unsupported model \"%s\" (only BPE)", ty);
    if (!json_is_object(vocab)) return emoe_errf(err, EMOE_EINVAL, "model.vocab: expected an object");
    if (!json_is_array(merges)) return emoe_errf(err, EMOE_EINVAL, "model.merges: expected an array");
    json_t *cp = json_object_get(model, "continuing_subword_prefix"), *sf = json_object_get(model, "end_of_word_suffix");
    if ((json_is_string(cp) && json_string_length(cp)) || (json_is_string(sf) && json_string_length(sf)))
        return emoe_errf(err, EMOE_EUNSUP, "model: continuing_subword_prefix/end_of_word_suffix are not supported");
    json_t *dr = json_object_get(model, "dropout");
    if (json_is_number(dr) && json_number_value(dr) > 0)
        return emoe_errf(err, EMOE_EUNSUP, "model.dropout: BPE dropout is not supported");
    emoe_status st;
    if (!raw->ids && (st = raw_from_json(raw, vocab, merges, err))) return st;

    /* sizes: arena holds every vocab key and added token content */
    size_t bytes = 0, nv = raw->keys.count;
    int32_t max_id = -1;
    for (size_t i = 0; i < nv; i++) {
        if (raw->ids[i] > max_id) max_id = raw->ids[i];
        bytes += raw->keys.len[i] + 1;
    }
    if (!json_is_array(added) && added && !json_is_null(added))
        return emoe_errf(err, EMOE_EINVAL, "added_tokens: expected an array");
    size_t na = json_array_size(added);
    for (size_t i = 0; i < na; i++) {
        json_t *a = json_array_get(added, i), *id = json_object_get(a, "id"), *c = json_object_get(a, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= TOK_MAX_VOCAB || !json_is_string(c))
            return emoe_errf(err, EMOE_EINVAL, "added_tokens[%zu]: needs an integer id in [0, %d) and a string content", i, TOK_MAX_VOCAB);
        bytes += json_string_length(c) + 1;
    }
    /* The ids added tokens really get. Like tokenizers' AddedVocabulary, the
     * "id" field is not used: a token already in the vocabulary (or added
     * before) keeps that id, any other gets the next id after the model's
     * vocabulary and the added tokens so far. Real files agree with their
     * "id" fields; this only matters for inconsistent ones. Empty contents
     * are not added (-1). */
    int32_t *eff = calloc(na ? na : 1, sizeof *eff);
    tok_strmap vtmp, atmp;
    memset(&vtmp, 0, sizeof vtmp);
    memset(&atmp, 0, sizeof atmp);
    if (!eff || tok_strmap_init(&vtmp, nv) || tok_strmap_init(&atmp, na + 1)) {
        free(eff); tok_strmap_free(&vtmp); tok_strmap_free(&atmp);
        return emoe_errf(err, EMOE_ENOMEM, "added_tokens: out of memory");
    }
    int bad = 0;
    for (size_t i = 0; i < nv && !bad; i++) bad = tok_strmap_put(&vtmp, raw->keys.buf + raw->keys.off[i], raw->keys.len[i], raw->ids[i]);
    int32_t max_added = -1;
    for (size_t i = 0; i < na && !bad; i++) {
        json_t *c = json_object_get(json_array_get(added, i), "content");
        const char *cs = json_string_value(c);
        size_t cl = json_string_length(c);
        int32_t id = cl ? tok_strmap_get(&atmp, cs, cl) : -1;
        if (cl && id < 0) id = tok_strmap_get(&vtmp, cs, cl);
        if (cl && id < 0) id = max_added < 0 ? (int32_t)nv : (max_added >= (int32_t)nv || nv == 0) ? max_added + 1 : (int32_t)nv;
        if (id >= TOK_MAX_VOCAB) bad = 2;
        eff[i] = id;
        if (id >= 0) {
            if (id > max_added) max_added = id;
            if (id > max_id) max_id = id;
            bad = tok_strmap_put(&atmp, cs, cl, id);
        }
    }
    tok_strmap_free(&vtmp);
    tok_strmap_free(&atmp);
    if (bad) { free(eff); return emoe_errf(err, bad == 2 ? EMOE_EINVAL : EMOE_ENOMEM, "added_tokens: %s", bad == 2 ? "too many ids" : "out of memory"); }
    if (max_id < 0) { free(eff); return emoe_errf(err, EMOE_EINVAL, "model.vocab: empty vocabulary"); }
    t->n_vocab = max_id + 1;
    t->arena_cap = bytes + 1;
    t->arena = malloc(t->arena_cap);
    t->piece = calloc((size_t)t->n_vocab, sizeof *t->piece);
    t->piece_len = calloc((size_t)t->n_vocab, sizeof *t->piece_len);
    t->is_special = calloc((size_t)t->n_vocab, 1);
    if (!t->arena || !t->piece || !t->piece_len || !t->is_special || tok_strmap_init(&t->vocab, nv) ||
        tok_strmap_init(&t->added_map, na + 1)) {
        free(eff);
        return emoe_errf(err, EMOE_ENOMEM, "model.vocab: out of memory (%zu entries)", nv);
    }
    st = parse_model_tables(t, model, raw, added, eff, err);
    free(eff);
    return st;
}

/* Fills vocabulary, merges and added tokens (eff: the added tokens' ids). */
static emoe_status parse_model_tables(tok_tokenizer *t, json_t *model, raw_model *raw, json_t *added, const int32_t *eff, emoe_err *err)
{
    size_t nv = raw->keys.count, na = json_array_size(added);
    for (size_t i = 0; i < nv; i++) {
        size_t kl = raw->keys.len[i];
        char *p = arena_add(t, raw->keys.buf + raw->keys.off[i], kl);
        int32_t id = raw->ids[i];
        if (!p || tok_strmap_put(&t->vocab, p, kl, id)) return emoe_errf(err, EMOE_ENOMEM, "model.vocab: out of memory");
        if (!t->piece[id]) { t->piece[id] = p; t->piece_len[id] = (uint32_t)kl; }
    }
    /* merges */
    size_t nm = raw->pairs.count / 2;
    if (tok_pairmap_init(&t->merges, nm)) return emoe_errf(err, EMOE_ENOMEM, "model.merges: out of memory");
    char buf[1024];
    for (size_t i = 0; i < nm; i++) {
        const char *a = raw->pairs.buf + raw->pairs.off[2 * i], *b = raw->pairs.buf + raw->pairs.off[2 * i + 1];
        size_t al = raw->pairs.len[2 * i], bl = raw->pairs.len[2 * i + 1];
        if (al + bl > sizeof buf) return emoe_errf(err, EMOE_EINVAL, "model.merges[%zu]: token too long", i);
        int32_t ia = tok_strmap_get(&t->vocab, a, al), ib = tok_strmap_get(&t->vocab, b, bl);
        memcpy(buf, a, al);
        memcpy(buf + al, b, bl);
        int32_t im = tok_strmap_get(&t->vocab, buf, al + bl);
        if (ia < 0 || ib < 0 || im < 0)
            return emoe_errf(err, EMOE_EINVAL, "model.merges[%zu]: \"%.*s\" + \"%.*s\": token not in the vocabulary", i,
                             (int)(al > 64 ? 64 : al), a, (int)(bl > 64 ? 64 : bl), b);
        if (tok_pairmap_put(&t->merges, ia, ib, (int32_t)i, im)) return emoe_errf(err, EMOE_ENOMEM, "model.merges: out of memory");
    }
    t->byte_fallback = get_bool(model, "byte_fallback", 0);
    t->fuse_unk = get_bool(model, "fuse_unk", 0);
    t->ignore_merges = get_bool(model, "ignore_merges", 0);
    t->unk_id = -1;
    json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) {
        t->unk_id = tok_strmap_get(&t->vocab, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0) return emoe_errf(err, EMOE_EINVAL, "model.unk_token: \"%.64s\" is not in the vocabulary", json_string_value(unk));
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_tok[b] = tok_strmap_get(&t->vocab, s, 6);
    }
    /* added tokens */
    t->added = calloc(na ? na : 1, sizeof *t->added);
    if (!t->added) return emoe_errf(err, EMOE_ENOMEM, "added_tokens: out of memory");
    for (size_t i = 0; i < na; i++) {
        json_t *a = json_array_get(added, i), *c = json_object_get(a, "content");
        tok_added *ad = &t->added[t->n_added];
        if (eff[i] < 0) continue; /* empty content: never added, as in the reference */
        ad->id = eff[i];
        ad->len = json_string_length(c);
        ad->content = arena_add(t, json_string_value(c), ad->len);
        if (!ad->content) return emoe_errf(err, EMOE_ENOMEM, "added_tokens: out of memory");
        ad->special = get_bool(a, "special", 0);
        ad->lstrip = get_bool(a, "lstrip", 0);
        ad->rstrip = get_bool(a, "rstrip", 0);
        ad->single_word = get_bool(a, "single_word", 0);
        ad->normalized = get_bool(a, "normalized", !ad->special);
        t->piece[ad->id] = ad->content;
        t->piece_len[ad->id] = (uint32_t)ad->len;
        t->is_special[ad->id] = (unsigned char)ad->special;
        if (tok_strmap_put(&t->added_map, ad->content, ad->len, ad->id))
            return emoe_errf(err, EMOE_ENOMEM, "added_tokens: out of memory");
        t->n_added++;
    }
    return EMOE_OK;
}

/* Builds the first-byte buckets of one matcher, longest tokens first. */
static emoe_status build_matcher(tok_tokenizer *t, tok_matcher *m, int normalized, emoe_err *err)
{
    for (int i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        if (a->normalized != normalized || a->pat_len == 0) continue;
        unsigned char c = (unsigned char)a->pat[0];
        int32_t *p = realloc(m->by_byte[c], (size_t)(m->n_by_byte[c] + 1) * sizeof *p);
        if (!p) return emoe_errf(err, EMOE_ENOMEM, "added_tokens: out of memory");
        m->by_byte[c] = p;
        int k = m->n_by_byte[c]++;
        while (k > 0 && t->added[p[k - 1]].pat_len < a->pat_len) { p[k] = p[k - 1]; k--; }
        p[k] = i;
        m->any = 1;
    }
    return EMOE_OK;
}

/* ---- tokenizer_config.json ---- */

static char *special_str(json_t *v)
{
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? dupn(json_string_value(v), json_string_length(v)) : NULL;
}

static emoe_status parse_config(tok_tokenizer *t, const char *cfg, size_t len, const char *name, emoe_err *err)
{
    json_error_t je;
    json_t *c = json_loadb(cfg, len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
    if (!c) return emoe_errf(err, EMOE_EINVAL, "%s/tokenizer_config.json: line %d: %s", name, je.line, je.text);
    emoe_status st = EMOE_OK;
    if (!json_is_object(c)) { st = emoe_errf(err, EMOE_EINVAL, "%s/tokenizer_config.json: expected an object", name); goto done; }
    t->bos_str = special_str(json_object_get(c, "bos_token"));
    t->eos_str = special_str(json_object_get(c, "eos_token"));
    t->unk_str = special_str(json_object_get(c, "unk_token"));
    t->pad_str = special_str(json_object_get(c, "pad_token"));
    if (t->bos_str) t->bos_id = lookup_any(t, t->bos_str, strlen(t->bos_str));
    if (t->eos_str) t->eos_id = lookup_any(t, t->eos_str, strlen(t->eos_str));
    /* transformers' Llama/Gemma fast tokenizers rebuild the post-processor at
     * load from add_bos_token / add_eos_token (defaults true / false), so
     * e.g. DeepSeek-V3 (LlamaTokenizerFast, post_processor ByteLevel) gets a
     * BOS with add_special_tokens even though its tokenizer.json adds none. */
    json_t *cls = json_object_get(c, "tokenizer_class");
    if (json_is_string(cls) && (!strncmp(json_string_value(cls), "LlamaTokenizer", 14) ||
                                !strncmp(json_string_value(cls), "CodeLlamaTokenizer", 18) ||
                                !strncmp(json_string_value(cls), "GemmaTokenizer", 14))) {
        int add_bos = get_bool(c, "add_bos_token", 1), add_eos = get_bool(c, "add_eos_token", 0);
        if ((!add_bos || t->bos_id >= 0) && (!add_eos || t->eos_id >= 0)) {
            t->n_post_pre = t->n_post_post = 0;
            if (add_bos && (st = post_push(&t->post_pre, &t->n_post_pre, t->bos_id, err))) goto done;
            if (add_eos && (st = post_push(&t->post_post, &t->n_post_post, t->eos_id, err))) goto done;
        }
    }
    json_t *ct = json_object_get(c, "chat_template");
    if (json_is_array(ct)) { /* [{name, template}]: the "default" one, else the first */
        json_t *pick = NULL;
        for (size_t i = 0; i < json_array_size(ct); i++) {
            json_t *e = json_array_get(ct, i), *n = json_object_get(e, "name");
            if (!pick) pick = e;
            if (json_is_string(n) && !strcmp(json_string_value(n), "default")) { pick = e; break; }
        }
        ct = json_object_get(pick, "template");
    }
    if (json_is_string(ct)) {
        t->chat_template = dupn(json_string_value(ct), json_string_length(ct));
        if (!t->chat_template) st = emoe_errf(err, EMOE_ENOMEM, "chat_template: out of memory");
    } else if (ct && !json_is_null(ct)) {
        st = emoe_errf(err, EMOE_EINVAL, "%s/tokenizer_config.json: chat_template: expected a string", name);
    }
done:
    json_decref(c);
    return st;
}

emoe_status tok_load_json(const char *tj, size_t len, const char *cfg, size_t cfg_len, const char *name,
                          tok_tokenizer **out, emoe_err *err)
{
    *out = NULL;
    if (!name) name = "tokenizer";
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return emoe_errf(err, EMOE_ENOMEM, "tokenizer: out of memory");
    pthread_mutex_init(&t->cache_mu, NULL);
    t->bos_id = t->eos_id = -1;
    t->unk_id = -1;
    emoe_status st;
    json_error_t je;
    raw_model raw;
    memset(&raw, 0, sizeof raw);
    json_t *j = NULL;
    char *rest = NULL;
    size_t rest_len = 0;
    if (tok_json_fast_model(tj, len, &raw.keys, &raw.ids, &raw.pairs, &rest, &rest_len)) {
        j = json_loadb(rest, rest_len, JSON_ALLOW_NUL, &je);
        free(rest);
        if (!j) raw_free(&raw); /* report the error against the original text */
    }
    if (!j) j = json_loadb(tj, len, JSON_ALLOW_NUL, &je);
    if (!j) { st = emoe_errf(err, EMOE_EINVAL, "line %d column %d: %s", je.line, je.column, je.text); goto fail; }
    if (!json_is_object(j)) { st = emoe_errf(err, EMOE_EINVAL, "expected a JSON object"); goto fail; }
    json_t *tr = json_object_get(j, "truncation"), *pd = json_object_get(j, "padding");
    (void)tr; (void)pd; /* request-level concerns: the server bounds lengths itself */
    json_t *model = json_object_get(j, "model");
    if (!json_is_object(model)) { st = emoe_errf(err, EMOE_EINVAL, "model: expected an object"); goto fail; }
    st = parse_model(t, model, json_object_get(j, "added_tokens"), &raw, err);
    if (!st) st = parse_normalizer(t, json_object_get(j, "normalizer"), "normalizer", 0, err);
    if (!st) st = parse_pretok(t, json_object_get(j, "pre_tokenizer"), "pre_tokenizer", 0, err);
    if (!st && t->bytelevel && t->pres[t->n_pres - 1].type != TOK_PRE_BYTELEVEL)
        st = emoe_errf(err, EMOE_EUNSUP, "pre_tokenizer: ByteLevel must be the last pre-tokenizer");
    if (!st) st = parse_decoder(t, json_object_get(j, "decoder"), "decoder", 0, err);
    if (!st) st = parse_post(t, json_object_get(j, "post_processor"), "post_processor", 0, err);
    /* normalized added tokens are matched in their normalized form */
    for (int i = 0; i < t->n_added && !st; i++) {
        tok_added *a = &t->added[i];
        a->pat = a->content;
        a->pat_len = a->len;
        if (!a->normalized || !t->n_norms) continue;
        st = tok_normalize_str(t, a->content, a->len, &a->pat, &a->pat_len, err);
        if (st) { a->pat = NULL; a->pat_len = 0; emoe_err_prefix(err, "added_tokens[%d]", i); break; }
        a->pat_owned = 1;
        /* and, as in tokenizers 0.2x, that normalized text is also the token
         * string that decoding produces for the id */
        t->piece[a->id] = a->pat;
        t->piece_len[a->id] = (uint32_t)a->pat_len;
    }
    if (!st) st = build_matcher(t, &t->match_raw, 0, err);
    if (!st) st = build_matcher(t, &t->match_norm, 1, err);
    if (st) goto fail;
    if (t->bytelevel) {
        uint32_t b2c[256];
        tok_bytelevel_tables(b2c);
        for (int b = 0; b < 256; b++) {
            char s[4];
            int n = tok_utf8_encode(b2c[b], s);
            t->bl_char_id[b] = tok_strmap_get(&t->vocab, s, (size_t)n);
        }
    }
    for (int id = 0; id < t->n_vocab; id++)
        if (t->piece[id] && t->piece_len[id] > t->max_piece_len) t->max_piece_len = t->piece_len[id];
    if (cfg) {
        st = parse_config(t, cfg, cfg_len, name, err);
        if (st) { json_decref(j); raw_free(&raw); tok_free(t); return st; }
    }
    json_decref(j);
    raw_free(&raw);
    *out = t;
    return EMOE_OK;
fail:
    json_decref(j);
    raw_free(&raw);
    emoe_err_prefix(err, "%s/tokenizer.json", name);
    tok_free(t);
    return st;
}

static char *slurp(const char *path, size_t *len, emoe_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) { emoe_errf(err, errno == ENOENT ? EMOE_ENOTFOUND : EMOE_EIO, "%s: %s", path, strerror(errno)); return NULL; }
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            size_t nc = cap ? cap * 2 : 1 << 20;
            char *p = realloc(b, nc + 1);
            if (!p) { free(b); fclose(f); emoe_errf(err, EMOE_ENOMEM, "%s: out of memory", path); return NULL; }
            b = p;
            cap = nc;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(b); emoe_errf(err, EMOE_EIO, "%s: read error", path); return NULL; }
    b[n] = 0;
    *len = n;
    return b;
}

emoe_status tok_load_dir(const char *dir, tok_tokenizer **out, emoe_err *err)
{
    *out = NULL;
    char path[4096];
    size_t tl = 0, cl = 0, jl = 0;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *tj = slurp(path, &tl, err);
    if (!tj) return err ? err->code : EMOE_EIO;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    emoe_err e2;
    char *cj = slurp(path, &cl, &e2);
    if (!cj && e2.code != EMOE_ENOTFOUND) { free(tj); if (err) *err = e2; return e2.code; }
    emoe_status st = tok_load_json(tj, tl, cj, cl, dir, out, err);
    free(tj);
    free(cj);
    if (st) return st;
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    char *jt = slurp(path, &jl, &e2);
    if (jt) {
        free((*out)->chat_template);
        (*out)->chat_template = jt;
    } else if (e2.code != EMOE_ENOTFOUND) {
        tok_free(*out);
        *out = NULL;
        if (err) *err = e2;
        return e2.code;
    }
    return EMOE_OK;
}

void tok_free(tok_tokenizer *t)
{
    if (!t) return;
    free(t->piece);
    free(t->piece_len);
    free(t->is_special);
    free(t->arena);
    tok_strmap_free(&t->vocab);
    tok_strmap_free(&t->added_map);
    tok_pairmap_free(&t->merges);
    for (int i = 0; i < t->n_norms; i++) { free(t->norms[i].str); pcre2_code_free(t->norms[i].re); }
    free(t->norms);
    for (int i = 0; i < t->n_pres; i++) pcre2_code_free(t->pres[i].re);
    free(t->pres);
    for (int i = 0; i < t->n_decs; i++) { free(t->decs[i].pat); free(t->decs[i].content); }
    free(t->decs);
    for (int i = 0; t->added && i < t->n_added; i++)
        if (t->added[i].pat_owned) free(t->added[i].pat);
    free(t->added);
    for (int c = 0; c < 256; c++) { free(t->match_raw.by_byte[c]); free(t->match_norm.by_byte[c]); }
    free(t->post_pre);
    free(t->post_post);
    free(t->bos_str);
    free(t->eos_str);
    free(t->unk_str);
    free(t->pad_str);
    free(t->chat_template);
    tok_cache_free(t);
    pthread_mutex_destroy(&t->cache_mu);
    free(t);
}

int tok_vocab_size(const tok_tokenizer *t) { return t->n_vocab; }
int tok_bos(const tok_tokenizer *t) { return t->bos_id; }
int tok_eos(const tok_tokenizer *t) { return t->eos_id; }
const char *tok_bos_str(const tok_tokenizer *t) { return t->bos_str; }
const char *tok_eos_str(const tok_tokenizer *t) { return t->eos_str; }
const char *tok_chat_template(const tok_tokenizer *t) { return t->chat_template; }

const char *tok_id_to_piece(const tok_tokenizer *t, int id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab || !t->piece[id]) { if (len) *len = 0; return NULL; }
    if (len) *len = t->piece_len[id];
    return t->piece[id];
}

int tok_piece_to_id(const tok_tokenizer *t, const char *s, size_t len) { return lookup_any(t, s, len); }

int tok_is_special(const tok_tokenizer *t, int id)
{
    return id >= 0 && id < t->n_vocab && t->is_special[id];
}
