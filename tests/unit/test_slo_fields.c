/* test_slo_fields.c — the SLO extension at the door: "slo" / "priority" in
 * request bodies, the X-Emoe-SLO-* / X-Emoe-Priority headers (the body wins),
 * 400s naming the field, and the [tasks] config section (per-task defaults,
 * errors naming the key, dump round trip, reload). */
#include "tests/unit/testutil.h"
#include "config/config.h"
#include "server/request.h"

#include <unistd.h>

static int parse(const char *body, srv_gen_req *r, srv_error *e)
{
    return srv_parse_request(SRV_KIND_COMPLETION, body, strlen(body), r, e);
}

START_TEST(body_fields)
{
    srv_gen_req r;
    srv_error e;
    ck_assert_int_eq(parse("{\"prompt\":\"a\",\"slo\":{\"ttft_ms\":600,\"tpot_ms\":40.5},\"priority\":-3}", &r, &e), 0);
    ck_assert(r.slo.has_ttft && r.slo.has_tpot && r.slo.has_priority);
    ck_assert_double_eq(r.slo.ttft_ms, 600);
    ck_assert_double_eq(r.slo.tpot_ms, 40.5);
    ck_assert_int_eq(r.slo.priority, -3);
    srv_gen_req_free(&r);
    /* either may be absent; null = unset */
    ck_assert_int_eq(parse("{\"prompt\":\"a\",\"slo\":{\"tpot_ms\":null,\"ttft_ms\":1},\"priority\":null}", &r, &e), 0);
    ck_assert(r.slo.has_ttft && !r.slo.has_tpot && !r.slo.has_priority);
    srv_gen_req_free(&r);
    ck_assert_int_eq(parse("{\"prompt\":\"a\",\"slo\":null}", &r, &e), 0);
    ck_assert(!r.slo.has_ttft && !r.slo.has_tpot);
    srv_gen_req_free(&r);
    /* chat too */
    ck_assert_int_eq(srv_parse_request(SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"priority\":7}",
                                       strlen("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"priority\":7}"), &r, &e),
                     0);
    ck_assert_int_eq(r.slo.priority, 7);
    srv_gen_req_free(&r);
}
END_TEST

START_TEST(body_errors_name_the_field)
{
    static const struct { const char *body; const char *param; } cases[] = {
        {"{\"prompt\":\"a\",\"slo\":5}", "slo"},
        {"{\"prompt\":\"a\",\"slo\":[]}", "slo"},
        {"{\"prompt\":\"a\",\"slo\":{\"ttft_ms\":\"600\"}}", "slo.ttft_ms"},
        {"{\"prompt\":\"a\",\"slo\":{\"ttft_ms\":0}}", "slo.ttft_ms"},
        {"{\"prompt\":\"a\",\"slo\":{\"ttft_ms\":-5}}", "slo.ttft_ms"},
        {"{\"prompt\":\"a\",\"slo\":{\"ttft_ms\":1e99}}", "slo.ttft_ms"},
        {"{\"prompt\":\"a\",\"slo\":{\"tpot_ms\":true}}", "slo.tpot_ms"},
        {"{\"prompt\":\"a\",\"priority\":1.5}", "priority"},
        {"{\"prompt\":\"a\",\"priority\":\"high\"}", "priority"},
        {"{\"prompt\":\"a\",\"priority\":99999999999}", "priority"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_gen_req r;
        srv_error e;
        ck_assert_msg(parse(cases[i].body, &r, &e) == -1, "case %zu accepted", i);
        ck_assert_int_eq(e.http, 400);
        ck_assert_msg(!strcmp(e.param, cases[i].param), "case %zu: param '%s' (%s)", i, e.param, e.message);
    }
}
END_TEST

START_TEST(headers)
{
    srv_slo o = {0};
    srv_error e = {0};
    ck_assert_int_eq(srv_slo_parse_headers("600", " 25.5 ", "-2", &o, &e), 0);
    ck_assert_double_eq(o.ttft_ms, 600);
    ck_assert_double_eq(o.tpot_ms, 25.5);
    ck_assert_int_eq(o.priority, -2);
    /* the body wins: set fields are not overwritten (and not even parsed) */
    srv_slo b = {.ttft_ms = 100, .has_ttft = 1, .priority = 4, .has_priority = 1};
    ck_assert_int_eq(srv_slo_parse_headers("700", NULL, "9", &b, &e), 0);
    ck_assert_double_eq(b.ttft_ms, 100);
    ck_assert_int_eq(b.priority, 4);
    ck_assert(!b.has_tpot);
    static const struct { const char *ttft, *tpot, *prio, *param; } bad[] = {
        {"abc", NULL, NULL, "X-Emoe-SLO-TTFT-Ms"},
        {"0", NULL, NULL, "X-Emoe-SLO-TTFT-Ms"},
        {"-4", NULL, NULL, "X-Emoe-SLO-TTFT-Ms"},
        {"1e3", NULL, NULL, "X-Emoe-SLO-TTFT-Ms"},
        {"", NULL, NULL, "X-Emoe-SLO-TTFT-Ms"},
        {NULL, "5ms", NULL, "X-Emoe-SLO-TPOT-Ms"},
        {NULL, "99999999", NULL, "X-Emoe-SLO-TPOT-Ms"},
        {NULL, NULL, "1.5", "X-Emoe-Priority"},
        {NULL, NULL, "high", "X-Emoe-Priority"},
        {NULL, NULL, "2000000", "X-Emoe-Priority"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        srv_slo x = {0};
        memset(&e, 0, sizeof e);
        ck_assert_msg(srv_slo_parse_headers(bad[i].ttft, bad[i].tpot, bad[i].prio, &x, &e) == -1, "case %zu accepted", i);
        ck_assert_int_eq(e.http, 400);
        ck_assert_str_eq(e.param, bad[i].param);
    }
}
END_TEST

static char tmp_path[256];

START_TEST(tasks_section)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/emoe_test_tasks_%d.conf", (int)getpid());
    FILE *f = fopen(tmp_path, "w");
    fputs("[scheduler]\npolicy = fifo\non_unattainable = best_effort\n[tasks]\nchat.ttft_ms = 500\nchat.tpot_ms = 50\n"
          "chat.output_tokens = 64\nbatch.priority = 10\nqa.v2.ttft_ms = 250.5\n", f);
    fclose(f);
    emoe_config c;
    cfg_init(&c);
    emoe_err err = {0};
    ck_assert_msg(cfg_load_file(&c, tmp_path, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(c.scheduler.policy, CFG_SCHED_FIFO);
    ck_assert_int_eq(c.scheduler.on_unattainable, 1);
    ck_assert_int_eq(c.tasks.n, 3);
    const cfg_task *t = cfg_task_find(&c, "chat");
    ck_assert_ptr_nonnull(t);
    ck_assert_double_eq(t->ttft_ms, 500);
    ck_assert_double_eq(t->tpot_ms, 50);
    ck_assert_int_eq(t->output_tokens, 64);
    ck_assert(!t->has_priority);
    t = cfg_task_find(&c, "batch");
    ck_assert(t && t->has_priority && t->priority == 10);
    t = cfg_task_find(&c, "qa.v2"); /* the field is after the last dot */
    ck_assert(t && t->ttft_ms == 250.5);
    ck_assert_ptr_null(cfg_task_find(&c, "nosuch"));
    ck_assert_ptr_null(cfg_task_find(&c, ""));
    /* dump round trip */
    char dump_path[300];
    snprintf(dump_path, sizeof dump_path, "%s.dump", tmp_path);
    f = fopen(dump_path, "w");
    cfg_dump(&c, f);
    fclose(f);
    emoe_config d;
    cfg_init(&d);
    ck_assert_msg(cfg_load_file(&d, dump_path, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_int_eq(memcmp(&c.tasks, &d.tasks, sizeof c.tasks), 0);
    /* reloadable */
    emoe_config run;
    cfg_init(&run);
    ck_assert_int_ge(cfg_apply_reloadable(&run, &c, NULL, 0), 1);
    ck_assert_int_eq(run.tasks.n, 3);
    ck_assert_int_eq(run.scheduler.policy, CFG_SCHED_SLO); /* the default; the policy needs a restart */
    unlink(dump_path);
    unlink(tmp_path);
    /* errors name the key */
    static const char *bad[][2] = {
        {"chat.ttft_ms", "fast"}, {"chat.ttft_ms", "-1"}, {"chat.ttft_ms", "1e9"}, {"chat.priority", "1.5"},
        {"chat.output_tokens", "-3"}, {"chat.colour", "5"}, {"ttft_ms", "5"}, {".ttft_ms", "5"},
        {"bad name.ttft_ms", "5"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg_init(&c);
        ck_assert_msg(cfg_set(&c, "tasks", bad[i][0], bad[i][1], "--set", &err) == EMOE_EINVAL, "case %zu accepted", i);
        ck_assert_msg(strstr(err.msg, "[tasks]") && strstr(err.msg, bad[i][0]), "case %zu: %s", i, err.msg);
    }
    /* the table is bounded */
    cfg_init(&c);
    char key[64];
    for (int i = 0; i < CFG_MAX_TASKS; i++) {
        snprintf(key, sizeof key, "t%d.priority", i);
        ck_assert(cfg_set(&c, "tasks", key, "1", "x", &err) == EMOE_OK);
    }
    ck_assert(cfg_set(&c, "tasks", "one_more.priority", "1", "x", &err) == EMOE_EINVAL);
    ck_assert(cfg_set_override(&c, "tasks.t3.ttft_ms=20", &err) == EMOE_OK);
    ck_assert_double_eq(cfg_task_find(&c, "t3")->ttft_ms, 20);
    ck_assert(cfg_set_override(&c, "scheduler.policy=edf", &err) == EMOE_EINVAL);
}
END_TEST

static Suite *slo_fields_suite(void)
{
    Suite *s = suite_create("slo_fields");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, body_fields);
    tcase_add_test(tc, body_errors_name_the_field);
    tcase_add_test(tc, headers);
    tcase_add_test(tc, tasks_section);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(slo_fields_suite)
