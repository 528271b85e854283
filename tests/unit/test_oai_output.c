/* test_oai_output.c — tool calls parsed from generated text in the formats
 * of the template families (Hermes/Qwen <tool_call>, Mistral [TOOL_CALLS],
 * Llama-3.1 bare JSON with "parameters", emoe's constrained form), content
 * before the first call kept, malformed calls left as text, and the
 * streaming hold-back of text that could start a call. */
#include "tests/unit/testutil.h"
#include "server/oai_output.h"

static json_t *calls(const char *text, size_t *clen, int single)
{
    oai_out o = {0};
    o.kind = SRV_KIND_CHAT;
    o.tools = 1;
    o.single_call = single;
    return oai_tool_calls(&o, text, strlen(text), clen, 7);
}

static const char *name_of(json_t *c, size_t i)
{
    return json_string_value(json_object_get(json_object_get(json_array_get(c, i), "function"), "name"));
}

static json_t *args_of(json_t *c, size_t i)
{
    const char *a = json_string_value(json_object_get(json_object_get(json_array_get(c, i), "function"), "arguments"));
    return json_loads(a, 0, NULL);
}

START_TEST(formats)
{
    size_t clen;
    json_t *c = calls("Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n"
                      "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", &clen, 0);
    ck_assert_int_eq(json_array_size(c), 2);
    ck_assert_str_eq(name_of(c, 0), "get_weather");
    ck_assert_str_eq(name_of(c, 1), "get_time");
    json_t *a = args_of(c, 0);
    ck_assert_str_eq(json_string_value(json_object_get(a, "city")), "Oslo");
    json_decref(a);
    ck_assert_uint_eq(clen, strlen("Let me check."));
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(c, 0), "type")), "function");
    ck_assert(strncmp(json_string_value(json_object_get(json_array_get(c, 0), "id")), "call_", 5) == 0);
    json_decref(c);
    c = calls("<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call><tool_call>{\"name\":\"b\",\"arguments\":{}}</tool_call>", &clen, 1);
    ck_assert_int_eq(json_array_size(c), 1); /* parallel_tool_calls: false */
    json_decref(c);
    c = calls("[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": 1}}, {\"name\": \"g\", \"arguments\": \"{\\\"y\\\":2}\"}]", &clen, 0);
    ck_assert_int_eq(json_array_size(c), 2);
    a = args_of(c, 1);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "y")), 2);
    json_decref(a);
    ck_assert_uint_eq(clen, 0);
    json_decref(c);
    c = calls(" {\"name\": \"lookup\", \"parameters\": {\"q\": \"moe\"}}", &clen, 0);
    ck_assert_int_eq(json_array_size(c), 1);
    a = args_of(c, 0);
    ck_assert_str_eq(json_string_value(json_object_get(a, "q")), "moe");
    json_decref(a);
    json_decref(c);
    c = calls("{\"name\":\"get_weather\",\"arguments\":{\"city\":\"\",\"days\":2}}", &clen, 0);
    ck_assert_int_eq(json_array_size(c), 1);
    json_decref(c);
    /* not calls */
    ck_assert_ptr_null(calls("just text", &clen, 0));
    ck_assert_uint_eq(clen, 9);
    ck_assert_ptr_null(calls("<tool_call>{\"name\": \"f\", \"arguments\": {oops</tool_call>", &clen, 0));
    ck_assert_ptr_null(calls("{\"city\": \"Oslo\"}", &clen, 0));
    ck_assert_ptr_null(calls("[1, 2]", &clen, 0));
    oai_out none = {0};
    ck_assert_ptr_null(oai_tool_calls(&none, "<tool_call>{\"name\":\"a\"}</tool_call>", 34, &clen, 1));
}
END_TEST

START_TEST(safe_prefix)
{
    static const struct { const char *text; size_t safe; } cases[] = {
        {"", 0}, {"  ", 0}, {"{\"name\"", 0}, {" [", 0},
        {"Hello", 5}, {"Hello <", 6}, {"Hello <tool", 6}, {"Hello <tool_call>{", 6}, {"Hello <b>", 9},
        {"a [TOOL", 2}, {"a [TOOL_CALLS][", 2}, {"x<tool_call", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(oai_tool_safe_prefix(cases[i].text, strlen(cases[i].text)) == cases[i].safe, "case %zu ('%s'): %zu", i,
                      cases[i].text, oai_tool_safe_prefix(cases[i].text, strlen(cases[i].text)));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("oai_output");
    TCase *tc = tcase_create("oai_output");
    tcase_add_test(tc, formats);
    tcase_add_test(tc, safe_prefix);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
