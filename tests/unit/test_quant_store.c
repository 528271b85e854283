/* test_quant_store.c — quantized expert stores and their use through the cache:
 * q8/q4 stores packed from the fixture models hold the quantization of every
 * checkpoint row and pass their checksums; a store of the wrong format or
 * model is refused (store_check_format, cache_open, store_find_or_build_format);
 * exact mode on a q8 store at 10/25/50% is bitwise the q8 all-resident run;
 * the quantized forward pass is close to (and not equal to) the bf16 one; the
 * lowbit miss policy serves the low-bit copy on misses, counts it per sequence
 * and in the cache stats, and keeps pins balanced. */
#include <math.h>
#include <pthread.h>
#include <sys/stat.h>

#include "testutil.h"
#include "cachetest.h"
#include "engine/cache.h"
#include "engine/quant.h"

static char dir[4096];

static void setup(void)
{
    emoe_log_set_level(EMOE_LOG_WARN);
    ct_tmpdir(dir, sizeof dir);
    ck_assert_msg(dir[0], "mkdtemp failed");
}
static void teardown(void) { ct_rmtree(dir); }

static const char *fixture_models[] = {"tiny-mixtral", "tiny-olmoe", "tiny-qwen2-moe", "tiny-qwen3-moe"};

static eng_engine *open_fixture(const char *m)
{
    char mdir[4300];
    snprintf(mdir, sizeof mdir, "%s/fixtures/models/%s", tu_shared_dir(), m);
    emoe_err err = {0};
    eng_engine *e;
    eng_open_opts oo = {.n_threads = 2};
    ck_assert_msg(eng_open(mdir, &oo, &e, &err) == EMOE_OK, "%s: %s", m, err.msg);
    return e;
}

/* Prompt then greedy decode steps; every step's logits into out. */
static void run_model(eng_engine *e, int dec, float *out, cache_t *c, uint64_t *lowbit)
{
    emoe_err err = {0};
    const eng_model_desc *d = eng_desc(e);
    int32_t prompt[12];
    for (int i = 0; i < 12; i++) prompt[i] = (int32_t)((i * 37 + 11) % d->vocab);
    eng_seq *s = eng_seq_new(e, 0, &err);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < (1 + dec) * d->vocab; i++) out[i] = NAN;
    ck_assert_msg(eng_forward(e, s, prompt, 12, out, &err) == EMOE_OK, "%s", err.msg);
    if (c) { cache_drain(c); cache_step_end(c); }
    for (int t = 0; t < dec; t++) {
        const float *lg = out + (size_t)t * d->vocab;
        int32_t best = 0;
        for (int v = 1; v < d->vocab; v++) if (lg[v] > lg[best]) best = v;
        ck_assert_msg(eng_forward(e, s, &best, 1, out + (size_t)(t + 1) * d->vocab, &err) == EMOE_OK, "%s", err.msg);
        if (c) { cache_drain(c); cache_step_end(c); }
    }
    if (lowbit) *lowbit = eng_seq_lowbit(s);
    eng_seq_free(s);
}

static cache_t *open_cache(eng_engine *e, const char *path, uint64_t fp, int fmt, const char *budget,
                           cache_miss_policy pol, const char *lb_path)
{
    emoe_err err = {0};
    store_info info;
    ck_assert_int_eq(store_info_from_engine(e, &info, &err), EMOE_OK);
    uint64_t total = (uint64_t)info.n_layers * info.n_experts * info.extent_stride;
    cache_config cfg = {0};
    ck_assert_int_eq(cache_parse_budget(budget, total, "budget", &cfg.device_budget, &err), EMOE_OK);
    cfg.expert_format = fmt;
    cfg.miss_policy = pol;
    if (lb_path) { cfg.lowbit_store = lb_path; cfg.lowbit_format = QUANT_Q4; }
    cache_t *c;
    ck_assert_msg(cache_open(path, fp, &cfg, &c, &err) == EMOE_OK, "%s: %s", budget, err.msg);
    eng_set_expert_provider(e, cache_provider(c));
    return c;
}

START_TEST(test_pack_contents)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("quantized stores"); return; }
    const char *m = fixture_models[_i];
    eng_engine *e = open_fixture(m);
    const eng_model_desc *d = eng_desc(e);
    emoe_err err = {0};
    uint64_t fp;
    ck_assert_int_eq(store_model_fingerprint(e, &fp, &err), EMOE_OK);
    uint64_t bf16_size = 0;
    for (int fmt = QUANT_NONE; fmt <= QUANT_Q4; fmt++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, store_default_name(fmt));
        ck_assert_msg(store_pack_engine_format(e, path, fmt, 0, &err) == EMOE_OK, "%s: %s", m, err.msg);
        store_t *s;
        ck_assert_msg(store_open(path, fp, &s, &err) == EMOE_OK, "%s", err.msg);
        const store_info *in = store_get_info(s);
        ck_assert_int_eq(in->format, fmt);
        ck_assert_int_eq(store_check_format(s, fmt, &err), EMOE_OK);
        for (int other = QUANT_NONE; other <= QUANT_Q4; other++) {
            if (other == fmt) continue;
            memset(&err, 0, sizeof err);
            ck_assert_int_eq(store_check_format(s, other, &err), EMOE_EINVAL);
            ck_assert_msg(strstr(err.msg, quant_format_name(fmt)) && strstr(err.msg, quant_format_name(other)),
                          "message names both formats: %s", err.msg);
        }
        if (fmt == QUANT_NONE) bf16_size = in->file_size;
        else ck_assert_uint_lt(in->file_size, bf16_size * (fmt == QUANT_Q8 ? 60 : 36) / 100 + 2 * 4096 * 96);
        /* Every extent: checksum ok; contents = the quantization of the checkpoint rows. */
        FILE *f = fopen(path, "rb");
        uint8_t *buf = malloc(in->extent_bytes), *want = malloc(in->extent_bytes);
        float *row = malloc(sizeof(float) * (size_t)(d->dim > d->expert_ffn ? d->dim : d->expert_ffn));
        for (int l = 0; l < in->n_layers; l++)
            for (int x = 0; x < in->n_experts; x++) {
                const store_extent *xt = store_extent_of(s, l, x);
                ck_assert_int_eq(fseeko(f, (off_t)xt->offset, SEEK_SET), 0);
                ck_assert_uint_eq(fread(buf, 1, in->extent_bytes, f), in->extent_bytes);
                ck_assert_msg(store_verify_extent(s, l, x, buf, &err) == EMOE_OK, "%s", err.msg);
                if (fmt == QUANT_NONE || (x != 0 && x != in->n_experts - 1)) continue;
                eng_expert_weights w;
                ck_assert_int_eq(eng_checkpoint_expert(e, l, x, &w, &err), EMOE_OK);
                const eng_tensor *t[3] = {&w.gate, &w.up, &w.down};
                uint8_t *o = want;
                for (int i = 0; i < 3; i++)
                    for (int64_t r = 0; r < t[i]->shape[0]; r++) {
                        eng_tensor_read_f32(t[i], r * t[i]->shape[1], t[i]->shape[1], row);
                        quant_row_quantize(fmt, row, t[i]->shape[1], o);
                        o += quant_row_bytes(fmt, t[i]->shape[1]);
                    }
                ck_assert_uint_eq((uint64_t)(o - want), in->extent_bytes);
                ck_assert_msg(memcmp(buf, want, in->extent_bytes) == 0, "%s %s (%d,%d): extent differs", m,
                              quant_format_name(fmt), l, x);
            }
        fclose(f);
        free(buf);
        free(want);
        free(row);
        /* The cache refuses it for another format; store_find_or_build_format too. */
        for (int other = QUANT_NONE; other <= QUANT_Q4; other++) {
            if (other == fmt) continue;
            cache_config cfg = {.device_budget = in->extent_stride * 4, .expert_format = other};
            cache_t *c = NULL;
            memset(&err, 0, sizeof err);
            ck_assert_int_eq(cache_open(path, fp, &cfg, &c, &err), EMOE_EINVAL);
            ck_assert_ptr_null(c);
            ck_assert_msg(strstr(err.msg, "holds"), "%s", err.msg);
            char out[4400];
            memset(&err, 0, sizeof err);
            ck_assert_int_eq(store_find_or_build_format(e, path, other, out, sizeof out, NULL, &err), EMOE_EINVAL);
        }
        store_close(s);
    }
    eng_free(e);
}
END_TEST

START_TEST(test_wrong_model_refused)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("quantized stores"); return; }
    eng_engine *a = open_fixture("tiny-mixtral"), *b = open_fixture("tiny-olmoe");
    emoe_err err = {0};
    char path[4400], out[4400];
    snprintf(path, sizeof path, "%s/a.q8.emoe", dir);
    ck_assert_int_eq(store_pack_engine_format(a, path, QUANT_Q8, 0, &err), EMOE_OK);
    ck_assert_int_eq(store_find_or_build_format(a, path, QUANT_Q8, out, sizeof out, NULL, &err), EMOE_OK);
    memset(&err, 0, sizeof err);
    ck_assert_int_ne(store_find_or_build_format(b, path, QUANT_Q8, out, sizeof out, NULL, &err), EMOE_OK);
    ck_assert_msg(strstr(err.msg, "another model"), "%s", err.msg);
    eng_free(a);
    eng_free(b);
}
END_TEST

START_TEST(test_q8_exact_and_close)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("quantized stores"); return; }
    const char *m = fixture_models[_i];
    eng_engine *e = open_fixture(m);
    const eng_model_desc *d = eng_desc(e);
    emoe_err err = {0};
    uint64_t fp;
    ck_assert_int_eq(store_model_fingerprint(e, &fp, &err), EMOE_OK);
    char p8[4400], p4[4400];
    snprintf(p8, sizeof p8, "%s/q8.emoe", dir);
    snprintf(p4, sizeof p4, "%s/q4.emoe", dir);
    ck_assert_int_eq(store_pack_engine_format(e, p8, QUANT_Q8, 0, &err), EMOE_OK);
    ck_assert_int_eq(store_pack_engine_format(e, p4, QUANT_Q4, 0, &err), EMOE_OK);
    int dec = 5;
    size_t nl = (size_t)(1 + dec) * d->vocab;
    float *ref = malloc(nl * 4), *q8all = malloc(nl * 4), *got = malloc(nl * 4), *q4all = malloc(nl * 4);
    run_model(e, dec, ref, NULL, NULL); /* bf16, checkpoint */
    cache_t *c = open_cache(e, p8, fp, QUANT_Q8, "100%", CACHE_MISS_EXACT, NULL);
    run_model(e, dec, q8all, c, NULL);
    eng_set_expert_provider(e, NULL);
    cache_free(c);
    /* Exact mode under a budget: bitwise the all-resident q8 run. */
    const char *budgets[] = {"10%", "25%", "50%"};
    for (int b = 0; b < 3; b++) {
        c = open_cache(e, p8, fp, QUANT_Q8, budgets[b], CACHE_MISS_EXACT, NULL);
        run_model(e, dec, got, c, NULL);
        cache_stats s;
        cache_get_stats(c, &s);
        eng_set_expert_provider(e, NULL);
        cache_free(c);
        ck_assert_msg(memcmp(got, q8all, nl * 4) == 0, "%s q8 at %s: logits differ from q8 all-resident", m, budgets[b]);
        ck_assert_uint_gt(s.evictions, 0);
    }
    /* q8 and q4 are close to bf16 but not equal (the quantized path really ran). */
    c = open_cache(e, p4, fp, QUANT_Q4, "100%", CACHE_MISS_EXACT, NULL);
    run_model(e, 0, q4all, c, NULL);
    eng_set_expert_provider(e, NULL);
    cache_free(c);
    double diff8 = 0, diff4 = 0, mag = 0;
    for (int v = 0; v < d->vocab; v++) {  /* prompt step only: decode may pick other tokens */
        diff8 = fmax(diff8, fabs(q8all[v] - ref[v]));
        diff4 = fmax(diff4, fabs(q4all[v] - ref[v]));
        mag = fmax(mag, fabs(ref[v]));
    }
    fprintf(stderr, "%s: max |logit| %.4g, q8 max diff %.3g, q4 max diff %.3g\n", m, mag, diff8, diff4);
    ck_assert_msg(diff8 > 0 && diff4 > 0, "%s: quantized logits equal bf16: quantized path not used", m);
    ck_assert_msg(diff8 < 0.02 * mag + 1e-3, "%s: q8 max logit diff %g (max |logit| %g)", m, diff8, mag);
    ck_assert_msg(diff4 < 0.25 * mag + 1e-2, "%s: q4 max logit diff %g (max |logit| %g)", m, diff4, mag);
    ck_assert_msg(diff8 < diff4, "%s: q8 (%g) not closer than q4 (%g)", m, diff8, diff4);
    free(ref); free(q8all); free(got); free(q4all);
    eng_free(e);
}
END_TEST

START_TEST(test_lowbit_policy)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("lowbit policy"); return; }
    eng_engine *e = open_fixture("tiny-qwen3-moe");
    const eng_model_desc *d = eng_desc(e);
    emoe_err err = {0};
    uint64_t fp;
    ck_assert_int_eq(store_model_fingerprint(e, &fp, &err), EMOE_OK);
    char pb[4400], p4[4400];
    snprintf(pb, sizeof pb, "%s/bf16.emoe", dir);
    snprintf(p4, sizeof p4, "%s/q4.emoe", dir);
    ck_assert_int_eq(store_pack_engine_format(e, pb, QUANT_NONE, 0, &err), EMOE_OK);
    ck_assert_int_eq(store_pack_engine_format(e, p4, QUANT_Q4, 0, &err), EMOE_OK);
    int dec = 6;
    size_t nl = (size_t)(1 + dec) * d->vocab;
    float *ref = malloc(nl * 4), *got = malloc(nl * 4);
    run_model(e, dec, ref, NULL, NULL);
    /* A wrong-format low-bit store is refused. */
    {
        store_info info;
        ck_assert_int_eq(store_info_from_engine(e, &info, &err), EMOE_OK);
        cache_config cfg = {.device_budget = info.extent_stride * 8, .miss_policy = CACHE_MISS_LOWBIT,
                            .lowbit_store = pb, .lowbit_format = QUANT_Q4};
        cache_t *c = NULL;
        ck_assert_int_eq(cache_open(pb, fp, &cfg, &c, &err), EMOE_EINVAL);
        ck_assert_ptr_null(c);
    }
    cache_t *c = open_cache(e, pb, fp, QUANT_NONE, "25%", CACHE_MISS_LOWBIT, p4);
    uint64_t seq_lowbit = 0;
    run_model(e, dec, got, c, &seq_lowbit);
    cache_stats s;
    cache_get_stats(c, &s);
    ck_assert_uint_gt(s.lowbit_uses, 0);
    ck_assert_uint_ge(seq_lowbit, s.lowbit_uses); /* per token x expert >= per acquire */
    ck_assert_uint_gt(s.lowbit_bytes, 0);
    ck_assert_int_eq(s.miss_policy, CACHE_MISS_LOWBIT);
    ck_assert_uint_gt(s.loads, 0);      /* misses started full loads */
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    for (size_t i = 0; i < nl; i++) ck_assert_msg(isfinite(got[i]), "lowbit logits not finite");
    /* Pins are balanced: with lowbit off, every expert can still be loaded and evicted. */
    cache_set_miss_policy(c, CACHE_MISS_EXACT);
    for (int l = 0; l < d->n_layers; l++)
        for (int x = 0; x < d->n_experts; x++) {
            eng_expert_weights w;
            ck_assert_msg(cache_acquire(c, l, x, &w, &err) == EMOE_OK, "(%d,%d): %s", l, x, err.msg);
            ck_assert_int_eq(w.lowbit, 0);
            ck_assert_int_eq(w.qfmt, 0);
            cache_release(c, l, x);
        }
    eng_set_expert_provider(e, NULL);
    cache_free(c);
    /* The first token's logits differ from exact (misses computed in q4) but stay close. */
    double diff = 0, mag = 0;
    for (int v = 0; v < d->vocab; v++) { diff = fmax(diff, fabs(got[v] - ref[v])); mag = fmax(mag, fabs(ref[v])); }
    fprintf(stderr, "lowbit: %llu uses (%llu per token x expert), first-step max logit diff %.3g of %.3g\n",
            (unsigned long long)s.lowbit_uses, (unsigned long long)seq_lowbit, diff, mag);
    ck_assert(diff > 0);
    ck_assert(diff < 0.25 * mag + 1e-2);
    free(ref);
    free(got);
    eng_free(e);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("quant_store");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_pack_contents, 0, 4);
    tcase_add_test(tc, test_wrong_model_refused);
    tcase_add_loop_test(tc, test_q8_exact_and_close, 0, 4);
    tcase_add_test(tc, test_lowbit_policy);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
