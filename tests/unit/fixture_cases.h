/* fixture_cases.h — the Hugging Face reference cases of tiny-qwen3-moe
 * (prompt ids and 16 greedy tokens from ../shared/fixtures/reference/models.json),
 * for the suites that run the scheduler against the reference. */
#ifndef EMOE_TESTS_FIXTURE_CASES_H
#define EMOE_TESTS_FIXTURE_CASES_H

#include <check.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/* Fills up to maxc cases (prompts of at most 32 ids) from the shared folder
 * sh; returns how many. Fails the test when the reference file is unreadable. */
static inline int fc_load_qwen3_cases(const char *sh, int maxc, int32_t (*prompts)[32], int *n_prompt,
                                      int32_t (*greedy)[16])
{
    char ref[8192];
    snprintf(ref, sizeof ref, "%s/fixtures/reference/models.json", sh);
    json_error_t je;
    json_t *root = json_load_file(ref, 0, &je);
    ck_assert_ptr_nonnull(root);
    json_t *cases = json_object_get(json_object_get(json_object_get(root, "models"), "tiny-qwen3-moe"), "cases");
    ck_assert(json_is_array(cases));
    int n = 0;
    for (size_t i = 0; i < json_array_size(cases) && n < maxc; i++) {
        json_t *c = json_array_get(cases, i), *p = json_object_get(c, "prompt_ids"), *g = json_object_get(c, "greedy_16");
        n_prompt[n] = (int)json_array_size(p);
        ck_assert_int_le(n_prompt[n], 32);
        for (int k = 0; k < n_prompt[n]; k++) prompts[n][k] = (int32_t)json_integer_value(json_array_get(p, (size_t)k));
        for (int k = 0; k < 16; k++) greedy[n][k] = (int32_t)json_integer_value(json_array_get(g, (size_t)k));
        n++;
    }
    json_decref(root);
    return n;
}

#endif
