/* test_grammar.c — constrained decoding (engine/grammar.h): byte strings
 * accepted and refused per schema (objects, arrays, enums, bounded integers
 * and numbers, nesting, required, additionalProperties: false), compile
 * errors naming the keyword, the vocabulary mask equal to a brute-force
 * token-by-token check, and random walks over a synthetic vocabulary whose
 * every output parses (jansson) and validates against the schema (an
 * independent validator below). */
#include "tests/unit/testutil.h"
#include "engine/grammar.h"

#include <jansson.h>
#include <math.h>

static json_t *js(const char *s)
{
    json_error_t je;
    json_t *v = json_loads(s, 0, &je);
    ck_assert_msg(v != NULL, "bad test JSON: %s", je.text);
    return v;
}

static gram *compile(const char *schema)
{
    json_t *s = js(schema);
    gram *g = NULL;
    emoe_err err = {0};
    ck_assert_msg(gram_compile_schema(s, &g, &err) == EMOE_OK, "%s", err.msg);
    json_decref(s);
    return g;
}

/* 1 if the whole text is accepted and complete. */
static int accepts(gram *g, const char *text)
{
    gram_state *s = gram_state_new(g, NULL);
    int ok = gram_state_feed(s, text, strlen(text)) == 0 && gram_state_can_end(s);
    gram_state_free(s);
    return ok;
}

static const char *OBJ =
    "{\"type\":\"object\",\"properties\":{"
    "\"color\":{\"enum\":[\"red\",\"green\",\"blue\"]},"
    "\"n\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":10},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},\"minItems\":1,\"maxItems\":2},"
    "\"inner\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\",\"minimum\":-1.5,\"maximum\":2.25},"
    "\"s\":{\"type\":\"string\",\"maxLength\":3}},\"required\":[\"x\"],\"additionalProperties\":false},"
    "\"opt\":{\"type\":\"null\"}},"
    "\"required\":[\"color\",\"n\",\"inner\"],\"additionalProperties\":false}";

START_TEST(schema_accepts_and_refuses)
{
    gram *g = compile(OBJ);
    ck_assert(accepts(g, "{\"color\":\"red\",\"n\":1,\"inner\":{\"x\":0}}"));
    ck_assert(accepts(g, "{\"color\":\"blue\",\"n\":10,\"tags\":[true,false],\"inner\":{\"x\":-1.5,\"s\":\"ab\"},\"opt\":null}"));
    ck_assert(accepts(g, "{\"color\":\"green\",\"n\":7,\"inner\":{\"x\":2.25}}"));
    /* bounded whitespace: one optional space after ':' and ',' */
    ck_assert(accepts(g, "{\"color\": \"red\", \"n\": 1, \"tags\": [true, false], \"inner\": {\"x\": 0}}"));
    ck_assert(!accepts(g, "{\"color\":  \"red\",\"n\":1,\"inner\":{\"x\":0}}"));
    ck_assert(!accepts(g, "{\"color\" :\"red\",\"n\":1,\"inner\":{\"x\":0}}"));
    ck_assert(!accepts(g, "{ \"color\":\"red\",\"n\":1,\"inner\":{\"x\":0}}"));
    static const char *bad[] = {
        "{\"color\":\"pink\",\"n\":1,\"inner\":{\"x\":0}}",            /* enum */
        "{\"color\":\"red\",\"n\":11,\"inner\":{\"x\":0}}",            /* maximum */
        "{\"color\":\"red\",\"n\":0,\"inner\":{\"x\":0}}",             /* minimum */
        "{\"color\":\"red\",\"n\":1.5,\"inner\":{\"x\":0}}",           /* integer */
        "{\"color\":\"red\",\"n\":01,\"inner\":{\"x\":0}}",            /* leading zero */
        "{\"color\":\"red\",\"inner\":{\"x\":0}}",                     /* required n */
        "{\"color\":\"red\",\"n\":1}",                                 /* required inner */
        "{\"color\":\"red\",\"n\":1,\"inner\":{\"x\":0},\"zz\":1}",    /* additionalProperties */
        "{\"color\":\"red\",\"n\":1,\"inner\":{\"x\":2.26}}",          /* number maximum */
        "{\"color\":\"red\",\"n\":1,\"inner\":{\"x\":-1.6}}",          /* number minimum */
        "{\"color\":\"red\",\"n\":1,\"inner\":{\"x\":0,\"s\":\"abcd\"}}", /* maxLength */
        "{\"color\":\"red\",\"n\":1,\"inner\":{\"s\":\"a\"}}",          /* nested required */
        "{\"color\":\"red\",\"n\":1,\"tags\":[],\"inner\":{\"x\":0}}",  /* minItems */
        "{\"color\":\"red\",\"n\":1,\"tags\":[true,true,true],\"inner\":{\"x\":0}}", /* maxItems */
        "{\"color\":\"red\",\"n\":1,\"tags\":[1],\"inner\":{\"x\":0}}", /* items type */
        "{\"n\":1,\"color\":\"red\",\"inner\":{\"x\":0}}",             /* order: emoe emits schema order */
        "{\"color\":\"red\",\"n\":1,\"inner\":{\"x\":0}} ",            /* trailing byte */
        "{\"color\":\"red\",\"n\":1,\"inner\":{\"x\":0}",              /* incomplete */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) ck_assert_msg(!accepts(g, bad[i]), "accepted bad[%zu]", i);
    gram_release(g);
}
END_TEST

START_TEST(bounded_numbers)
{
    gram *g = compile("{\"type\":\"integer\",\"minimum\":-5,\"maximum\":120}");
    static const char *ok[] = {"-5", "0", "120", "7", "99", "100"};
    static const char *no[] = {"-6", "121", "1000", "012", "1.5", "-", "", "1e2", "+1", "-0"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) ck_assert_msg(accepts(g, ok[i]), "refused %s", ok[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) ck_assert_msg(!accepts(g, no[i]), "accepted %s", no[i]);
    /* A prefix that cannot reach the range is refused at once. */
    gram_state *s = gram_state_new(g, NULL);
    ck_assert_int_eq(gram_state_feed(s, "130", 3), -1);
    ck_assert_int_eq(gram_state_feed(s, "12", 2), 0);
    ck_assert_int_eq(gram_state_feed(s, "1", 1), -1); /* 121 > 120 */
    ck_assert_int_eq(gram_state_feed(s, "0", 1), 0);
    gram_state_free(s);
    gram_release(g);
    g = compile("{\"type\":\"integer\",\"exclusiveMinimum\":3,\"exclusiveMaximum\":6}");
    ck_assert(!accepts(g, "3") && accepts(g, "4") && accepts(g, "5") && !accepts(g, "6"));
    gram_release(g);
    g = compile("{\"type\":\"number\",\"minimum\":0.5,\"maximum\":2}");
    ck_assert(accepts(g, "0.5") && accepts(g, "1") && accepts(g, "1.999") && accepts(g, "2") && accepts(g, "2.0"));
    ck_assert(!accepts(g, "0.4") && !accepts(g, "2.01") && !accepts(g, "3") && !accepts(g, "0"));
    gram_release(g);
    g = compile("{\"type\":\"number\",\"minimum\":-1,\"maximum\":0}");
    ck_assert(accepts(g, "-0.5") && accepts(g, "0") && accepts(g, "-1") && !accepts(g, "-0") && !accepts(g, "-0.0") && !accepts(g, "-1.5"));
    gram_release(g);
    g = compile("{\"type\":\"integer\",\"minimum\":0,\"maximum\":5}");
    gram_state *z = gram_state_new(g, NULL);
    ck_assert_int_eq(gram_state_feed(z, "-", 1), -1); /* no negative integer fits: '-' would be a dead end */
    gram_state_free(z);
    gram_release(g);
}
END_TEST

START_TEST(strings_and_literals)
{
    gram *g = compile("{\"type\":\"string\",\"minLength\":2,\"maxLength\":4}");
    ck_assert(accepts(g, "\"ab\"") && accepts(g, "\"\xc3\xa9t\xc3\xa9\"") && accepts(g, "\"a\\nb\""));
    ck_assert(!accepts(g, "\"a\"") && !accepts(g, "\"abcde\"") && !accepts(g, "\"a\x01\"") && !accepts(g, "\"a\\u0041\""));
    ck_assert(!accepts(g, "\"\xc3\x28\"") && !accepts(g, "\"\xed\xa0\x80x\"")); /* invalid UTF-8, surrogate */
    gram_release(g);
    g = compile("{\"enum\":[1,12,\"x\",null,{\"a\":[true]}]}");
    ck_assert(accepts(g, "1") && accepts(g, "12") && accepts(g, "\"x\"") && accepts(g, "null") && accepts(g, "{\"a\":[true]}"));
    ck_assert(!accepts(g, "2") && !accepts(g, "123") && !accepts(g, "\"y\""));
    gram_release(g);
    g = compile("{\"const\":\"only\"}");
    ck_assert(accepts(g, "\"only\"") && !accepts(g, "\"onl\""));
    gram_release(g);
}
END_TEST

START_TEST(unions)
{
    gram *g = compile("{\"type\":[\"string\",\"null\"],\"maxLength\":3}");
    ck_assert(accepts(g, "null") && accepts(g, "\"abc\"") && !accepts(g, "\"abcd\"") && !accepts(g, "1"));
    gram_release(g);
    g = compile("{\"type\":\"object\",\"properties\":{\"a\":{\"anyOf\":[{\"type\":\"integer\",\"minimum\":0,\"maximum\":9},"
                "{\"type\":\"array\",\"items\":{\"type\":\"boolean\"}},{\"type\":\"null\"}]},"
                "\"b\":{\"oneOf\":[{\"enum\":[\"x\",\"y\"]},{\"type\":\"object\",\"properties\":{\"c\":{\"const\":1}},"
                "\"required\":[\"c\"],\"additionalProperties\":false}]}},\"required\":[\"a\",\"b\"],\"additionalProperties\":false}");
    ck_assert(accepts(g, "{\"a\":7,\"b\":\"x\"}") && accepts(g, "{\"a\":[true],\"b\":{\"c\":1}}") && accepts(g, "{\"a\":null,\"b\":\"y\"}"));
    ck_assert(!accepts(g, "{\"a\":10,\"b\":\"x\"}") && !accepts(g, "{\"a\":\"s\",\"b\":\"x\"}") && !accepts(g, "{\"a\":1,\"b\":\"z\"}"));
    gram_release(g);
    g = compile("{\"$defs\":{\"P\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\",\"maximum\":3}},"
                "\"required\":[\"x\"],\"additionalProperties\":false}},\"type\":\"object\",\"properties\":{\"p\":{\"$ref\":\"#/$defs/P\"},"
                "\"q\":{\"anyOf\":[{\"$ref\":\"#/$defs/P\"},{\"type\":\"null\"}]}},\"required\":[\"p\",\"q\"],\"additionalProperties\":false}");
    ck_assert(accepts(g, "{\"p\":{\"x\":3},\"q\":null}") && accepts(g, "{\"p\":{\"x\":0},\"q\":{\"x\":1}}") && !accepts(g, "{\"p\":{\"x\":4},\"q\":null}"));
    gram_release(g);
    emoe_err err = {0};
    ck_assert(gram_compile_json_object(&g, &err) == EMOE_OK);
    ck_assert(accepts(g, "{\"a\": 1, \"b\": [1, {\"c\": null}], \"d\":\"x\"}") && accepts(g, "{}"));
    ck_assert(!accepts(g, "[1]") && !accepts(g, "{\"a\":  1}") && !accepts(g, "{\"a\":1,}"));
    gram_release(g);
    g = compile("{\"type\":[\"integer\",\"null\"],\"enum\":[1,null]}");
    ck_assert(accepts(g, "1") && accepts(g, "null") && !accepts(g, "2"));
    gram_release(g);
}
END_TEST

START_TEST(compile_errors_name_the_keyword)
{
    static const struct { const char *schema, *want; } cases[] = {
        {"{\"type\":\"string\",\"pattern\":\"a+\"}", "'pattern'"},
        {"{\"anyOf\":[{\"type\":\"string\"},{\"enum\":[\"a\"]}]}", "'anyOf' alternatives that can start with the same character ('\"')"},
        {"{\"anyOf\":[{\"type\":\"string\"}],\"maxLength\":3}", "'maxLength' next to 'anyOf'"},
        {"{\"type\":[\"integer\",\"number\"]}", "'type' alternatives"},
        {"{\"type\":[\"string\",\"null\"],\"minimum\":3,\"pattern\":\"x\"}", "'minimum'"},
        {"{\"$ref\":\"#/$defs/a\"}", "'$ref' names 'a'"},
        {"{\"$ref\":\"http://x/y\"}", "'$ref' other than"},
        {"{\"$defs\":{\"n\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}},\"$ref\":\"#/$defs/n\"}", "recursive '$ref'"},
        {"{\"type\":\"string\",\"format\":\"date\"}", "'format'"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"multipleOf\":2}}}", "schema.properties.a: 'multipleOf'"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "'required'"},
        {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "minimum"},
        {"{\"type\":\"array\",\"items\":[{}]}", "'items'"},
        {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "'maxItems'"},
        {"{\"type\":\"wat\"}", "unknown type"},
        {"{\"type\":\"string\",\"enum\":[1]}", "'enum'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *s = js(cases[i].schema);
        gram *g = NULL;
        emoe_err err = {0};
        ck_assert_msg(gram_compile_schema(s, &g, &err) != EMOE_OK, "case %zu compiled", i);
        ck_assert_msg(strstr(err.msg, cases[i].want) != NULL, "case %zu: '%s' lacks %s", i, err.msg, cases[i].want);
        ck_assert_ptr_null(g);
        json_decref(s);
    }
}
END_TEST

/* ---- synthetic vocabulary ---- */

#define NV 400
static char *vtok[NV];
static int nv, eos_id;

static int vbytes(void *ctx, int id, emoe_buf *out)
{
    (void)ctx;
    out->n = 0;
    if (id < 0 || id >= nv || !vtok[id]) return -1;
    return emoe_buf_put(out, vtok[id], strlen(vtok[id]));
}

static gram_vocab *make_vocab(void)
{
    if (!nv) {
        for (int c = 0x20; c < 0x7f; c++) {
            char b[2] = {(char)c, 0};
            vtok[nv++] = strdup(b);
        }
        static const char *multi[] = {
            "{\"", "\":", "\",\"", "\"}", "},", "}}", "[{", "]}", "true", "false", "null", "red", "\"red\"", "green",
            "\"blue", "12", "10", "0.", ".5", "-1", "999", "color", "\"color\":\"", "\"n\":", "inner", "\"x\":", "ab",
            "\xc3\xa9", "\xe4\xb8\xad", "\xc3", "\xa9", "\xf0\x9f\x98", "\x80", "\\n", "\\u00", " {", ",\"", "\":[",
            "tags", "opt", "name", "\"name\":\"", "get_weather", "arguments", "\"arguments\":{", "city", "days", "7}",
            "\"}}", "1", "0", "-", "e5", "\x01",
        };
        for (size_t i = 0; i < sizeof multi / sizeof multi[0]; i++) vtok[nv++] = strdup(multi[i]);
        eos_id = nv++; /* no bytes: only allowed at the end */
    }
    return gram_vocab_new(nv, vbytes, NULL, &eos_id, 1);
}

/* Independent validator for the schema subset. */
static int validate(json_t *v, json_t *s)
{
    if (json_object_size(s) == 0) return 1;
    json_t *any = json_object_get(s, "anyOf");
    if (any) {
        for (size_t i = 0; i < json_array_size(any); i++)
            if (validate(v, json_array_get(any, i))) return 1;
        return 0;
    }
    json_t *e = json_object_get(s, "enum");
    if (e) {
        for (size_t i = 0; i < json_array_size(e); i++)
            if (json_equal(json_array_get(e, i), v)) return 1;
        return 0;
    }
    const char *t = json_string_value(json_object_get(s, "type"));
    if (!t) return 1;
    if (!strcmp(t, "null")) return json_is_null(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    if (!strcmp(t, "string")) {
        if (!json_is_string(v)) return 0;
        json_t *mx = json_object_get(s, "maxLength"), *mn = json_object_get(s, "minLength");
        size_t chars = 0;
        for (const unsigned char *p = (const unsigned char *)json_string_value(v); *p; p++) chars += (*p & 0xc0) != 0x80;
        return (!mx || chars <= (size_t)json_integer_value(mx)) && (!mn || chars >= (size_t)json_integer_value(mn));
    }
    if (!strcmp(t, "integer") || !strcmp(t, "number")) {
        if (!strcmp(t, "integer") ? !json_is_integer(v) : !json_is_number(v)) return 0;
        double x = json_number_value(v);
        json_t *lo = json_object_get(s, "minimum"), *hi = json_object_get(s, "maximum");
        return (!lo || x >= json_number_value(lo)) && (!hi || x <= json_number_value(hi));
    }
    if (!strcmp(t, "array")) {
        if (!json_is_array(v)) return 0;
        json_t *mx = json_object_get(s, "maxItems"), *mn = json_object_get(s, "minItems");
        if ((mx && json_array_size(v) > (size_t)json_integer_value(mx)) || (mn && json_array_size(v) < (size_t)json_integer_value(mn)))
            return 0;
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!validate(json_array_get(v, i), json_object_get(s, "items"))) return 0;
        return 1;
    }
    if (!strcmp(t, "object")) {
        if (!json_is_object(v)) return 0;
        json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
        for (size_t i = 0; i < json_array_size(req); i++)
            if (!json_object_get(v, json_string_value(json_array_get(req, i)))) return 0;
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            json_t *ps = json_object_get(props, k);
            if (!ps) {
                if (json_is_false(json_object_get(s, "additionalProperties"))) return 0;
                continue;
            }
            if (!validate(x, ps)) return 0;
        }
        return 1;
    }
    return 0;
}

/* Random walk: pick uniformly among allowed tokens until done (or EOS). */
static void walk(const char *schema_text, gram *g, const gram_vocab *v, unsigned seed, int need_valid)
{
    gram_state *s = gram_state_new(g, v);
    json_t *schema = schema_text ? js(schema_text) : NULL;
    char out[65536];
    size_t n = 0;
    float l[NV];
    unsigned x = seed * 2654435761u + 1;
    int steps = 0, ended = 0;
    for (; steps < 4000; steps++) {
        for (int i = 0; i < nv; i++) l[i] = 0;
        int count = gram_state_mask(s, l, nv);
        ck_assert_msg(count > 0, "dead end after '%.*s'", (int)n, out);
        /* brute-force agreement on this state */
        int brute = 0;
        for (int id = 0; id < nv; id++) {
            int ok;
            if (id == eos_id) ok = gram_state_can_end(s);
            else {
                gram_state *t = gram_state_new(g, v);
                gram_state_feed(t, out, n);
                ok = gram_state_feed(t, vtok[id], strlen(vtok[id])) == 0;
                gram_state_free(t);
            }
            brute += ok;
            ck_assert_msg(ok == !isinf(l[id]), "mask disagrees on token %d '%s' after '%.*s'", id, id == eos_id ? "<eos>" : vtok[id],
                          (int)n, out);
        }
        ck_assert_int_eq(brute, count);
        x = x * 1103515245u + 12345u;
        int k = (int)((x >> 8) % (unsigned)count), pick = -1;
        for (int id = 0; id < nv; id++)
            if (!isinf(l[id]) && k-- == 0) { pick = id; break; }
        int r = gram_state_accept_token(s, pick);
        ck_assert_int_ge(r, 0);
        if (pick == eos_id) { ended = 1; break; }
        size_t len = strlen(vtok[pick]);
        ck_assert(n + len < sizeof out);
        memcpy(out + n, vtok[pick], len);
        n += len;
        if (r == 1) { ended = 1; break; }
    }
    ck_assert_msg(ended || !need_valid, "walk did not finish: '%.*s'", (int)n, out);
    if (ended) {
        json_error_t je;
        json_t *val = json_loadb(out, n, JSON_DECODE_ANY, &je);
        ck_assert_msg(val != NULL, "output does not parse (%s): '%.*s'", je.text, (int)n, out);
        if (schema) ck_assert_msg(validate(val, schema), "output does not validate: '%.*s'", (int)n, out);
        json_decref(val);
    }
    json_decref(schema);
    gram_state_free(s);
}

START_TEST(random_walks_parse_and_validate)
{
    gram_vocab *v = make_vocab();
    ck_assert_ptr_nonnull(v);
    static const char *schemas[] = {
        NULL, /* OBJ */
        "{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":-3,\"maximum\":250},\"minItems\":2,\"maxItems\":4}",
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"array\","
        "\"items\":{\"type\":\"string\",\"maxLength\":5},\"maxItems\":3}},\"required\":[\"b\"]},\"c\":{\"type\":\"number\","
        "\"minimum\":0,\"maximum\":1}},\"required\":[\"a\",\"c\"],\"additionalProperties\":false}",
        "{\"enum\":[\"red\",\"green\",\"blue\",7,null]}",
        "{\"type\":\"integer\",\"minimum\":100,\"maximum\":105}",
        "{\"type\":\"array\",\"items\":{\"anyOf\":[{\"type\":\"integer\",\"minimum\":0,\"maximum\":20},{\"type\":\"null\"},"
        "{\"type\":\"string\",\"maxLength\":3}]},\"maxItems\":5}",
    };
    for (size_t i = 0; i < sizeof schemas / sizeof schemas[0]; i++) {
        const char *st = schemas[i] ? schemas[i] : OBJ;
        gram *g = compile(st);
        for (unsigned seed = 1; seed <= 12; seed++) walk(st, g, v, seed + (unsigned)i * 100, 1);
        gram_release(g);
    }
    /* json_object: every step's prefix stays valid (it may not finish). */
    gram *g = NULL;
    emoe_err err = {0};
    ck_assert(gram_compile_json_object(&g, &err) == EMOE_OK);
    for (unsigned seed = 1; seed <= 4; seed++) walk(NULL, g, v, seed, 0);
    gram_release(g);
    gram_vocab_free(v);
}
END_TEST

START_TEST(tool_call_grammar)
{
    json_t *tools = js("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
                       "\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":7}},"
                       "\"required\":[\"city\",\"days\"],\"additionalProperties\":false}}},"
                       "{\"type\":\"function\",\"function\":{\"name\":\"noop\"}}]");
    gram *g = NULL;
    emoe_err err = {0};
    ck_assert_msg(gram_compile_tool_call(tools, NULL, &g, &err) == EMOE_OK, "%s", err.msg);
    ck_assert(accepts(g, "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\",\"days\":3}}"));
    ck_assert(accepts(g, "{\"name\":\"noop\",\"arguments\":{}}"));
    ck_assert(accepts(g, "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": 3}}"));
    ck_assert(!accepts(g, "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\",\"days\":9}}"));
    ck_assert(!accepts(g, "{\"name\":\"other\",\"arguments\":{}}"));
    gram_release(g);
    ck_assert(gram_compile_tool_call(tools, "noop", &g, &err) == EMOE_OK);
    ck_assert(!accepts(g, "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\",\"days\":3}}"));
    ck_assert(accepts(g, "{\"name\":\"noop\",\"arguments\":{}}"));
    gram_release(g);
    gram_vocab *v = make_vocab();
    ck_assert(gram_compile_tool_call(tools, NULL, &g, &err) == EMOE_OK);
    for (unsigned seed = 1; seed <= 10; seed++) walk(NULL, g, v, seed, 1);
    gram_release(g);
    gram_vocab_free(v);
    json_decref(tools);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("grammar");
    TCase *tc = tcase_create("grammar");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, schema_accepts_and_refuses);
    tcase_add_test(tc, bounded_numbers);
    tcase_add_test(tc, strings_and_literals);
    tcase_add_test(tc, unions);
    tcase_add_test(tc, compile_errors_name_the_keyword);
    tcase_add_test(tc, random_walks_parse_and_validate);
    tcase_add_test(tc, tool_call_grammar);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
