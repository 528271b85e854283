/*
 * test_engine_ref.c — the CPU reference engine against the Hugging Face
 * reference outputs in ../shared/fixtures/reference/models.json: last-position
 * logits within 1e-4 relative, identical routing at every layer and position,
 * identical 16 greedy tokens; and the same results when several prompts run
 * batched in one step (the scheduler's continuous batching relies on it).
 */
#include <jansson.h>
#include <math.h>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/matmul.h"
#include "tests/unit/testutil.h"

typedef struct rt_rec { int n_layers, n_pos, k; int *ids; int bad; } rt_rec;

static void on_route(void *user, void *tag, int pos, int layer, const int *ex, const float *w, int k)
{
    (void)w;
    rt_rec *r = tag ? tag : user;
    if (pos >= r->n_pos || layer >= r->n_layers || k != r->k) { r->bad = 1; return; }
    memcpy(r->ids + ((size_t)layer * r->n_pos + pos) * k, ex, sizeof(int) * (size_t)k);
}

static json_t *load_ref(void)
{
    const char *p = tu_shared_path("fixtures/reference/models.json");
    if (!p) return NULL;
    json_error_t je;
    return json_load_file(p, 0, &je);
}

static void check_model(const char *name, json_t *md)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", tu_shared_dir(), name);
    eng_engine *e;
    emoe_err err = {0};
    ck_assert_msg(eng_open(dir, NULL, &e, &err) == EMOE_OK, "%s: %s", name, err.msg);
    const eng_model_desc *d = eng_desc(e);
    float *logits = malloc(sizeof(float) * (size_t)d->vocab);
    size_t ci;
    json_t *c;
    json_array_foreach(json_object_get(md, "cases"), ci, c) {
        json_t *pids = json_object_get(c, "prompt_ids");
        int n = (int)json_array_size(pids);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
        for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(pids, (size_t)i));
        rt_rec rr = {d->n_layers, n, d->top_k, calloc((size_t)d->n_layers * n * d->top_k, sizeof(int)), 0};
        for (size_t i = 0; i < (size_t)d->n_layers * n * d->top_k; i++) rr.ids[i] = -7; /* poison */
        eng_set_routing_cb(e, on_route, &rr);
        eng_seq *s = eng_seq_new(e, 0, &err);
        for (int i = 0; i < d->vocab; i++) logits[i] = NAN;
        ck_assert_msg(eng_forward(e, s, ids, n, logits, &err) == EMOE_OK, "%s: %s", name, err.msg);
        eng_set_routing_cb(e, NULL, NULL);
        char lp[4096];
        snprintf(lp, sizeof lp, "%s/fixtures/reference/%s", tu_shared_dir(), json_string_value(json_object_get(c, "last_logits_file")));
        size_t nref;
        float *ref = tu_read_f32(lp, &nref);
        ck_assert_ptr_nonnull(ref);
        ck_assert_int_eq((int)nref, d->vocab);
        double re = tu_rel_err(logits, ref, nref);
        ck_assert_msg(re < 1e-4, "%s case %zu: logits relative error %g >= 1e-4", name, ci, re);
        ck_assert(!rr.bad);
        json_t *rt = json_object_get(c, "routing");
        for (int l = 0; l < d->n_layers; l++) {
            json_t *ex = json_object_get(json_array_get(rt, (size_t)l), "experts");
            for (int p = 0; p < n; p++)
                for (int j = 0; j < d->top_k; j++) {
                    int want = (int)json_integer_value(json_array_get(json_array_get(ex, (size_t)p), (size_t)j));
                    int got = rr.ids[((size_t)l * n + p) * d->top_k + j];
                    ck_assert_msg(want == got, "%s case %zu layer %d pos %d pick %d: expert %d, reference %d", name, ci, l, p, j, got, want);
                }
        }
        /* 16 greedy tokens, no EOS stop. */
        json_t *g16 = json_object_get(c, "greedy_16");
        for (size_t t = 0; t < json_array_size(g16); t++) {
            int tok = tu_argmax(logits, d->vocab);
            ck_assert_msg(tok == (int)json_integer_value(json_array_get(g16, t)), "%s case %zu greedy token %zu: %d", name, ci, t, tok);
            int32_t id = tok;
            ck_assert(eng_forward(e, s, &id, 1, logits, &err) == EMOE_OK);
        }
        eng_seq_free(s);
        free(ref);
        free(rr.ids);
        free(ids);
    }
    free(logits);
    eng_free(e);
}

START_TEST(test_fixture_models)
{
    json_t *ref = load_ref();
    if (!ref) { TU_SKIP_NO_SHARED("fixture model reference test"); return; }
    const char *name;
    json_t *md;
    /* Every matmul variant this machine runs (engine/matmul.h), the dispatched one last. */
    for (int isa = 0; isa <= ENG_MM_ISA_COUNT; isa++) {
        eng_mm_isa v = isa < ENG_MM_ISA_COUNT ? (eng_mm_isa)isa : eng_mm_isa_best();
        if (eng_mm_set_isa(v) != 0) continue;
        int n = 0;
        json_object_foreach(json_object_get(ref, "models"), name, md) { check_model(name, md); n++; }
        ck_assert_int_eq(n, 4);
    }
    json_decref(ref);
}
END_TEST

/* All cases of a model as one batched prefill step, then batched greedy decode
 * steps: every sequence must produce exactly what it produces alone. */
static void check_batched(const char *name, json_t *md)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", tu_shared_dir(), name);
    eng_engine *e;
    emoe_err err = {0};
    ck_assert(eng_open(dir, NULL, &e, &err) == EMOE_OK);
    const eng_model_desc *d = eng_desc(e);
    json_t *cases = json_object_get(md, "cases");
    int nc = (int)json_array_size(cases);
    eng_batch_item items[8];
    eng_seq *seqs[8];
    int32_t *ids[8], next[8];
    float *lg[8];
    for (int i = 0; i < nc; i++) {
        json_t *p = json_object_get(json_array_get(cases, (size_t)i), "prompt_ids");
        int n = (int)json_array_size(p);
        ids[i] = malloc(sizeof(int32_t) * (size_t)n);
        for (int j = 0; j < n; j++) ids[i][j] = (int32_t)json_integer_value(json_array_get(p, (size_t)j));
        seqs[i] = eng_seq_new(e, 0, &err);
        lg[i] = malloc(sizeof(float) * (size_t)d->vocab);
        items[i] = (eng_batch_item){.seq = seqs[i], .ids = ids[i], .n_ids = n, .logits = lg[i]};
    }
    ck_assert(eng_step(e, items, nc, &err) == EMOE_OK);
    for (int t = 0; t < 16; t++) {
        for (int i = 0; i < nc; i++) {
            json_t *g16 = json_object_get(json_array_get(cases, (size_t)i), "greedy_16");
            next[i] = tu_argmax(lg[i], d->vocab);
            ck_assert_msg(next[i] == (int)json_integer_value(json_array_get(g16, (size_t)t)),
                          "%s batched seq %d token %d differs", name, i, t);
            items[i] = (eng_batch_item){.seq = seqs[i], .ids = &next[i], .n_ids = 1, .logits = lg[i]};
        }
        ck_assert(eng_step(e, items, nc, &err) == EMOE_OK);
    }
    for (int i = 0; i < nc; i++) { eng_seq_free(seqs[i]); free(ids[i]); free(lg[i]); }
    eng_free(e);
}

START_TEST(test_batched_equals_single)
{
    json_t *ref = load_ref();
    if (!ref) { TU_SKIP_NO_SHARED("batched decode test"); return; }
    const char *name;
    json_t *md;
    json_object_foreach(json_object_get(ref, "models"), name, md) check_batched(name, md);
    json_decref(ref);
}
END_TEST

START_TEST(test_step_rejects_bad_input)
{
    const char *dir = tu_shared_path("fixtures/models/tiny-mixtral");
    if (!dir) { TU_SKIP_NO_SHARED("step input test"); return; }
    eng_engine *e;
    emoe_err err = {0};
    eng_open_opts oo = {.max_ctx = 8};
    ck_assert(eng_open(dir, &oo, &e, &err) == EMOE_OK);
    eng_seq *s = eng_seq_new(e, 0, &err);
    int32_t bad[2] = {1, 512};
    ck_assert_int_eq(eng_forward(e, s, bad, 2, NULL, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "512") != NULL, "%s", err.msg);
    ck_assert_int_eq(eng_seq_len(s), 0);
    int32_t many[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    ck_assert_int_eq(eng_forward(e, s, many, 9, NULL, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "context") != NULL, "%s", err.msg);
    ck_assert_int_eq(eng_forward(e, s, many, 8, NULL, &err), EMOE_OK);
    ck_assert_int_eq(eng_seq_len(s), 8);
    eng_seq_free(s);
    eng_free(e);
}
END_TEST

/* [engine] kv_dtype: the f16 / bf16 KV caches change the logits only by
 * their rounding (and do change them: the path is used), on every fixture. */
START_TEST(test_kv_dtype)
{
    json_t *ref = load_ref();
    if (!ref) { TU_SKIP_NO_SHARED("kv_dtype test"); return; }
    const char *name;
    json_t *md;
    json_object_foreach(json_object_get(ref, "models"), name, md) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/fixtures/models/%s", tu_shared_dir(), name);
        json_t *p = json_object_get(json_array_get(json_object_get(md, "cases"), 0), "prompt_ids");
        int n = (int)json_array_size(p);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
        for (int j = 0; j < n; j++) ids[j] = (int32_t)json_integer_value(json_array_get(p, (size_t)j));
        float *lg[3] = {0};
        int vocab = 0;
        const int dts[3] = {ENG_DT_F32, ENG_DT_F16, ENG_DT_BF16};
        for (int k = 0; k < 3; k++) {
            eng_open_opts oo = {.kv_dtype = dts[k]};
            eng_engine *e;
            emoe_err err = {0};
            ck_assert_msg(eng_open(dir, &oo, &e, &err) == EMOE_OK, "%s: %s", name, err.msg);
            vocab = eng_desc(e)->vocab;
            lg[k] = malloc(sizeof(float) * (size_t)vocab);
            eng_seq *s = eng_seq_new(e, 0, &err);
            ck_assert(eng_forward(e, s, ids, n, lg[k], &err) == EMOE_OK);
            eng_seq_free(s);
            eng_free(e);
        }
        for (int k = 1; k < 3; k++) {
            double mx = 0, diff = 0;
            for (int i = 0; i < vocab; i++) {
                if (fabs(lg[0][i]) > mx) mx = fabs(lg[0][i]);
                if (fabs(lg[k][i] - lg[0][i]) > diff) diff = fabs(lg[k][i] - lg[0][i]);
            }
            double tol = (dts[k] == ENG_DT_BF16 ? 5e-3 : 1e-3) * mx;
            fprintf(stderr, "%s kv %s: max logit difference %g (max |logit| %g)\n", name, eng_dtype_name(dts[k]), diff, mx);
            ck_assert_msg(diff <= tol, "%s kv %s: logits differ by %g (max |logit| %g)", name, eng_dtype_name(dts[k]), diff, mx);
            ck_assert_msg(diff > 0, "%s kv %s: logits identical to f32: is the KV dtype used?", name, eng_dtype_name(dts[k]));
        }
        eng_open_opts bad = {.kv_dtype = 7};
        eng_engine *e = NULL;
        emoe_err err = {0};
        ck_assert(eng_open(dir, &bad, &e, &err) == EMOE_EINVAL);
        ck_assert_ptr_nonnull(strstr(err.msg, "kv_dtype"));
        for (int k = 0; k < 3; k++) free(lg[k]);
        free(ids);
    }
    json_decref(ref);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("engine_ref");
    TCase *tc = tcase_create("ref");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_fixture_models);
    tcase_add_test(tc, test_batched_equals_single);
    tcase_add_test(tc, test_step_rejects_bad_input);
    tcase_add_test(tc, test_kv_dtype);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
