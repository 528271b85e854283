/*
 * test_jinja.c — the Jinja subset against the real thing:
 *  - tests/data/jinja_cases.json: templates rendered by Jinja2 3.1 configured
 *    as transformers does (tests/data/gen_jinja_cases.py); each must render to
 *    exactly the recorded output, or fail where Jinja2 failed;
 *  - ../shared/fixtures/reference/tokenizer_{qwen3,deepseek_v3}.json chat[]:
 *    the real chat templates with messages + kwargs must give exactly `text`,
 *    and encoding that text must give exactly `ids`;
 *  - the sandbox limits (iterations, output size, recursion, parse depth).
 */
#include <dirent.h>

#include "engine/jinja.h"
#include "engine/tokenizer.h"
#include "tests/unit/testutil.h"

static const char *CASES = "tests/data/jinja_cases.json";

static emoe_status render(const char *tpl, json_t *vars, const jinja_limits *lim, char **out, emoe_err *err)
{
    jinja_tpl *t = NULL;
    *out = NULL;
    emoe_status st = jinja_parse(tpl, strlen(tpl), &t, err);
    if (st) return st;
    st = jinja_render(t, vars, lim, out, NULL, err);
    jinja_free(t);
    return st;
}

START_TEST(test_against_jinja2)
{
    json_error_t je;
    json_t *d = json_load_file(CASES, 0, &je);
    ck_assert_msg(d != NULL, "%s: %s (run from the repository root)", CASES, je.text);
    json_t *vars = json_object_get(d, "vars"), *cases = json_object_get(d, "cases");
    ck_assert(json_array_size(cases) >= 55);
    size_t i;
    json_t *c;
    int n_ok = 0, n_err = 0;
    json_array_foreach(cases, i, c) {
        const char *tpl = json_string_value(json_object_get(c, "template"));
        json_t *want = json_object_get(c, "output");
        char *out = NULL;
        emoe_err err = {0};
        json_t *cv = json_object_get(c, "vars"); /* per-case variables, else the shared ones */
        json_t *use = cv ? cv : json_deep_copy(vars);
        if (!cv) { /* the shared variables plus the special tokens transformers passes */
            json_object_set_new(use, "bos_token", json_string("<s>"));
            json_object_set_new(use, "eos_token", json_string("</s>"));
        }
        emoe_status st = render(tpl, use, NULL, &out, &err);
        if (!cv) json_decref(use);
        if (want) {
            ck_assert_msg(st == EMOE_OK, "case %zu %s: %s", i, tpl, err.msg);
            ck_assert_msg(strlen(out) == json_string_length(want) && !strcmp(out, json_string_value(want)),
                          "case %zu %s:\n got: [%s]\nwant: [%s]", i, tpl, out, json_string_value(want));
            n_ok++;
        } else {
            ck_assert_msg(st != EMOE_OK, "case %zu %s: rendered [%s] but Jinja2 failed: %s", i, tpl, out,
                          json_string_value(json_object_get(c, "error")));
            ck_assert_ptr_null(out);
            ck_assert(err.msg[0] != 0);
            n_err++;
        }
        free(out);
    }
    ck_assert_int_gt(n_ok, 30);
    ck_assert_int_gt(n_err, 4);
    json_decref(d);
}
END_TEST

START_TEST(test_error_messages)
{
    json_t *v = json_object();
    char *out = NULL;
    emoe_err err = {0};
    ck_assert_int_eq(render("{{ raise_exception('Only user and assistant roles') }}", v, NULL, &out, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "Only user and assistant roles") != NULL, "%s", err.msg);
    ck_assert_int_eq(render("a\n{% include 'x' %}", v, NULL, &out, &err), EMOE_EUNSUP);
    ck_assert_msg(strstr(err.msg, "line 2") && strstr(err.msg, "include"), "%s", err.msg);
    ck_assert_int_eq(render("{% raw %}x{% endraw %}", v, NULL, &out, &err), EMOE_EUNSUP);
    ck_assert_msg(strstr(err.msg, "raw") != NULL, "%s", err.msg);
    ck_assert_int_eq(render("{{ x|frobnicate }}", v, NULL, &out, &err), EMOE_EUNSUP);
    ck_assert_msg(strstr(err.msg, "frobnicate") != NULL, "%s", err.msg);
    /* calling a missing method names the type (fuzz regression: the message read a freed value) */
    ck_assert_int_eq(render("{{ 'x'.nomethod() }}", v, NULL, &out, &err), EMOE_EUNSUP);
    ck_assert_msg(strstr(err.msg, "'str' object has no method 'nomethod'") != NULL, "%s", err.msg);
    ck_assert_int_eq(render("{{ [1].append(2) }}", v, NULL, &out, &err), EMOE_EUNSUP);
    ck_assert_int_eq(render("{{ 'a' }", v, NULL, &out, &err), EMOE_EINVAL);
    ck_assert_int_eq(render("{{ 'abc }}", v, NULL, &out, &err), EMOE_EINVAL);
    ck_assert_ptr_null(out);
    json_decref(v);
}
END_TEST

START_TEST(test_limits)
{
    json_t *v = json_object();
    char *out = NULL;
    emoe_err err = {0};
    jinja_limits lim;
    jinja_limits_default(&lim);
    lim.max_iterations = 10000;
    /* nested loops past the iteration budget */
    ck_assert_int_eq(render("{% for i in range(1000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}", v, &lim, &out, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "iterations") != NULL, "%s", err.msg);
    ck_assert_int_eq(render("{% for i in range(100000000000) %}{% endfor %}", v, &lim, &out, &err), EMOE_EINVAL);
    /* output cap */
    lim.max_output = 1000;
    ck_assert_int_eq(render("{% for i in range(100) %}0123456789abcdef{% endfor %}", v, &lim, &out, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "1000") != NULL, "%s", err.msg);
    ck_assert_int_eq(render("{{ 'x' * 100000000000 }}", v, &lim, &out, &err), EMOE_EINVAL);
    ck_assert_int_eq(render("{% set s = 'ab' %}{% for i in range(30) %}{% set s = s ~ s %}{% endfor %}", v, &lim, &out, &err), EMOE_EINVAL);
    /* unbounded recursion */
    ck_assert_int_eq(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", v, NULL, &out, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "nested") != NULL, "%s", err.msg);
    /* recursion that ends renders */
    ck_assert_int_eq(render("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}", v, NULL, &out, &err), EMOE_OK);
    ck_assert_str_eq(out, "54321");
    free(out);
    /* parser depth */
    char deep[8192];
    size_t k = 0;
    k += (size_t)snprintf(deep, sizeof deep, "{{ ");
    for (int i = 0; i < 1000; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (int i = 0; i < 1000; i++) deep[k++] = ')';
    snprintf(deep + k, sizeof deep - k, " }}");
    ck_assert_int_eq(render(deep, v, NULL, &out, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "deeply") != NULL, "%s", err.msg);
    json_decref(v);
}
END_TEST

/* The variables given to render are never modified (top-level set copies). */
START_TEST(test_vars_untouched)
{
    json_t *v = json_pack("{s:[{s:s}]}", "messages", "role", "user");
    char *before = json_dumps(v, JSON_SORT_KEYS), *out = NULL;
    emoe_err err = {0};
    ck_assert_int_eq(render("{% set messages = [] %}{% set x = 1 %}{{ messages|length }}", v, NULL, &out, &err), EMOE_OK);
    ck_assert_str_eq(out, "0");
    char *after = json_dumps(v, JSON_SORT_KEYS);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    free(out);
    json_decref(v);
}
END_TEST

static void check_chat(const char *ref_file, const char *tok_dir)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("chat template reference tests"); return; }
    tok_tokenizer *t = NULL;
    emoe_err err = {0};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_shared_path(tok_dir));
    ck_assert_msg(tok_load_dir(dir, &t, &err) == EMOE_OK, "%s", err.msg);
    json_error_t je;
    json_t *r = json_load_file(tu_shared_path(ref_file), JSON_ALLOW_NUL, &je);
    ck_assert_msg(r != NULL, "%s", je.text);
    json_t *chat = json_object_get(r, "chat");
    ck_assert(json_array_size(chat) >= 4);
    size_t i;
    json_t *c;
    json_array_foreach(chat, i, c) {
        char *out = NULL;
        int agp = json_is_true(json_object_get(c, "add_generation_prompt"));
        emoe_status st = tok_apply_chat_template(t, json_object_get(c, "messages"), agp, json_object_get(c, "kwargs"), &out, &err);
        ck_assert_msg(st == EMOE_OK, "%s chat %zu: %s", ref_file, i, err.msg);
        json_t *want = json_object_get(c, "text");
        ck_assert_msg(!strcmp(out, json_string_value(want)), "%s chat %zu:\n got: [%s]\nwant: [%s]", ref_file, i, out, json_string_value(want));
        int32_t *ids = NULL;
        size_t n = 0;
        ck_assert(tok_encode(t, out, strlen(out), 0, &ids, &n, &err) == EMOE_OK);
        json_t *wid = json_object_get(c, "ids");
        ck_assert_uint_eq(n, json_array_size(wid));
        for (size_t k = 0; k < n; k++) ck_assert_int_eq(ids[k], json_integer_value(json_array_get(wid, k)));
        free(ids);
        free(out);
    }
    json_decref(r);
    tok_free(t);
}

START_TEST(test_chat_qwen3) { check_chat("fixtures/reference/tokenizer_qwen3.json", "fixtures/models/tiny-qwen3-moe"); }
END_TEST
START_TEST(test_chat_deepseek) { check_chat("fixtures/reference/tokenizer_deepseek_v3.json", "fixtures/tokenizers/deepseek_v3"); }
END_TEST

/* Qwen3's template paths not in the reference (tools, tool calls, reasoning
 * content, a system-less conversation with tool responses) render without
 * error and contain what the template promises. */
START_TEST(test_chat_qwen3_tools)
{
    if (!tu_shared_dir()) { TU_SKIP_NO_SHARED("chat template tests"); return; }
    tok_tokenizer *t = NULL;
    emoe_err err = {0};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_shared_path("fixtures/models/tiny-qwen3-moe"));
    ck_assert(tok_load_dir(dir, &t, &err) == EMOE_OK);
    json_error_t je;
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"weather?\"},"
                              "{\"role\":\"assistant\",\"content\":\"<think>\\nneed tool\\n</think>\\n\\nchecking\","
                              "\"tool_calls\":[{\"function\":{\"name\":\"get\",\"arguments\":{\"city\":\"Paris\"}}}]},"
                              "{\"role\":\"tool\",\"content\":\"20C\"}]", 0, &je);
    json_t *kw = json_loads("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\"}}]}", 0, &je);
    char *out = NULL;
    ck_assert_msg(tok_apply_chat_template(t, msgs, 1, kw, &out, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_msg(strstr(out, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get\"}}\n</tools>") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "<|im_start|>user\n<tool_response>\n20C\n</tool_response><|im_end|>\n") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "<think>\nneed tool\n</think>\n\nchecking") != NULL, "%s", out);
    free(out);
    json_decref(msgs);
    json_decref(kw);
    /* no chat template: a clear error */
    tok_tokenizer *l = NULL;
    snprintf(dir, sizeof dir, "%s", tu_shared_path("fixtures/tokenizers/llama2"));
    ck_assert(tok_load_dir(dir, &l, &err) == EMOE_OK);
    json_t *m = json_array();
    ck_assert_int_eq(tok_apply_chat_template(l, m, 1, NULL, &out, &err), EMOE_ENOTFOUND);
    ck_assert(strstr(err.msg, "chat_template") != NULL);
    json_decref(m);
    tok_free(l);
    tok_free(t);
}
END_TEST

/* Inputs that once crashed the fuzzer (tests/fuzz/regressions/jinja-*) must
 * render or fail cleanly (ASan/UBSan watch this binary). */
START_TEST(test_fuzz_regressions)
{
    DIR *d = opendir("tests/fuzz/regressions");
    ck_assert_msg(d != NULL, "tests/fuzz/regressions missing (run from the repository root)");
    struct dirent *e;
    int n = 0;
    json_t *v = json_pack("{s:[{s:s}]}", "messages", "role", "user");
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "jinja-", 6)) continue;
        char path[512];
        snprintf(path, sizeof path, "tests/fuzz/regressions/%s", e->d_name);
        size_t len = 0;
        char *src = tu_read_file(path, &len);
        ck_assert(src != NULL);
        jinja_tpl *t = NULL;
        emoe_err err = {0};
        if (jinja_parse(src, len, &t, &err) == EMOE_OK) {
            char *out = NULL;
            jinja_render(t, v, NULL, &out, NULL, &err);
            free(out);
            jinja_free(t);
        }
        free(src);
        n++;
    }
    closedir(d);
    json_decref(v);
    ck_assert_int_ge(n, 1);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("jinja");
    TCase *tc = tcase_create("jinja");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_against_jinja2);
    tcase_add_test(tc, test_error_messages);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_vars_untouched);
    tcase_add_test(tc, test_chat_qwen3);
    tcase_add_test(tc, test_chat_deepseek);
    tcase_add_test(tc, test_chat_qwen3_tools);
    tcase_add_test(tc, test_fuzz_regressions);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
