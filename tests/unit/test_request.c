/* test_request.c — the request parser: accepted forms, defaults, precedence,
 * and that each malformed field is rejected naming that field. */
#include "tests/unit/testutil.h"
#include "server/request.h"

static int parse(srv_kind k, const char *body, srv_gen_req *r, srv_error *e)
{
    return srv_parse_request(k, body, strlen(body), r, e);
}

START_TEST(accepts_full_completion)
{
    srv_gen_req r;
    srv_error e;
    ck_assert_msg(parse(SRV_KIND_COMPLETION,
                        "{\"model\":\"m\",\"prompt\":\"h\\u00e9llo\",\"max_tokens\":5,\"max_completion_tokens\":7,"
                        "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":-1,\"min_p\":0.1,\"seed\":-3,\"stop\":[\"a\",\"\",\"bc\"],"
                        "\"presence_penalty\":1,\"frequency_penalty\":-1.5,\"n\":1,\"stream\":true,"
                        "\"stream_options\":{\"include_usage\":true},\"user\":\"u\",\"task\":\"t.1\"}",
                        &r, &e) == 0, "%s", e.message);
    ck_assert_str_eq(r.model, "m");
    ck_assert_uint_eq(r.prompt_len, 6);
    ck_assert_str_eq(r.prompt, "h\xc3\xa9llo");
    ck_assert_int_eq(r.max_tokens, 7); /* max_completion_tokens wins */
    ck_assert(r.sampling.temperature == 0.5f && r.sampling.top_k == 0 && r.sampling.min_p == 0.1f);
    ck_assert_uint_eq(r.sampling.seed, (uint64_t)-3);
    ck_assert_int_eq(r.seed_set, 1);
    ck_assert_int_eq(r.n_stop, 2); /* the empty stop string is dropped */
    ck_assert_str_eq(r.stop[1], "bc");
    ck_assert(r.stream && r.include_usage);
    ck_assert_str_eq(r.task, "t.1");
    srv_gen_req_free(&r);
}
END_TEST

START_TEST(defaults_and_nulls)
{
    srv_gen_req r;
    srv_error e;
    ck_assert(parse(SRV_KIND_COMPLETION, "{\"prompt\":[[1,2,3]],\"temperature\":null,\"stop\":null,\"max_tokens\":null}", &r, &e) == 0);
    ck_assert_int_eq(r.n_prompt_ids, 3);
    ck_assert_int_eq(r.prompt_ids[2], 3);
    ck_assert_int_eq(r.max_tokens, -1);
    ck_assert(r.sampling.temperature == 0.0f && r.sampling.top_p == 1.0f);
    ck_assert_int_eq(r.seed_set, 0);
    ck_assert_int_eq(r.stream, 0);
    srv_gen_req_free(&r);
    /* Chat: content parts are concatenated, other members kept. */
    ck_assert(parse(SRV_KIND_CHAT,
                    "{\"messages\":[{\"role\":\"user\",\"name\":\"x\",\"content\":[{\"type\":\"text\",\"text\":\"ab\"},"
                    "{\"type\":\"text\",\"text\":\"cd\"}]},{\"role\":\"assistant\",\"content\":null}]}", &r, &e) == 0);
    json_t *m0 = json_array_get(r.messages, 0);
    ck_assert_str_eq(json_string_value(json_object_get(m0, "content")), "abcd");
    ck_assert_str_eq(json_string_value(json_object_get(m0, "name")), "x");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(r.messages, 1), "content")), "");
    srv_gen_req_free(&r);
}
END_TEST

START_TEST(accepts_openai_extras)
{
    srv_gen_req r;
    srv_error e;
    ck_assert_msg(parse(SRV_KIND_CHAT,
                        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3,\"logprobs\":true,"
                        "\"top_logprobs\":4,\"logit_bias\":{\"7\":-100,\"42\":2.5},\"store\":false,\"metadata\":{},"
                        "\"modalities\":[\"text\"],\"slo\":{},\"priority\":1,\"chat_template_kwargs\":{},"
                        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\",\"schema\":{},\"strict\":true}}}",
                        &r, &e) == 0, "%s", e.message);
    ck_assert_int_eq(r.n, 3);
    ck_assert(r.logprobs == 1 && r.top_logprobs == 4);
    ck_assert_int_eq(r.n_bias, 2);
    ck_assert(r.bias_ids[0] == 7 && r.bias[0] == -100.0f && r.bias_ids[1] == 42 && r.bias[1] == 2.5f);
    ck_assert_ptr_nonnull(r.response_format);
    srv_gen_req_free(&r);
    ck_assert(parse(SRV_KIND_CHAT,
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
                    "\"function\":{\"name\":\"get_w\",\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":\"required\","
                    "\"parallel_tool_calls\":false}", &r, &e) == 0);
    ck_assert(json_array_size(r.tools) == 1 && json_is_string(r.tool_choice) && r.parallel_tool_calls == 0);
    srv_gen_req_free(&r);
    ck_assert(parse(SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":2,\"n\":2,\"best_of\":2,\"suffix\":\"\"}", &r, &e) == 0);
    ck_assert(r.logprobs == 1 && r.top_logprobs == 2 && r.n == 2);
    srv_gen_req_free(&r);
    ck_assert(parse(SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":0,\"echo\":true}", &r, &e) == 0);
    ck_assert(r.logprobs == 1 && r.top_logprobs == 0 && r.n == 1 && r.echo == 1);
    srv_gen_req_free(&r);
}
END_TEST

START_TEST(rejects_naming_the_field)
{
    static const struct { srv_kind k; const char *body; int http; const char *param; } cases[] = {
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"temperature\":2.5}", 400, "temperature"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"temperature\":true}", 400, "temperature"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"top_p\":0}", 400, "top_p"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":0}", 400, "max_tokens"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":2.0}", 400, "max_tokens"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"n\":17}", 400, "n"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"unknown\":[1,{}]}", 400, "unknown"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"response_format\":{\"type\":\"json_object\"}}", 400, "response_format"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"n\":2,\"best_of\":3}", 400, "best_of"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":21}", 400, "logprobs"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"logit_bias\":{\"12\":101}}", 400, "logit_bias"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"logit_bias\":{\"x\":1}}", 400, "logit_bias"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"logit_bias\":{\"-1\":1}}", 400, "logit_bias"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"store\":true}", 400, "store"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"stream\":true,\"stream_options\":{\"include_usage\":true,\"x\":1}}", 400, "stream_options"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"audio\":{}}", 400, "audio"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"modalities\":[\"text\",\"audio\"]}", 400, "modalities"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"functions\":[]}", 400, "functions"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}", 400, "top_logprobs"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"required\"}", 400, "tool_choice"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]}", 400, "tools"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", 400, "tool_choice"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"xml\"}}", 400, "response_format"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\"}}}", 400, "response_format"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"echo\":true}", 400, "echo"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\"]}", 400, "stop"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"stream_options\":{}}", 400, "stream_options"},
        {SRV_KIND_COMPLETION, "{\"prompt\":[1,\"2\"]}", 400, "prompt"},
        {SRV_KIND_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", 400, "prompt"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"task\":\"\"}", 400, "task"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\",\"model\":7}", 400, "model"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":{}}]}", 400, "messages[0].content"},
        {SRV_KIND_CHAT, "{\"messages\":[],\"chat_template_kwargs\":1}", 400, "messages"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":1}", 400, "chat_template_kwargs"},
        /* issue 14: kwargs may not replace what emoe builds from the validated request */
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"messages\":[]}}", 400, "chat_template_kwargs"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"tools\":[]}}", 400, "chat_template_kwargs"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"add_generation_prompt\":false}}", 400, "chat_template_kwargs"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"eos_token\":\"x\"}}", 400, "chat_template_kwargs"},
        {SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"bos_token\":\"x\"}}", 400, "chat_template_kwargs"},
        {SRV_KIND_DETOKENIZE, "{\"tokens\":[1,-2]}", 400, "tokens"},
        {SRV_KIND_COMPLETION, "{\"prompt\":\"a\"", 400, ""},
        {SRV_KIND_COMPLETION, "{\"a\":1,\"a\":2}", 400, ""},
        {SRV_KIND_COMPLETION, "\"just a string\"", 400, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_gen_req r;
        srv_error e;
        ck_assert_msg(parse(cases[i].k, cases[i].body, &r, &e) == -1, "case %zu accepted", i);
        ck_assert_int_eq(e.http, cases[i].http);
        ck_assert_msg(!strcmp(e.param, cases[i].param), "case %zu: param '%s', want '%s' (%s)", i, e.param,
                      cases[i].param, e.message);
        char *j = srv_error_json(&e);
        json_t *o = json_loads(j, 0, NULL);
        ck_assert_ptr_nonnull(json_object_get(o, "error"));
        ck_assert(json_is_string(json_object_get(json_object_get(o, "error"), "message")));
        json_decref(o);
        free(j);
    }
}
END_TEST

static Suite *request_suite(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, accepts_full_completion);
    tcase_add_test(tc, defaults_and_nulls);
    tcase_add_test(tc, rejects_naming_the_field);
    tcase_add_test(tc, accepts_openai_extras);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(request_suite)
