/*
 * test_loader.c — malformed checkpoints are refused with a clear message, never
 * a crash (this suite runs under ASan+UBSan in `make test`): hostile safetensors
 * headers, bad shard indexes, missing/mis-shaped/mistyped tensors, unsupported
 * configs. Each case names the substring its error message must contain.
 */
#include <unistd.h>

#include "engine/checkpoint.h"
#include "engine/engine.h"
#include "engine/safetensors.h"
#include "tests/unit/testutil.h"

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/emoe-loader-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_bytes(const char *name, const void *b, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* A safetensors file from a header string (padded to 8) and data_len bytes of data. */
static void write_st_raw(const char *name, uint64_t declared_len, const char *hdr, size_t hlen, size_t data_len)
{
    size_t total = 8 + hlen + data_len;
    unsigned char *b = calloc(1, total + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(declared_len >> (8 * i));
    memcpy(b + 8, hdr, hlen);
    /* Data: small finite bf16 values (0x3Dxx ~ 0.03..0.06), alternating sign. */
    for (size_t i = 0; i < data_len; i++) b[8 + hlen + i] = (unsigned char)(i % 2 ? (i % 4 == 1 ? 0x3D : 0xBD) : i * 7);
    write_bytes(name, b, total);
    free(b);
}

static void write_st(const char *name, const char *hdr, size_t data_len)
{
    char h[8192];
    size_t n = strlen(hdr);
    memcpy(h, hdr, n);
    while (n % 8) h[n++] = ' ';
    write_st_raw(name, n, h, n, data_len);
}

static void expect_st_error(const char *name, const char *needle)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    st_file *f = NULL;
    emoe_err err = {0};
    emoe_status rc = st_open(p, &f, &err);
    ck_assert_msg(rc != EMOE_OK, "%s: accepted", name);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", name, err.msg, needle);
}

#define T1 "\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}"

START_TEST(test_st_hostile_headers)
{
    write_bytes("short.safetensors", "\x05\x00\x00", 3);
    expect_st_error("short.safetensors", "too small");
    write_st_raw("zero.safetensors", 0, "", 0, 8);
    expect_st_error("zero.safetensors", "out of bounds");
    write_st_raw("huge.safetensors", 200000000ull, "{}      ", 8, 0);
    expect_st_error("huge.safetensors", "out of bounds");
    write_st_raw("trunc.safetensors", 4096, "{\"a\":1}", 7, 0);
    expect_st_error("trunc.safetensors", "exceeds the file size");
    write_st_raw("max.safetensors", UINT64_MAX, "{}", 2, 0);
    expect_st_error("max.safetensors", "out of bounds");
    write_st("nobrace.safetensors", "[" T1 "]", 8);
    expect_st_error("nobrace.safetensors", "does not start with '{'");
    write_st("badjson.safetensors", "{" T1 ",}", 8);
    expect_st_error("badjson.safetensors", "not valid UTF-8 JSON");
    write_st("utf8.safetensors", "{\"\xff\xfe\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error("utf8.safetensors", "not valid UTF-8 JSON");
    write_st("dup.safetensors", "{" T1 "," T1 "}", 8);
    expect_st_error("dup.safetensors", "not valid UTF-8 JSON");
}
END_TEST

START_TEST(test_st_bad_entries)
{
    write_st("dtype.safetensors", "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error("dtype.safetensors", "dtype Q4");
    write_st("shape.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":\"2x2\",\"data_offsets\":[0,8]}}", 8);
    expect_st_error("shape.safetensors", "shape");
    write_st("neg.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[-2,2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error("neg.safetensors", "shape[0]");
    write_st("ovf.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", 8);
    expect_st_error("ovf.safetensors", "overflows");
    write_st("rev.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,0]}}", 8);
    expect_st_error("rev.safetensors", "end 0 < begin 8");
    write_st("size.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8);
    expect_st_error("size.safetensors", "needs 16");
    write_st("past.safetensors", "{" T1 "}", 4);
    expect_st_error("past.safetensors", "past the data area");
    write_st("overlap.safetensors", "{" T1 ",\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[4,12]}}", 12);
    expect_st_error("overlap.safetensors", "overlaps");
    write_st("gap.safetensors", "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}", 8);
    expect_st_error("gap.safetensors", "gap");
    write_st("trail.safetensors", "{" T1 "}", 16);
    expect_st_error("trail.safetensors", "data area holds 16");
    write_st("offs.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0]}}", 8);
    expect_st_error("offs.safetensors", "data_offsets must be");
    write_st("meta.safetensors", "{\"__metadata__\":{\"format\":7}," T1 "}", 8);
    expect_st_error("meta.safetensors", "__metadata__");
    write_st("entry.safetensors", "{\"a\":[1,2]}", 0);
    expect_st_error("entry.safetensors", "not an object");
    /* Misaligned: header of odd length (not padded). */
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_st_raw("align.safetensors", strlen(h), h, strlen(h), 4);
    expect_st_error("align.safetensors", "aligned");
}
END_TEST

/* ---- whole directories -------------------------------------------------- */

typedef struct tspec { const char *name; const char *dtype; int ndim; int64_t d0, d1; } tspec;

/* A complete tiny mixtral: dim 8, 1 layer, 2 heads of 4 (1 kv), 2 experts top-1, ffn 4, vocab 16. */
static int mixtral_specs(tspec *t)
{
    int n = 0;
    t[n++] = (tspec){"model.embed_tokens.weight", "BF16", 2, 16, 8};
    t[n++] = (tspec){"lm_head.weight", "BF16", 2, 16, 8};
    t[n++] = (tspec){"model.norm.weight", "BF16", 1, 8, 0};
    t[n++] = (tspec){"model.layers.0.input_layernorm.weight", "BF16", 1, 8, 0};
    t[n++] = (tspec){"model.layers.0.post_attention_layernorm.weight", "BF16", 1, 8, 0};
    t[n++] = (tspec){"model.layers.0.self_attn.q_proj.weight", "BF16", 2, 8, 8};
    t[n++] = (tspec){"model.layers.0.self_attn.k_proj.weight", "BF16", 2, 4, 8};
    t[n++] = (tspec){"model.layers.0.self_attn.v_proj.weight", "BF16", 2, 4, 8};
    t[n++] = (tspec){"model.layers.0.self_attn.o_proj.weight", "BF16", 2, 8, 8};
    t[n++] = (tspec){"model.layers.0.block_sparse_moe.gate.weight", "BF16", 2, 2, 8};
    static char names[6][96];
    for (int e = 0; e < 2; e++)
        for (int w = 1; w <= 3; w++) {
            char *nm = names[e * 3 + w - 1];
            snprintf(nm, 96, "model.layers.0.block_sparse_moe.experts.%d.w%d.weight", e, w);
            t[n++] = (tspec){nm, "BF16", 2, w == 2 ? 8 : 4, w == 2 ? 4 : 8};
        }
    return n;
}

static const char *mixtral_config =
    "{\"model_type\":\"mixtral\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
    "\"num_key_value_heads\":1,\"num_local_experts\":2,\"num_experts_per_tok\":1,\"intermediate_size\":4,"
    "\"vocab_size\":16,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,"
    "\"tie_word_embeddings\":false,\"sliding_window\":null}";

static void write_model(const char *file, tspec *t, int n)
{
    char h[16384] = "{";
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t el = strcmp(t[i].dtype, "F32") == 0 || strcmp(t[i].dtype, "I32") == 0 ? 4 : strcmp(t[i].dtype, "I64") == 0 ? 8 : 2;
        uint64_t bytes = (uint64_t)t[i].d0 * (uint64_t)(t[i].ndim == 2 ? t[i].d1 : 1) * el;
        char e[512];
        if (t[i].ndim == 2)
            snprintf(e, sizeof e, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}", i ? "," : "",
                     t[i].name, t[i].dtype, (long long)t[i].d0, (long long)t[i].d1, (unsigned long long)off, (unsigned long long)(off + bytes));
        else
            snprintf(e, sizeof e, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}", i ? "," : "",
                     t[i].name, t[i].dtype, (long long)t[i].d0, (unsigned long long)off, (unsigned long long)(off + bytes));
        strcat(h, e);
        off += bytes;
    }
    strcat(h, "}");
    write_st(file, h, off);
}

static void expect_open_error(const char *needle)
{
    eng_engine *e = NULL;
    emoe_err err = {0};
    emoe_status rc = eng_open(tmpdir, NULL, &e, &err);
    ck_assert_msg(rc != EMOE_OK, "model accepted; expected error containing '%s'", needle);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

START_TEST(test_dir_good_model_loads)
{
    tspec t[32];
    int n = mixtral_specs(t);
    write_bytes("config.json", mixtral_config, strlen(mixtral_config));
    write_model("model.safetensors", t, n);
    eng_engine *e = NULL;
    emoe_err err = {0};
    ck_assert_msg(eng_open(tmpdir, NULL, &e, &err) == EMOE_OK, "%s", err.msg);
    eng_seq *s = eng_seq_new(e, 0, &err);
    int32_t ids[3] = {1, 5, 15};
    float lg[16];
    ck_assert(eng_forward(e, s, ids, 3, lg, &err) == EMOE_OK);
    for (int i = 0; i < 16; i++) ck_assert(lg[i] == lg[i]);
    eng_seq_free(s);
    eng_free(e);
}
END_TEST

START_TEST(test_dir_bad_tensors)
{
    tspec t[32];
    int n = mixtral_specs(t);
    write_bytes("config.json", mixtral_config, strlen(mixtral_config));
    /* missing tensor */
    write_model("model.safetensors", t, n - 1);
    expect_open_error("experts.1.w3.weight' is missing");
    /* mis-shaped */
    n = mixtral_specs(t);
    t[5].d0 = 4;
    write_model("model.safetensors", t, n);
    expect_open_error("q_proj.weight' has shape [4, 8], expected [8, 8]");
    /* wrong dtype for a weight */
    n = mixtral_specs(t);
    t[2].dtype = "I64";
    write_model("model.safetensors", t, n);
    expect_open_error("dtype I64");
    /* no checkpoint at all */
    unlink("model.safetensors");
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    unlink(p);
    expect_open_error("no model.safetensors");
}
END_TEST

START_TEST(test_dir_bad_index)
{
    tspec t[32];
    int n = mixtral_specs(t);
    write_bytes("config.json", mixtral_config, strlen(mixtral_config));
    write_model("a.safetensors", t, 5);
    write_model("b.safetensors", t + 5, n - 5);
    /* A valid two-shard index loads. */
    char idx[8192] = "{\"weight_map\":{";
    for (int i = 0; i < n; i++) {
        char e[256];
        snprintf(e, sizeof e, "%s\"%s\":\"%s\"", i ? "," : "", t[i].name, i < 5 ? "a.safetensors" : "b.safetensors");
        strcat(idx, e);
    }
    strcat(idx, "}}");
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    eng_engine *e = NULL;
    emoe_err err = {0};
    ck_assert_msg(eng_open(tmpdir, NULL, &e, &err) == EMOE_OK, "%s", err.msg);
    eng_free(e);
    const char *bad[][2] = {
        {"{\"weight_map\":{\"model.norm.weight\":\"../b.safetensors\"}}", "plain file names"},
        {"{\"weight_map\":{\"model.norm.weight\":\"/etc/passwd\"}}", "plain file names"},
        {"{\"weight_map\":{\"model.layers.0.block_sparse_moe.gate.weight\":\"a.safetensors\"}}", "does not hold it"},
        {"{\"weight_map\":{}}", "weight_map"},
        {"{\"weight_map\":{\"model.norm.weight\":\"missing.safetensors\"}}", "cannot open"},
        {"{\"weight_map\":", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_bytes("model.safetensors.index.json", bad[i][0], strlen(bad[i][0]));
        expect_open_error(bad[i][1]);
    }
    /* the same tensor in two shards */
    write_model("b.safetensors", t + 4, n - 4);
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    expect_open_error("appears in both");
}
END_TEST

START_TEST(test_dir_bad_config)
{
    tspec t[32];
    int n = mixtral_specs(t);
    write_model("model.safetensors", t, n);
    const char *bad[][2] = {
        {"{\"model_type\":\"llama\"}", "model_type 'llama' is not supported"},
        {"not json", "invalid JSON"},
        {"[1,2]", "not a JSON object"},
        {"{\"model_type\":\"mixtral\",\"hidden_size\":8}", "num_hidden_layers"},
        {"{\"model_type\":\"mixtral\",\"hidden_size\":\"8\"}", "hidden_size' must be an integer"},
        {"{\"model_type\":\"mixtral\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"rope_scaling\":{\"type\":\"yarn\"}}", "rope_scaling"},
        {"{\"model_type\":\"mixtral\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
         "\"num_local_experts\":2,\"num_experts_per_tok\":1,\"intermediate_size\":4,\"vocab_size\":16,\"sliding_window\":4096}", "sliding_window"},
        {"{\"model_type\":\"mixtral\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
         "\"num_local_experts\":2,\"num_experts_per_tok\":3,\"intermediate_size\":4,\"vocab_size\":16}", "num_experts_per_tok' is 3"},
        {"{\"model_type\":\"mixtral\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":3,\"num_key_value_heads\":2}", "not a multiple"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_bytes("config.json", bad[i][0], strlen(bad[i][0]));
        expect_open_error(bad[i][1]);
    }
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    unlink(p);
    expect_open_error("config.json: cannot open");
}
END_TEST


/* Issue 14: an index naming 80,000 distinct shards is refused past 16,384
 * shards in linear time (deduplicating names pairwise took 75 s; Check's test
 * timeout fails that), 80,000 entries over 16,000 shards are deduplicated by
 * hash, and an index larger than 64 MiB is refused unread. */
START_TEST(test_index_hashed_and_capped)
{
    char dir[] = "/tmp/emoe_idx_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"weight_map\":{");
    for (int i = 0; i < 80000; i++) fprintf(f, "%s\"t%d\":\"s%d.safetensors\"", i ? "," : "", i, i);
    fprintf(f, "}}");
    fclose(f);
    eng_checkpoint *c = NULL;
    emoe_err err = {0};
    ck_assert_int_eq(ckpt_open(dir, &c, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "more than 16384 shards") != NULL, "%s", err.msg);
    /* 16,000 shards: deduplicated (hashed), then the first missing one is named. */
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"weight_map\":{");
    for (int i = 0; i < 80000; i++) fprintf(f, "%s\"t%d\":\"s%d.safetensors\"", i ? "," : "", i, i % 16000);
    fprintf(f, "}}");
    fclose(f);
    ck_assert_int_ne(ckpt_open(dir, &c, &err), EMOE_OK);
    ck_assert_msg(strstr(err.msg, "s0.safetensors") != NULL, "%s", err.msg);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(ftruncate(fileno(f), (off_t)65 << 20), 0); /* sparse: nothing to read */
    fclose(f);
    ck_assert_int_eq(ckpt_open(dir, &c, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "larger than 64 MiB") != NULL, "%s", err.msg);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("loader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_st_hostile_headers);
    tcase_add_test(tc, test_st_bad_entries);
    tcase_add_test(tc, test_dir_good_model_loads);
    tcase_add_test(tc, test_dir_bad_tensors);
    tcase_add_test(tc, test_dir_bad_index);
    tcase_add_test(tc, test_index_hashed_and_capped);
    tcase_add_test(tc, test_dir_bad_config);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
