/*
 * config_tasks.c — the [tasks] section: per-task defaults for the SLO-aware
 * scheduler, keyed `<task>.<field>` (task names are those of the request's
 * `task` / X-Emoe-Task: 1..63 characters of [A-Za-z0-9_.:-]; the field is
 * after the last dot). A request's own `slo` / `priority` win over these.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TASK_MAX_MS 3600000.0
#define TASK_MAX_PRIORITY 1000000

static int task_name_ok(const char *s, size_t n)
{
    if (n < 1 || n > 63) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '_' && ch != '.' && ch != ':' && ch != '-') return 0;
    }
    return 1;
}

/* Strict decimal: optional '-', digits, optional fraction; no exponent. */
static int parse_dec(const char *s, double *out)
{
    while (*s == ' ' || *s == '\t') s++;
    const char *p = s;
    if (*p == '-') p++;
    if (!isdigit((unsigned char)*p)) return -1;
    while (isdigit((unsigned char)*p)) p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return -1;
        while (isdigit((unsigned char)*p)) p++;
    }
    while (*p == ' ' || *p == '\t') p++;
    if (*p) return -1;
    errno = 0;
    double v = strtod(s, NULL);
    if (errno || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

const cfg_task *cfg_task_find(const emoe_config *c, const char *name)
{
    if (!name || !name[0]) return NULL;
    for (int i = 0; i < c->tasks.n; i++)
        if (!strcmp(c->tasks.t[i].name, name)) return &c->tasks.t[i];
    return NULL;
}

emoe_status cfg_tasks_set(emoe_config *c, const char *key, const char *value, const char *where, emoe_err *err)
{
    const char *dot = strrchr(key, '.');
    if (!dot || !task_name_ok(key, (size_t)(dot - key)))
        return emoe_errf(err, EMOE_EINVAL,
                         "%s: [tasks] %s: expected <task>.<field> with a task name of 1..63 characters of "
                         "[A-Za-z0-9_.:-] and a field ttft_ms, tpot_ms, priority or output_tokens",
                         where, key);
    const char *field = dot + 1;
    double v;
    if (parse_dec(value, &v))
        return emoe_errf(err, EMOE_EINVAL, "%s: [tasks] %s: '%s' is not a number", where, key, value);
    int is_ms = !strcmp(field, "ttft_ms") || !strcmp(field, "tpot_ms");
    if (is_ms && (v < 0 || v > TASK_MAX_MS))
        return emoe_errf(err, EMOE_EINVAL, "%s: [tasks] %s: %g is out of range [0, %.0f] ms", where, key, v, TASK_MAX_MS);
    if (!strcmp(field, "priority") && (v != floor(v) || fabs(v) > TASK_MAX_PRIORITY))
        return emoe_errf(err, EMOE_EINVAL, "%s: [tasks] %s: '%s' is not an integer in [-%d, %d]", where, key, value,
                         TASK_MAX_PRIORITY, TASK_MAX_PRIORITY);
    if (!strcmp(field, "output_tokens") && (v != floor(v) || v < 0 || v > (1 << 24)))
        return emoe_errf(err, EMOE_EINVAL, "%s: [tasks] %s: '%s' is not an integer in [0, %d]", where, key, value, 1 << 24);
    if (!is_ms && strcmp(field, "priority") && strcmp(field, "output_tokens"))
        return emoe_errf(err, EMOE_EINVAL, "%s: [tasks] %s: unknown field '%s' (ttft_ms, tpot_ms, priority, output_tokens)",
                         where, key, field);
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(dot - key), key);
    cfg_task *t = (cfg_task *)cfg_task_find(c, name);
    if (!t) {
        if (c->tasks.n >= CFG_MAX_TASKS)
            return emoe_errf(err, EMOE_EINVAL, "%s: [tasks] %s: more than %d tasks", where, key, CFG_MAX_TASKS);
        t = &c->tasks.t[c->tasks.n++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", name);
    }
    if (!strcmp(field, "ttft_ms")) t->ttft_ms = v;
    else if (!strcmp(field, "tpot_ms")) t->tpot_ms = v;
    else if (!strcmp(field, "priority")) { t->priority = (int)v; t->has_priority = 1; }
    else t->output_tokens = (int)v;
    return EMOE_OK;
}

void cfg_tasks_dump(const emoe_config *c, FILE *f)
{
    fprintf(f, "\n[tasks]\n; Per-task defaults: <task>.ttft_ms, <task>.tpot_ms, <task>.priority, <task>.output_tokens (reloadable)\n");
    for (int i = 0; i < c->tasks.n; i++) {
        const cfg_task *t = &c->tasks.t[i];
        if (t->ttft_ms > 0) fprintf(f, "%s.ttft_ms = %g\n", t->name, t->ttft_ms);
        if (t->tpot_ms > 0) fprintf(f, "%s.tpot_ms = %g\n", t->name, t->tpot_ms);
        if (t->has_priority) fprintf(f, "%s.priority = %d\n", t->name, t->priority);
        if (t->output_tokens > 0) fprintf(f, "%s.output_tokens = %d\n", t->name, t->output_tokens);
    }
}

void cfg_tasks_markdown(FILE *f)
{
    fprintf(f, "\n## [tasks]\n\n"
               "Per-task defaults for the SLO-aware scheduler (`scheduler.policy = slo`), one key per task and\n"
               "field: `<task>.<field> = value`, where `<task>` is the request's `task` (body) or `X-Emoe-Task`\n"
               "(1..63 characters of `[A-Za-z0-9_.:-]`; the field is after the last dot). A request's own `slo`\n"
               "and `priority` (body or `X-Emoe-SLO-*` / `X-Emoe-Priority` headers) win over these. Up to %d tasks;\n"
               "reloadable.\n\n"
               "| field | type | bounds | description |\n| --- | --- | --- | --- |\n"
               "| `ttft_ms` | number | 0 .. %.0f | Time-to-first-token SLO in milliseconds (0 = none). |\n"
               "| `tpot_ms` | number | 0 .. %.0f | Time-per-output-token SLO in milliseconds (0 = none). |\n"
               "| `priority` | integer | -%d .. %d | Priority (lower = more important; default 0). |\n"
               "| `output_tokens` | integer | 0 .. %d | Expected output length of the task until measured (prior for the estimator; 0 = max_tokens). |\n\n"
               "Example:\n\n```ini\n[tasks]\nchat.ttft_ms = 500\nchat.tpot_ms = 100\nchat.output_tokens = 64\nbatch.priority = 10\n```\n",
            CFG_MAX_TASKS, TASK_MAX_MS, TASK_MAX_MS, TASK_MAX_PRIORITY, TASK_MAX_PRIORITY, 1 << 24);
}
