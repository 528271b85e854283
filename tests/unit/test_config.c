/* test_config.c — the settings table, INI loading, overrides, errors naming
 * file/line/key, size and percentage parsing, reload and the generated docs. */
#include "tests/unit/testutil.h"
#include "config/config.h"

#include <unistd.h>

static char tmp_path[256];

static const char *write_tmp(const char *text)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/emoe_test_config_%d.conf", (int)getpid());
    FILE *f = fopen(tmp_path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return tmp_path;
}

START_TEST(defaults_are_valid)
{
    size_t n;
    const cfg_entry *t = cfg_table(&n);
    ck_assert_int_gt((int)n, 25);
    emoe_config c;
    memset(&c, 0x5a, sizeof c); /* poison: cfg_init must set every field */
    cfg_init(&c);
    for (size_t i = 0; i < n; i++) {
        emoe_err err = {0};
        ck_assert_msg(cfg_set(&c, t[i].section, t[i].key, t[i].def, "default", &err) == EMOE_OK, "%s", err.msg);
        ck_assert_ptr_eq(cfg_find(t[i].section, t[i].key), &t[i]);
        ck_assert_msg(t[i].help && strlen(t[i].help) > 5, "help for %s.%s", t[i].section, t[i].key);
    }
    emoe_err err = {0};
    ck_assert_msg(cfg_validate(&c, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_str_eq(c.server.host, "127.0.0.1");
    ck_assert_int_eq(c.server.port, 8080);
    ck_assert_uint_eq(c.server.max_body, 4u << 20);
    ck_assert_int_eq(c.cache.device_budget.is_pct, 1);
    ck_assert(c.cache.device_budget.pct == 100.0);
    ck_assert_int_eq(c.cache.miss_policy, CFG_MISS_EXACT);
    ck_assert_int_eq(c.log.level, EMOE_LOG_INFO);
}
END_TEST

START_TEST(example_file_loads)
{
    emoe_config c;
    cfg_init(&c);
    emoe_err err = {0};
    ck_assert_msg(cfg_load_file(&c, "config/emoe.conf", &err) == EMOE_OK, "%s", err.msg);
    ck_assert_msg(cfg_validate(&c, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_str_eq(c.model.path, "/var/lib/emoe/models/default");
}
END_TEST

START_TEST(values_and_units)
{
    emoe_config c;
    cfg_init(&c);
    emoe_err err = {0};
    const char *p = write_tmp("; comment\n[server]\nport = 9123\nmax_body = 512KiB\n"
                              "request_timeout = 1500ms\napi_keys = a1, b2 ,c3\n"
                              "[cache]\ndevice_budget = 20GiB\nhost_budget = 12.5%\nmiss_policy = substitute\n"
                              "[log]\nlevel = debug\nlog_prompts = yes\n");
    ck_assert_msg(cfg_load_file(&c, p, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(c.server.port, 9123);
    ck_assert_uint_eq(c.server.max_body, 512u * 1024);
    ck_assert(c.server.request_timeout > 1.49 && c.server.request_timeout < 1.51);
    ck_assert_uint_eq(c.cache.device_budget.bytes, 20ull << 30);
    ck_assert_int_eq(c.cache.device_budget.is_pct, 0);
    ck_assert_int_eq(c.cache.host_budget.is_pct, 1);
    ck_assert_uint_eq(cfg_budget_bytes(&c.cache.host_budget, 800), 100);
    ck_assert_uint_eq(cfg_budget_bytes(&c.cache.device_budget, 800), 20ull << 30);
    ck_assert_int_eq(c.cache.miss_policy, CFG_MISS_SUBSTITUTE);
    ck_assert_int_eq(c.log.level, EMOE_LOG_DEBUG);
    ck_assert_int_eq(c.log.log_prompts, 1);
    ck_assert(cfg_list_has(c.server.api_keys, "b2"));
    ck_assert(!cfg_list_has(c.server.api_keys, "b"));
    char keys[256];
    ck_assert(cfg_read_api_keys(&c, keys, sizeof keys, &err) == EMOE_OK);
    ck_assert_str_eq(keys, "a1\nb2\nc3\n");
    uint64_t v;
    ck_assert_int_eq(cfg_parse_size("1.5GiB", &v), 0);
    ck_assert_uint_eq(v, 3ull << 29);
    ck_assert_int_eq(cfg_parse_size("2GB", &v), 0);
    ck_assert_uint_eq(v, 2000000000ull);
    ck_assert_int_eq(cfg_parse_size("1.3", &v), -1);
    ck_assert_int_eq(cfg_parse_size("-1", &v), -1);
    ck_assert_int_eq(cfg_parse_size("1e9", &v), -1);
    ck_assert_int_eq(cfg_parse_size("5XiB", &v), -1);
    ck_assert_int_eq(cfg_parse_size("99999999999TiB", &v), -1);
    unlink(p);
}
END_TEST

/* Each bad file must fail with a message naming file, line and key. */
START_TEST(errors_name_file_line_key)
{
    static const struct { const char *text; const char *want1, *want2; } cases[] = {
        {"[server]\nport = 80\nbogus = 1\n", ":3:", "bogus"},
        {"[server]\n\nport = 70000\n", ":3:", "port"},
        {"[server]\nport = 12abc\n", ":2:", "port"},
        {"[nosuch]\nkey = 1\n", ":1:", "nosuch"},
        {"[cache]\ndevice_budget = 150%\n", ":2:", "device_budget"},
        {"[cache]\nhost_budget = lots\n", ":2:", "host_budget"},
        {"[cache]\nmiss_policy = maybe\n", ":2:", "miss_policy"},
        {"[server]\nmax_body = 1\n", ":2:", "max_body"},
        {"[log]\nlog_prompts = perhaps\n", ":2:", "log_prompts"},
        {"[server]\nthis line has no equals sign\n", ":2:", "syntax"},
        {"[server]\nconnection_timeout = -5\n", ":2:", "connection_timeout"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        emoe_config c;
        cfg_init(&c);
        emoe_err err = {0};
        const char *p = write_tmp(cases[i].text);
        ck_assert_int_eq(cfg_load_file(&c, p, &err), EMOE_EINVAL);
        ck_assert_msg(strstr(err.msg, p) && strstr(err.msg, cases[i].want1) && strstr(err.msg, cases[i].want2),
                      "case %zu: '%s'", i, err.msg);
        unlink(p);
    }
    /* Issue 14: long lines are fine (no libinih buffer to overflow). */
    char big[600] = "[server]\napi_keys = ";
    size_t l = strlen(big);
    memset(big + l, 'k', 400);
    big[l + 400] = '\n';
    big[l + 401] = 0;
    emoe_config c;
    cfg_init(&c);
    emoe_err err = {0};
    const char *p = write_tmp(big);
    ck_assert_msg(cfg_load_file(&c, p, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_uint_eq(strlen(c.server.api_keys), 400);
    unlink(p);
    ck_assert_int_eq(cfg_load_file(&c, "/nonexistent/emoe.conf", &err), EMOE_EIO);
    ck_assert(strstr(err.msg, "/nonexistent/emoe.conf") != NULL);
}
END_TEST

/* Issue 14: duplicates are errors, inline # comments work, an unclosed
 * section is named, and every error is reported in one pass. */
START_TEST(ini_duplicates_comments_all_errors)
{
    emoe_config c;
    cfg_init(&c);
    emoe_err err = {0};
    const char *p = write_tmp("[server]\nport = 8081 # the HTTP port\nhost = 127.0.0.2 ; inline\napi_keys = ab#cd\n");
    ck_assert_msg(cfg_load_file(&c, p, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(c.server.port, 8081);
    ck_assert_str_eq(c.server.host, "127.0.0.2");
    ck_assert_str_eq(c.server.api_keys, "ab#cd");
    unlink(p);

    cfg_init(&c);
    p = write_tmp("[server]\nport = 8080\n[model]\npath = /m\n[server]\nport = 9090\n");
    ck_assert_int_eq(cfg_load_file(&c, p, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, ":6:") && strstr(err.msg, "duplicate") && strstr(err.msg, "line 2"), "%s", err.msg);
    unlink(p);

    cfg_init(&c);
    p = write_tmp("[server\nport = 1\n");
    ck_assert_int_eq(cfg_load_file(&c, p, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, ":1:") && strstr(err.msg, "unclosed") && strstr(err.msg, "[server"), "%s", err.msg);
    ck_assert_msg(!strstr(err.msg, "[]"), "%s", err.msg);
    unlink(p);

    cfg_init(&c);
    p = write_tmp("[server]\nport = x\nbogus = 1\n[cache]\ndevice_budget = 150%\nnot a pair\n");
    ck_assert_int_eq(cfg_load_file(&c, p, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, ":2:") && strstr(err.msg, ":3:") && strstr(err.msg, ":5:") && strstr(err.msg, ":6:"),
                  "all four errors: %s", err.msg);
    unlink(p);
}
END_TEST

/* Issue 14: the example config/emoe.conf lists every key of the table
 * (set, or commented out as ";key = ..."), under its section. */
START_TEST(example_conf_lists_every_key)
{
    FILE *f = fopen("config/emoe.conf", "r");
    ck_assert_msg(f != NULL, "config/emoe.conf (run from the repository root)");
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    size_t nt;
    const cfg_entry *t = cfg_table(&nt);
    for (size_t i = 0; i < nt; i++) {
        char sec[80];
        snprintf(sec, sizeof sec, "[%s]", t[i].section);
        const char *ps = strstr(text, sec);
        ck_assert_msg(ps != NULL, "config/emoe.conf has no %s section", sec);
        const char *next = strstr(ps + 1, "\n[");
        int found = 0;
        for (const char *p = ps; *p && (!next || p < next) && !found; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : "") {
            const char *q = p;
            if (*q == ';') q++;
            size_t kl = strlen(t[i].key);
            if (!strncmp(q, t[i].key, kl) && (q[kl] == ' ' || q[kl] == '=')) found = 1;
        }
        ck_assert_msg(found, "config/emoe.conf does not list %s.%s", t[i].section, t[i].key);
    }
}
END_TEST

START_TEST(overrides_and_validate)
{
    emoe_config c;
    cfg_init(&c);
    emoe_err err = {0};
    ck_assert(cfg_set_override(&c, "server.port=9001", &err) == EMOE_OK);
    ck_assert_int_eq(c.server.port, 9001);
    ck_assert(cfg_set_override(&c, "model.path=/m/x=y", &err) == EMOE_OK);
    ck_assert_str_eq(c.model.path, "/m/x=y");
    ck_assert(cfg_set_override(&c, "server.port", &err) == EMOE_EINVAL);
    ck_assert(cfg_set_override(&c, "port=1", &err) == EMOE_EINVAL);
    ck_assert(cfg_set_override(&c, "server.nope=1", &err) == EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "--set") && strstr(err.msg, "nope"), "%s", err.msg);
    ck_assert(cfg_set_override(&c, "scheduler.prefill_chunk=1024", &err) == EMOE_OK);
    ck_assert_int_eq(cfg_validate(&c, &err), EMOE_EINVAL);
    ck_assert(strstr(err.msg, "prefill_chunk") != NULL);
    cfg_init(&c);
    ck_assert(cfg_set_override(&c, "server.api_keys=k1", &err) == EMOE_OK);
    ck_assert(cfg_set_override(&c, "server.api_key_file=/tmp/x", &err) == EMOE_OK);
    ck_assert_int_eq(cfg_validate(&c, &err), EMOE_EINVAL);
}
END_TEST

START_TEST(dump_round_trips)
{
    emoe_config a, b;
    cfg_init(&a);
    emoe_err err = {0};
    ck_assert(cfg_set_override(&a, "server.port=7777", &err) == EMOE_OK);
    ck_assert(cfg_set_override(&a, "cache.host_budget=3GiB", &err) == EMOE_OK);
    ck_assert(cfg_set_override(&a, "cache.device_budget=33.5%", &err) == EMOE_OK);
    ck_assert(cfg_set_override(&a, "server.max_body=1000000", &err) == EMOE_OK);
    snprintf(tmp_path, sizeof tmp_path, "/tmp/emoe_test_dump_%d.conf", (int)getpid());
    FILE *f = fopen(tmp_path, "w");
    cfg_dump(&a, f);
    fclose(f);
    cfg_init(&b);
    ck_assert_msg(cfg_load_file(&b, tmp_path, &err) == EMOE_OK, "%s", err.msg);
    size_t n;
    const cfg_entry *t = cfg_table(&n);
    for (size_t i = 0; i < n; i++) {
        char va[CFG_LIST_MAX + 16], vb[CFG_LIST_MAX + 16];
        cfg_format_value(&a, &t[i], va, sizeof va);
        cfg_format_value(&b, &t[i], vb, sizeof vb);
        ck_assert_msg(!strcmp(va, vb), "%s.%s: %s vs %s", t[i].section, t[i].key, va, vb);
    }
    ck_assert_int_eq(b.server.port, 7777);
    unlink(tmp_path);
}
END_TEST

START_TEST(reload_applies_only_reloadable)
{
    emoe_config run, next;
    cfg_init(&run);
    next = run;
    emoe_err err = {0};
    ck_assert(cfg_set_override(&next, "server.port=9999", &err) == EMOE_OK);
    ck_assert(cfg_set_override(&next, "scheduler.max_queued=3", &err) == EMOE_OK);
    ck_assert(cfg_set_override(&next, "server.api_keys=newkey", &err) == EMOE_OK);
    char fixed[256];
    int changed = cfg_apply_reloadable(&run, &next, fixed, sizeof fixed);
    ck_assert_int_eq(changed, 2);
    ck_assert_int_eq(run.scheduler.max_queued, 3);
    ck_assert_str_eq(run.server.api_keys, "newkey");
    ck_assert_int_eq(run.server.port, 8080);
    ck_assert_str_eq(fixed, "server.port");
}
END_TEST

/* [server] replica_id goes into a response header: no spaces or control bytes. */
START_TEST(replica_id_validated)
{
    emoe_config c;
    cfg_init(&c);
    emoe_err err = {0};
    ck_assert_str_eq(c.server.replica_id, "");
    ck_assert(cfg_set_override(&c, "server.replica_id=r0", &err) == EMOE_OK);
    ck_assert_int_eq(cfg_validate(&c, &err), EMOE_OK);
    ck_assert(cfg_set_override(&c, "server.replica_id=r 0", &err) == EMOE_OK);
    ck_assert_int_eq(cfg_validate(&c, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "replica_id") != NULL, "%s", err.msg);
    snprintf(c.server.replica_id, sizeof c.server.replica_id, "r0\r\nX-Evil: 1");
    ck_assert_int_eq(cfg_validate(&c, &err), EMOE_EINVAL);
}
END_TEST

/* docs/configuration.md must be what `emoe config --markdown` prints now. */
START_TEST(markdown_is_current)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    cfg_markdown(m);
    fclose(m);
    size_t flen = 0;
    char *doc = tu_read_file("docs/configuration.md", &flen);
    ck_assert_msg(doc != NULL, "docs/configuration.md missing (run from the repo root)");
    ck_assert_msg(flen == len && !memcmp(doc, buf, len),
                  "docs/configuration.md is stale: run `build/emoe config --markdown > docs/configuration.md`");
    free(doc);
    free(buf);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, defaults_are_valid);
    tcase_add_test(tc, example_file_loads);
    tcase_add_test(tc, values_and_units);
    tcase_add_test(tc, errors_name_file_line_key);
    tcase_add_test(tc, ini_duplicates_comments_all_errors);
    tcase_add_test(tc, example_conf_lists_every_key);
    tcase_add_test(tc, overrides_and_validate);
    tcase_add_test(tc, dump_round_trips);
    tcase_add_test(tc, reload_applies_only_reloadable);
    tcase_add_test(tc, replica_id_validated);
    tcase_add_test(tc, markdown_is_current);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(config_suite)
