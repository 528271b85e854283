/*
 * test_dense_quant.c — `[engine] dense_format` (engine/dense_quant.h).
 *  - native (and the default, no options) is bitwise the engine as before:
 *    same logits as eng_open(NULL), within 1e-4 of the Hugging Face reference;
 *  - q8 on every fixture model: last-position logits within DQ_TOL relative
 *    (L2) of the float reference, the same top-1 token, and not bitwise the
 *    native logits (the knob is used);
 *  - dense_mm_run: quantized jobs bitwise quant_matmul + bias and within the
 *    q8 bound of a float (double) matmul on odd shapes; jobs of weights without
 *    a quantized copy bitwise eng_mm_run;
 *  - bad values refused: eng_open, the parser, the config table.
 */
#include <jansson.h>
#include <math.h>

#include "config/config.h"
#include "engine/dense_quant.h"
#include "engine/engine.h"
#include "engine/matmul.h"
#include "engine/quant.h"
#include "tests/unit/testutil.h"

/* q8 dense weights + q8 activations on the fixture models: measured worst
 * 8.9e-3 (prompt and decode steps; docs/quant.md), so 2.2x headroom. */
#define DQ_TOL 2e-2

/* Prompt then 4 greedy decode steps; returns the last logits of each step (5 * vocab). */
static float *run_case(eng_engine *e, const int32_t *ids, int n)
{
    const eng_model_desc *d = eng_desc(e);
    emoe_err err = {0};
    float *lg = malloc(sizeof(float) * (size_t)d->vocab * 5);
    eng_seq *s = eng_seq_new(e, 0, &err);
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(eng_forward(e, s, ids, n, lg, &err) == EMOE_OK, "%s", err.msg);
    for (int t = 1; t < 5; t++) {
        int32_t id = tu_argmax(lg + (size_t)(t - 1) * d->vocab, d->vocab);
        ck_assert_msg(eng_forward(e, s, &id, 1, lg + (size_t)t * d->vocab, &err) == EMOE_OK, "%s", err.msg);
    }
    eng_seq_free(s);
    return lg;
}

START_TEST(test_fixture_models)
{
    const char *rp = tu_shared_path("fixtures/reference/models.json");
    if (!rp) { TU_SKIP_NO_SHARED("dense_format fixture test"); return; }
    json_error_t je;
    json_t *ref = json_load_file(rp, 0, &je);
    ck_assert_ptr_nonnull(ref);
    const char *name;
    json_t *md;
    int nm = 0;
    double worst = 0;
    json_object_foreach(json_object_get(ref, "models"), name, md) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/fixtures/models/%s", tu_shared_dir(), name);
        eng_engine *e0, *en, *eq;
        emoe_err err = {0};
        eng_open_opts on = {.dense_format = DENSE_NATIVE}, oq = {.dense_format = DENSE_Q8};
        ck_assert_msg(eng_open(dir, NULL, &e0, &err) == EMOE_OK, "%s: %s", name, err.msg);
        ck_assert_msg(eng_open(dir, &on, &en, &err) == EMOE_OK, "%s: %s", name, err.msg);
        ck_assert_msg(eng_open(dir, &oq, &eq, &err) == EMOE_OK, "%s: %s", name, err.msg);
        ck_assert_int_eq(eng_dense_format(e0), DENSE_NATIVE);
        ck_assert_int_eq(eng_dense_format(en), DENSE_NATIVE);
        ck_assert_int_eq(eng_dense_format(eq), DENSE_Q8);
        int V = eng_desc(e0)->vocab;
        size_t ci;
        json_t *c;
        json_array_foreach(json_object_get(md, "cases"), ci, c) {
            json_t *pids = json_object_get(c, "prompt_ids");
            int n = (int)json_array_size(pids);
            int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
            for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(pids, (size_t)i));
            float *l0 = run_case(e0, ids, n), *ln = run_case(en, ids, n), *lq = run_case(eq, ids, n);
            ck_assert_msg(memcmp(l0, ln, sizeof(float) * (size_t)V * 5) == 0, "%s case %zu: native differs from the default", name, ci);
            char lp[4096];
            snprintf(lp, sizeof lp, "%s/fixtures/reference/%s", tu_shared_dir(), json_string_value(json_object_get(c, "last_logits_file")));
            size_t nref;
            float *hf = tu_read_f32(lp, &nref);
            ck_assert_ptr_nonnull(hf);
            ck_assert_int_eq((int)nref, V);
            double rn = tu_rel_err(ln, hf, (size_t)V), rq = tu_rel_err(lq, hf, (size_t)V);
            fprintf(stderr, "%s case %zu: native %.2e, q8 dense %.2e relative to the reference\n", name, ci, rn, rq);
            ck_assert_msg(rn < 1e-4, "%s case %zu: native relative error %g", name, ci, rn);
            ck_assert_msg(rq < DQ_TOL, "%s case %zu: q8 dense relative error %g >= %g", name, ci, rq, DQ_TOL);
            ck_assert_msg(rq > 0 && memcmp(ln, lq, sizeof(float) * (size_t)V) != 0, "%s case %zu: q8 logits equal native: unused?", name, ci);
            ck_assert_int_eq(tu_argmax(lq, V), tu_argmax(hf, V));
            /* the decode steps (one row each) too, against native */
            for (int t = 1; t < 5; t++) {
                double r = tu_rel_err(lq + (size_t)t * V, ln + (size_t)t * V, (size_t)V);
                ck_assert_msg(r < DQ_TOL, "%s case %zu step %d: q8 vs native %g", name, ci, t, r);
                if (rq > worst) worst = rq;
                if (r > worst) worst = r;
            }
            free(hf);
            free(l0);
            free(ln);
            free(lq);
            free(ids);
        }
        eng_free(e0);
        eng_free(en);
        eng_free(eq);
        nm++;
    }
    fprintf(stderr, "worst q8 dense relative error %.3e (tolerance %g)\n", worst, DQ_TOL);
    ck_assert_int_eq(nm, 4);
    json_decref(ref);
}
END_TEST

/* A synthetic layer: dense_mm_run against quant_matmul and a float reference. */
START_TEST(test_dense_mm_run)
{
    enum { K = 70, NQ = 13, NR = 5, T = 3 }; /* K not a multiple of 32 */
    float *wq = malloc(sizeof(float) * NQ * K), *wr = malloc(sizeof(float) * NR * K), bias[NQ], x[T * K];
    uint32_t st = 12345;
#define RND() ((st = st * 1664525u + 1013904223u), ((float)(st >> 8) / 16777216.0f - 0.5f))
    for (int i = 0; i < NQ * K; i++) wq[i] = RND();
    for (int i = 0; i < NR * K; i++) wr[i] = RND();
    for (int i = 0; i < NQ; i++) bias[i] = RND();
    for (int i = 0; i < T * K; i++) x[i] = 3 * RND();
#undef RND
    eng_layer_weights L;
    memset(&L, 0, sizeof L);
    L.wq = (eng_tensor){wq, ENG_DT_F32, 2, {NQ, K}};
    L.router = (eng_tensor){wr, ENG_DT_F32, 2, {NR, K}};
    eng_tensor eb = {bias, ENG_DT_F32, 1, {NQ}};
    eng_weights w = {.layers = &L, .lm_head = {wr, ENG_DT_F32, 2, {NR, K}}};
    eng_model_desc d;
    memset(&d, 0, sizeof d);
    d.n_layers = 1;
    dense_quant *dq = NULL;
    emoe_err err = {0};
    eng_pool *p = eng_pool_new(2);
    ck_assert(dense_quant_build(p, &w, &d, DENSE_Q8, &dq, &err) == EMOE_OK);
    ck_assert_int_eq(dense_quant_count(dq), 2); /* wq and lm_head; the router stays native */
    ck_assert_uint_eq(dense_quant_bytes(dq), (NQ + NR) * quant_row_bytes(QUANT_Q8, K));
    float yq[T * NQ], yr[T * NR], yr0[T * NR], yref[T * NQ];
    eng_mm_job jobs[2] = {{x, K, T, K, &L.wq, &eb, yq, NQ}, {x, K, T, K, &L.router, NULL, yr, NR}};
    dense_mm_run(dq, p, jobs, 2);
    eng_mm(p, x, T, K, &L.router, NULL, yr0);
    ck_assert_msg(memcmp(yr, yr0, sizeof yr) == 0, "the router (no quantized copy) is not eng_mm's");
    /* bitwise quant_matmul of the same q8 rows, bias added */
    void *qrows = malloc(quant_row_bytes(QUANT_Q8, K) * NQ);
    for (int r = 0; r < NQ; r++) quant_row_quantize(QUANT_Q8, wq + r * K, K, (char *)qrows + r * quant_row_bytes(QUANT_Q8, K));
    quant_matmul(p, x, T, K, qrows, NQ, QUANT_Q8, yref);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < NQ; r++) {
            float want = yref[t * NQ + r] + bias[r];
            ck_assert_msg(memcmp(&yq[t * NQ + r], &want, sizeof want) == 0, "t %d r %d: %g != %g", t, r, yq[t * NQ + r], want);
            /* float reference: |error| within the q8 bound (weights and activations rounded to 1/254 of their block max) */
            double ex = bias[r], mag = 0;
            for (int k = 0; k < K; k++) { ex += (double)wq[r * K + k] * x[t * K + k]; mag += fabs((double)wq[r * K + k] * x[t * K + k]); }
            ck_assert_msg(fabs(yq[t * NQ + r] - ex) <= 2.0 / 127 * mag + 1e-5, "t %d r %d: %g vs float %g", t, r, yq[t * NQ + r], ex);
        }
    /* NULL: plain eng_mm_run */
    float yq0[T * NQ], yq1[T * NQ];
    eng_mm_job j1 = {x, K, T, K, &L.wq, &eb, yq1, NQ};
    dense_mm_run(NULL, p, &j1, 1);
    eng_mm(p, x, T, K, &L.wq, &eb, yq0);
    ck_assert(memcmp(yq0, yq1, sizeof yq0) == 0);
    dense_quant_free(dq);
    eng_pool_free(p);
    free(qrows);
    free(wq);
    free(wr);
}
END_TEST

START_TEST(test_bad_values)
{
    int f = -1;
    ck_assert_int_eq(dense_format_parse("native", &f), 0);
    ck_assert_int_eq(f, DENSE_NATIVE);
    ck_assert_int_eq(dense_format_parse("bf16", &f), 0);
    ck_assert_int_eq(f, DENSE_NATIVE);
    ck_assert_int_eq(dense_format_parse("q8", &f), 0);
    ck_assert_int_eq(f, DENSE_Q8);
    ck_assert_int_eq(dense_format_parse("q4", &f), -1);
    ck_assert_int_eq(dense_format_parse("Q8", &f), -1);
    ck_assert_int_eq(dense_format_parse("", &f), -1);
    ck_assert_str_eq(dense_format_name(DENSE_Q8), "q8");
    emoe_config c;
    cfg_init(&c);
    emoe_err err = {0};
    ck_assert_int_eq(c.engine.dense_format, DENSE_NATIVE);
    ck_assert(cfg_set_override(&c, "engine.dense_format=q8", &err) == EMOE_OK);
    ck_assert_int_eq(c.engine.dense_format, DENSE_Q8);
    ck_assert(cfg_set_override(&c, "engine.dense_format=q4", &err) != EMOE_OK);
    ck_assert_msg(strstr(err.msg, "dense_format") != NULL, "%s", err.msg);
    const char *dir = tu_shared_path("fixtures/models/tiny-mixtral");
    if (!dir) { TU_SKIP_NO_SHARED("dense_format eng_open refusal"); return; }
    eng_open_opts bad = {.dense_format = 2};
    eng_engine *e = NULL;
    ck_assert(eng_open(dir, &bad, &e, &err) == EMOE_EINVAL);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err.msg, "dense_format") != NULL, "%s", err.msg);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dense_quant");
    TCase *tc = tcase_create("dense");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_fixture_models);
    tcase_add_test(tc, test_dense_mm_run);
    tcase_add_test(tc, test_bad_values);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
