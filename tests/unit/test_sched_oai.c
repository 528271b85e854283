/* test_sched_oai.c — the scheduler's OpenAI extras on tiny-qwen3-moe: n > 1
 * choices forked from one prefill (eng_seq_fork) give the greedy reference
 * and prefill the prompt once; log-probabilities (greedy token = top entry,
 * values <= 0); logit_bias; a constraint that masks logits and completes. */
#include "tests/unit/testutil.h"
#include "scheduler/sched.h"

#include <jansson.h>
#include <math.h>
#include <time.h>

static int32_t prompt[32], ref[16];
static int n_prompt;
static eng_engine *eng;

static int kv_dtype; /* eng_dtype of the KV cache for the next load */

static int load_fixture(void)
{
    const char *sh = tu_shared_dir();
    if (!sh) return 0;
    char mdir[8192], rf[8192];
    snprintf(mdir, sizeof mdir, "%s/fixtures/models/tiny-qwen3-moe", sh);
    snprintf(rf, sizeof rf, "%s/fixtures/reference/models.json", sh);
    json_error_t je;
    json_t *root = json_load_file(rf, 0, &je);
    ck_assert_ptr_nonnull(root);
    json_t *c = json_array_get(json_object_get(json_object_get(json_object_get(root, "models"), "tiny-qwen3-moe"), "cases"), 0);
    json_t *p = json_object_get(c, "prompt_ids"), *g = json_object_get(c, "greedy_16");
    n_prompt = (int)json_array_size(p);
    ck_assert(n_prompt > 0 && n_prompt <= 32);
    for (int k = 0; k < n_prompt; k++) prompt[k] = (int32_t)json_integer_value(json_array_get(p, (size_t)k));
    for (int k = 0; k < 16; k++) ref[k] = (int32_t)json_integer_value(json_array_get(g, (size_t)k));
    json_decref(root);
    emoe_err err = {0};
    eng_open_opts o = {.n_threads = 1, .max_ctx = 256, .kv_dtype = kv_dtype};
    ck_assert_msg(eng_open(mdir, &o, &eng, &err) == EMOE_OK, "%s", err.msg);
    return 1;
}

static sched *start(int max_running)
{
    sched_opts o = {0};
    o.limits = (sched_limits){max_running, 16, 64, 64};
    sched *s = NULL;
    emoe_err err = {0};
    ck_assert_msg(sched_init(eng, &o, &s, &err) == EMOE_OK, "%s", err.msg);
    return s;
}

/* The fork tests submit every choice before the loop admits any: a choice
 * admitted after its parent's prefill prefills itself instead of forking,
 * which a busy machine could otherwise make happen (the run-loop tick holds
 * the loop while `gate` is 0; bounded). */
static volatile int gate = 1;

static void gate_tick(void *user)
{
    (void)user;
    double t0 = emoe_now();
    while (!gate && emoe_now() - t0 < 30) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static sched *start_gated(int max_running)
{
    sched_opts o = {0};
    o.limits = (sched_limits){max_running, 16, 64, 64};
    o.tick = gate_tick;
    gate = 0;
    sched *s = NULL;
    emoe_err err = {0};
    ck_assert_msg(sched_init(eng, &o, &s, &err) == EMOE_OK, "%s", err.msg);
    return s;
}

static void params(sched_req_params *p, int max_tokens)
{
    memset(p, 0, sizeof *p);
    p->prompt = prompt;
    p->n_prompt = n_prompt;
    p->max_tokens = max_tokens;
    eng_sampling_default(&p->sampling);
    p->ignore_eos = 1;
}

static sched_finish wait_done(sched_req *r)
{
    double t0 = emoe_now();
    while (emoe_now() - t0 < 60) {
        sched_update u;
        sched_req_poll(r, 0.2, &u);
        free(u.text);
        if (u.finished) return u.finish;
    }
    ck_abort_msg("request did not finish in 60 s");
    return SCHED_FINISH_NONE;
}

START_TEST(fork_choices_match_reference)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    sched *s = start_gated(4);
    sched_req_params p;
    params(&p, 16);
    sched_req *r[3] = {0};
    emoe_err err = {0};
    for (int i = 0; i < 3; i++) {
        p.fork_of = i ? r[0] : NULL;
        ck_assert_msg(sched_submit(s, &p, &r[i], &err) == EMOE_OK, "%s", err.msg);
    }
    gate = 1;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(wait_done(r[i]), SCHED_FINISH_LENGTH);
        int32_t got[16];
        ck_assert_int_eq(sched_req_tokens(r[i], got, 16), 16);
        for (int k = 0; k < 16; k++) ck_assert_msg(got[k] == ref[k], "choice %d token %d: %d != %d", i, k, got[k], ref[k]);
    }
    ck_assert_int_eq(sched_req_forked(r[0]), 0);
    ck_assert_int_eq(sched_req_forked(r[1]), 1);
    ck_assert_int_eq(sched_req_forked(r[2]), 1);
    sched_stats st;
    sched_get_stats(s, &st);
    ck_assert_int_eq((int)st.prompt_tokens, n_prompt); /* prefilled once */
    for (int i = 0; i < 3; i++) sched_req_release(r[i]);
    sched_free(s);
    eng_free(eng);
}
END_TEST

/* An f16 KV cache is copied as f16: forked choices equal the choice that
 * prefilled (greedy), element size and all. */
START_TEST(fork_f16_kv)
{
    kv_dtype = ENG_DT_F16;
    int have = load_fixture();
    kv_dtype = 0;
    if (!have) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    sched *s = start_gated(4);
    sched_req_params p;
    params(&p, 12);
    sched_req *r[2] = {0};
    emoe_err err = {0};
    for (int i = 0; i < 2; i++) {
        p.fork_of = i ? r[0] : NULL;
        ck_assert(sched_submit(s, &p, &r[i], &err) == EMOE_OK);
    }
    gate = 1;
    int32_t a[12], b[12];
    for (int i = 0; i < 2; i++) ck_assert_int_eq(wait_done(r[i]), SCHED_FINISH_LENGTH);
    ck_assert_int_eq(sched_req_tokens(r[0], a, 12), 12);
    ck_assert_int_eq(sched_req_tokens(r[1], b, 12), 12);
    ck_assert_int_eq(sched_req_forked(r[1]), 1);
    for (int k = 0; k < 12; k++) ck_assert_int_eq(a[k], b[k]);
    for (int i = 0; i < 2; i++) sched_req_release(r[i]);
    sched_free(s);
    eng_free(eng);
}
END_TEST

START_TEST(logprobs_and_bias)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    sched *s = start(2);
    sched_req_params p;
    params(&p, 8);
    p.logprobs = 1;
    p.top_logprobs = 5;
    sched_req *r = NULL;
    emoe_err err = {0};
    ck_assert(sched_submit(s, &p, &r, &err) == EMOE_OK);
    ck_assert_int_eq(wait_done(r), SCHED_FINISH_LENGTH);
    int32_t got[8], top[8 * 5];
    float lp[8], tlp[8 * 5];
    ck_assert_int_eq(sched_req_tokens(r, got, 8), 8);
    ck_assert_int_eq(sched_req_logprobs(r, 0, 8, lp, top, tlp), 8);
    for (int k = 0; k < 8; k++) {
        ck_assert_int_eq(got[k], ref[k]);
        ck_assert_int_eq(top[k * 5], got[k]);          /* greedy = most likely */
        ck_assert(lp[k] <= 0 && lp[k] == tlp[k * 5]);
        for (int j = 1; j < 5; j++) ck_assert(tlp[k * 5 + j] <= tlp[k * 5 + j - 1]);
    }
    ck_assert_int_eq(sched_req_logprobs(r, 6, 8, lp, top, tlp), 2);
    sched_req_release(r);
    /* prompt log-probabilities (echo) against a direct forward pass of each prefix */
    int32_t longp[40];
    int nl = 0;
    while (nl + n_prompt <= 40) { memcpy(longp + nl, prompt, (size_t)n_prompt * sizeof *prompt); nl += n_prompt; }
    ck_assert_int_gt(nl, SCHED_PROMPT_LP_CHUNK * 2); /* several prefill chunks */
    params(&p, 1);
    p.prompt = longp;
    p.n_prompt = nl;
    p.logprobs = 1;
    p.top_logprobs = 3;
    p.prompt_logprobs = 1;
    ck_assert(sched_submit(s, &p, &r, &err) == EMOE_OK);
    wait_done(r);
    float plp[40], ptl[40 * 3];
    int32_t pti[40 * 3];
    ck_assert_int_eq(sched_req_prompt_logprobs(r, plp, pti, ptl), nl);
    ck_assert(isnan(plp[0]));
    float *lg = malloc(sizeof(float) * (size_t)eng_desc(eng)->vocab);
    for (int i = 1; i < nl; i++) {
        eng_seq *q = eng_seq_new(eng, 0, &err);
        ck_assert(eng_forward(eng, q, longp, i, lg, &err) == EMOE_OK);
        int32_t ti[3];
        float tv[3];
        float want = eng_logprobs(lg, eng_desc(eng)->vocab, longp[i], 3, ti, tv);
        ck_assert_msg(fabsf(want - plp[i]) < 1e-4f, "prompt token %d: %g != %g", i, plp[i], want);
        ck_assert_int_eq(ti[0], pti[i * 3]);
        eng_seq_free(q);
    }
    free(lg);
    sched_req_release(r);
    /* logprobs off */
    params(&p, 2);
    ck_assert(sched_submit(s, &p, &r, &err) == EMOE_OK);
    wait_done(r);
    ck_assert_int_eq(sched_req_logprobs(r, 0, 2, lp, top, tlp), -1);
    sched_req_release(r);
    /* logit_bias +100 on one id: every token is that id */
    int32_t id = 4242;
    float b = 100;
    params(&p, 6);
    p.bias_ids = &id;
    p.bias = &b;
    p.n_bias = 1;
    ck_assert(sched_submit(s, &p, &r, &err) == EMOE_OK);
    wait_done(r);
    ck_assert_int_eq(sched_req_tokens(r, got, 8), 6);
    for (int k = 0; k < 6; k++) ck_assert_int_eq(got[k], 4242);
    sched_req_release(r);
    id = 1 << 30;
    ck_assert(sched_submit(s, &p, &r, &err) == EMOE_EINVAL);
    ck_assert(strstr(err.msg, "logit_bias") != NULL);
    sched_free(s);
    eng_free(eng);
}
END_TEST

/* A constraint allowing only 11 then 22 then 33; complete after 33. */
typedef struct { int step; int freed; } fake_cons;
static const int32_t seq_ids[3] = {11, 22, 33};
static int fc_mask(void *st, float *l, int vocab)
{
    fake_cons *c = st;
    for (int i = 0; i < vocab; i++) if (i != seq_ids[c->step]) l[i] = -INFINITY;
    return 1;
}
static int fc_accept(void *st, int32_t t)
{
    fake_cons *c = st;
    if (t != seq_ids[c->step]) return -1;
    return ++c->step == 3;
}
static int n_freed;
static void fc_free(void *st) { (void)st; n_freed++; }
static const sched_constraint_ops fc_ops = {fc_mask, fc_accept, fc_free};

START_TEST(constraint_masks_and_completes)
{
    if (!load_fixture()) { TU_SKIP_NO_SHARED("tiny-qwen3-moe"); return; }
    sched *s = start(2);
    sched_req_params p;
    params(&p, 10);
    fake_cons c = {0};
    p.constraint_ops = &fc_ops;
    p.constraint = &c;
    p.sampling.temperature = 1.0f;
    sched_req *r = NULL;
    emoe_err err = {0};
    n_freed = 0;
    ck_assert(sched_submit(s, &p, &r, &err) == EMOE_OK);
    ck_assert_int_eq(wait_done(r), SCHED_FINISH_STOP);
    int32_t got[10];
    ck_assert_int_eq(sched_req_tokens(r, got, 10), 3);
    for (int k = 0; k < 3; k++) ck_assert_int_eq(got[k], seq_ids[k]);
    sched_req_release(r);
    sched_free(s);
    ck_assert_int_eq(n_freed, 1);
    eng_free(eng);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("sched_oai");
    TCase *tc = tcase_create("sched_oai");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fork_choices_match_reference);
    tcase_add_test(tc, fork_f16_kv);
    tcase_add_test(tc, logprobs_and_bias);
    tcase_add_test(tc, constraint_masks_and_completes);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
