/*
 * slo_metrics.c — Prometheus text for the scheduler's SLO counters and
 * estimates. See slo_metrics.h.
 */
#include "server/slo_metrics.h"

/* Task names are [A-Za-z0-9_.:-] (validated at the door), so they need no
 * escaping in label values. */
void srv_slo_metrics(FILE *f, const sched_stats *st)
{
    fprintf(f, "# HELP emoe_requests_rejected_total Requests refused with 429, by reason.\n"
               "# TYPE emoe_requests_rejected_total counter\n");
    for (int k = SCHED_REJECT_QUEUE_FULL; k <= SCHED_REJECT_SLO; k++)
        fprintf(f, "emoe_requests_rejected_total{reason=\"%s\"} %llu\n", sched_reject_name((sched_reject_reason)k),
                (unsigned long long)st->rejected_by[k]);
    fprintf(f, "# HELP emoe_requests_preempted_total Running requests paused (KV cache kept) for a tighter request.\n"
               "# TYPE emoe_requests_preempted_total counter\nemoe_requests_preempted_total %llu\n",
            (unsigned long long)st->preempted);
    fprintf(f, "# HELP emoe_requests_paused Requests paused by preemption now.\n"
               "# TYPE emoe_requests_paused gauge\nemoe_requests_paused %d\n", st->paused);
    fprintf(f, "# HELP emoe_slo_requests_total Requests with an SLO, by task, SLO (ttft|tpot) and outcome (met|missed).\n"
               "# TYPE emoe_slo_requests_total counter\n");
    for (int i = 0; i < st->n_slo_tasks; i++) {
        const sched_slo_task *t = &st->slo_tasks[i];
        const char *slo[2] = {"ttft", "tpot"};
        uint64_t v[2][2] = {{t->ttft_met, t->ttft_missed}, {t->tpot_met, t->tpot_missed}};
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                fprintf(f, "emoe_slo_requests_total{task=\"%s\",slo=\"%s\",outcome=\"%s\"} %llu\n", t->name, slo[a],
                        b ? "missed" : "met", (unsigned long long)v[a][b]);
    }
    slo_est e;
    sched_est_get(&st->est, &e);
    fprintf(f, "# HELP emoe_sched_step_base_seconds Estimated fixed cost of an engine step.\n"
               "# TYPE emoe_sched_step_base_seconds gauge\nemoe_sched_step_base_seconds %.6g\n", e.base_s);
    fprintf(f, "# HELP emoe_sched_decode_row_seconds Estimated cost of one decode row in a step.\n"
               "# TYPE emoe_sched_decode_row_seconds gauge\nemoe_sched_decode_row_seconds %.6g\n", e.row_s);
    fprintf(f, "# HELP emoe_sched_prefill_token_seconds Estimated cost of one prefill token in a step.\n"
               "# TYPE emoe_sched_prefill_token_seconds gauge\nemoe_sched_prefill_token_seconds %.6g\n", e.tok_s);
    fprintf(f, "# HELP emoe_sched_expected_load_seconds Expected expert-load time of submitted requests (sum, count).\n"
               "# TYPE emoe_sched_expected_load_seconds summary\nemoe_sched_expected_load_seconds_sum %.6f\n"
               "emoe_sched_expected_load_seconds_count %llu\n", st->load_s_sum, (unsigned long long)st->load_n);
    fprintf(f, "# HELP emoe_task_output_tokens Output length of a task's recent requests (quantile 0.5, 0.9).\n"
               "# TYPE emoe_task_output_tokens gauge\n");
    for (int i = 0; i < st->est.n_tasks; i++) {
        int p50, p90;
        const char *name = st->est.tasks[i].name;
        if (!sched_est_quantiles(&st->est, name, &p50, &p90)) continue;
        fprintf(f, "emoe_task_output_tokens{task=\"%s\",quantile=\"0.5\"} %d\n", name, p50);
        fprintf(f, "emoe_task_output_tokens{task=\"%s\",quantile=\"0.9\"} %d\n", name, p90);
    }
}
