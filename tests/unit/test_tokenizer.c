/*
 * test_tokenizer.c — the tokenizer against Hugging Face tokenizers' own output
 * (../shared/fixtures/reference/tokenizer_*.json): every case's text encodes to
 * exactly its ids and the ids decode to exactly its decoded text, one-shot and
 * streaming. Plus a property test on random UTF-8 (emoji, CJK, combining
 * marks, whitespace runs): decode(encode(s)) == NFC(s) for the byte-level
 * tokenizers and streaming == one-shot for all three, and error-path tests.
 */
#include <pthread.h>
#include <stdint.h>
#include <utf8proc.h>

#include "engine/tok_internal.h"
#include "engine/tokenizer.h"
#include "tests/unit/testutil.h"

typedef struct ref {
    const char *name, *ref_file, *tok_dir;
} ref;

static const ref REFS[] = {
    {"qwen3", "fixtures/reference/tokenizer_qwen3.json", "fixtures/models/tiny-qwen3-moe"},
    {"llama2", "fixtures/reference/tokenizer_llama2.json", "fixtures/tokenizers/llama2"},
    {"deepseek_v3", "fixtures/reference/tokenizer_deepseek_v3.json", "fixtures/tokenizers/deepseek_v3"},
};
#define NREFS 3

static tok_tokenizer *toks[NREFS];
static json_t *refs[NREFS];
static int have_shared;

static char load_errors[4096];

/* Runs once in the parent process (unchecked fixture) so the forked tests
 * share the loaded tokenizers. */
static void setup_all(void)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("tokenizer reference tests"); return; }
    have_shared = 1;
    for (int i = 0; i < NREFS; i++) {
        emoe_err err = {0};
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", tu_shared_path(REFS[i].tok_dir));
        if (tok_load_dir(dir, &toks[i], &err) != EMOE_OK)
            snprintf(load_errors + strlen(load_errors), sizeof load_errors - strlen(load_errors), "%s: %s; ", REFS[i].name, err.msg);
        json_error_t je;
        refs[i] = json_load_file(tu_shared_path(REFS[i].ref_file), JSON_ALLOW_NUL, &je);
        if (!refs[i])
            snprintf(load_errors + strlen(load_errors), sizeof load_errors - strlen(load_errors), "%s: %s; ", REFS[i].ref_file, je.text);
    }
}

static void teardown_all(void)
{
    for (int i = 0; i < NREFS; i++) {
        tok_free(toks[i]);
        json_decref(refs[i]);
        toks[i] = NULL;
        refs[i] = NULL;
    }
}

static void load_all(void)
{
    ck_assert_msg(load_errors[0] == 0, "%s", load_errors);
}

static void stream_decode(tok_tokenizer *t, const int32_t *ids, size_t n, int skip, char **out, size_t *len)
{
    tok_detok d;
    tok_detok_init(&d, t, skip);
    char *o = NULL;
    size_t ol = 0, oc = 0;
    emoe_err err = {0};
    for (size_t i = 0; i < n; i++) {
        size_t before = ol;
        ck_assert_msg(tok_detok_push(&d, ids[i], &o, &ol, &oc, &err) == EMOE_OK, "%s", err.msg);
        /* never an incomplete UTF-8 sequence in what was emitted so far */
        ck_assert_msg(o != NULL, "push must allocate the buffer");
        (void)before;
        int bad = 0;
        for (size_t k = 0; k < ol;) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)o + k, (utf8proc_ssize_t)(ol - k), &cp);
            if (l <= 0) { bad = 1; break; }
            k += (size_t)l;
        }
        ck_assert_msg(!bad, "streamed output is not valid UTF-8 after token %zu", i);
    }
    ck_assert(tok_detok_flush(&d, &o, &ol, &oc, &err) == EMOE_OK);
    tok_detok_free(&d);
    *out = o;
    *len = ol;
}

static void check_cases(int r)
{
    load_all();
    if (!have_shared) return;
    json_t *cases = json_object_get(refs[r], "cases");
    ck_assert(json_array_size(cases) > 10);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        json_t *text = json_object_get(c, "text"), *ids = json_object_get(c, "ids"), *dec = json_object_get(c, "decoded");
        int32_t *got = NULL;
        size_t n = 0;
        emoe_err err = {0};
        emoe_status st = tok_encode(toks[r], json_string_value(text), json_string_length(text), 0, &got, &n, &err);
        ck_assert_msg(st == EMOE_OK, "%s case %zu: %s", REFS[r].name, i, err.msg);
        size_t want_n = json_array_size(ids);
        int same = n == want_n;
        for (size_t k = 0; same && k < n; k++) same = got[k] == json_integer_value(json_array_get(ids, k));
        if (!same) {
            char msg[2048];
            int off = snprintf(msg, sizeof msg, "%s case %zu %s: got", REFS[r].name, i, json_string_value(text));
            for (size_t k = 0; k < n && off < 1900; k++) off += snprintf(msg + off, sizeof msg - (size_t)off, " %d", got[k]);
            off += snprintf(msg + off, sizeof msg - (size_t)off, " want");
            for (size_t k = 0; k < want_n && off < 2000; k++)
                off += snprintf(msg + off, sizeof msg - (size_t)off, " %d", (int)json_integer_value(json_array_get(ids, k)));
            ck_abort_msg("%s", msg);
        }
        char *out = NULL;
        size_t ol = 0;
        ck_assert(tok_decode(toks[r], got, n, 0, &out, &ol, &err) == EMOE_OK);
        ck_assert_msg(ol == json_string_length(dec) && !memcmp(out, json_string_value(dec), ol),
                      "%s case %zu decode: got '%s' want '%s'", REFS[r].name, i, out, json_string_value(dec));
        char *sout = NULL;
        size_t sl = 0;
        stream_decode(toks[r], got, n, 0, &sout, &sl);
        ck_assert_msg(sl == ol && !memcmp(sout, out, ol), "%s case %zu stream: got '%s' want '%s'", REFS[r].name, i, sout, out);
        free(sout);
        free(out);
        free(got);
    }
}

START_TEST(test_qwen3_cases) { check_cases(0); }
END_TEST
START_TEST(test_llama2_cases) { check_cases(1); }
END_TEST
START_TEST(test_deepseek_cases) { check_cases(2); }
END_TEST

/* ---- property test ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static size_t put_cp(char *o, uint32_t cp)
{
    utf8proc_uint8_t b[4];
    utf8proc_ssize_t n = utf8proc_encode_char((utf8proc_int32_t)cp, b);
    memcpy(o, b, (size_t)n);
    return (size_t)n;
}

/* Random valid UTF-8 mixing ASCII words, digits, whitespace runs, CJK, emoji
 * (with ZWJ and skin tones), combining marks, Latin-1 and rare planes. */
static size_t random_text(char *o, size_t max_chars)
{
    size_t n = 0, chars = 1 + rnd() % max_chars;
    for (size_t i = 0; i < chars; i++) {
        uint32_t k = rnd() % 14, cp;
        switch (k) {
        case 0: case 1: case 2: cp = 'a' + rnd() % 26; break;
        case 3: cp = "  \t\n\r"[rnd() % 5]; break;
        case 4: cp = '0' + rnd() % 10; break;
        case 5: cp = 0x4e00 + rnd() % 0x5000; break;           /* CJK */
        case 6: cp = 0x1f600 + rnd() % 0x50; break;            /* emoji */
        case 7: cp = 0x300 + rnd() % 0x70; break;              /* combining marks */
        case 8: cp = 0xa0 + rnd() % 0x160; break;              /* Latin-1, Latin ext */
        case 9: cp = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"[rnd() % 32]; break;
        case 10: cp = rnd() % 2 ? 0x200d : 0x1f3fb + rnd() % 5; break; /* ZWJ, skin tone */
        case 11: cp = 0x400 + rnd() % 0x100; break;            /* Cyrillic */
        case 12: cp = 0xac00 + rnd() % 0x2000; break;          /* Hangul */
        default: cp = 1 + rnd() % 0x2ffff; break;              /* anything */
        }
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0) cp = 'x';
        n += put_cp(o + n, cp);
    }
    o[n] = 0;
    return n;
}

/* expect: 0 = only streaming == one-shot; 1 = round trip gives NFC(s) (Qwen3
 * normalizes NFC); 2 = round trip gives s (DeepSeek-V3 has no normalizer). */
static void property(int r, int expect)
{
    load_all();
    if (!have_shared) return;
    char text[4096];
    for (int iter = 0; iter < 300; iter++) {
        size_t len = random_text(text, 200);
        int32_t *ids = NULL;
        size_t n = 0;
        emoe_err err = {0};
        ck_assert_msg(tok_encode(toks[r], text, len, 0, &ids, &n, &err) == EMOE_OK, "%s", err.msg);
        char *out = NULL, *sout = NULL;
        size_t ol = 0, sl = 0;
        ck_assert(tok_decode(toks[r], ids, n, 0, &out, &ol, &err) == EMOE_OK);
        if (expect) {
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t nl = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &nfc,
                                               (utf8proc_option_t)(UTF8PROC_STABLE | (expect == 1 ? UTF8PROC_COMPOSE : 0)));
            ck_assert(nl >= 0);
            ck_assert_msg((size_t)nl == ol && !memcmp(nfc, out, ol), "%s: round trip of '%s' gave '%s'", REFS[r].name, text, out);
            free(nfc);
        }
        stream_decode(toks[r], ids, n, 0, &sout, &sl);
        ck_assert_msg(sl == ol && !memcmp(sout, out, ol), "%s: stream '%s' != decode '%s'", REFS[r].name, sout, out);
        free(sout);
        free(out);
        free(ids);
    }
}

/* Several threads encoding through one tokenizer (shared piece cache) get the
 * same ids as a single thread. */
typedef struct thr_arg {
    tok_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    int rc;
} thr_arg;

static void *thr_encode(void *p)
{
    thr_arg *a = p;
    for (int k = 0; k < 20 && a->rc == 0; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (tok_encode(a->t, a->text, a->len, 0, &ids, &n, NULL) != EMOE_OK || n != a->n || memcmp(ids, a->ids, n * sizeof *ids))
            a->rc = 1;
        free(ids);
    }
    return NULL;
}

START_TEST(test_threads)
{
    load_all();
    if (!have_shared) return;
    char text[4][4096];
    thr_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        size_t len = random_text(text[i], 400);
        args[i] = (thr_arg){toks[i % 3], text[i], len, NULL, 0, 0};
        ck_assert(tok_encode(toks[i % 3], text[i], len, 0, &args[i].ids, &args[i].n, NULL) == EMOE_OK);
    }
    for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, thr_encode, &args[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(args[i].rc, 0);
        free(args[i].ids);
    }
}
END_TEST

START_TEST(test_property_qwen3) { property(0, 1); }
END_TEST
START_TEST(test_property_deepseek) { property(2, 2); }
END_TEST
START_TEST(test_property_llama2_stream) { property(1, 0); }
END_TEST

/* Byte-fallback pieces completing one character across several tokens: the
 * streamer must hold them and emit the character once complete. */
START_TEST(test_stream_byte_fallback_holds)
{
    load_all();
    if (!have_shared) return;
    tok_tokenizer *t = toks[1];
    int32_t ids[4];
    const char *bytes[] = {"<0xF0>", "<0x9F>", "<0x98>", "<0x80>"}; /* U+1F600 */
    for (int i = 0; i < 4; i++) {
        ids[i] = tok_piece_to_id(t, bytes[i], 6);
        ck_assert_int_ge(ids[i], 0);
    }
    tok_detok d;
    tok_detok_init(&d, t, 0);
    char *o = NULL;
    size_t ol = 0, oc = 0;
    for (int i = 0; i < 3; i++) {
        ck_assert(tok_detok_push(&d, ids[i], &o, &ol, &oc, NULL) == EMOE_OK);
        ck_assert_uint_eq(ol, 0);
    }
    ck_assert(tok_detok_push(&d, ids[3], &o, &ol, &oc, NULL) == EMOE_OK);
    ck_assert_uint_eq(ol, 4);
    ck_assert(!memcmp(o, "\xf0\x9f\x98\x80", 4));
    /* an unfinished character at the end becomes U+FFFD, as decode does */
    ck_assert(tok_detok_push(&d, ids[0], &o, &ol, &oc, NULL) == EMOE_OK);
    ck_assert_uint_eq(ol, 4);
    ck_assert(tok_detok_flush(&d, &o, &ol, &oc, NULL) == EMOE_OK);
    ck_assert_str_eq(o + 4, "\xef\xbf\xbd");
    char *one = NULL;
    int32_t five[5] = {ids[0], ids[1], ids[2], ids[3], ids[0]};
    ck_assert(tok_decode(t, five, 5, 0, &one, NULL, NULL) == EMOE_OK);
    /* decode replaces the whole invalid run of 5 byte tokens, one per byte */
    ck_assert_str_eq(one, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    free(one);
    free(o);
    tok_detok_free(&d);
}
END_TEST

/* NFC normalization passes ASCII stretches through and normalizes only the
 * runs around non-ASCII text; compositions that start with an ASCII letter,
 * mark reordering and Hangul must come out as NFC of the whole string. */
START_TEST(test_nfc_boundaries)
{
    load_all();
    if (!have_shared) return;
    const char *cases[] = {
        "cafe\xcc\x81 ok", "e\xcc\x81", "x a\xcc\xa7\xcc\x81 b", "A\xcc\x8a\xcc\xa3z", "\xe1\x84\x80\xe1\x85\xa1 ok",
        "ab\xcc\x81" "c\xcc\x81\xcc\x81" "d", "\xef\xac\x81 fi", "o\xcc\x88\xcc\x81 \xcc\x81",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        ck_assert(tok_encode(toks[0], cases[i], strlen(cases[i]), 0, &ids, &n, NULL) == EMOE_OK);
        char *out = NULL;
        ck_assert(tok_decode(toks[0], ids, n, 0, &out, NULL, NULL) == EMOE_OK);
        utf8proc_uint8_t *nfc = utf8proc_NFC((const utf8proc_uint8_t *)cases[i]);
        ck_assert_msg(!strcmp((char *)nfc, out), "case %zu: got '%s' want '%s'", i, out, (char *)nfc);
        free(nfc);
        free(out);
        free(ids);
    }
}
END_TEST

START_TEST(test_special_ids_and_skip)
{
    load_all();
    if (!have_shared) return;
    tok_tokenizer *q = toks[0];
    ck_assert_int_eq(tok_vocab_size(q), 151669);
    ck_assert_int_eq(tok_eos(q), 151645);
    ck_assert_int_eq(tok_bos(q), -1);
    ck_assert_int_eq(tok_bos(toks[1]), 1);
    ck_assert_int_eq(tok_eos(toks[1]), 2);
    ck_assert_int_eq(tok_bos(toks[2]), 0);
    ck_assert(tok_is_special(q, 151644));
    int32_t ids[] = {151644, 872, 198, 6023, 151645};
    char *s = NULL;
    ck_assert(tok_decode(q, ids, 5, 1, &s, NULL, NULL) == EMOE_OK);
    ck_assert_str_eq(s, "user\nhi");
    free(s);
    /* add_special on llama2 prepends <s> (TemplateProcessing) */
    int32_t *got = NULL;
    size_t n = 0;
    ck_assert(tok_encode(toks[1], "Hello", 5, 1, &got, &n, NULL) == EMOE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(got[0], 1);
    ck_assert_int_eq(got[1], 22557);
    free(got);
    /* DeepSeek-V3 is a LlamaTokenizerFast with add_bos_token: BOS 0 first, as
     * transformers adds it; Qwen3 adds nothing */
    ck_assert(tok_encode(toks[2], "Hello", 5, 1, &got, &n, NULL) == EMOE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(got[0], 0);
    ck_assert_int_eq(got[1], 19923);
    free(got);
    ck_assert(tok_encode(q, "Hello", 5, 1, &got, &n, NULL) == EMOE_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(got[0], 9707);
    free(got);
    /* ids without a token are skipped, as tokenizers' decode does (Qwen3's
     * embedding has 151936 rows for 151669 tokens) */
    int32_t bad[] = {5, 999999, -1, 151800, 9707};
    emoe_err err = {0};
    ck_assert(tok_decode(q, bad, 5, 0, &s, NULL, &err) == EMOE_OK);
    ck_assert_str_eq(s, "&Hello");
    free(s);
    char *st = NULL;
    size_t sl = 0;
    stream_decode(q, bad, 5, 0, &st, &sl);
    ck_assert_str_eq(st, "&Hello");
    free(st);
    /* invalid UTF-8 input is rejected with the byte offset */
    ck_assert(tok_encode(q, "ab\xff", 3, 0, &got, &n, &err) == EMOE_EINVAL);
    ck_assert(strstr(err.msg, "byte 2") != NULL);
}
END_TEST

START_TEST(test_tiny_moe_7task_loads)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("tiny-moe-7task tokenizer"); return; }
    tok_tokenizer *t = NULL;
    emoe_err err = {0};
    ck_assert_msg(tok_load_dir(tu_shared_path("models/tiny-moe-7task"), &t, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(tok_vocab_size(t), 32000);
    int32_t *ids = NULL;
    size_t n = 0;
    ck_assert(tok_encode(t, "Hello world", 11, 0, &ids, &n, NULL) == EMOE_OK);
    ck_assert_uint_eq(n, 2);
    char *s = NULL;
    ck_assert(tok_decode(t, ids, n, 0, &s, NULL, NULL) == EMOE_OK);
    ck_assert_str_eq(s, "Hello world");
    free(s);
    free(ids);
    tok_free(t);
}
END_TEST

/* The fast vocab/merges decoder (tok_json.c) gives exactly what jansson gives
 * for the three real tokenizer.json files, and the rest of the file parses to
 * the same members. */
START_TEST(test_fast_json_equals_jansson)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("fast JSON path test"); return; }
    for (int r = 0; r < NREFS; r++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", tu_shared_path(REFS[r].tok_dir));
        size_t len = 0;
        char *text = tu_read_file(path, &len);
        ck_assert(text != NULL);
        tok_strlist keys, pairs;
        int32_t *ids = NULL;
        char *rest = NULL;
        size_t rest_len = 0;
        ck_assert_msg(tok_json_fast_model(text, len, &keys, &ids, &pairs, &rest, &rest_len) == 1, "%s: fast path declined", path);
        json_error_t je;
        json_t *full = json_loadb(text, len, JSON_ALLOW_NUL, &je), *part = json_loadb(rest, rest_len, JSON_ALLOW_NUL, &je);
        ck_assert(full && part);
        json_t *vocab = json_object_get(json_object_get(full, "model"), "vocab");
        json_t *merges = json_object_get(json_object_get(full, "model"), "merges");
        ck_assert_uint_eq(keys.count, json_object_size(vocab));
        size_t i = 0;
        const char *k;
        json_t *v;
        json_object_foreach(vocab, k, v) {
            ck_assert_uint_eq(keys.len[i], strlen(k));
            ck_assert(!memcmp(keys.buf + keys.off[i], k, keys.len[i]));
            ck_assert_int_eq(ids[i], json_integer_value(v));
            i++;
        }
        ck_assert_uint_eq(pairs.count, 2 * json_array_size(merges));
        for (i = 0; i < json_array_size(merges); i++) {
            json_t *m = json_array_get(merges, i);
            char joined[2048];
            if (json_is_string(m)) snprintf(joined, sizeof joined, "%s", json_string_value(m));
            else snprintf(joined, sizeof joined, "%s %s", json_string_value(json_array_get(m, 0)), json_string_value(json_array_get(m, 1)));
            char mine[2048];
            snprintf(mine, sizeof mine, "%s %s", pairs.buf + pairs.off[2 * i], pairs.buf + pairs.off[2 * i + 1]);
            ck_assert_str_eq(mine, joined);
        }
        /* everything but vocab/merges is unchanged */
        json_object_del(json_object_get(full, "model"), "vocab");
        json_object_del(json_object_get(full, "model"), "merges");
        json_object_del(json_object_get(part, "model"), "vocab");
        json_object_del(json_object_get(part, "model"), "merges");
        ck_assert(json_equal(full, part));
        json_decref(full);
        json_decref(part);
        free(rest);
        free(ids);
        tok_strlist_free(&keys);
        tok_strlist_free(&pairs);
        free(text);
    }
    /* malformed inputs are declined (the loader then reports jansson's error) */
    const char *bad[] = {"{\"model\":{\"vocab\":{\"a\":01},\"merges\":[]}}", "{\"model\":{\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}",
                         "{\"model\":{\"vocab\":{\"a\\u0000\":0},\"merges\":[]}}", "{\"model\":{\"vocab\":{\"a\":0},\"merges\":[\"a\",[\"a\",\"a\"]]}}",
                         "{\"model\":{\"vocab\":{\"\xff\":0},\"merges\":[]}}", "{\"model\":{\"vocab\":{}}}", "{\"model\":{\"vocab\":{\"a\":0},\"merges\":[\"a b\"",
                         "[]", ""};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        tok_strlist keys, pairs;
        int32_t *ids = NULL;
        char *rest = NULL;
        size_t rl;
        ck_assert_msg(tok_json_fast_model(bad[b], strlen(bad[b]), &keys, &ids, &pairs, &rest, &rl) == 0, "accepted %s", bad[b]);
        ck_assert_ptr_null(rest);
        ck_assert_ptr_null(ids);
    }
    /* and the loader still gives jansson's verdict on them */
    tok_tokenizer *t = NULL;
    emoe_err err = {0};
    ck_assert_int_eq(tok_load_json(bad[0], strlen(bad[0]), NULL, 0, "x", &t, &err), EMOE_EINVAL);
    ck_assert_int_eq(tok_load_json(bad[6], strlen(bad[6]), NULL, 0, "x", &t, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "line 1") != NULL, "%s", err.msg);
}
END_TEST

/* Small tokenizers exercising the components the real fixtures do not
 * (tests/data/tok_synth_cases.json, generated by the Hugging Face tokenizers
 * library 0.23.2 itself via tests/data/gen_tok_cases.js): every encode, with
 * and without special tokens, and every decode must match. */
static void ids_eq(json_t *want, const int32_t *got, size_t n, const char *what, const char *name, const char *text)
{
    int same = n == json_array_size(want);
    for (size_t k = 0; same && k < n; k++) same = got[k] == json_integer_value(json_array_get(want, k));
    if (!same) {
        char msg[1024];
        int off = snprintf(msg, sizeof msg, "%s %s '%s': got", name, what, text);
        for (size_t k = 0; k < n && off < 900; k++) off += snprintf(msg + off, sizeof msg - (size_t)off, " %d", got[k]);
        char *w = json_dumps(want, JSON_COMPACT);
        ck_abort_msg("%s want %s", msg, w);
    }
}

static void decode_eq(tok_tokenizer *t, const int32_t *ids, size_t n, int skip, json_t *want, const char *name)
{
    char *out = NULL, *sout = NULL;
    size_t ol = 0, sl = 0;
    emoe_err err = {0};
    ck_assert_msg(tok_decode(t, ids, n, skip, &out, &ol, &err) == EMOE_OK, "%s: %s", name, err.msg);
    ck_assert_msg(ol == json_string_length(want) && !memcmp(out, json_string_value(want), ol),
                  "%s decode(skip=%d): got '%s' want '%s'", name, skip, out, json_string_value(want));
    if (!memmem(out, ol, "\xef\xbf\xbd", 3)) {
        stream_decode(t, ids, n, skip, &sout, &sl);
        ck_assert_msg(sl == ol && !memcmp(sout, out, ol), "%s stream(skip=%d): got '%s' want '%s'", name, skip, sout, out);
        free(sout);
    }
    free(out);
}

START_TEST(test_synthetic_vs_hf)
{
    json_error_t je;
    json_t *d = json_load_file("tests/data/tok_synth_cases.json", JSON_ALLOW_NUL, &je);
    ck_assert_msg(d != NULL, "tests/data/tok_synth_cases.json: %s (run from the repository root)", je.text);
    json_t *all = json_object_get(d, "tokenizers");
    ck_assert_uint_ge(json_array_size(all), 9);
    size_t ti, i;
    json_t *tj, *c;
    int n_cases = 0;
    json_array_foreach(all, ti, tj) {
        const char *name = json_string_value(json_object_get(tj, "name"));
        json_t *js = json_object_get(tj, "json");
        tok_tokenizer *t = NULL;
        emoe_err err = {0};
        ck_assert_msg(tok_load_json(json_string_value(js), json_string_length(js), NULL, 0, name, &t, &err) == EMOE_OK,
                      "%s: %s", name, err.msg);
        json_array_foreach(json_object_get(tj, "cases"), i, c) {
            const char *text = json_string_value(json_object_get(c, "text"));
            int32_t *ids = NULL;
            size_t n = 0;
            ck_assert_msg(tok_encode(t, text, strlen(text), 0, &ids, &n, &err) == EMOE_OK, "%s: %s", name, err.msg);
            ids_eq(json_object_get(c, "ids"), ids, n, "ids", name, text);
            free(ids);
            ck_assert(tok_encode(t, text, strlen(text), 1, &ids, &n, &err) == EMOE_OK);
            ids_eq(json_object_get(c, "ids_special"), ids, n, "ids with special tokens", name, text);
            decode_eq(t, ids, n, 0, json_object_get(c, "decoded"), name);
            decode_eq(t, ids, n, 1, json_object_get(c, "decoded_skip"), name);
            free(ids);
            n_cases++;
        }
        json_array_foreach(json_object_get(tj, "decodes"), i, c) {
            json_t *wid = json_object_get(c, "ids");
            int32_t ids[64];
            size_t n = json_array_size(wid);
            ck_assert_uint_le(n, 64);
            for (size_t k = 0; k < n; k++) ids[k] = (int32_t)json_integer_value(json_array_get(wid, k));
            decode_eq(t, ids, n, 0, json_object_get(c, "decoded"), name);
            decode_eq(t, ids, n, 1, json_object_get(c, "decoded_skip"), name);
        }
        tok_free(t);
    }
    ck_assert_int_ge(n_cases, 200);
    json_decref(d);
}
END_TEST

static const char *MINI_HEAD = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[";

static emoe_status load_mini(const char *merges_and_rest, emoe_err *err)
{
    char j[2048];
    snprintf(j, sizeof j, "%s%s", MINI_HEAD, merges_and_rest);
    tok_tokenizer *t = NULL;
    emoe_status st = tok_load_json(j, strlen(j), NULL, 0, "mini", &t, err);
    tok_free(t);
    return st;
}

/* Issue 14: a normalizer chain that grows its text 1000x per pass is refused
 * with a clear error instead of allocating gigabytes. */
START_TEST(test_normalizer_amplification_capped)
{
    char big[1100];
    memset(big, 'a', 1000);
    big[1000] = 0;
    char j[8192];
    snprintf(j, sizeof j,
             "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]},"
             "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
             "{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"},\"content\":\"%s\"},"
             "{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"},\"content\":\"%s\"}]}}", big, big);
    tok_tokenizer *t = NULL;
    emoe_err err = {0};
    ck_assert_msg(tok_load_json(j, strlen(j), NULL, 0, "amp", &t, &err) == EMOE_OK, "%s", err.msg);
    int32_t *ids = NULL;
    size_t n = 0;
    /* 1,000 bytes -> 1 MB after the first pass -> 1 GB after the second. */
    ck_assert_int_eq(tok_encode(t, big, 1000, 0, &ids, &n, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "normalization") != NULL, "%s", err.msg);
    ck_assert_ptr_null(ids);
    /* tok_encode_limited stops once the text has more tokens than asked. */
    int over = 0;
    ck_assert_int_eq(tok_encode_limited(t, "bbbbbbbbbb", 10, 0, 4, &ids, &n, &over, &err), EMOE_EINVAL);
    ck_assert_int_eq(over, 1);
    ck_assert_ptr_null(ids);
    ck_assert_int_eq(tok_encode_limited(t, "bbbb", 4, 0, 4, &ids, &n, &over, &err), EMOE_OK);
    ck_assert_int_eq(over, 0);
    ck_assert_uint_eq(n, 4);
    free(ids);
    /* Text the normalizers do not grow still encodes. */
    ck_assert_int_eq(tok_encode(t, "b", 1, 0, &ids, &n, &err), EMOE_OK);
    ck_assert_uint_eq(n, 1);
    free(ids);
    tok_free(t);
}
END_TEST

START_TEST(test_load_errors)
{
    emoe_err err = {0};
    ck_assert_int_eq(load_mini("\"a b\"]}}", &err), EMOE_OK);
    ck_assert_int_eq(load_mini("[\"a\",\"b\"]]}}", &err), EMOE_OK);
    ck_assert_int_eq(load_mini("\"a c\"]}}", &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "model.merges[0]") != NULL, "%s", err.msg);
    ck_assert_int_eq(load_mini("\"a b\"]},\"normalizer\":{\"type\":\"Precompiled\"}}", &err), EMOE_EUNSUP);
    ck_assert_msg(strstr(err.msg, "Precompiled") != NULL, "%s", err.msg);
    ck_assert_int_eq(load_mini("\"a b\"]},\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}}", &err), EMOE_EUNSUP);
    ck_assert_msg(strstr(err.msg, "BertPreTokenizer") != NULL, "%s", err.msg);
    ck_assert_int_eq(load_mini("\"a b\"]},\"decoder\":{\"type\":\"WordPiece\"}}", &err), EMOE_EUNSUP);
    ck_assert_int_eq(load_mini("\"a b\"]},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}", &err), EMOE_EUNSUP);
    ck_assert_msg(strstr(err.msg, "regex") != NULL, "%s", err.msg);
    ck_assert_int_eq(load_mini("\"a b\"], \"type\":\"Unigram\"}}", &err), EMOE_EUNSUP);
    tok_tokenizer *t = NULL;
    ck_assert_int_eq(tok_load_json("{", 1, NULL, 0, "x", &t, &err), EMOE_EINVAL);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(tok_load_dir("/nonexistent-dir", &t, &err), EMOE_ENOTFOUND);
}
END_TEST

/* The mini tokenizer merges by rank: "abab" -> [ab, ab]. */
START_TEST(test_mini_merge)
{
    const char *j = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"ba\":3,\"aba\":4},"
                    "\"merges\":[\"a b\",\"b a\",\"ab a\"]}}";
    tok_tokenizer *t = NULL;
    emoe_err err = {0};
    ck_assert_msg(tok_load_json(j, strlen(j), NULL, 0, "mini", &t, &err) == EMOE_OK, "%s", err.msg);
    int32_t *ids = NULL;
    size_t n = 0;
    ck_assert(tok_encode(t, "ababa", 5, 0, &ids, &n, NULL) == EMOE_OK);
    /* a b a b a -> ab ab a (rank 0 first, leftmost) -> ab aba (rank 2) */
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], 2);
    ck_assert_int_eq(ids[1], 4);
    free(ids);
    tok_free(t);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("reference");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, setup_all, teardown_all);
    tcase_add_test(tc, test_qwen3_cases);
    tcase_add_test(tc, test_llama2_cases);
    tcase_add_test(tc, test_deepseek_cases);
    tcase_add_test(tc, test_special_ids_and_skip);
    tcase_add_test(tc, test_nfc_boundaries);
    tcase_add_test(tc, test_stream_byte_fallback_holds);
    tcase_add_test(tc, test_property_qwen3);
    tcase_add_test(tc, test_threads);
    tcase_add_test(tc, test_property_deepseek);
    tcase_add_test(tc, test_property_llama2_stream);
    tcase_add_test(tc, test_tiny_moe_7task_loads);
    tcase_add_test(tc, test_load_errors);
    tcase_add_test(tc, test_normalizer_amplification_capped);
    tcase_add_test(tc, test_fast_json_equals_jansson);
    tcase_add_test(tc, test_synthetic_vs_hf);
    tcase_add_test(tc, test_mini_merge);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
