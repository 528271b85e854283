/*
 * estimator.c — online step-cost and output-length estimates. See estimator.h.
 */
#include "scheduler/estimator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sched_est_init(sched_est *e)
{
    memset(e, 0, sizeof *e);
}

static double ewma(double old, double x)
{
    return old > 0 ? old + SCHED_EST_ALPHA * (x - old) : x;
}

/* The decode line base + row * rows through the per-row-count averages. */
static void decode_line(const sched_est *e, double *base, double *row)
{
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    int k = 0;
    for (int r = 1; r <= SCHED_EST_ROWS; r++) {
        if (e->dec[r] <= 0) continue;
        double x = r, y = e->dec[r];
        sw += 1; sx += x; sy += y; sxx += x * x; sxy += x * y;
        k++;
    }
    if (k == 0) { *base = SCHED_EST_PRIOR_BASE; *row = SCHED_EST_PRIOR_ROW; return; }
    double den = sw * sxx - sx * sx;
    if (k >= 2 && den > 0) {
        double b = (sw * sxy - sx * sy) / den;
        double a = (sy - b * sx) / sw;
        if (b < 0) { b = 0; a = sy / sw; }
        if (a < 0) { a = 0; b = sxy / sxx; }
        *base = a;
        *row = b;
        return;
    }
    /* One row count seen: split it like the priors. */
    double x = sx / sw, y = sy / sw;
    double prior = SCHED_EST_PRIOR_BASE + SCHED_EST_PRIOR_ROW * x;
    *base = y * SCHED_EST_PRIOR_BASE / prior;
    *row = (y - *base) / x;
}

void sched_est_step(sched_est *e, int decode_rows, int prefill_tokens, double seconds)
{
    if (seconds <= 0 || decode_rows < 0 || prefill_tokens < 0 || decode_rows + prefill_tokens == 0) return;
    e->steps++;
    if (prefill_tokens == 0) {
        int r = decode_rows > SCHED_EST_ROWS ? SCHED_EST_ROWS : decode_rows;
        e->dec[r] = ewma(e->dec[r], seconds);
        return;
    }
    double base, row;
    decode_line(e, &base, &row);
    double rest = seconds - base - row * (double)decode_rows;
    if (rest < 0) rest = 0;
    e->tok_s = ewma(e->tok_s, rest / (double)prefill_tokens);
}

void sched_est_get(const sched_est *e, slo_est *out)
{
    decode_line(e, &out->base_s, &out->row_s);
    out->tok_s = e->tok_s > 0 ? e->tok_s : SCHED_EST_PRIOR_TOK;
}

static const sched_est_task *task_find(const sched_est *e, const char *task)
{
    for (int i = 0; i < e->n_tasks; i++)
        if (!strcmp(e->tasks[i].name, task)) return &e->tasks[i];
    return NULL;
}

/* The task's entry, created if new (beyond the table: the "" entry, or the
 * last one reset to it). */
static sched_est_task *task_get(sched_est *e, const char *task)
{
    if (!task) task = "";
    sched_est_task *t = (sched_est_task *)task_find(e, task);
    if (!t) {
        if (e->n_tasks < SCHED_EST_TASKS) {
            t = &e->tasks[e->n_tasks++];
            snprintf(t->name, sizeof t->name, "%s", task);
        } else {
            t = (sched_est_task *)task_find(e, "");
            if (!t) { t = &e->tasks[SCHED_EST_TASKS - 1]; memset(t, 0, sizeof *t); }
        }
    }
    return t;
}

void sched_est_set_load(sched_est *e, const char *task, double load_s)
{
    if (!(load_s >= 0) || load_s >= 1e6) load_s = 0;
    sched_est_task *t = task_get(e, task);
    t->load_s = load_s;
    t->load_known = 1;
    e->load_last = load_s;
    e->load_any = 1;
}

double sched_est_load(const sched_est *e, const char *task)
{
    const sched_est_task *t = task_find(e, task ? task : "");
    if (t && t->load_known) return t->load_s;
    return e->load_any ? e->load_last : 0;
}

void sched_est_finished(sched_est *e, const char *task, int n_gen)
{
    sched_est_task *t = task_get(e, task);
    t->lens[t->pos] = n_gen;
    t->pos = (t->pos + 1) % SCHED_EST_WINDOW;
    if (t->n < SCHED_EST_WINDOW) t->n++;
    t->seen++;
}

static int int_cmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int sched_est_quantiles(const sched_est *e, const char *task, int *p50, int *p90)
{
    const sched_est_task *t = task_find(e, task ? task : "");
    if (!t || t->n == 0) return 0;
    int v[SCHED_EST_WINDOW];
    memcpy(v, t->lens, (size_t)t->n * sizeof *v);
    qsort(v, (size_t)t->n, sizeof *v, int_cmp);
    /* nearest rank */
    int i50 = (t->n * 50 + 99) / 100 - 1, i90 = (t->n * 90 + 99) / 100 - 1;
    *p50 = v[i50 < 0 ? 0 : i50];
    *p90 = v[i90 < 0 ? 0 : i90];
    return t->n;
}

int sched_est_out_tokens(const sched_est *e, const char *task, int prior, int max_tokens)
{
    int p50, p90, n = sched_est_quantiles(e, task, &p50, &p90);
    int out = n >= 4 ? p50 : prior > 0 ? prior : max_tokens;
    if (out > max_tokens) out = max_tokens;
    if (out < 1) out = 1;
    return out;
}
