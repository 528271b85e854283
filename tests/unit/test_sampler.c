/* test_sampler.c — sampling: greedy, reproducibility by seed, top-k/top-p/min-p
 * restrict the support, penalties shift choices, range checks name the field. */
#include <math.h>

#include "engine/sampler.h"
#include "tests/unit/testutil.h"

static void fill(float *l, int n) { for (int i = 0; i < n; i++) l[i] = (float)(i % 7) * 0.3f + (i == 5 ? 2.0f : 0); }

START_TEST(test_greedy)
{
    eng_sampling p;
    eng_sampling_default(&p);
    eng_sampler *s = eng_sampler_new(&p, 50);
    float l[50];
    fill(l, 50);
    ck_assert_int_eq(eng_sampler_sample(s, l), 5);
    eng_sampler_free(s);
}
END_TEST

START_TEST(test_seed_reproducible)
{
    eng_sampling p;
    eng_sampling_default(&p);
    p.temperature = 1.0f;
    p.seed = 42;
    int a[64], b[64], differ = 0;
    for (int run = 0; run < 2; run++) {
        eng_sampler *s = eng_sampler_new(&p, 50);
        for (int i = 0; i < 64; i++) {
            float l[50];
            fill(l, 50);
            (run ? b : a)[i] = eng_sampler_sample(s, l);
        }
        eng_sampler_free(s);
    }
    for (int i = 0; i < 64; i++) ck_assert_int_eq(a[i], b[i]);
    p.seed = 43;
    eng_sampler *s = eng_sampler_new(&p, 50);
    for (int i = 0; i < 64; i++) {
        float l[50];
        fill(l, 50);
        differ += eng_sampler_sample(s, l) != a[i];
    }
    eng_sampler_free(s);
    ck_assert_int_gt(differ, 0);
}
END_TEST

START_TEST(test_topk_topp_minp_support)
{
    eng_sampling p;
    eng_sampling_default(&p);
    p.temperature = 1.0f;
    float base[10] = {5, 4, 3, 2, 1, 0, -1, -2, -3, -4};
    for (int mode = 0; mode < 3; mode++) {
        eng_sampling q = p;
        if (mode == 0) q.top_k = 2;
        if (mode == 1) q.top_p = 0.5f;   /* p(0) = 0.64 > 0.5: only token 0 */
        if (mode == 2) q.min_p = 0.3f;   /* p(1)/p(0) = e^-1 = 0.37 >= 0.3; p(2)/p(0) = 0.135 < 0.3 */
        eng_sampler *s = eng_sampler_new(&q, 10);
        int seen[10] = {0};
        for (int i = 0; i < 2000; i++) {
            float l[10];
            memcpy(l, base, sizeof l);
            seen[eng_sampler_sample(s, l)]++;
        }
        eng_sampler_free(s);
        int allowed = mode == 1 ? 1 : 2;
        for (int t = 0; t < 10; t++) {
            if (t < allowed) ck_assert_int_gt(seen[t], 0);
            else ck_assert_msg(seen[t] == 0, "mode %d sampled token %d", mode, t);
        }
    }
}
END_TEST

START_TEST(test_penalties)
{
    eng_sampling p;
    eng_sampling_default(&p);
    p.frequency_penalty = 1.0f;
    eng_sampler *s = eng_sampler_new(&p, 3);
    float l[3] = {1.0f, 0.5f, 0.0f};
    ck_assert_int_eq(eng_sampler_sample(s, l), 0);
    eng_sampler_accept(s, 0);
    float l2[3] = {1.0f, 0.5f, 0.0f};
    ck_assert_int_eq(eng_sampler_sample(s, l2), 1);
    eng_sampler_free(s);
}
END_TEST

START_TEST(test_ranges)
{
    eng_sampling p;
    emoe_err err;
    eng_sampling_default(&p);
    ck_assert_int_eq(eng_sampling_check(&p, &err), EMOE_OK);
    p.top_p = 0;
    ck_assert_int_eq(eng_sampling_check(&p, &err), EMOE_EINVAL);
    ck_assert(strstr(err.msg, "top_p") != NULL);
    eng_sampling_default(&p);
    p.temperature = NAN;
    ck_assert_int_eq(eng_sampling_check(&p, &err), EMOE_EINVAL);
    ck_assert(strstr(err.msg, "temperature") != NULL);
}
END_TEST

/* logit_bias shifts the choice; out-of-vocabulary ids are refused. */
START_TEST(test_logit_bias)
{
    eng_sampling p;
    emoe_err err;
    eng_sampling_default(&p);
    eng_sampler *s = eng_sampler_new(&p, 50);
    int32_t id = 17;
    float b = 100.0f;
    ck_assert_int_eq(eng_sampler_set_bias(s, &id, &b, 1, &err), EMOE_OK);
    float l[50];
    fill(l, 50);
    ck_assert_int_eq(eng_sampler_sample(s, l), 17);
    int32_t bad = 50;
    ck_assert_int_eq(eng_sampler_set_bias(s, &bad, &b, 1, &err), EMOE_EINVAL);
    ck_assert(strstr(err.msg, "logit_bias") != NULL);
    b = -100.0f;
    id = 5;
    ck_assert_int_eq(eng_sampler_set_bias(s, &id, &b, 1, &err), EMOE_OK);
    fill(l, 50);
    ck_assert_int_ne(eng_sampler_sample(s, l), 5);
    eng_sampler_free(s);
}
END_TEST

/* Log-probabilities against a direct double-precision log-softmax; the top
 * list is sorted, its first entry is the greedy token, masked tokens never
 * appear and are never picked. */
START_TEST(test_logprobs)
{
    float l[50];
    fill(l, 50);
    double mx = -1e30, sum = 0;
    for (int i = 0; i < 50; i++) if (l[i] > mx) mx = l[i];
    for (int i = 0; i < 50; i++) sum += exp(l[i] - mx);
    int32_t ids[5];
    float lp[5];
    float x = eng_logprobs(l, 50, 12, 5, ids, lp);
    ck_assert(fabs(x - (l[12] - mx - log(sum))) < 1e-5);
    ck_assert_int_eq(ids[0], 5);
    for (int j = 1; j < 5; j++) ck_assert(lp[j] <= lp[j - 1]);
    for (int j = 0; j < 5; j++) ck_assert(lp[j] <= 0);
    double tot = 0;
    for (int i = 0; i < 50; i++) tot += exp(eng_logprobs(l, 50, i, 0, NULL, NULL));
    ck_assert(fabs(tot - 1.0) < 1e-4);
    /* masked */
    for (int i = 0; i < 50; i++) if (i != 3 && i != 4) l[i] = -INFINITY;
    eng_logprobs(l, 50, 3, 5, ids, lp);
    ck_assert(ids[0] == 3 || ids[0] == 4);
    ck_assert(isinf(lp[2]) && lp[2] < 0);
    eng_sampling p;
    eng_sampling_default(&p);
    p.temperature = 1.0f;
    p.seed = 3;
    eng_sampler *s = eng_sampler_new(&p, 50);
    for (int i = 0; i < 200; i++) {
        int t = eng_sampler_pick(s, l);
        ck_assert(t == 3 || t == 4);
    }
    eng_sampler_free(s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("sampler");
    tcase_add_test(tc, test_greedy);
    tcase_add_test(tc, test_seed_reproducible);
    tcase_add_test(tc, test_topk_topp_minp_support);
    tcase_add_test(tc, test_penalties);
    tcase_add_test(tc, test_ranges);
    tcase_add_test(tc, test_logit_bias);
    tcase_add_test(tc, test_logprobs);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
